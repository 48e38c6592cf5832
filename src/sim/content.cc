#include "sim/content.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <p2bmig/types.h>

namespace p2bmig::sim {
namespace {

constexpr std::array<std::string_view, 32> kWords = {
    "the ",    "migration ", "page ",    "block ",  "memory ", "guest ",    "disk ",
    "cache ",  "kernel ",    "return ",  "struct ", "int ",    "if (",      ") {\n",
    "}\n",     "0x",         "error: ",  "static ", "const ",  "void ",     "for (",
    "while (", "data ",      "size_t ",  "= ",      "; ",      "#include ", "<stdio.h>\n",
    "server ", "request ",   "200 OK\n", "GET /",
};

void FillText(uint8_t* page, Rng& rng) {
  size_t off = 0;
  while (off < kPageSize) {
    uint64_t r = rng.Next();
    for (int i = 0; i < 8 && off < kPageSize; ++i, r >>= 8) {
      std::string_view w = kWords[r & 31];
      size_t n = std::min(w.size(), kPageSize - off);
      std::memcpy(page + off, w.data(), n);
      off += n;
    }
  }
}

void FillBinary(uint8_t* page, Rng& rng) {
  // Code-like: many repeated opcodes and small immediates, some entropy.
  for (size_t off = 0; off < kPageSize; off += 8) {
    uint64_t r = rng.Next();
    uint64_t w = (r & 0x00FF00FF00FF00FFull) | ((r & 7) == 0 ? 0 : 0x4800E80048008900ull);
    std::memcpy(page + off, &w, 8);
  }
}

void FillRandom(uint8_t* page, Rng& rng) {
  for (size_t off = 0; off < kPageSize; off += 8) {
    uint64_t w = rng.Next();
    std::memcpy(page + off, &w, 8);
  }
}

}  // namespace

void FillPage(uint8_t* page, ContentKind kind, Rng& rng) {
  switch (kind) {
    case ContentKind::kZero:
      std::memset(page, 0, kPageSize);
      return;
    case ContentKind::kText:
      FillText(page, rng);
      return;
    case ContentKind::kBinary:
      FillBinary(page, rng);
      return;
    case ContentKind::kRandom:
      FillRandom(page, rng);
      return;
  }
}

ContentKind DrawFileContent(Rng& rng) {
  uint64_t r = rng.Below(100);
  if (r < 40) return ContentKind::kText;
  if (r < 75) return ContentKind::kBinary;
  if (r < 95) return ContentKind::kRandom;
  return ContentKind::kZero;
}

ContentKind DrawAnonContent(Rng& rng) {
  uint64_t r = rng.Below(100);
  if (r < 30) return ContentKind::kBinary;
  if (r < 55) return ContentKind::kText;
  if (r < 90) return ContentKind::kRandom;
  return ContentKind::kZero;
}

void CreateDiskImage(const std::string& path, uint64_t bytes, uint64_t seed) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error(ErrorKind::kIo,
                fmt::format("cannot create disk image {}: {}", tmp, std::strerror(errno)));
  }
  Rng rng(seed);
  std::vector<uint8_t> chunk(1 << 20);
  for (uint64_t done = 0; done < bytes;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), bytes - done));
    for (size_t off = 0; off + kPageSize <= n; off += kPageSize) {
      FillPage(chunk.data() + off, DrawFileContent(rng), rng);
    }
    if (::write(fd, chunk.data(), n) != static_cast<ssize_t>(n)) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(ErrorKind::kIo,
                  fmt::format("cannot write disk image {}: {}", tmp, std::strerror(err)));
    }
    done += n;
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error(ErrorKind::kIo,
                fmt::format("cannot finish disk image {}: {}", path, std::strerror(errno)));
  }
}

}  // namespace p2bmig::sim
