#include "sim/sim_host.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <p2bmig/block_store.h>
#include <p2bmig/stream.h>

#include "sim/fetch_credits.h"
#include "sim/resumed_guest.h"
#include "sim/sim_restore.h"
#include "sim/uffd_memory.h"

namespace p2bmig::sim {
namespace {

// Calls `round_end` with the number of the live round that ends (1, 2, ...)
// before the save loop collects the pages dirtied during it, and `catch_up`
// before it pauses the guest: the guest keeps running while the target
// catches up.
class CatchUpGate : public DomainWrapper {
 public:
  CatchUpGate(Domain* domain, std::function<void(int)> round_end, std::function<void()> catch_up)
      : DomainWrapper(domain), round_end_(std::move(round_end)), catch_up_(std::move(catch_up)) {}
  void PeekAndCleanDirty(std::vector<Pfn>* dirty) override {
    if (!paused_) round_end_(++rounds_ended_);
    DomainWrapper::PeekAndCleanDirty(dirty);
  }
  void Pause() override {
    catch_up_();
    DomainWrapper::Pause();
    paused_ = true;
  }
  void Resume() override {
    DomainWrapper::Resume();
    paused_ = false;
  }

 private:
  std::function<void(int)> round_end_;
  std::function<void()> catch_up_;
  int rounds_ended_ = 0;
  bool paused_ = false;
};

// Lazy mode: before the guest is paused, let the link send what is queued
// on it and flush the disks. Pausing with megabytes still queued, or with
// the image's dirty blocks not yet written, would only put that work into
// the downtime; the guest runs while we wait, and what it dirties meanwhile
// is a few pages of the last round. (The final pass still flushes again in
// the pause, as I4 requires; there is little left to flush then.)
class DrainLinkBeforePause : public DomainWrapper {
 public:
  DrainLinkBeforePause(Domain* domain, ByteStream* link) : DomainWrapper(domain), link_(link) {}
  void Pause() override {
    link_->Flush();
    FlushDisks();
    DomainWrapper::Pause();
  }

 private:
  ByteStream* link_;
};

}  // namespace

const char* ModeName(Mode mode) {
  switch (mode) {
    case Mode::kBaseline:
      return "baseline";
    case Mode::kP2bmig:
      return "p2bmig";
    case Mode::kLazy:
      return "lazy";
  }
  return "?";
}

Mode ParseMode(const std::string& name) {
  for (Mode m : {Mode::kBaseline, Mode::kP2bmig, Mode::kLazy}) {
    if (name == ModeName(m)) return m;
  }
  throw Error(ErrorKind::kInvalidArgument,
              "unknown mode '" + name + "' (known: baseline, p2bmig, lazy)");
}

SourceHost::SourceHost(SourceOptions options) : options_(std::move(options)) {
  guest_ = std::make_unique<SimGuest>(options_.guest, options_.seed);
  map_ = std::make_unique<P2bMap>(guest_->nr_pfns());
  // Dom0's view of the guest's block I/O keeps the p2b map current from boot
  // on, whatever the mode: it is the cost p2bmig adds to a running host.
  P2bMap* map = map_.get();
  if (options_.hints == HintSource::kIndex) {
    // Hint-free: only the sectors of writes are used, as from a block-layer
    // trace that knows nothing of guest pages.
    index_ = std::make_unique<BlockIndex>();
    mapper_ = std::make_unique<HintFreeMapper>(index_.get(), map);
    HintFreeMapper* mapper = mapper_.get();
    guest_->SetListener([mapper](const IoEvent& ev) { mapper->OnEvent(ev); });
  } else {
    guest_->SetListener([map](const IoEvent& ev) { map->Apply(ev); });
  }
  workload_ =
      std::make_unique<WorkloadRunner>(guest_.get(), GetWorkload(options_.workload), options_.seed);
}

SourceHost::~SourceHost() {
  if (workload_) {
    guest_->Halt();
    try {
      workload_->Stop();
    } catch (...) {
    }
  }
}

void SourceHost::WarmUp() { workload_->WarmUp(); }

SourceReport SourceHost::Migrate(ByteStream* link,
                                 std::function<void(const SaveProgress&)> progress) {
  SourceReport report;
  report.mode = options_.mode;
  report.p2b_entries_at_start = map_->size();
  report.p2b_map_bytes = map_->MemoryBytes();
  report.memory_use = guest_->MemoryUse();

  std::unique_ptr<Domain> wrapped;
  Domain* domain = guest_.get();
  if (options_.wrap_domain) {
    wrapped = options_.wrap_domain(domain);
    domain = wrapped.get();
  }

  const bool lazy = options_.mode == Mode::kLazy;
  std::unique_ptr<Domain> draining;
  if (lazy) {
    draining = std::make_unique<DrainLinkBeforePause>(domain, link);
    domain = draining.get();
  }
  StreamWriter writer(link);
  std::unique_ptr<Filter> filter;
  std::unique_ptr<HintFreeSink> hint_free;
  std::unique_ptr<CreditReceiver> credits;
  RecordSink* sink = &writer;
  // The reverse direction carries credits (p2bmig with flow control), the
  // target's lazy-restore messages and its commit. Lazy mode needs it
  // whatever the flow control, and always waits for the commit.
  const bool wait_for_commit = options_.wait_for_commit || lazy;
  if ((options_.mode != Mode::kBaseline && options_.flow_control) || wait_for_commit) {
    credits = std::make_unique<CreditReceiver>(link);
  }
  FilterOptions fo = options_.filter;
  if (options_.mode != Mode::kBaseline) {
    fo.lazy_resume = lazy;
    if (lazy && !options_.flow_control) fo.max_unfetched_mappings = 0;
    filter = std::make_unique<Filter>(map_.get(), domain, guest_.get(), &writer, fo,
                                      options_.flow_control || lazy ? credits.get() : nullptr);
    sink = filter.get();
    if (mapper_) {
      hint_free = std::make_unique<HintFreeSink>(mapper_.get(), filter.get(), domain->nr_pfns());
      sink = hint_free.get();
    }
  }
  // The save loop calls the gate from its own thread, the one that drives
  // the filter: using the filter there is race-free. Lazy mode leaves the
  // fetch work for after the resume: only the filter's window applies.
  const bool windowed = credits && filter && options_.flow_control &&
                        fo.max_unfetched_mappings != 0 && !lazy;
  auto catch_up = [&] {
    if (!windowed) return;
    uint64_t sent = filter->stats().pages_mapped;
    if (sent <= options_.max_unfetched_at_pause) return;
    auto t0 = std::chrono::steady_clock::now();
    credits->WaitForFetched(sent - options_.max_unfetched_at_pause);
    report.pause_wait_s +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  // Pages the filter had seen when the last round began.
  uint64_t pages_before_round = 0;
  bool converging = false;
  auto round_end = [&](int round) {
    if (!windowed) return;
    if (!fo.data_when_window_full) {
      // Mappings wait for the window rather than turning into data: let the
      // target catch up before each new round too.
      catch_up();
      return;
    }
    // While rounds are long, the link carries what the window cannot take
    // and nobody waits. Once a round was shorter than the window, or the
    // next is the last live one (the loop's iteration cap), the end is near:
    // the target catches up now, while whatever the guest dirties meanwhile
    // still goes out in a live round, and the window shrinks, so that the
    // wait before the pause is short (what the guest dirties during that
    // one goes out in the downtime).
    const uint64_t pages_in = filter->stats().pages_in;
    const uint64_t round_pages = pages_in - pages_before_round;
    pages_before_round = pages_in;
    if (!converging && options_.max_unfetched_last_round != 0 &&
        (round + 1 >= options_.save.max_iterations ||
         round_pages < fo.max_unfetched_mappings)) {
      converging = true;
      filter->SetMaxUnfetchedMappings(
          std::min(options_.max_unfetched_last_round, fo.max_unfetched_mappings));
    }
    if (converging) catch_up();
  };
  CatchUpGate gate(domain, round_end, catch_up);
  SaveLoop loop(&gate, sink, options_.save);
  if (progress) loop.SetProgressCallback(std::move(progress));

  uint64_t bytes_before = link->bytes_written();
  workload_->Start();
  try {
    if (mapper_ && options_.mode != Mode::kBaseline) {
      // Built while the guest runs: its writes during the build are tracked.
      report.index = index_->Build(options_.guest.disk_paths);
      report.index_memory_bytes = index_->MemoryBytes();
    }
    report.save = loop.Run();
  } catch (...) {
    // SaveLoop resumed the guest if it had paused it; keep it running.
    guest_->Resume();
    try {
      workload_->Stop();
    } catch (...) {  // the migration's error is the one to report
    }
    if (credits) credits->Abandon();
    throw;
  }
  report.workload_ops = workload_->ops();
  if (report.save.pause_ns > report.save.start_ns) {
    report.memory_ops_per_s = static_cast<double>(workload_->memory_ops()) * 1e9 /
                              static_cast<double>(report.save.pause_ns - report.save.start_ns);
  }
  if (lazy) {
    // Once the target has taken lazy restore up and we have acknowledged
    // it, the target may run the guest: keep its paused state until the
    // target has every page and commits, and send what it cannot get from
    // the shared storage.
    try {
      ServeStats served = credits->ServeLazy(guest_.get(), &writer);
      report.lazy = served.lazy;
      report.pages_served = served.pages_served;
      report.all_present_ns = served.all_present_ns;
    } catch (...) {
      if (credits->acknowledged()) {
        guest_->Halt();
        kept_paused_ = true;
      } else {
        guest_->Resume();  // the target cannot have resumed it (I6)
      }
      try {
        workload_->Stop();
      } catch (...) {
      }
      credits->Abandon();
      throw;
    }
  }
  // The target closes the link once it has the whole guest; the credits
  // reader ends there, and so do we.
  if (credits) credits->WaitForEnd();
  if (wait_for_commit && !credits->committed() && credits->acknowledged()) {
    // Lazy restore: the target has run the guest since; resuming ours could
    // fork it. Keep it paused; an operator decides.
    guest_->Halt();
    kept_paused_ = true;
    try {
      workload_->Stop();
    } catch (...) {
    }
    throw Error(ErrorKind::kNetwork,
                fmt::format("{}: the target reported every page present but closed the "
                            "connection without committing; the guest stays paused here (the "
                            "target has run it since, so resuming it could fork it)",
                            link->Describe()));
  }
  if (wait_for_commit && !credits->committed()) {
    // The stream went out whole but the target did not take the guest
    // (it failed after the last byte, or died): the guest is still ours.
    guest_->Resume();
    try {
      workload_->Stop();
    } catch (...) {
    }
    throw Error(ErrorKind::kNetwork,
                fmt::format("{}: the target closed the connection without committing the "
                            "migration (it failed after the last byte or went away)",
                            link->Describe()));
  }
  // The guest stays paused: its memory is what the target now holds. Its
  // workload threads are parked on the pause and leave without running.
  guest_->Halt();
  workload_->Stop();
  report.link_bytes = link->bytes_written() - bytes_before;
  if (filter) report.filter = filter->stats();
  if (mapper_) report.hint_free = mapper_->stats();
  return report;
}

uint64_t SourceHost::RunOn(double seconds) {
  const uint64_t before = workload_->ops();
  workload_->Start();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  workload_->Stop();
  return workload_->ops() - before;
}

TargetHost::TargetHost(TargetOptions options) : options_(std::move(options)) {
  store_ = OpenBlockStore(options_.disks);
  if (options_.wrap_store) wrapped_store_ = options_.wrap_store(store_.get());
  options_.resolver.nr_pfns = options_.memory_pages;
  options_.resolver.allow_lazy = options_.allow_lazy;
  GetWorkload(options_.workload);  // fail early on a bad name
}

TargetHost::~TargetHost() = default;

TargetReport TargetHost::Receive(ByteStream* link) {
  TargetReport report;
  BlockStore* store = wrapped_store_ ? wrapped_store_.get() : store_.get();
  report.store = store->Describe();
  // The guest's memory exists from the first byte of a migration on, not
  // before: a receiver that is still waiting for its source holds none.
  if (!memory_) {
    memory_ = std::make_unique<GuestMemory>(
        options_.memory_pages, options_.memory_path,
        options_.allow_lazy ? GuestMemory::Kind::kLazyRestore : GuestMemory::Kind::kPopulated);
  }
  SimRestore restore(memory_.get());
  Resolver resolver(store, &restore, options_.resolver);
  uint64_t bytes_before = link->bytes_read();
  ReceiveWithCredits(link, options_.resolver.limits, &resolver, options_.send_credits,
                     options_.on_record);
  if (!restore.complete()) {
    throw Error(ErrorKind::kMalformedStream, "stream ended before its END record");
  }
  if (options_.lazy_required && !resolver.lazy()) {
    throw Error(ErrorKind::kInvalidArgument,
                "lazy restore was asked for but the source does not offer it");
  }
  if (resolver.lazy()) {
    report.lazy = true;
    ReceiveLazily(link, &resolver, &report);
  } else {
    report.resume_ns = RealtimeNs();
  }
  report.resolver = resolver.stats();
  report.pages_written = restore.pages_written();
  report.verify_mismatches = restore.verify_mismatches();
  report.link_bytes = link->bytes_read() - bytes_before;
  return report;
}

}  // namespace p2bmig::sim

namespace p2bmig::sim {

void TargetHost::ReceiveLazily(ByteStream* link, Resolver* resolver, TargetReport* report) {
  using Clock = std::chrono::steady_clock;
  std::vector<Pfn> missing = resolver->MissingPfns();
  SourceLink source(link, options_.resolver.limits);
  UffdMemory uffd(memory_.get(), missing);
  // The source keeps its guest paused only once it has acknowledged our
  // marker: without that, resuming here could run the guest twice.
  if (!source.WaitForAcknowledgement()) {
    throw Error(ErrorKind::kNetwork,
                "the source did not confirm that it keeps the guest paused; the guest is not "
                "resumed here");
  }
  ResumedGuest guest(memory_.get(), GetWorkload(options_.workload), options_.seed);
  // Resume: the guest runs from here on.
  report->resume_ns = RealtimeNs();
  auto resumed = Clock::now();
  guest.Start();
  try {
    if (options_.on_resume) options_.on_resume();
    report->lazy_stats = resolver->FinishLazily(&uffd, &source);
  } catch (...) {
    // The guest cannot complete: stop it for good. Waiting accesses are
    // woken (they read zero pages; nothing of what they do is kept).
    uffd.Release();
    guest.Stop();
    source.Abandon();
    throw;
  }
  report->all_present_ns = report->lazy_stats.all_present_ns;
  report->source_lost = !source.WaitForEnd();
  if (report->lazy_stats.storage_failures != 0) {
    spdlog::warn("lazy restore: shared storage failed ({}); the missing pages came from the source",
                 report->lazy_stats.storage_error);
  }
  auto present = Clock::now();
  uint64_t ops_during = guest.ops();
  std::this_thread::sleep_for(std::chrono::duration<double>(options_.run_after_s));
  auto after = Clock::now();
  guest.Stop();
  uint64_t ops_after = guest.ops() - ops_during;
  auto secs = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  // Too short a phase to have a rate: report none.
  if (present - resumed > std::chrono::milliseconds(20)) {
    report->memory_ops_per_s_during = static_cast<double>(ops_during) / secs(present - resumed);
  }
  if (after > present) {
    report->memory_ops_per_s_after = static_cast<double>(ops_after) / secs(after - present);
  }
  report->guest_writes = guest.writes();
  for (const MemoryAccess& w : report->guest_writes) {
    report->writes_to_missing += std::binary_search(missing.begin(), missing.end(), w.pfn) ? 1 : 0;
  }
  uffd.Release();
}

}  // namespace p2bmig::sim
