#include "cancel.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include <pthread.h>
#include <unistd.h>

namespace p2bmig::cli {
namespace {

std::mutex mu;
ByteStream* registered_link = nullptr;
std::string command_name = "p2bmig";
std::string current_phase = "starting";
std::string cancel_signal;
std::string cancel_phase;

const char* SignalName(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }

}  // namespace

void StartSignalHandling(const std::string& what) {
  command_name = what;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      std::lock_guard lock(mu);
      if (!cancel_signal.empty()) continue;  // already cancelling
      cancel_signal = SignalName(sig);
      cancel_phase = current_phase;
      if (registered_link != nullptr) {
        registered_link->Abort();
        continue;
      }
      std::fprintf(stderr, "p2bmig: aborted: %s by %s in phase '%s' (nothing to undo)\n",
                   command_name.c_str(), cancel_signal.c_str(), current_phase.c_str());
      std::fflush(stderr);
      ::_exit(1);
    }
  }).detach();
}

void SetPhase(const std::string& phase) {
  {
    std::lock_guard lock(mu);
    current_phase = phase;
  }
  // Test hook, P2BMIG_TEST_STALL=PHASE_PREFIX:SECONDS: stall once on entering
  // a phase, so that a system test can kill, cut or corrupt something while
  // the migration is exactly there. The faults themselves are real.
  static const char* stall = std::getenv("P2BMIG_TEST_STALL");
  static std::atomic<bool> stalled{false};
  if (stall == nullptr || stalled) return;
  const std::string spec = stall;
  const size_t colon = spec.rfind(':');
  if (colon == std::string::npos || phase.rfind(spec.substr(0, colon), 0) != 0) return;
  if (stalled.exchange(true)) return;
  const double seconds = std::atof(spec.c_str() + colon + 1);
  std::fprintf(stderr, "p2bmig: %s: test: stalling %.1f s in phase %s\n", command_name.c_str(),
               seconds, phase.c_str());
  std::fflush(stderr);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

std::string Phase() {
  std::lock_guard lock(mu);
  return current_phase;
}

AbortOnSignal::AbortOnSignal(ByteStream* link) {
  std::lock_guard lock(mu);
  registered_link = link;
  if (!cancel_signal.empty()) link->Abort();  // arrived just before
}

AbortOnSignal::~AbortOnSignal() {
  std::lock_guard lock(mu);
  registered_link = nullptr;
}

std::string CancelSignal() {
  std::lock_guard lock(mu);
  return cancel_signal;
}

std::string CancelPhase() {
  std::lock_guard lock(mu);
  return cancel_phase;
}

}  // namespace p2bmig::cli
