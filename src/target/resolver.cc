#include <algorithm>
#include <chrono>
#include <cstring>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include <p2bmig/hash.h>
#include <p2bmig/resolver.h>

namespace p2bmig {
namespace {

constexpr size_t kOutBatch = 1024;

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
      : store(s), out(o), options(opt), queue(s, opt.fetch) {}

  BlockStore* store;
  RecordSink* out;
  ResolverOptions options;
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
      mismatched[m.pfn] = m;
      return;
    }
    ++stats.fetches_applied;
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
    case rec::kPageData:
      s.OnPageData(record);
      return;
    case rec::kVerify:
    case rec::kX86TscInfo:
    case rec::kCheckpoint:
    case rec::kEnd:
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

ResolverStats Resolver::stats() const {
  ResolverStats st = impl_->stats;
  FetchStats f = impl_->queue.stats();
  st.nas_bytes = f.bytes_read;
  st.nas_reads = f.reads;
  return st;
}

}  // namespace p2bmig
