// The hint-free mode: where no I/O tap tells which guest page was read from
// or written to which disk block, p2b entries come from content instead. A
// page about to be sent whose hash is in the BlockIndex of the disk images
// gets the entry page -> that block; the filter then verifies it and sends a
// mapping like any other, and the target checks the block's hash (I2). Disk
// writes, known only by their sectors, invalidate blocks in both the index
// and the p2b map, so that a mapping sent for an overwritten block is sent
// again (I3), exactly as with a tap.
//
//   save loop -> HintFreeSink -> Filter -> link
//                    |              |
//                HintFreeMapper -> P2bMap <- write tracking (OnWrite)
//
// HintFreeMapper serializes entry creation (lookup in the index, entry in
// the map) with write invalidation (index and map): an entry is created
// either before a write to its block, which then removes it, or after, when
// the index no longer holds the block. That is what keeps a stale block from
// ever being mapped.
//
// Thread safety: HintFreeMapper's methods may be called concurrently;
// HintFreeSink is used by one thread, like any RecordSink.

#ifndef P2BMIG_SOURCE_HINT_FREE_H_
#define P2BMIG_SOURCE_HINT_FREE_H_

#include <cstdint>
#include <mutex>

#include <p2bmig/io_event.h>
#include <p2bmig/p2b_map.h>
#include <p2bmig/stream.h>

#include "source/block_index.h"

namespace p2bmig {

// A pfn no guest has: segments naming it never create entries.
inline constexpr Pfn kNoPfn = ~Pfn{0};

// A write of sectors [sector, sector + nr_sectors) of `disk` as P2bMap sees
// a write whose pages are unknown: segments of kNoPfn, none of them a whole
// page, so that every entry of every block touched is removed and nothing is
// recorded.
IoEvent InvalidateOnlyEvent(uint32_t disk, uint64_t sector, uint32_t nr_sectors);

struct HintFreeStats {
  uint64_t pages_looked_up = 0;
  uint64_t entries_created = 0;
  uint64_t writes = 0;
};

class HintFreeMapper {
 public:
  // REQUIRES: index and map outlive the mapper.
  HintFreeMapper(BlockIndex* index, P2bMap* map) : index_(index), map_(map) {}
  HintFreeMapper(const HintFreeMapper&) = delete;
  HintFreeMapper& operator=(const HintFreeMapper&) = delete;

  // A completed write to `disk`, known by its sectors only.
  void OnWrite(uint32_t disk, uint64_t sector, uint64_t nr_sectors);
  // A completed request from a tap whose pages are not trusted or not known:
  // writes invalidate, reads are ignored.
  void OnEvent(const IoEvent& event);

  // `pfn` holds content whose PageHash is `hash`: give it the entry of a
  // block with that content, if the index has one.
  void Propose(Pfn pfn, uint64_t hash);

  HintFreeStats stats() const;

 private:
  BlockIndex* index_;
  P2bMap* map_;
  mutable std::mutex mu_;
  HintFreeStats stats_;
};

// Proposes every regular, non-zero page of each PAGE_DATA record to the
// mapper, then passes the record on unchanged. After VERIFY it only passes
// records on (the filter sends everything as data then).
class HintFreeSink : public RecordSink {
 public:
  // REQUIRES: mapper and out outlive the sink.
  HintFreeSink(HintFreeMapper* mapper, RecordSink* out, uint64_t nr_pfns)
      : mapper_(mapper), out_(out), nr_pfns_(nr_pfns) {}

  void WriteHeaders(const ImageHeader& image, const DomainHeader& domain) override;
  void WriteRecord(const Record& record) override;

 private:
  HintFreeMapper* mapper_;
  RecordSink* out_;
  const uint64_t nr_pfns_;
  bool verify_mode_ = false;
};

}  // namespace p2bmig

#endif  // P2BMIG_SOURCE_HINT_FREE_H_
