// p2bmig-trackd: the dom0 daemon that keeps a p2b map per guest from the
// blkback completion tap and serves it to p2bmig-save-helper.
//
//   p2bmig-trackd [--tap /dev/xen-blkback-tap] [--socket /run/p2bmig/trackd.sock]
//                 [--foreground] [--pidfile FILE] [--log-level info]
//                 [--test-host FILE]
//
// Without --foreground it detaches (fork, setsid, stdio on /dev/null) once
// the tap and the socket are open, so that an init script can start it and
// know it is serving when the command returns (the pidfile is written by
// then); it then logs to syslog (daemon facility). With --foreground it logs
// to stderr. --pidfile writes the daemon's pid (removed on exit). SIGTERM or SIGINT stop it
// cleanly. Exit status: 0 after a stop, 1 if it could not start (message on stderr), 2 for a bad
// command line.
//
// Needs the patched xen-blkback (scripts/build-blkback-tap.sh), loaded with
// feature_persistent=0, and root. --test-host FILE replaces Xen (domains,
// xenstore, M2P) by a text file: for tests on machines without Xen only.
// Protocol and operation: docs/xen-integration.md, "p2bmig-trackd".

#include <csignal>
#include <cstdio>
#include <fstream>
#include <string>

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <p2bmig/types.h>

#include "xen/trackd.h"
#include "xen/trackd_host.h"

namespace {

int g_stop_pipe[2] = {-1, -1};

void OnStop(int) {
  const char c = 's';
  [[maybe_unused]] ssize_t n = write(g_stop_pipe[1], &c, 1);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"p2bmig-trackd: keeps the p2b maps of this dom0's guests"};
  p2bmig::TrackdOptions opt;
  bool foreground = false;
  std::string pidfile;
  std::string test_host;
  std::string level = "info";
  app.add_option("--tap", opt.tap_path, "the blkback tap device (or a FIFO in tests)")
      ->capture_default_str();
  app.add_option("--socket", opt.socket_path, "the Unix socket to serve")->capture_default_str();
  app.add_flag("--foreground", foreground, "do not detach; log to stderr");
  app.add_option("--pidfile", pidfile, "write the daemon's pid to this file");
  app.add_option("--log-level", level, "trace, debug, info, warn, error")->capture_default_str();
  app.add_option("--housekeeping-ms", opt.housekeeping_ms, "how often to look for dead domains")
      ->capture_default_str();
  app.add_option("--test-host", test_host,
                 "describe domains, vbds and M2P in a text file instead of asking Xen (tests)");
  CLI11_PARSE(app, argc, argv);

  auto console = spdlog::stderr_color_st("p2bmig-trackd");
  spdlog::set_default_logger(console);
  spdlog::set_level(spdlog::level::from_str(level));

  std::unique_ptr<p2bmig::TrackdHost> host;
  std::unique_ptr<p2bmig::Trackd> daemon;
  try {
    host = test_host.empty() ? p2bmig::OpenXenTrackdHost() : p2bmig::OpenFileTrackdHost(test_host);
    daemon = std::make_unique<p2bmig::Trackd>(opt, host.get());
  } catch (const std::exception& e) {
    fmt::print(stderr, "p2bmig-trackd: {}\n", e.what());
    return 1;
  }

  if (pipe2(g_stop_pipe, O_CLOEXEC) != 0) {
    std::perror("p2bmig-trackd: pipe");
    return 1;
  }
  auto write_pidfile = [&](pid_t pid) {
    if (pidfile.empty()) return true;
    std::ofstream out(pidfile);
    out << pid << "\n";
    out.close();
    if (!out) fmt::print(stderr, "p2bmig-trackd: cannot write {}\n", pidfile);
    return static_cast<bool>(out);
  };
  if (!foreground) {
    const pid_t pid = fork();
    if (pid < 0) {
      std::perror("p2bmig-trackd: fork");
      return 1;
    }
    // The parent writes the pidfile, so that it exists when the command
    // returns.
    if (pid > 0) _exit(write_pidfile(pid) ? 0 : 1);
    setsid();
    const int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
      if (null > 2) close(null);
    }
    spdlog::drop_all();
    auto syslog = spdlog::syslog_logger_st("p2bmig-trackd", "p2bmig-trackd", LOG_PID, LOG_DAEMON);
    spdlog::set_default_logger(syslog);
    spdlog::set_level(spdlog::level::from_str(level));
  }
  if (foreground && !write_pidfile(getpid())) return 1;
  struct sigaction sa = {};
  sa.sa_handler = OnStop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  int status = 0;
  try {
    daemon->Run(g_stop_pipe[0]);
    const p2bmig::TrackdStats st = daemon->stats();
    spdlog::info("stopping: {} records, {} events, {} loss reports, {} malformed", st.records,
                 st.events, st.lost_reports, st.malformed);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    status = 1;
  }
  daemon.reset();
  if (!pidfile.empty()) unlink(pidfile.c_str());
  return status;
}
