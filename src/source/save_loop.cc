#include <algorithm>
#include <cstring>
#include <numeric>

#include <time.h>

#include <p2bmig/save_loop.h>

namespace p2bmig {
namespace {

// The static and end-of-checkpoint records of an HVM guest. Their content
// matters to Xen, not to the simulated host; their framing is what libxc's.
Record MakeRecord(uint32_t type, std::initializer_list<uint32_t> words) {
  Record r{type, {}};
  r.body.resize(words.size() * 4);
  size_t off = 0;
  for (uint32_t w : words) {
    std::memcpy(r.body.data() + off, &w, 4);
    off += 4;
  }
  return r;
}

}  // namespace

int64_t RealtimeNs() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

SaveLoop::SaveLoop(Domain* domain, RecordSink* out, SaveOptions options)
    : domain_(domain), out_(out), options_(options) {}

SaveStats SaveLoop::Run() {
  stats_ = SaveStats{};
  stats_.start_ns = RealtimeNs();
  bool paused = false;
  try {
    out_->WriteHeaders(ImageHeader{}, DomainHeader{domain_->type()});
    WriteStaticData();
    domain_->EnableLogDirty();

    // send_memory_live(): round 1 is every page, later rounds the pages
    // dirtied since the previous one, while the precopy policy allows.
    std::vector<Pfn> pfns(domain_->nr_pfns());
    std::iota(pfns.begin(), pfns.end(), Pfn{0});
    int iteration = 0;
    auto policy_continue = [&](int64_t dirty_count) {
      if (dirty_count >= 0 && static_cast<uint64_t>(dirty_count) < options_.dirty_threshold) {
        return false;
      }
      return iteration < options_.max_iterations;
    };
    for (;;) {
      bool cont = policy_continue(static_cast<int64_t>(pfns.size()));
      if (!pfns.empty()) {
        SaveProgress progress{stats_.rounds + 1, pfns.size(), 0, false};
        SendPages(pfns, &progress);
      }
      if (!cont) break;
      ++iteration;
      if (!policy_continue(-1)) break;
      pfns.clear();
      domain_->PeekAndCleanDirty(&pfns);
    }

    // suspend_and_send_dirty()
    domain_->Pause();
    paused = true;
    stats_.pause_ns = RealtimeNs();
    pfns.clear();
    domain_->PeekAndCleanDirty(&pfns);
    SaveProgress progress{stats_.rounds + 1, pfns.size(), 0, true};
    SendPages(pfns, &progress);
    domain_->DisableLogDirty();

    WriteEndOfCheckpoint();
    out_->WriteRecord(Record{rec::kEnd, {}});
    stats_.end_ns = RealtimeNs();
    return stats_;
  } catch (...) {
    domain_->DisableLogDirty();
    if (paused) domain_->Resume();
    throw;
  }
}

void SaveLoop::SendPages(std::vector<Pfn>& pfns, SaveProgress* progress) {
  ++stats_.rounds;
  stats_.round_pages.push_back(pfns.size());
  stats_.round_start_ns.push_back(RealtimeNs());
  std::sort(pfns.begin(), pfns.end());
  if (progress_) progress_(*progress);  // the round begins (it may be empty)
  std::vector<uint8_t> buf(options_.batch_pages * kPageSize);
  for (size_t i = 0; i < pfns.size(); i += options_.batch_pages) {
    size_t n = std::min(options_.batch_pages, pfns.size() - i);
    std::span<const Pfn> batch(pfns.data() + i, n);
    domain_->ReadPages(batch, buf.data());
    PageDataBuilder builder;
    for (size_t j = 0; j < n; ++j) {
      builder.Add(batch[j], page_type::kNotab, buf.data() + j * kPageSize);
    }
    out_->WriteRecord(builder.Finish());
    stats_.pages_sent += n;
    progress->round_sent += n;
    if (progress_) progress_(*progress);
  }
}

void SaveLoop::WriteStaticData() {
  // One CPUID leaf (6 x u32) and one MSR entry (u32 idx, u32 flags, u64 val).
  out_->WriteRecord(
      MakeRecord(rec::kX86CpuidPolicy, {0, 0xFFFFFFFF, 0xD, 0x756E6547, 0x6C65746E, 0x49656E69}));
  out_->WriteRecord(MakeRecord(rec::kX86MsrPolicy, {0xCE, 0, 0, 0}));
  out_->WriteRecord(Record{rec::kStaticDataEnd, {}});
}

void SaveLoop::WriteEndOfCheckpoint() {
  // X86_TSC_INFO: mode, kHz, nsec (u64), incarnation, reserved.
  out_->WriteRecord(MakeRecord(rec::kX86TscInfo, {0, 2'000'000, 0, 0, 0, 0}));
  // HVM_CONTEXT: opaque to everyone but Xen; a header-sized blob here.
  Record ctx{rec::kHvmContext, std::vector<uint8_t>(64, 0)};
  std::memcpy(ctx.body.data(), "p2bmig simulated vcpu state", 27);
  out_->WriteRecord(ctx);
  // HVM_PARAMS: count, reserved, then {index, value} (HVM_PARAM_STORE_PFN).
  out_->WriteRecord(MakeRecord(rec::kHvmParams, {1, 0, 1, 0, 0xFEFFF, 0}));
}

}  // namespace p2bmig
