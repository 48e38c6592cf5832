// `p2bmig receive`: the target host. Listens for one migration, resolves
// mappings from the shared storage and restores the guest's memory.

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <p2bmig/transport.h>
#include <p2bmig/types.h>

#include "cancel.h"
#include "commands.h"
#include "cpus.h"
#include "endpoint.h"
#include "link_security.h"
#include "report.h"
#include "sim/fetch_credits.h"
#include "sim/resumed_guest.h"
#include "sim/sim_host.h"
#include "units.h"

namespace p2bmig::cli {
namespace {

struct ReceiveArgs {
  std::string listen;
  std::string input;
  std::string memory = "512M";
  std::vector<std::string> disks;
  std::string memory_file;
  double timeout_s = 120;
  bool json = false;
  std::string cpus;
  uint32_t max_gap = FetchOptions{}.max_gap_blocks;
  LinkSecurityArgs security;
  std::string mode = "auto";
  std::string workload = "fileserver";
  uint64_t seed = 1;
  double after_s = 0.5;
};

// Accepts connections until one passes authentication or `timeout_s` ends
// (<= 0: forever). A peer that fails is refused and we go on listening: a
// stranger must not be able to cancel a migration by connecting first.
std::unique_ptr<ByteStream> AcceptAuthenticated(TcpListener* listener, double timeout_s,
                                                const TcpOptions& options) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  std::string refused;
  for (;;) {
    double left = timeout_s;
    if (timeout_s > 0) {
      left = std::chrono::duration<double>(deadline - Clock::now()).count();
      if (left <= 0) {
        throw Error(
            ErrorKind::kNetwork,
            fmt::format("no authenticated source within {} s (refused: {})", timeout_s, refused));
      }
    }
    try {
      return listener->Accept(left, options);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kAuthentication) {
        if (refused.empty()) throw;
        throw Error(e.kind(), fmt::format("{} (refused before: {})", e.what(), refused));
      }
      refused = e.what();
      std::fprintf(stderr, "p2bmig: target: refused a connection: %s\n", e.what());
    }
  }
}

// Phase names for the records that start a new one on the target.
const char* PhaseAfter(uint32_t type, bool seen_tsc) {
  switch (type) {
    case rec::kX86TscInfo:
      return "stop-and-copy (device state)";
    case rec::kEnd:
      return "after the last byte (committing)";
    default:
      return seen_tsc ? "stop-and-copy (device state)" : "receiving memory (pre-copy)";
  }
}

void RunReceive(const ReceiveArgs& a) {
  StartSignalHandling("target");
  if (a.listen.empty() == a.input.empty()) {
    throw Error(ErrorKind::kInvalidArgument,
                "give exactly one of --listen HOST:PORT and --input FILE");
  }
  PinToCpus(a.cpus);
  sim::TargetOptions opt;
  opt.memory_pages = ParseSize(a.memory) / kPageSize;
  // The guest's memory is written under a temporary name and gets its own
  // only when the migration commits: whatever kills us, a file by that name
  // is a complete guest. A leftover of a killed receiver goes now.
  const std::string partial = a.memory_file.empty() ? "" : a.memory_file + ".partial";
  if (!partial.empty()) ::unlink(partial.c_str());
  opt.memory_path = partial;
  opt.disks = a.disks;
  opt.send_credits = !a.listen.empty();
  opt.resolver.fetch.max_gap_blocks = a.max_gap;
  opt.workload = a.workload;
  opt.seed = a.seed;
  opt.run_after_s = a.after_s;
  // Lazy restore needs the connection's back channel; "auto" follows the
  // source's offer.
  if (a.mode != "auto") sim::ParseMode(a.mode);
  opt.allow_lazy = !a.listen.empty() && (a.mode == "auto" || a.mode == "lazy");
  opt.lazy_required = a.mode == "lazy";
  if (opt.lazy_required && a.listen.empty()) {
    throw Error(ErrorKind::kInvalidArgument, "--mode lazy needs --listen");
  }
  const std::string writes_path = a.memory_file.empty() ? "" : a.memory_file + ".guest-writes";
  opt.on_resume = [] { SetPhase("lazy restore (guest running here, pages missing)"); };
  bool seen_tsc = false;
  opt.on_record = [&](uint32_t type, bool before) {
    if (before && (type == rec::kX86TscInfo || type == rec::kEnd) && !seen_tsc) {
      SetPhase(type == rec::kEnd ? "draining the fetch queue (at END)"
                                 : "draining the fetch queue (guest paused on the source)");
    } else if (before && type == rec::kEnd) {
      SetPhase("draining the fetch queue (at END)");
    } else if (!before) {
      if (type == rec::kX86TscInfo) seen_tsc = true;
      SetPhase(PhaseAfter(type, seen_tsc));
    }
  };
  std::unique_ptr<TlsContext> tls;
  std::unique_ptr<ByteStream> link;
  std::unique_ptr<TcpListener> listener;
  Endpoint ep;
  if (!a.listen.empty()) {
    ep = ParseEndpoint(a.listen);
    tls = MakeTlsContext(a.security, TlsRole::kServer);
  }
  // The shared storage is reached before the source arrives (NFS takes a
  // moment to mount); the guest's memory only once it is there.
  sim::TargetHost host(opt);
  if (!a.listen.empty()) {
    SetPhase("waiting for the source");
    listener = std::make_unique<TcpListener>(ep.host, ep.port);
    spdlog::info("target: listening on {}:{}{}", ep.host, listener->port(),
                 tls ? " (" + tls->Describe() + ")" : "");
    link = AcceptAuthenticated(listener.get(), a.timeout_s, LinkOptions(a.security, tls.get()));
  } else {
    link = OpenFileForRead(a.input);
  }
  // From here on a signal aborts the link and the error path below cleans up.
  AbortOnSignal abort_on_signal(link.get());
  SetPhase("before the first round");
  bool committed = false;
  try {
    // Only an authenticated source gets us to create the guest's memory.
    sim::TargetReport report = host.Receive(link.get());
    SetPhase("after the last byte (committing)");
    host.memory().Sync();
    // The resumed guest's own writes, to check the memory against the
    // source's (p2bmig demo does).
    if (report.lazy && !writes_path.empty()) sim::SaveGuestWrites(writes_path, report.guest_writes);
    if (!partial.empty() && ::rename(partial.c_str(), a.memory_file.c_str()) != 0) {
      throw Error(ErrorKind::kIo, fmt::format("cannot rename {} to {}: {}", partial, a.memory_file,
                                              std::strerror(errno)));
    }
    if (report.lazy && report.source_lost) {
      // Every page came from the shared storage, verified against its hash,
      // and the guest runs here; the source, which had acknowledged lazy
      // restore, keeps its copy paused and reports failure.
      spdlog::warn(
          "target: the source went away during lazy restore; the guest is complete "
          "here, but the source cannot be told (it keeps its copy paused)");
    } else if (!a.listen.empty()) {
      sim::SendCommit(link.get());
    }
    committed = true;  // the guest is ours now, whatever happens next
    link->CloseWrite();
    if (a.json) {
      std::cout << TargetReportJson(report).dump() << std::endl;
    } else {
      std::cout << fmt::format(
          "restored {} pages; {} fetched from {} ({} in {} reads); waited {:.3f} s for the "
          "fetch queue\n",
          report.pages_written, report.resolver.fetches_applied, report.store,
          FormatBytes(static_cast<double>(report.resolver.nas_bytes)), report.resolver.nas_reads,
          report.resolver.drain_wait_s);
      if (report.lazy) {
        std::cout << fmt::format(
            "lazy restore: {} pages missing at resume, all present {:.3f} s later; {} faults\n",
            report.lazy_stats.missing_at_resume,
            static_cast<double>(report.all_present_ns - report.resume_ns) / 1e9,
            report.lazy_stats.faults);
      }
    }
  } catch (const Error& e) {
    if (committed) throw;
    // Never leave a half-restored guest behind (invariant I6).
    if (!partial.empty()) ::unlink(partial.c_str());
    if (!a.memory_file.empty()) ::unlink(a.memory_file.c_str());
    if (!writes_path.empty()) ::unlink(writes_path.c_str());
    const std::string phase = CancelSignal().empty() ? Phase() : CancelPhase();
    std::fprintf(stderr, "p2bmig: target: migration failed in phase '%s'; guest memory discarded\n",
                 phase.c_str());
    const std::string signal = CancelSignal();
    if (!signal.empty()) {
      throw Error(ErrorKind::kAborted,
                  fmt::format("target: cancelled by {} in phase '{}'", signal, CancelPhase()));
    }
    throw Error(e.kind(), fmt::format("target, in phase '{}': {}", phase, e.what()));
  } catch (...) {
    if (committed) throw;
    if (!partial.empty()) ::unlink(partial.c_str());
    if (!a.memory_file.empty()) ::unlink(a.memory_file.c_str());
    if (!writes_path.empty()) ::unlink(writes_path.c_str());
    throw;
  }
}

}  // namespace

void AddReceiveCommand(CLI::App& app) {
  auto args = std::make_shared<ReceiveArgs>();
  CLI::App* cmd = app.add_subcommand(
      "receive", "Receive one migration into a simulated guest (the target host)");
  cmd->add_option("--listen", args->listen, "Address to listen on, HOST:PORT");
  cmd->add_option("--input", args->input, "Read the stream from a file instead (like xl restore)");
  cmd->add_option("--memory", args->memory, "Guest memory size")->capture_default_str();
  cmd->add_option("--disk", args->disks,
                  "The guest's disk as this host reaches it: a path or an nfs:// URL (repeatable, "
                  "in the guest's disk order)")
      ->required();
  cmd->add_option("--memory-file", args->memory_file, "Back guest memory by this file");
  cmd->add_option("--timeout", args->timeout_s, "Seconds to wait for the source to connect")
      ->capture_default_str();
  cmd->add_option("--cpus", args->cpus, "Run on these CPUs only (e.g. 1)");
  cmd->add_option("--max-gap", args->max_gap,
                  "Read up to this many unneeded blocks to join two reads into one")
      ->capture_default_str();
  cmd->add_option("--mode", args->mode,
                  "auto (as the source offers), lazy (require lazy restore), or p2bmig / "
                  "baseline (resume only once memory is complete)")
      ->capture_default_str();
  cmd->add_option("--workload", args->workload,
                  "Lazy restore: the workload whose memory accesses the resumed guest runs")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Lazy restore: seed of the resumed guest's workload")
      ->capture_default_str();
  cmd->add_option("--after", args->after_s,
                  "Lazy restore: seconds the guest keeps running once every page is present")
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "Print statistics as one JSON object");
  AddLinkSecurityOptions(cmd, &args->security, TlsRole::kServer);
  cmd->callback([args] { RunReceive(*args); });
}

}  // namespace p2bmig::cli
