// `p2bmig send`: the source host. Boots a simulated guest with its disk on the
// shared storage, runs a workload, and migrates the guest to a receiver.

#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>

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

struct SendArgs {
  std::string to;
  std::string output;
  std::string memory = "512M";
  std::vector<std::string> disks;
  std::string memory_file;
  std::string workload = "fileserver";
  uint64_t seed = 1;
  std::string mode = "p2bmig";
  std::string rate = "1gbit";
  double connect_wait_s = 10;
  bool json = false;
  std::string cpus;
  std::optional<uint64_t> max_unfetched;
  bool progress = false;
};

// A one-line progress display on stderr: round, pages, link rate, and the
// time left in this round at the round's own page rate.
class ProgressLine {
 public:
  explicit ProgressLine(const ByteStream* link) : link_(link) {}
  ~ProgressLine() { std::fprintf(stderr, "\n"); }

  void Update(const SaveProgress& p) {
    using Clock = std::chrono::steady_clock;
    auto now = Clock::now();
    if (p.round != round_) {
      round_ = p.round;
      round_start_ = now;
    }
    bool done = p.round_sent == p.round_pages;
    if (now - last_ < std::chrono::milliseconds(250) && !done) return;
    last_ = now;
    double elapsed = std::chrono::duration<double>(now - start_).count();
    double in_round = std::chrono::duration<double>(now - round_start_).count();
    double link_rate = elapsed > 0 ? static_cast<double>(link_->bytes_written()) / elapsed : 0;
    double page_rate = in_round > 0 ? static_cast<double>(p.round_sent) / in_round : 0;
    double eta = page_rate > 0 ? static_cast<double>(p.round_pages - p.round_sent) / page_rate : 0;
    std::fprintf(
        stderr, "\r  round %d%s: %llu/%llu pages, %s/s on the link, %.1f s left   ", p.round,
        p.final_round ? " (guest paused)" : "", static_cast<unsigned long long>(p.round_sent),
        static_cast<unsigned long long>(p.round_pages), FormatBytes(link_rate).c_str(), eta);
  }

 private:
  const ByteStream* link_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point round_start_ = start_;
  std::chrono::steady_clock::time_point last_{};
  int round_ = 0;
};

void RunSend(const SendArgs& a) {
  if (a.to.empty() == a.output.empty()) {
    throw Error(ErrorKind::kInvalidArgument,
                "give exactly one of --to HOST:PORT and --output FILE");
  }
  PinToCpus(a.cpus);
  sim::SourceOptions opt;
  opt.guest.memory_pages = ParseSize(a.memory) / kPageSize;
  opt.guest.memory_path = a.memory_file;
  opt.guest.disk_paths = a.disks;
  opt.workload = a.workload;
  opt.seed = a.seed;
  opt.mode = sim::ParseMode(a.mode);
  if (opt.mode == sim::Mode::kLazy && a.to.empty()) {
    throw Error(ErrorKind::kInvalidArgument,
                "--mode lazy needs a receiver (--to): the target talks back to the source");
  }
  uint64_t rate = ParseRate(a.rate);
  opt.flow_control = !a.to.empty();  // a file carries no credits back
  // Lazy restore leaves fetch work for after the resume, so it can allow
  // more of it to be outstanding; the limit still keeps the target from
  // falling behind the stream, which would lengthen the downtime.
  opt.filter.max_unfetched_mappings = a.max_unfetched.value_or(
      opt.mode == sim::Mode::kLazy ? 4096 : FilterOptions{}.max_unfetched_mappings);
  sim::GetWorkload(a.workload);  // fail early on a bad name

  sim::SourceHost host(opt);
  spdlog::info("source: warming up guest ({} pages, workload {})", opt.guest.memory_pages,
               a.workload);
  host.WarmUp();

  std::unique_ptr<ByteStream> conn;
  if (!a.to.empty()) {
    conn = ConnectWithRetry(ParseEndpoint(a.to), a.connect_wait_s);
  } else {
    conn = OpenFileForWrite(a.output);
  }
  std::unique_ptr<ByteStream> limited;
  ByteStream* link = conn.get();
  if (rate != 0) {
    limited = NewRateLimitedStream(conn.get(), rate);
    link = limited.get();
  }
  spdlog::info("source: migrating to {} at {} ({} mode)", link->Describe(), FormatRate(rate),
               a.mode);
  sim::SourceReport report;
  {
    std::unique_ptr<ProgressLine> line;
    if (a.progress) line = std::make_unique<ProgressLine>(link);
    report = host.Migrate(link, line ? [&](const SaveProgress& p) { line->Update(p); }
                                     : std::function<void(const SaveProgress&)>{});
  }
  link->Flush();
  conn->CloseWrite();
  // Wait for the receiver to close its end: it has then consumed everything.
  uint8_t byte;
  if (!a.to.empty()) {
    try {
      conn->ReadSome(&byte, 1);
    } catch (const Error&) {
    }
  }
  host.guest().memory().Sync();
  if (a.json) {
    std::cout << SourceReportJson(report).dump() << std::endl;
  } else {
    bool p2b = report.mode == sim::Mode::kP2bmig;
    std::cout << fmt::format(
        "sent {} in {} rounds: {} pages as data, {} as mappings, {} as zero pages\n",
        FormatBytes(static_cast<double>(report.link_bytes)), report.save.rounds,
        p2b ? report.filter.pages_data : report.save.pages_sent, report.filter.pages_mapped,
        report.filter.pages_zero);
  }
}

}  // namespace

void AddSendCommand(CLI::App& app) {
  auto args = std::make_shared<SendArgs>();
  CLI::App* cmd = app.add_subcommand(
      "send", "Run a simulated guest and migrate it to a receiver (the source host)");
  cmd->add_option("--to", args->to, "Receiver to migrate to, HOST:PORT");
  cmd->add_option("--output", args->output, "Write the stream to a file instead (like xl save)");
  cmd->add_option("--memory", args->memory, "Guest memory size")->capture_default_str();
  cmd->add_option("--disk", args->disks, "Disk image on the shared storage (repeatable)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--memory-file", args->memory_file,
                  "Back guest memory by this file (to compare it afterwards)");
  cmd->add_option("--workload", args->workload,
                  "Workload: " + fmt::format("{}", fmt::join(sim::WorkloadNames(), ", ")))
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of the guest and its workload")
      ->capture_default_str();
  cmd->add_option("--mode", args->mode,
                  "baseline (stock pre-copy), p2bmig, or lazy (p2bmig, and the target resumes "
                  "the guest before every mapped page is fetched)")
      ->capture_default_str();
  cmd->add_option("--rate", args->rate, "Link speed cap, e.g. 1gbit, 10gbit, off")
      ->capture_default_str();
  cmd->add_option("--connect-wait", args->connect_wait_s,
                  "Seconds to keep trying to reach the receiver")
      ->capture_default_str();
  cmd->add_option("--cpus", args->cpus, "Run on these CPUs only (e.g. 0 or 0-1)");
  cmd->add_option("--max-unfetched", args->max_unfetched,
                  "Hold back mappings while the target has more than this many left to fetch "
                  "(0: no limit; default 1024, lazy mode 4096)");
  cmd->add_flag("--json", args->json, "Print statistics as one JSON object");
  cmd->add_flag("--progress", args->progress, "Show a progress line on stderr");
  cmd->callback([args] { RunSend(*args); });
}

}  // namespace p2bmig::cli
