// BlockWriteTrace on a tracefs instance: block_rq_complete, filtered by
// device, read from trace_pipe; Drain() against the devices' I/O counters.

#include "xen/write_trace.h"

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "source/hint_free.h"

namespace p2bmig {

namespace {

std::atomic<int> g_instances{0};

void WriteTraceFile(const std::string& path, const std::string& value) {
  const int fd = open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0 || write(fd, value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    const int e = errno;
    if (fd >= 0) close(fd);
    throw Error(ErrorKind::kIo, fmt::format("write trace: cannot write \"{}\" to {}: {}", value,
                                            path, std::strerror(e)));
  }
  close(fd);
}

struct Device {
  std::string path;
  uint32_t major = 0, minor = 0;
  uint64_t writes_at_start = 0, discards_at_start = 0;
};

// Completed writes and discards of a block device (Documentation/block/stat.rst:
// field 5 is writes completed, field 12 discards completed).
std::pair<uint64_t, uint64_t> ReadIoCounters(const Device& d) {
  const std::string path = fmt::format("/sys/dev/block/{}:{}/stat", d.major, d.minor);
  std::ifstream in(path);
  std::vector<uint64_t> f;
  uint64_t v;
  while (in >> v) f.push_back(v);
  if (f.size() < 5) {
    throw Error(ErrorKind::kIo, fmt::format("write trace: cannot read {}", path));
  }
  return {f[4], f.size() >= 12 ? f[11] : 0};
}

}  // namespace

bool ParseRqCompleteLine(const std::string& line, TracedRequest* out) {
  static constexpr char kTag[] = "block_rq_complete: ";
  const size_t at = line.find(kTag);
  if (at == std::string::npos) return false;
  std::istringstream in(line.substr(at + sizeof(kTag) - 1));
  std::string dev, rwbs, tok;
  if (!(in >> dev >> rwbs)) return false;
  TracedRequest r;
  if (std::sscanf(dev.c_str(), "%u,%u", &r.major, &r.minor) != 2) return false;
  // Then "(cmd)", which may hold spaces, then "SECTOR + COUNT".
  if (!(in >> tok) || tok.empty() || tok[0] != '(') return false;
  while (tok.back() != ')') {
    if (!(in >> tok)) return false;
  }
  std::string plus;
  if (!(in >> r.sector >> plus >> r.nr_sectors) || plus != "+") return false;
  r.write = rwbs.find('W') != std::string::npos;
  r.discard = rwbs.find('D') != std::string::npos;
  *out = r;
  return true;
}

struct BlockWriteTrace::Impl {
  std::string instance;
  std::vector<Device> devices;
  int pipe_fd = -1;
  std::thread reader;
  std::atomic<bool> stop{false};

  std::mutex mu;
  std::condition_variable cv;
  Listener listener;
  std::vector<uint64_t> writes_seen, discards_seen;
  std::string failure;

  ~Impl() {
    stop = true;
    if (reader.joinable()) reader.join();
    if (pipe_fd >= 0) close(pipe_fd);
    if (!instance.empty()) {
      try {
        WriteTraceFile(instance + "/events/block/block_rq_complete/enable", "0");
      } catch (...) {
      }
      rmdir(instance.c_str());
    }
  }

  void Deliver(const TracedRequest& r) {
    const bool discard = r.discard && !r.write;
    for (size_t i = 0; i < devices.size(); ++i) {
      if (devices[i].major != r.major || devices[i].minor != r.minor) continue;
      Listener l;
      {
        std::lock_guard lock(mu);
        (discard ? discards_seen : writes_seen)[i]++;
        l = listener;
      }
      if (l && r.nr_sectors > 0)
        l(InvalidateOnlyEvent(static_cast<uint32_t>(i), r.sector, r.nr_sectors));
      cv.notify_all();
    }
  }

  void Read() {
    std::string pending;
    char buf[65536];
    while (!stop) {
      pollfd p{pipe_fd, POLLIN, 0};
      const int n = poll(&p, 1, 100);
      if (n <= 0) continue;
      const ssize_t got = read(pipe_fd, buf, sizeof(buf));
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (got <= 0) {
        std::lock_guard lock(mu);
        failure = fmt::format("trace_pipe: {}", got < 0 ? std::strerror(errno) : "closed");
        cv.notify_all();
        return;
      }
      pending.append(buf, static_cast<size_t>(got));
      size_t start = 0, nl;
      while ((nl = pending.find('\n', start)) != std::string::npos) {
        TracedRequest r;
        if (ParseRqCompleteLine(pending.substr(start, nl - start), &r) && (r.write || r.discard)) {
          Deliver(r);
        }
        start = nl + 1;
      }
      pending.erase(0, start);
    }
  }
};

BlockWriteTrace::BlockWriteTrace(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BlockWriteTrace::~BlockWriteTrace() = default;

std::unique_ptr<BlockWriteTrace> BlockWriteTrace::Open(const std::vector<std::string>& devices) {
  auto impl = std::make_unique<Impl>();
  for (const std::string& path : devices) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) {
      throw Error(ErrorKind::kIo, fmt::format("write trace: {} is not a block device", path));
    }
    impl->devices.push_back(Device{path, major(st.st_rdev), minor(st.st_rdev)});
  }
  std::string root;
  for (const char* r : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}) {
    struct stat st;
    if (stat(fmt::format("{}/instances", r).c_str(), &st) == 0) {
      root = r;
      break;
    }
  }
  if (root.empty()) {
    throw Error(ErrorKind::kIo,
                "write trace: no tracefs (mount it on /sys/kernel/tracing, or debugfs on "
                "/sys/kernel/debug)");
  }
  const std::string instance =
      fmt::format("{}/instances/p2bmig-{}-{}", root, getpid(), g_instances.fetch_add(1));
  if (mkdir(instance.c_str(), 0700) != 0) {
    throw Error(ErrorKind::kIo,
                fmt::format("write trace: cannot create the tracefs instance {}: {}", instance,
                            std::strerror(errno)));
  }
  impl->instance = instance;
  const std::string event = instance + "/events/block/block_rq_complete";
  std::string filter;
  for (const Device& d : impl->devices) {
    // The tracepoint's dev is the kernel's dev_t: major << 20 | minor.
    filter += fmt::format("{}dev == {}", filter.empty() ? "" : " || ",
                          (uint64_t{d.major} << 20) | d.minor);
  }
  WriteTraceFile(instance + "/buffer_size_kb", "8192");
  WriteTraceFile(event + "/filter", filter);
  impl->pipe_fd = open((instance + "/trace_pipe").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (impl->pipe_fd < 0) {
    throw Error(ErrorKind::kIo, fmt::format("write trace: cannot open {}/trace_pipe: {}", instance,
                                            std::strerror(errno)));
  }
  WriteTraceFile(event + "/enable", "1");
  // Counters after enabling: a write completing in between is seen twice at
  // most (by the trace and in the counter), which Drain tolerates.
  impl->writes_seen.assign(impl->devices.size(), 0);
  impl->discards_seen.assign(impl->devices.size(), 0);
  for (Device& d : impl->devices) {
    std::tie(d.writes_at_start, d.discards_at_start) = ReadIoCounters(d);
  }
  Impl* raw = impl.get();
  impl->reader = std::thread([raw] { raw->Read(); });
  return std::unique_ptr<BlockWriteTrace>(new BlockWriteTrace(std::move(impl)));
}

void BlockWriteTrace::SetListener(Listener listener) {
  std::lock_guard lock(impl_->mu);
  impl_->listener = std::move(listener);
}

void BlockWriteTrace::Drain() {
  Impl& s = *impl_;
  std::vector<std::pair<uint64_t, uint64_t>> want;
  for (const Device& d : s.devices) {
    const auto [w, dis] = ReadIoCounters(d);
    want.emplace_back(w - d.writes_at_start, dis - d.discards_at_start);
  }
  std::unique_lock lock(s.mu);
  const bool caught_up = s.cv.wait_for(lock, drain_timeout, [&] {
    if (!s.failure.empty()) return true;
    for (size_t i = 0; i < want.size(); ++i) {
      if (s.writes_seen[i] < want[i].first || s.discards_seen[i] < want[i].second) return false;
    }
    return true;
  });
  if (!s.failure.empty()) throw Error(ErrorKind::kIo, "write trace: " + s.failure);
  if (!caught_up) {
    throw Error(ErrorKind::kIo,
                fmt::format("write trace: the trace of {} did not catch up with its write "
                            "counters within {} ms (events lost?)",
                            s.devices[0].path, drain_timeout.count()));
  }
}

uint64_t BlockWriteTrace::writes_seen() const {
  std::lock_guard lock(impl_->mu);
  uint64_t n = 0;
  for (uint64_t w : impl_->writes_seen) n += w;
  for (uint64_t d : impl_->discards_seen) n += d;
  return n;
}

}  // namespace p2bmig
