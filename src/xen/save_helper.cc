// The wrapper save/restore helper: process plumbing and the stream copy.

#include "xen/save_helper.h"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p2bmig/block_store.h>
#include <p2bmig/byte_stream.h>
#include <p2bmig/filter.h>
#include <p2bmig/io_event.h>
#include <p2bmig/p2b_map.h>
#include <p2bmig/resolver.h>
#include <p2bmig/stream.h>

#include "xen/stream_copy.h"
#include "xen/tracking.h"
#include "xen/xen_domain.h"

extern char** environ;

namespace p2bmig {

namespace {

// Set in the real helper's environment: a wrapper that finds it was started
// by itself (P2BMIG_REAL_SAVE_HELPER pointing back at it) and would recurse.
constexpr char kWrappedEnv[] = "P2BMIG_WRAPPED";

void Log(const std::string& msg) { fmt::print(stderr, "p2bmig-save-helper: {}\n", msg); }

// --- Signals ---------------------------------------------------------------
// The handler only uses async-signal-safe calls on these.
volatile sig_atomic_t g_child = 0;      // the real helper, once started
volatile sig_atomic_t g_pending = 0;    // a signal that came before it
volatile sig_atomic_t g_io_fd = -1;     // the real io_fd
volatile sig_atomic_t g_devnull = -1;   // /dev/null, read-only
volatile sig_atomic_t g_signalled = 0;  // we were asked to stop

void OnStopSignal(int sig) {
  const int saved = errno;
  g_signalled = sig;
  if (g_child > 0) {
    kill(static_cast<pid_t>(g_child), sig);
  } else {
    g_pending = sig;
  }
  // Like the real save helper: a copy blocked on io_fd is interrupted, and
  // its retry fails (EBADF on write, end of file on read).
  if (g_io_fd >= 0 && g_devnull >= 0) dup2(g_devnull, g_io_fd);
  errno = saved;
}

// Installs the forwarding handlers (and ignores SIGPIPE, so that a closed
// pipe or socket is an error to handle, not death) and undoes it all.
class SignalScope {
 public:
  explicit SignalScope(int io_fd) {
    g_child = 0;
    g_pending = 0;
    g_signalled = 0;
    g_devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    g_io_fd = io_fd;
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    // No SA_RESTART: a blocked read or write returns EINTR, and the retry
    // sees the dup2'd io_fd.
    sigaction(SIGTERM, &sa, &old_term_);
    sigaction(SIGINT, &sa, &old_int_);
    struct sigaction ign;
    std::memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old_pipe_);
  }
  ~SignalScope() {
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGPIPE, &old_pipe_, nullptr);
    g_io_fd = -1;
    g_child = 0;
    if (g_devnull >= 0) close(g_devnull);
    g_devnull = -1;
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

  // What the real helper must start with: the dispositions we found.
  const struct sigaction& old_pipe() const { return old_pipe_; }

 private:
  struct sigaction old_term_;
  struct sigaction old_int_;
  struct sigaction old_pipe_;
};

// argv and envp for execve, built before fork (the child may only make
// async-signal-safe calls).
struct ExecVector {
  std::vector<std::string> argv_s;
  std::vector<std::string> env_s;
  std::vector<char*> argv;
  std::vector<char*> envp;

  ExecVector(const HelperArgs& args, const std::string& real_helper) {
    argv_s = args.argv;
    argv_s[0] = real_helper;
    for (char** e = environ; *e != nullptr; ++e) env_s.emplace_back(*e);
    env_s.push_back(std::string(kWrappedEnv) + "=1");
    for (auto& s : argv_s) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (auto& s : env_s) envp.push_back(s.data());
    envp.push_back(nullptr);
  }
};

void WriteAllRaw(int fd, const char* msg) {
  size_t len = std::strlen(msg);
  while (len > 0) {
    const ssize_t n = write(fd, msg, len);
    if (n <= 0) return;
    msg += n;
    len -= static_cast<size_t>(n);
  }
}

int WaitChild(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

std::string DescribeStatus(int status) {
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
  return fmt::format("exit status {}", WEXITSTATUS(status));
}

}  // namespace

std::vector<std::string> SplitDiskList(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    if (comma > start) out.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

SaveHelperConfig ConfigFromEnvironment() {
  SaveHelperConfig c;
  const char* mode = std::getenv("P2BMIG_MODE");
  const std::string m = mode == nullptr ? "" : mode;
  if (m.empty() || m == "off") {
    c.mode = WrapMode::kOff;
  } else if (m == "exec") {
    c.mode = WrapMode::kExec;
  } else if (m == "p2bmig") {
    c.mode = WrapMode::kP2bmig;
  } else {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("P2BMIG_MODE is \"{}\"; expected off, exec or p2bmig", m));
  }
  if (const char* real = std::getenv("P2BMIG_REAL_SAVE_HELPER"); real != nullptr && *real) {
    c.real_helper = real;
  }
  if (const char* disks = std::getenv("P2BMIG_DISKS"); disks != nullptr) {
    c.disks = SplitDiskList(disks);
  }
  c.tracking = TrackingConfigFromEnvironment();
  if (std::getenv(kWrappedEnv) != nullptr) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("started by p2bmig-save-helper itself: P2BMIG_REAL_SAVE_HELPER "
                            "({}) must name Xen's libxl-save-helper, not the wrapper",
                            c.real_helper));
  }
  return c;
}

void ExecRealHelper(const HelperArgs& args, const SaveHelperConfig& config) {
  ExecVector ev(args, config.real_helper);
  execve(ev.argv[0], ev.argv.data(), ev.envp.data());
  Log(fmt::format("cannot run {}: {}", config.real_helper, std::strerror(errno)));
}

HelperOutcome RunSaveHelper(const HelperArgs& args, const SaveHelperConfig& config,
                            const SaveHelperHooks& hooks) {
  HelperOutcome outcome;
  const bool save = args.op == HelperOp::kSave;
  const bool p2bmig = config.mode == WrapMode::kP2bmig;
  auto fail_early = [&](const std::string& msg) {
    Log(msg);
    outcome.exit_code = 1;
    outcome.error = msg;
    return outcome;
  };
  if (config.mode == WrapMode::kExec || args.checkpointed()) {
    return fail_early("internal: RunSaveHelper called for a stream it must not copy");
  }
  if (access(config.real_helper.c_str(), X_OK) != 0) {
    return fail_early(
        fmt::format("cannot run the real save helper {}: {} (set "
                    "P2BMIG_REAL_SAVE_HELPER)",
                    config.real_helper, std::strerror(errno)));
  }

  // Everything that can fail on our side is opened before the real helper
  // starts: on save the guest is then still running untouched.
  std::unique_ptr<Domain> domain;
  std::unique_ptr<BlockStore> store;
  uint64_t restore_pfns = 0;  // the resolver's pfn bound
  Tracking tracking;
  try {
    if (p2bmig && save) {
      domain = hooks.open_domain ? hooks.open_domain(args.domid, config.disks)
                                 : XenDomain::Open(args.domid, config.disks);
      tracking = OpenTracking(args.domid, domain->nr_pfns(), config.disks, config.tracking);
      Log(fmt::format("save of domain {}: {}", args.domid, tracking.description));
    } else if (p2bmig) {
      restore_pfns = hooks.restore_pfn_bound ? hooks.restore_pfn_bound(args.domid)
                                             : XenRestorePfnBound(args.domid);
      store = OpenBlockStore(config.disks);
    }
  } catch (const Error& e) {
    return fail_early(
        fmt::format("{} of domain {}: {}", HelperOpName(args.op), args.domid, e.what()));
  }

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return fail_early(fmt::format("pipe: {}", std::strerror(errno)));
  // The real helper writes the stream on save and reads it on restore.
  const int child_end = save ? fds[1] : fds[0];
  int our_end = save ? fds[0] : fds[1];

  ExecVector ev(args, config.real_helper);
  SignalScope signals(args.io_fd);
  sigset_t stop_set, old_mask;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGTERM);
  sigaddset(&stop_set, SIGINT);
  // Held back across fork: a signal then waits until g_child is known.
  sigprocmask(SIG_BLOCK, &stop_set, &old_mask);
  const pid_t pid = fork();
  if (pid == 0) {
    // The real helper: same fd number for io_fd, now our pipe (dup2 clears
    // close-on-exec); signal dispositions and mask as we found them.
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGTERM, &dfl, nullptr);
    sigaction(SIGINT, &dfl, nullptr);
    sigaction(SIGPIPE, &signals.old_pipe(), nullptr);
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    if (dup2(child_end, args.io_fd) < 0) _exit(127);
    execve(ev.argv[0], ev.argv.data(), ev.envp.data());
    WriteAllRaw(2, "p2bmig-save-helper: execve of the real save helper failed\n");
    _exit(127);
  }
  if (pid < 0) {
    const int e = errno;
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    close(fds[0]);
    close(fds[1]);
    return fail_early(fmt::format("fork: {}", std::strerror(e)));
  }
  close(child_end);
  g_child = pid;
  sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  if (g_pending != 0) kill(pid, g_pending);

  bool stopped_by_us = false;
  {
    auto io = NewFdByteStream(args.io_fd, false, fmt::format("io_fd {}", args.io_fd));
    auto pipe = NewFdByteStream(our_end, true, "pipe to the real save helper");
    our_end = -1;
    try {
      if (save && !p2bmig) {
        CopyToEnd(pipe.get(), io.get());
      } else if (save) {
        StreamWriter writer(io.get());
        Filter filter(tracking.map.get(), domain.get(), tracking.tap.get(), &writer);
        std::unique_ptr<RecordSink> front;  // hint-free mode: proposes entries
        if (tracking.wrap_filter) front = tracking.wrap_filter(&filter);
        StreamReader reader(pipe.get());
        Pump(&reader, front ? front.get() : &filter);
        // libxc writes nothing after END; pass on whatever comes all the same.
        if (uint64_t extra = CopyToEnd(pipe.get(), io.get()); extra > 0) {
          Log(fmt::format("{} byte(s) after the libxc END record passed on as they were", extra));
        }
        const FilterStats st = filter.stats();
        Log(
            fmt::format("save of domain {}: pages_in={} data={} mapped={} zero={} resent={} "
                        "link_bytes={}",
                        args.domid, st.pages_in, st.pages_data, st.pages_mapped, st.pages_zero,
                        st.pages_resent, io->bytes_written()));
      } else if (!p2bmig) {
        CopyLibxcStream(io.get(), pipe.get());
      } else {
        StreamWriter writer(pipe.get());
        ResolverOptions resolver_options;
        resolver_options.nr_pfns = restore_pfns;
        Resolver resolver(store.get(), &writer, resolver_options);
        StreamReader reader(io.get());
        Pump(&reader, &resolver);
        const ResolverStats st = resolver.stats();
        Log(
            fmt::format("restore of domain {}: data={} mapped={} zero={} nas_bytes={} "
                        "link_bytes={}",
                        args.domid, st.pages_data, st.pages_mapped, st.pages_zero, st.nas_bytes,
                        io->bytes_read()));
      }
      // Restore: the real helper sees the end of its stream here.
      pipe->CloseWrite();
    } catch (const std::exception& e) {
      outcome.error = e.what();
      if (g_signalled != 0) {
        outcome.error = fmt::format("stopped by signal {} ({})", int{g_signalled}, e.what());
      }
      Log(fmt::format("{} of domain {} failed: {}", HelperOpName(args.op), args.domid,
                      outcome.error));
      // Make the real helper give up too. On save its SIGTERM handler makes
      // libxc's writes fail (libxl then resumes the guest); on restore the
      // end of its stream, when our end of the pipe closes below, is enough
      // and lets it report the failure to libxl itself.
      if (save && g_signalled == 0) {
        kill(pid, SIGTERM);
        stopped_by_us = true;
      }
    }
  }  // closes our end of the pipe
  if (g_signalled != 0 && outcome.error.empty()) {
    // libxl asked to stop; the copy may have ended cleanly all the same, but
    // the operation did not.
    outcome.error = fmt::format("stopped by signal {}", int{g_signalled});
    Log(fmt::format("{} of domain {}: {}", HelperOpName(args.op), args.domid, outcome.error));
  }

  const int status = WaitChild(pid);
  g_child = 0;
  if (status < 0) {
    outcome.exit_code = 1;
    if (outcome.error.empty()) outcome.error = "waitpid failed";
    return outcome;
  }
  if (WIFSIGNALED(status) && !(stopped_by_us && WTERMSIG(status) == SIGTERM)) {
    outcome.signal = WTERMSIG(status);
  } else if (WIFSIGNALED(status)) {
    outcome.exit_code = 1;  // our own failure, reported above
  } else {
    outcome.exit_code = WEXITSTATUS(status);
    if (outcome.exit_code == 0 && !outcome.error.empty()) outcome.exit_code = 1;
  }
  if (status != 0) Log(fmt::format("the real save helper ended: {}", DescribeStatus(status)));
  return outcome;
}

}  // namespace p2bmig
