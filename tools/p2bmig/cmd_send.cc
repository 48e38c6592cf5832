// `p2bmig send`: the source host. Boots a simulated guest with its disk on the
// shared storage, runs a workload, and migrates the guest to a receiver.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <p2bmig/hash.h>
#include <p2bmig/transport.h>
#include <p2bmig/types.h>

#include "cancel.h"
#include "commands.h"
#include "cpus.h"
#include "endpoint.h"
#include "link_security.h"
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
  // 64 MiB of reads: enough to keep a 1 Gbit/s share busy across the credit
  // loop's round trip (4 MiB, the filter's default, halved the NAS's rate).
  uint64_t max_unfetched = 16384;
  uint64_t max_unfetched_at_pause = sim::SourceOptions{}.max_unfetched_at_pause;
  bool progress = false;
  LinkSecurityArgs security;
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

// What the guest's memory holds when the migration starts, for the lower
// bound on its migration time: zero pages (nobody needs to send them) and
// non-zero pages that equal their p2b map block (page cache the target can
// read from the shared storage). Counted with the guest quiescent, between
// warm-up and migration.
struct MemoryCensus {
  uint64_t zero_pages = 0;
  uint64_t cache_pages = 0;
};

MemoryCensus TakeCensus(sim::SourceHost& host) {
  MemoryCensus c;
  sim::GuestMemory& mem = host.guest().memory();
  constexpr uint64_t kHashMask = (uint64_t{1} << P2bMap::kHashBits) - 1;
  for (Pfn pfn = 0; pfn < mem.nr_pages(); ++pfn) {
    const uint8_t* page = mem.page(pfn);
    if (IsZeroPage(page)) {
      ++c.zero_pages;
    } else if (auto e = host.map().Lookup(pfn); e && (PageHash(page) & kHashMask) == e->hash48) {
      ++c.cache_pages;
    }
  }
  return c;
}

// Phase names, as errors report them.
std::string RoundPhase(const SaveProgress& p) {
  if (!p.final_round) return fmt::format("pre-copy round {}", p.round);
  return p.round_sent < p.round_pages ? "stop-and-copy (guest paused)"
                                      : "stop-and-copy (device state and end of stream)";
}

void RunSend(const SendArgs& a) {
  StartSignalHandling("source");
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
  opt.wait_for_commit = !a.to.empty();
  opt.filter.max_unfetched_mappings = a.max_unfetched;
  opt.max_unfetched_at_pause = std::min(a.max_unfetched_at_pause, a.max_unfetched);
  sim::GetWorkload(a.workload);  // fail early on a bad name
  std::unique_ptr<TlsContext> tls;
  std::optional<Endpoint> endpoint;
  if (!a.to.empty()) {
    endpoint = ParseEndpoint(a.to);
    tls = MakeTlsContext(a.security, TlsRole::kClient);
  }

  SetPhase("boot");
  sim::SourceHost host(opt);
  spdlog::info("source: warming up guest ({} pages, workload {})", opt.guest.memory_pages,
               a.workload);
  SetPhase("warm-up");
  host.WarmUp();
  const MemoryCensus census = TakeCensus(host);

  std::unique_ptr<ByteStream> conn;
  if (endpoint) {
    SetPhase(fmt::format("connecting to {}", a.to));
    try {
      conn = ConnectWithRetry(*endpoint, a.connect_wait_s, LinkOptions(a.security, tls.get()));
    } catch (const Error& e) {
      throw Error(e.kind(), fmt::format("source, in phase '{}' (the guest was not paused and runs "
                                        "on): {}",
                                        Phase(), e.what()));
    }
  } else {
    conn = OpenFileForWrite(a.output);
  }
  AbortOnSignal abort_on_signal(conn.get());
  std::unique_ptr<ByteStream> limited;
  ByteStream* link = conn.get();
  if (rate != 0) {
    limited = NewRateLimitedStream(conn.get(), rate);
    link = limited.get();
  }
  spdlog::info("source: migrating to {} at {} ({} mode{})", link->Describe(), FormatRate(rate),
               a.mode, tls ? ", " + tls->Describe() : "");
  SetPhase("before the first round");
  sim::SourceReport report;
  try {
    std::unique_ptr<ProgressLine> line;
    if (a.progress) line = std::make_unique<ProgressLine>(link);
    report = host.Migrate(link, [&](const SaveProgress& p) {
      SetPhase(RoundPhase(p));
      if (line) line->Update(p);
      // The last page of the paused round is out: what remains is device
      // state, END, and the target's commit.
      if (p.final_round && p.round_sent == p.round_pages) {
        SetPhase("after the last page (waiting for the target to commit)");
      }
    });
  } catch (const Error& e) {
    const std::string signal = CancelSignal();
    const std::string phase = signal.empty() ? Phase() : CancelPhase();
    if (host.guest_kept_paused()) {
      // Lazy restore after the handshake: the target may run the guest.
      std::fprintf(stderr,
                   "p2bmig: source: migration failed in phase '%s' after the target took lazy "
                   "restore up; the guest stays paused here\n",
                   phase.c_str());
      host.guest().memory().Sync();
      throw Error(e.kind(), fmt::format("source, in phase '{}': {}", phase, e.what()));
    }
    // Migrate resumed the guest. Show that it runs on, intact.
    uint64_t ops = 0;
    uint64_t corrupt = 0;
    try {
      ops = host.RunOn(0.5);
      corrupt = host.guest().CorruptKernelPages();
    } catch (const std::exception& run_error) {
      spdlog::error("source: the resumed guest failed: {}", run_error.what());
    }
    std::fprintf(stderr,
                 "p2bmig: source: migration failed in phase '%s'; guest resumed: it ran %llu "
                 "operations in 0.5 s after the failure, %s\n",
                 phase.c_str(), static_cast<unsigned long long>(ops),
                 corrupt == 0 ? "its kernel memory is intact"
                              : fmt::format("{} kernel pages CORRUPT", corrupt).c_str());
    host.guest().memory().Sync();
    if (!signal.empty()) {
      throw Error(ErrorKind::kAborted,
                  fmt::format("source: cancelled by {} in phase '{}'", signal, CancelPhase()));
    }
    throw Error(e.kind(), fmt::format("source, in phase '{}': {}", phase, e.what()));
  }
  // The target has committed: the guest is its now, and what is left of
  // the connection does not matter.
  try {
    link->Flush();
    conn->CloseWrite();
  } catch (const Error& e) {
    spdlog::info("source: closing the link after the commit: {}", e.what());
  }
  host.guest().memory().Sync();
  if (a.json) {
    nlohmann::json j = SourceReportJson(report);
    j["memory_bytes"] = opt.guest.memory_pages * kPageSize;
    j["zero_bytes"] = census.zero_pages * kPageSize;
    j["page_cache_bytes"] = census.cache_pages * kPageSize;
    std::cout << j.dump() << std::endl;
  } else {
    bool p2b = report.mode != sim::Mode::kBaseline;
    std::cout << fmt::format(
        "sent {} in {} rounds: {} pages as data, {} as mappings, {} as zero pages{}\n",
        FormatBytes(static_cast<double>(report.link_bytes)), report.save.rounds,
        p2b ? report.filter.pages_data : report.save.pages_sent, report.filter.pages_mapped,
        report.filter.pages_zero, endpoint ? "; the target committed" : "");
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
                  "(0: no limit)")
      ->capture_default_str();
  cmd->add_option("--max-unfetched-at-pause", args->max_unfetched_at_pause,
                  "Before pausing the guest, wait until the target has at most this many "
                  "mappings left to fetch (not in lazy mode)")
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "Print statistics as one JSON object");
  cmd->add_flag("--progress", args->progress, "Show a progress line on stderr");
  AddLinkSecurityOptions(cmd, &args->security, TlsRole::kClient);
  cmd->callback([args] { RunSend(*args); });
}

}  // namespace p2bmig::cli
