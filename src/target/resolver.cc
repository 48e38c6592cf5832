#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <p2bmig/hash.h>
#include <p2bmig/resolver.h>

namespace p2bmig {
namespace {

constexpr size_t kOutBatch = 1024;
constexpr size_t kRequestBatch = 1024;  // pfns per page request to the source
constexpr int kLazyTickMs = 50;

using Clock = std::chrono::steady_clock;

int MakeEventFd() {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw Error(ErrorKind::kInternal, "eventfd failed");
  return fd;
}

// Owns a file descriptor; declared before the fetch queue in Impl, so that it
// is closed only after the queue (whose reads signal it) is gone.
struct OwnedFd {
  explicit OwnedFd(int f) : fd(f) {}
  ~OwnedFd() { ::close(fd); }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  int fd;
};

// The hook runs on the store's thread, concurrently with the resolver's: it
// only writes to the eventfd, which outlives the queue (see OwnedFd).
FetchOptions WithWakeup(FetchOptions o, int fd) {
  o.on_read_done = [fd] {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof(one));
  };
  return o;
}

struct PendingMapping {
  Pfn pfn = 0;
  uint32_t type = 0;
  BlockAddr addr;
  uint64_t hash = 0;
  bool reread = false;  // this fetch is already the second read
};

}  // namespace

struct Resolver::Impl {
  Impl(BlockStore* s, RecordSink* o, const ResolverOptions& opt)
      : store(s),
        out(o),
        options(opt),
        wake(MakeEventFd()),
        queue(s, WithWakeup(opt.fetch, wake.fd)) {}

  BlockStore* store;
  RecordSink* out;
  ResolverOptions options;
  OwnedFd wake;  // readable when a fetch has completed (lazy phase)
  FetchQueue queue;
  ResolverStats stats;
  bool disks_checked = false;
  bool credits_wanted = false;
  uint64_t next_tag = 1;

  // Every fetch in flight, by tag.
  std::unordered_map<uint64_t, PendingMapping> in_flight;
  // For a pfn whose newest record is a mapping not yet passed on: its tag.
  std::unordered_map<Pfn, uint64_t> newest_tag;
  // Fetched and verified pages not yet passed on. They are older than any
  // record still to come, so they go out before the next record that carries
  // page contents.
  PageDataBuilder fetched;
  // Newest-record mappings whose block did not match its hash.
  std::unordered_map<Pfn, PendingMapping> mismatched;

  // Lazy restore.
  bool lazy_offered = false;
  bool lazy_phase = false;  // after END: fetched pages go to `memory`
  MissingPageMemory* memory = nullptr;
  struct Missing {
    BlockAddr addr;
    bool requested = false;    // asked of the source
    bool need_source = false;  // the storage cannot supply it
    bool faulted = false;
    Clock::time_point fault_at;
  };
  std::unordered_map<Pfn, Missing> missing;
  std::vector<Pfn> to_request;  // to ask the source for
  uint64_t need_source = 0;     // missing pages only the source can supply
  LazyStats lazy;

  // The storage cannot supply `pfn`: only the source can.
  void NeedSource(Pfn pfn) {
    auto it = missing.find(pfn);
    if (it == missing.end()) return;
    if (!it->second.need_source) {
      it->second.need_source = true;
      ++need_source;
    }
    to_request.push_back(pfn);
  }

  bool lazy_enabled() const { return lazy_offered && options.allow_lazy; }

  // Installs a missing page (never over a present one).
  void InstallMissing(Pfn pfn, const uint8_t* data, bool from_source) {
    auto it = missing.find(pfn);
    if (it == missing.end()) return;  // installed already
    if (!memory->Install(pfn, data)) {
      ++lazy.already_present;
    } else if (from_source) {
      ++lazy.from_source;
    } else {
      ++lazy.fetched;
    }
    if (it->second.need_source) --need_source;
    if (it->second.faulted) {
      lazy.fault_wait_s.push_back(
          std::chrono::duration<double>(Clock::now() - it->second.fault_at).count());
    }
    missing.erase(it);
  }

  // A newer record for `pfn` arrived: whatever an older one owes is void.
  void Supersede(Pfn pfn) {
    newest_tag.erase(pfn);
    mismatched.erase(pfn);
  }

  void CheckPfn(Pfn pfn, const char* what) const {
    if (options.nr_pfns != 0 && pfn >= options.nr_pfns) {
      throw Error(ErrorKind::kMalformedStream,
                  fmt::format("{} names pfn {:#x}, beyond the domain's {:#x} pages", what, pfn,
                              options.nr_pfns));
    }
  }

  void Deliver(uint64_t tag, const uint8_t* data) {
    auto it = in_flight.find(tag);
    if (it == in_flight.end()) return;
    PendingMapping m = it->second;
    in_flight.erase(it);
    auto cur = newest_tag.find(m.pfn);
    if (cur == newest_tag.end() || cur->second != tag) {
      ++stats.fetches_superseded;
      return;
    }
    newest_tag.erase(cur);
    if (PageHash(data) != m.hash) {
      ++stats.hash_mismatches;
      if (!m.reread) {
        // The read may have raced the source's write of the block (or have
        // joined a read that started before it): read it once more now,
        // rather than in the downtime.
        PendingMapping again = m;
        again.reread = true;
        Submit(again);
        return;
      }
      if (lazy_phase) {
        NeedSource(m.pfn);  // the source still has it
        return;
      }
      mismatched[m.pfn] = m;
      return;
    }
    ++stats.fetches_applied;
    if (lazy_phase) {
      InstallMissing(m.pfn, data, false);
      return;
    }
    fetched.Add(m.pfn, m.type, data);
    if (fetched.count() >= kOutBatch) EmitFetched();
  }

  void Submit(const PendingMapping& m) {
    uint64_t tag = next_tag++;
    in_flight[tag] = m;
    stats.peak_pending_fetches = std::max<uint64_t>(stats.peak_pending_fetches, in_flight.size());
    newest_tag[m.pfn] = tag;
    queue.Submit(tag, m.addr);
  }

  void Poll() {
    queue.Poll([this](uint64_t tag, const uint8_t* data) { Deliver(tag, data); });
  }

  void EmitFetched() {
    if (!fetched.empty()) out->WriteRecord(fetched.Finish());
  }

  // Waits for every fetch, re-reads mismatched blocks once, and passes all
  // fetched pages on. Throws if a newest-record mapping still does not match.
  void DrainAll() {
    auto t0 = std::chrono::steady_clock::now();
    auto deliver = [this](uint64_t tag, const uint8_t* data) { Deliver(tag, data); };
    queue.Drain(deliver);
    if (!mismatched.empty()) {
      // The source may have written the block after we read it and flushed it
      // before this point; one more read settles it.
      std::unordered_map<Pfn, PendingMapping> retry;
      retry.swap(mismatched);
      for (const auto& [pfn, m] : retry) Submit(m);
      queue.Drain(deliver);
      if (!mismatched.empty()) {
        const PendingMapping& m = mismatched.begin()->second;
        throw Error(ErrorKind::kVerification,
                    fmt::format("{} mapped page(s) do not match the shared storage, e.g. pfn {:#x} "
                                "-> disk {} block {}: the image on the target is not the one the "
                                "source wrote",
                                mismatched.size(), m.pfn, m.addr.disk, m.addr.block));
      }
    }
    EmitFetched();
    stats.drain_wait_s +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  void OnDisks(const Record& record) {
    std::vector<uint64_t> sizes = ParseP2bDisks(record, options.limits);
    if (sizes.size() != store->nr_disks()) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("the source has {} disk(s), the target is configured with {}",
                              sizes.size(), store->nr_disks()));
    }
    for (uint32_t d = 0; d < sizes.size(); ++d) {
      if (sizes[d] != store->DiskSize(d)) {
        throw Error(ErrorKind::kInvalidArgument,
                    fmt::format("disk {} is {} bytes on the source but {} bytes at {}: not the "
                                "same image",
                                d, sizes[d], store->DiskSize(d), store->Describe()));
      }
    }
    disks_checked = true;
  }

  void OnMappings(const Record& record) {
    if (!disks_checked) {
      throw Error(ErrorKind::kMalformedStream, "P2B_PAGE_MAPPINGS before P2B_DISKS");
    }
    for (const PageMapping& m : ParsePageMappings(record, options.limits)) {
      CheckPfn(m.pfn, "P2B_PAGE_MAPPINGS");
      // I5: the block must lie on one of our own disks.
      if (m.type != page_type::kNotab || m.addr.disk >= store->nr_disks() ||
          m.addr.block >= store->DiskSize(m.addr.disk) / kPageSize) {
        throw Error(ErrorKind::kMalformedStream,
                    fmt::format("mapping of pfn {:#x} names disk {} block {} (type {:#x}), "
                                "outside the domain's disks",
                                m.pfn, m.addr.disk, m.addr.block, m.type));
      }
      Supersede(m.pfn);
      if (in_flight.size() >= options.max_pending_fetches) {
        // Budget: wait for the storage rather than queue without bound.
        queue.Drain([this](uint64_t tag, const uint8_t* data) { Deliver(tag, data); });
      }
      Submit({m.pfn, m.type, m.addr, m.hash});
      ++stats.pages_mapped;
    }
  }

  void OnZeroPages(const Record& record) {
    static const std::vector<uint8_t> kZero(kPageSize, 0);
    EmitFetched();
    PageDataBuilder builder;
    for (const PageRef& ref : ParseZeroPages(record, options.limits)) {
      CheckPfn(ref.pfn, "P2B_ZERO_PAGES");
      if (!PageTypeHasData(ref.type)) {
        throw Error(ErrorKind::kMalformedStream, "zero page of a type without data");
      }
      Supersede(ref.pfn);
      builder.Add(ref.pfn, ref.type, kZero.data());
      ++stats.pages_zero;
      // A full batch of zero pages (max_batch_pages, 4096) would make a
      // PAGE_DATA longer than a reader's max_record_length (16 MiB).
      if (builder.count() >= kOutBatch) out->WriteRecord(builder.Finish());
    }
    if (!builder.empty()) out->WriteRecord(builder.Finish());
  }

  void OnPageData(const Record& record) {
    PageDataView view = ParsePageData(record, options.limits);
    EmitFetched();
    for (size_t i = 0; i < view.pages.size(); ++i) {
      CheckPfn(view.pages[i].pfn, "PAGE_DATA");
      Supersede(view.pages[i].pfn);
      if (view.PageData(i) != nullptr) ++stats.pages_data;
    }
    out->WriteRecord(record);
  }
};

Resolver::Resolver(BlockStore* store, RecordSink* out, ResolverOptions options)
    : impl_(std::make_unique<Impl>(store, out, options)) {}

Resolver::~Resolver() = default;

void Resolver::WriteHeaders(const ImageHeader& image, const DomainHeader& domain) {
  impl_->out->WriteHeaders(image, domain);
}

void Resolver::WriteRecord(const Record& record) {
  Impl& s = *impl_;
  s.Poll();
  switch (record.type) {
    case rec::kP2bDisks:
      s.OnDisks(record);
      return;
    case rec::kP2bPageMappings:
      s.OnMappings(record);
      return;
    case rec::kP2bZeroPages:
      s.OnZeroPages(record);
      return;
    case rec::kP2bFetchCredits:
      s.credits_wanted = true;  // ours alone: not passed on
      return;
    case rec::kP2bLazyResume:
      s.lazy_offered = true;  // ours alone: not passed on
      return;
    case rec::kPageData:
      s.OnPageData(record);
      return;
    case rec::kX86TscInfo:
    case rec::kEnd:
      if (s.lazy_enabled()) {
        // Lazy restore: what is fetched goes in now, the rest while the
        // guest runs (FinishLazily).
        s.EmitFetched();
        break;
      }
      s.DrainAll();
      break;
    case rec::kVerify:
    case rec::kCheckpoint:
      // Memory must be complete before the restore moves past memory.
      s.DrainAll();
      break;
    default:
      if ((record.type & rec::kOptionalBit) == 0 && record.type >= rec::kP2bDisks) {
        throw Error(ErrorKind::kMalformedStream,
                    fmt::format("unknown mandatory record {:#x}", record.type));
      }
      break;
  }
  s.out->WriteRecord(record);
}

void Resolver::Progress() { impl_->Poll(); }

uint64_t Resolver::mappings_fetched() const {
  const ResolverStats& s = impl_->stats;
  return s.fetches_applied + s.fetches_superseded + s.hash_mismatches;
}

bool Resolver::credits_wanted() const { return impl_->credits_wanted; }

bool Resolver::lazy() const { return impl_->lazy_enabled(); }

std::vector<Pfn> Resolver::MissingPfns() const {
  std::vector<Pfn> pfns;
  for (const auto& [pfn, tag] : impl_->newest_tag) pfns.push_back(pfn);
  for (const auto& [pfn, m] : impl_->mismatched) pfns.push_back(pfn);
  std::sort(pfns.begin(), pfns.end());
  return pfns;
}

LazyStats Resolver::FinishLazily(MissingPageMemory* memory, PageSource* source) {
  Impl& s = *impl_;
  s.memory = memory;
  s.lazy_phase = true;
  for (const auto& [pfn, tag] : s.newest_tag) s.missing[pfn].addr = s.in_flight.at(tag).addr;
  for (const auto& [pfn, m] : s.mismatched) s.missing[pfn].addr = m.addr;
  s.lazy.missing_at_resume = s.missing.size();
  // Mismatched blocks get the second read paper mode gives them at the end.
  std::unordered_map<Pfn, PendingMapping> retry;
  retry.swap(s.mismatched);
  for (const auto& [pfn, m] : retry) s.Submit(m);

  bool storage_ok = true;
  std::vector<Pfn> faults;
  const auto fault_source_after = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(s.options.lazy_fault_source_after_s));
  const auto stall_limit = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(s.options.lazy_storage_stall_s));
  auto last_progress = Clock::now();
  std::deque<std::pair<Clock::time_point, Pfn>> waiting;  // faults, oldest first
  auto fail_storage = [&](const std::exception& e) {
    s.lazy.storage_error = e.what();
    storage_ok = false;
    s.lazy.storage_failures = 1;
    std::vector<Pfn> all;
    for (const auto& [pfn, m] : s.missing) all.push_back(pfn);
    for (Pfn pfn : all) s.NeedSource(pfn);
  };
  while (!s.missing.empty()) {
    // The guest's waiting accesses jump the queue.
    faults.clear();
    memory->TakeFaults(&faults);
    for (Pfn pfn : faults) {
      auto it = s.missing.find(pfn);
      if (it == s.missing.end()) {
        memory->Wake(pfn);
        continue;
      }
      Impl::Missing& m = it->second;
      if (!m.faulted) {
        m.faulted = true;
        m.fault_at = Clock::now();
        waiting.push_back({m.fault_at, pfn});
        ++s.lazy.faults;
      }
      if (storage_ok && !m.requested) s.queue.Prioritize(m.addr);
    }
    if (storage_ok) {
      try {
        size_t before = s.missing.size();
        s.Poll();
        if (s.missing.size() != before) last_progress = Clock::now();
        if (Clock::now() - last_progress > stall_limit) {
          throw Error(ErrorKind::kIo,
                      fmt::format("no block arrived for {} s", s.options.lazy_storage_stall_s));
        }
      } catch (const Error& e) {
        fail_storage(e);
      }
    }
    // The guest has waited long for these: the source has them too.
    while (!waiting.empty() && Clock::now() - waiting.front().first > fault_source_after) {
      Pfn pfn = waiting.front().second;
      waiting.pop_front();
      auto it = s.missing.find(pfn);
      if (it != s.missing.end() && !it->second.requested) s.to_request.push_back(pfn);
    }
    // Pages from the source; then, if it is gone, whether we still need it.
    bool source_alive = source->alive();
    source->TakePages([&s](Pfn pfn, const uint8_t* data) { s.InstallMissing(pfn, data, true); });
    if (!s.to_request.empty()) {
      std::vector<Pfn> ask;
      for (Pfn pfn : s.to_request) {
        auto it = s.missing.find(pfn);
        if (it == s.missing.end() || it->second.requested) continue;
        it->second.requested = true;
        ask.push_back(pfn);
      }
      s.to_request.clear();
      std::sort(ask.begin(), ask.end());
      for (size_t i = 0; i < ask.size(); i += kRequestBatch) {
        size_t n = std::min(kRequestBatch, ask.size() - i);
        if (!source->Request(std::span<const Pfn>(ask.data() + i, n))) source_alive = false;
      }
    }
    if (!source_alive && s.need_source > 0) {
      auto it = std::find_if(s.missing.begin(), s.missing.end(),
                             [](const auto& e) { return e.second.need_source; });
      if (it != s.missing.end()) {
        throw Error(ErrorKind::kNetwork,
                    fmt::format("lazy restore: {} page(s) are missing (e.g. pfn {:#x}), the "
                                "shared storage cannot supply them and the source is gone",
                                s.missing.size(), it->first));
      }
    }
    if (s.options.on_lazy_progress) s.options.on_lazy_progress(s.lazy);
    if (s.missing.empty()) break;
    pollfd fds[3] = {
        {memory->fault_fd(), POLLIN, 0}, {s.wake.fd, POLLIN, 0}, {source->ready_fd(), POLLIN, 0}};
    if (::poll(fds, 3, kLazyTickMs) < 0 && errno != EINTR) {
      throw Error(ErrorKind::kInternal, "poll failed in lazy restore");
    }
    uint64_t count;
    while (::read(s.wake.fd, &count, sizeof(count)) > 0) {
    }
  }
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  s.lazy.all_present_ns = int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  s.lazy_phase = false;
  source->AllPresent();
  return s.lazy;
}

ResolverStats Resolver::stats() const {
  ResolverStats st = impl_->stats;
  FetchStats f = impl_->queue.stats();
  st.nas_bytes = f.bytes_read;
  st.nas_reads = f.reads;
  return st;
}

}  // namespace p2bmig
