// Hint-free mode: p2b entries from a content index, invalidated by writes.

#include "source/hint_free.h"

#include <algorithm>

#include <p2bmig/hash.h>
#include <p2bmig/records.h>

namespace p2bmig {

IoEvent InvalidateOnlyEvent(uint32_t disk, uint64_t sector, uint32_t nr_sectors) {
  IoEvent ev;
  ev.op = IoOp::kWrite;
  ev.disk = disk;
  ev.sector = sector;
  // Runs of at most 7 sectors: never a whole page, so P2bMap removes every
  // entry of each block they touch whatever the hash.
  while (nr_sectors > 0) {
    const uint32_t n = std::min<uint32_t>(nr_sectors, kSectorsPerPage - 1);
    IoSegment seg;
    seg.pfn = kNoPfn;
    seg.first_sect = 0;
    seg.last_sect = static_cast<uint8_t>(n - 1);
    ev.segments.push_back(seg);
    nr_sectors -= n;
  }
  return ev;
}

void HintFreeMapper::OnWrite(uint32_t disk, uint64_t sector, uint64_t nr_sectors) {
  std::lock_guard lock(mu_);
  ++stats_.writes;
  index_->Invalidate(disk, sector, nr_sectors);
  while (nr_sectors > 0) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(nr_sectors, 1u << 20));
    map_->Apply(InvalidateOnlyEvent(disk, sector, n));
    sector += n;
    nr_sectors -= n;
  }
}

void HintFreeMapper::OnEvent(const IoEvent& event) {
  if (event.op != IoOp::kWrite) return;
  uint64_t nr_sectors = 0;
  for (const IoSegment& seg : event.segments) {
    // A malformed segment means blkback refused the request: nothing written.
    if (seg.first_sect > seg.last_sect || seg.last_sect >= kSectorsPerPage) return;
    nr_sectors += seg.nr_sectors();
  }
  OnWrite(event.disk, event.sector, nr_sectors);
}

void HintFreeMapper::Propose(Pfn pfn, uint64_t hash) {
  std::lock_guard lock(mu_);
  ++stats_.pages_looked_up;
  const std::optional<BlockAddr> addr = index_->Lookup(hash);
  if (!addr) return;
  if (auto entry = map_->Lookup(pfn); entry && entry->addr == *addr) return;
  // What a tap would report for a full-page read of that block into pfn.
  IoEvent ev;
  ev.op = IoOp::kRead;
  ev.disk = addr->disk;
  ev.sector = addr->block * kSectorsPerPage;
  IoSegment seg;
  seg.pfn = pfn;
  seg.hash = hash;
  ev.segments.push_back(seg);
  map_->Apply(ev);
  ++stats_.entries_created;
}

HintFreeStats HintFreeMapper::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void HintFreeSink::WriteHeaders(const ImageHeader& image, const DomainHeader& domain) {
  out_->WriteHeaders(image, domain);
}

void HintFreeSink::WriteRecord(const Record& record) {
  if (record.type == rec::kVerify) verify_mode_ = true;
  if (record.type == rec::kPageData && !verify_mode_) {
    PageDataView view = ParsePageData(record);
    for (size_t i = 0; i < view.pages.size(); ++i) {
      const PageRef& ref = view.pages[i];
      const uint8_t* page = view.PageData(i);
      if (page == nullptr || ref.type != page_type::kNotab || ref.pfn >= nr_pfns_) continue;
      if (IsZeroPage(page)) continue;
      mapper_->Propose(ref.pfn, PageHash(page));
    }
  }
  out_->WriteRecord(record);
}

}  // namespace p2bmig
