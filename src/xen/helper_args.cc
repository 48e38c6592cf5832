// Parsing of libxl's save/restore helper command line.

#include "xen/helper_args.h"

#include <charconv>

#include <fmt/format.h>

#include <p2bmig/types.h>

namespace p2bmig {

namespace {

[[noreturn]] void Bad(const std::string& what) {
  throw Error(ErrorKind::kInvalidArgument, "libxl save helper command line: " + what);
}

// Strict decimal: libxl prints these with %d / %lu; anything else means the
// caller is not the libxl we know.
template <typename T>
T ParseNumber(const std::string& s, const char* name) {
  T v{};
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || ptr != end) {
    Bad(fmt::format("{} is \"{}\", not a number", name, s));
  }
  return v;
}

}  // namespace

const char* HelperOpName(HelperOp op) { return op == HelperOp::kSave ? "save" : "restore"; }

HelperArgs ParseHelperArgs(std::span<const std::string> argv) {
  if (argv.size() < 2) Bad("no mode (--save-domain or --restore-domain)");
  HelperArgs a;
  size_t expected;
  if (argv[1] == "--save-domain") {
    a.op = HelperOp::kSave;
    expected = kSaveArgCount;
  } else if (argv[1] == "--restore-domain") {
    a.op = HelperOp::kRestore;
    expected = kRestoreArgCount;
  } else {
    Bad(fmt::format("unknown mode \"{}\"", argv[1]));
  }
  if (argv.size() != expected + 2) {
    Bad(fmt::format("{} takes {} arguments (Xen 4.17), got {}", argv[1], expected,
                    argv.size() - 2));
  }
  a.io_fd = ParseNumber<int>(argv[2], "io_fd");
  a.back_fd = ParseNumber<int>(argv[3], a.op == HelperOp::kSave ? "recv_fd" : "send_back_fd");
  a.domid = ParseNumber<uint32_t>(argv[4], "domid");
  a.stream_type = ParseNumber<uint32_t>(argv.back(), "stream_type");
  if (a.io_fd < 0) Bad(fmt::format("io_fd {} is negative", a.io_fd));
  a.argv.assign(argv.begin(), argv.end());
  return a;
}

}  // namespace p2bmig
