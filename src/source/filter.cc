#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <p2bmig/filter.h>
#include <p2bmig/hash.h>

namespace p2bmig {

struct Filter::Impl {
  P2bMap* map;
  Domain* domain;
  IoTap* tap;
  RecordSink* out;
  FilterOptions options;
  FetchCredits* credits;
  FilterStats stats;
  uint64_t mappings_sent = 0;
  uint64_t fetched = 0;  // the target's newest credit count seen

  bool verify_mode = false;  // after VERIFY: pass everything unchanged
  bool final_pass_done = false;

  // Generation of the mapping that is the newest record sent for each pfn;
  // 0 if that record carried data (or nothing was sent yet).
  std::unique_ptr<std::atomic<uint64_t>[]> mapped_gen;
  // For each pfn, the block (PackBlock) whose rewrite since the stream began
  // removed the pfn's entry, or 0: the dirty history that sends a page as
  // data while it holds a block that is being rewritten.
  std::unique_ptr<std::atomic<uint64_t>[]> rewritten_block;

  static uint64_t PackBlock(const BlockAddr& a) { return ((uint64_t{a.disk} << 40) | a.block) + 1; }
  uint64_t nr_pfns;

  std::mutex mu;  // guards the two members below (written by the listener)
  // Newest removal generation of each pfn's p2b entry since the stream began.
  std::unordered_map<Pfn, uint64_t> removed;
  // Pfns to mark dirty so that pre-copy sends them again.
  std::vector<Pfn> to_redirty;

  void OnRemoval(const P2bMap::Removal& r) {
    if (r.pfn >= nr_pfns) return;
    std::lock_guard lock(mu);
    uint64_t& g = removed[r.pfn];
    g = std::max(g, r.generation);
    if (r.reason == P2bMap::RemovalReason::kBlockWritten) {
      rewritten_block[r.pfn].store(PackBlock(r.addr), std::memory_order_relaxed);
    }
    if (mapped_gen[r.pfn].load(std::memory_order_relaxed) != 0) to_redirty.push_back(r.pfn);
  }

  // Whether one more mapping, after `pending` not yet written out, would
  // leave the target more than the window to fetch.
  bool WindowFull(uint64_t pending) {
    const uint64_t limit = options.max_unfetched_mappings;
    if (credits == nullptr || limit == 0) return false;
    if (mappings_sent + pending + 1 <= fetched + limit) return false;
    fetched = std::max(fetched, credits->Fetched());
    return mappings_sent + pending + 1 > fetched + limit;
  }

  void RedirtyInvalidated() {
    std::vector<Pfn> pfns;
    {
      std::lock_guard lock(mu);
      pfns.swap(to_redirty);
    }
    if (pfns.empty()) return;
    stats.mappings_invalidated += pfns.size();
    domain->MarkDirty(pfns);
  }

  void FilterPageData(const Record& record);
  void SendFinalResends();
};

Filter::Filter(P2bMap* map, Domain* domain, IoTap* tap, RecordSink* out, FilterOptions options,
               FetchCredits* credits)
    : impl_(std::make_unique<Impl>()) {
  impl_->map = map;
  impl_->domain = domain;
  impl_->tap = tap;
  impl_->out = out;
  impl_->options = options;
  impl_->credits = credits;
  impl_->nr_pfns = domain->nr_pfns();
  impl_->mapped_gen = std::make_unique<std::atomic<uint64_t>[]>(impl_->nr_pfns);
  impl_->rewritten_block = std::make_unique<std::atomic<uint64_t>[]>(impl_->nr_pfns);
  for (uint64_t i = 0; i < impl_->nr_pfns; ++i) {
    impl_->mapped_gen[i].store(0);
    impl_->rewritten_block[i].store(0);
  }
  Impl* impl = impl_.get();
  map->SetRemovalListener([impl](const P2bMap::Removal& r) { impl->OnRemoval(r); });
}

Filter::~Filter() { impl_->map->SetRemovalListener({}); }

void Filter::WriteHeaders(const ImageHeader& image, const DomainHeader& domain) {
  impl_->out->WriteHeaders(image, domain);
  std::vector<uint64_t> sizes = impl_->domain->DiskSizes();
  impl_->out->WriteRecord(MakeP2bDisks(sizes));
  if (impl_->credits != nullptr) {
    // Ask the target for fetch credits; a target that does not know the
    // record may skip it (it is optional) and the filter then never waits.
    Record ask{rec::kP2bFetchCredits, std::vector<uint8_t>(8, 0)};
    auto limit = static_cast<uint32_t>(
        std::min<uint64_t>(impl_->options.max_unfetched_mappings, UINT32_MAX));
    std::memcpy(ask.body.data(), &limit, sizeof(limit));
    impl_->out->WriteRecord(ask);
    if (impl_->options.lazy_resume) {
      impl_->out->WriteRecord(Record{rec::kP2bLazyResume, std::vector<uint8_t>(8, 0)});
    }
  }
}

void Filter::WriteRecord(const Record& record) {
  Impl& s = *impl_;
  switch (record.type) {
    case rec::kPageData:
      s.RedirtyInvalidated();
      s.FilterPageData(record);
      return;
    case rec::kVerify:
    case rec::kX86TscInfo:
    case rec::kCheckpoint:
    case rec::kEnd:
      // The first record after the last memory pass: settle the mappings
      // whose blocks changed before anything else goes out (I3, I4).
      if (!s.final_pass_done) {
        s.SendFinalResends();
        s.final_pass_done = true;
      }
      if (record.type == rec::kVerify) s.verify_mode = true;
      break;
    default:
      break;
  }
  s.out->WriteRecord(record);
}

void Filter::Impl::FilterPageData(const Record& record) {
  if (verify_mode) {
    // The stock restore compares these pages with its memory: send them as
    // they are, or the check would compare fetched blocks with themselves.
    out->WriteRecord(record);
    return;
  }
  PageDataView view = ParsePageData(record);
  PageDataBuilder data;
  std::vector<PageMapping> mappings;
  std::vector<PageRef> zeros;
  for (size_t i = 0; i < view.pages.size(); ++i) {
    const PageRef& ref = view.pages[i];
    const uint8_t* page = view.PageData(i);
    ++stats.pages_in;
    bool regular = page != nullptr && ref.type == page_type::kNotab && ref.pfn < nr_pfns;
    if (regular && options.elide_zero_pages && IsZeroPage(page)) {
      zeros.push_back(ref);
      mapped_gen[ref.pfn].store(0, std::memory_order_relaxed);
      continue;
    }
    if (regular && options.send_mappings) {
      uint64_t hash = PageHash(page);
      P2bMap::VerifyResult v = map->Verify(ref.pfn, hash);
      if (v.addr && options.data_after_block_rewrite &&
          rewritten_block[ref.pfn].load(std::memory_order_relaxed) == PackBlock(*v.addr)) {
        ++stats.pages_data_rewritten;
      } else if (v.addr && options.data_when_window_full && WindowFull(mappings.size())) {
        ++stats.pages_data_window_full;
      } else if (v.addr) {
        mappings.push_back({ref.pfn, ref.type, *v.addr, hash});
        mapped_gen[ref.pfn].store(v.generation, std::memory_order_relaxed);
        continue;
      }
    }
    data.Add(ref.pfn, ref.type, page);
    if (ref.pfn < nr_pfns) mapped_gen[ref.pfn].store(0, std::memory_order_relaxed);
  }
  stats.pages_mapped += mappings.size();
  stats.pages_zero += zeros.size();
  if (!data.empty()) {
    stats.pages_data += data.count();
    out->WriteRecord(data.Finish());
  }
  if (!mappings.empty()) {
    // Flow control, when full windows do not turn into data: the guest keeps
    // running while we wait, so fetch work done now is not done during the
    // downtime.
    uint64_t limit = options.max_unfetched_mappings;
    if (credits != nullptr && limit != 0 && mappings_sent + mappings.size() > fetched + limit) {
      auto t0 = std::chrono::steady_clock::now();
      credits->WaitForFetched(mappings_sent + mappings.size() - limit);
      fetched = std::max(fetched, credits->Fetched());
      stats.credit_wait_s +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    mappings_sent += mappings.size();
    out->WriteRecord(MakePageMappings(mappings));
  }
  if (!zeros.empty()) out->WriteRecord(MakeZeroPages(zeros));
}

void Filter::Impl::SendFinalResends() {
  auto t0 = std::chrono::steady_clock::now();
  // I4: every request of the paused guest has completed and been applied to
  // the map, and its data is on the shared storage, before we decide.
  tap->Drain();
  domain->FlushDisks();
  std::vector<Pfn> resend;
  {
    std::lock_guard lock(mu);
    for (const auto& [pfn, removed_gen] : removed) {
      uint64_t sent = mapped_gen[pfn].load(std::memory_order_relaxed);
      if (sent != 0 && removed_gen > sent) resend.push_back(pfn);
    }
    to_redirty.clear();
  }
  std::sort(resend.begin(), resend.end());
  constexpr size_t kBatch = 1024;
  std::vector<uint8_t> buf(kBatch * kPageSize);
  for (size_t i = 0; i < resend.size(); i += kBatch) {
    size_t n = std::min(kBatch, resend.size() - i);
    std::span<const Pfn> batch(resend.data() + i, n);
    domain->ReadPages(batch, buf.data());
    PageDataBuilder data;
    for (size_t j = 0; j < n; ++j) {
      data.Add(batch[j], page_type::kNotab, buf.data() + j * kPageSize);
      mapped_gen[batch[j]].store(0, std::memory_order_relaxed);
    }
    out->WriteRecord(data.Finish());
  }
  stats.pages_resent += resend.size();
  stats.pages_data += resend.size();
  stats.final_pass_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

FilterStats Filter::stats() const { return impl_->stats; }

void Filter::SetMaxUnfetchedMappings(uint64_t n) { impl_->options.max_unfetched_mappings = n; }

uint64_t Filter::UnfetchedMappings() const {
  Impl& s = *impl_;
  if (s.credits == nullptr) return 0;
  s.fetched = std::max(s.fetched, s.credits->Fetched());
  return s.mappings_sent - std::min(s.mappings_sent, s.fetched);
}

}  // namespace p2bmig
