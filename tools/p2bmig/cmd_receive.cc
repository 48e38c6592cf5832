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
  opt.resolver.fetch.max_gap_blocks = a.max_gap;
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
    }
  } catch (...) {
    // Never leave a half-restored guest behind (invariant I6).
    if (!a.memory_file.empty()) ::unlink(a.memory_file.c_str());
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
  cmd->add_flag("--json", args->json, "Print statistics as one JSON object");
  cmd->callback([args] { RunReceive(*args); });
}

}  // namespace p2bmig::cli
