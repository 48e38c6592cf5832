// `p2bmig receive`: the target host. Listens for one migration, resolves
// mappings from the shared storage and restores the guest's memory.

#include <iostream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <p2bmig/transport.h>
#include <p2bmig/types.h>

#include "commands.h"
#include "cpus.h"
#include "endpoint.h"
#include "report.h"
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
  std::string mode = "auto";
  std::string workload = "fileserver";
  uint64_t seed = 1;
  double after_s = 0.5;
};

void RunReceive(const ReceiveArgs& a) {
  if (a.listen.empty() == a.input.empty()) {
    throw Error(ErrorKind::kInvalidArgument,
                "give exactly one of --listen HOST:PORT and --input FILE");
  }
  PinToCpus(a.cpus);
  sim::TargetOptions opt;
  opt.memory_pages = ParseSize(a.memory) / kPageSize;
  opt.memory_path = a.memory_file;
  opt.disks = a.disks;
  opt.send_credits = !a.listen.empty();
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
  try {
    sim::TargetHost host(opt);
    std::unique_ptr<ByteStream> link;
    std::unique_ptr<TcpListener> listener;
    if (!a.listen.empty()) {
      Endpoint ep = ParseEndpoint(a.listen);
      listener = std::make_unique<TcpListener>(ep.host, ep.port);
      spdlog::info("target: listening on {}:{}", ep.host, listener->port());
      link = listener->Accept(a.timeout_s);
    } else {
      link = OpenFileForRead(a.input);
    }
    sim::TargetReport report = host.Receive(link.get());
    host.memory().Sync();
    // The resumed guest's own writes, to check the memory against the
    // source's (p2bmig demo does).
    if (report.lazy && !writes_path.empty()) sim::SaveGuestWrites(writes_path, report.guest_writes);
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
  } catch (...) {
    // Never leave a half-restored guest behind (invariant I6).
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
  cmd->callback([args] { RunReceive(*args); });
}

}  // namespace p2bmig::cli
