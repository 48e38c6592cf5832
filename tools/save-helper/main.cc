// p2bmig-save-helper: the program libxl runs instead of libxl-save-helper when
// LIBXL_SAVE_HELPER names it. It wraps the real helper and copies (or, with
// P2BMIG_MODE=p2bmig, filters) the libxc stream; see src/xen/save_helper.h and
// docs/xen-integration.md.
//
// stdout is libxl's callback channel and belongs to the real helper: nothing
// here writes to it. Messages go to stderr.

#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <p2bmig/types.h>

#include "xen/helper_args.h"
#include "xen/save_helper.h"

namespace {

[[noreturn]] void ExitLike(const p2bmig::HelperOutcome& outcome) {
  std::fflush(stderr);
  if (outcome.signal != 0) {
    // Die of the same signal, so that libxl reports what really happened.
    std::signal(outcome.signal, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, outcome.signal);
    sigprocmask(SIG_UNBLOCK, &set, nullptr);
    raise(outcome.signal);
    _exit(128 + outcome.signal);
  }
  _exit(outcome.exit_code);
}

}  // namespace

int main(int argc, char** argv) {
  // Anything that logs through spdlog must not reach stdout.
  spdlog::set_default_logger(spdlog::stderr_color_st("p2bmig-save-helper"));
  std::vector<std::string> args(argv, argv + argc);
  try {
    p2bmig::SaveHelperConfig config = p2bmig::ConfigFromEnvironment();
    p2bmig::HelperArgs helper_args = p2bmig::ParseHelperArgs(args);
    if (config.mode == p2bmig::WrapMode::kExec || helper_args.checkpointed()) {
      p2bmig::ExecRealHelper(helper_args, config);
      return 127;
    }
    ExitLike(p2bmig::RunSaveHelper(helper_args, config));
  } catch (const p2bmig::Error& e) {
    fmt::print(stderr, "p2bmig-save-helper: {}\n", e.what());
    return 2;
  }
}
