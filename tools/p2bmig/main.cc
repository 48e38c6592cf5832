// p2bmig: live migration of Xen guests on shared storage, sending page-cache
// pages as references to their disk blocks. This program holds the simulated
// host's source and target, the demo that compares them with stock pre-copy,
// and tools for streams.

#include <cstdio>

#include <malloc.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <p2bmig/types.h>

#include "commands.h"

int main(int argc, char** argv) {
  // A peer that goes away must show up as a write error, not kill us.
  ::signal(SIGPIPE, SIG_IGN);
  // Batches of pages are multi-MiB buffers made and freed all the time; keep
  // them in the heap instead of mapping fresh zeroed pages for each one.
  ::mallopt(M_MMAP_THRESHOLD, 64 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 256 << 20);
  auto logger = spdlog::stderr_color_mt("p2bmig");
  logger->set_pattern("%^%l%$: %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::warn);

  CLI::App app{
      "p2bmig - live migration of Xen guests whose disks are on shared storage.\n"
      "Pages the guest holds in its page cache travel as references to disk blocks,\n"
      "which the target reads from the shared storage itself.\n"};
  app.require_subcommand(1);
  app.failure_message(CLI::FailureMessage::help);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Log what happens")->configurable(false);
  app.set_version_flag("--version", "p2bmig 0.1.0");
  app.parse_complete_callback([&] {
    if (verbose) spdlog::set_level(spdlog::level::info);
  });
  p2bmig::cli::AddDemoCommand(app);
  p2bmig::cli::AddSendCommand(app);
  p2bmig::cli::AddReceiveCommand(app);
  p2bmig::cli::AddInspectCommand(app);
  p2bmig::cli::AddMakeDiskCommand(app);
  p2bmig::cli::AddAnalyzeCommand(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  } catch (const p2bmig::Error& e) {
    std::fprintf(stderr, "p2bmig: %s: %s\n", p2bmig::ErrorKindName(e.kind()), e.what());
    return e.kind() == p2bmig::ErrorKind::kInvalidArgument ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "p2bmig: %s\n", e.what());
    return 1;
  }
  return 0;
}
