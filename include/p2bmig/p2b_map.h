// P2bMap: for one domain, which guest pages are known to hold exactly the
// content of a 4 KiB block of one of its disks (the paper's "p2b map").
//
// It is fed with completed block requests (Apply) and follows these rules
// (docs/design.md, "The p2b map"):
//   * A full-page, 4 KiB-aligned read of block B into page P, or write of P
//     to B, records P -> B with the page's content hash. Nothing else ever
//     creates an entry (invariant I2).
//   * A partial read into P removes P's entry (P changed, B did not).
//   * A write to B (whole or partial) removes every entry P' -> B whose
//     recorded hash differs from B's new content; a partial write removes all
//     of B's entries (invariant I3).
//   * Many pages may map to one block; a reverse index (block -> pages) makes
//     the removals on disk writes cheap.
//   * Verify() is the send-time check of I2: a page is mapped only while its
//     content hash equals the hash recorded for its block.
//   * Every Verify() and every removal takes the next value of one generation
//     counter, under the map's mutex. The filter compares the generation at
//     which it sent a mapping with the generation of a later removal of that
//     entry to decide, without races, which mappings must be sent again (I3).
//
// Memory: 16 bytes per guest page (block address, 48 bits of the content hash,
// a link in the reverse index's chain) plus 4 bytes per reverse-index bucket,
// with one bucket per 4 guest pages: 17 bytes per page in all, whatever the
// number of entries. MemoryBytes() reports the exact figure.
//
// Thread safety: all methods may be called concurrently (one internal mutex).
// The removal listener is called with that mutex held and must not call back
// into the map.

#ifndef P2BMIG_P2B_MAP_H_
#define P2BMIG_P2B_MAP_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include <p2bmig/io_event.h>
#include <p2bmig/types.h>

namespace p2bmig {

class P2bMap {
 public:
  // Largest disk index and block number an entry can hold; requests beyond
  // them are ignored for mapping purposes (but still remove entries).
  static constexpr uint32_t kMaxDisks = 256;
  static constexpr uint64_t kMaxBlock = (uint64_t{1} << 40) - 1;  // 4 PiB images
  // Number of low bits of PageHash() the map keeps per entry.
  static constexpr int kHashBits = 48;

  enum class RemovalReason {
    kBlockWritten,     // the block's content changed on disk
    kPageOverwritten,  // a read (partial or of another block) changed the page
    kForgotten,        // Forget() or a failed Verify(): the page changed in memory
  };
  struct Entry {
    BlockAddr addr;
    uint64_t hash48 = 0;  // low kHashBits bits of the recorded PageHash
  };
  struct Removal {
    Pfn pfn = 0;
    BlockAddr addr;
    RemovalReason reason = RemovalReason::kForgotten;
    uint64_t generation = 0;
  };
  struct VerifyResult {
    std::optional<BlockAddr> addr;  // set if the page may be sent as a mapping
    uint64_t generation = 0;
  };
  using RemovalListener = std::function<void(const Removal&)>;

  // `nr_pfns` is the size of the guest's pfn space (highest pfn + 1).
  explicit P2bMap(uint64_t nr_pfns);
  ~P2bMap();
  P2bMap(const P2bMap&) = delete;
  P2bMap& operator=(const P2bMap&) = delete;

  uint64_t nr_pfns() const { return nr_pfns_; }

  // Updates the map for one completed request. Segments naming pfns outside
  // [0, nr_pfns) never create entries (a write from one still removes the
  // entries of the blocks it overwrites: the disk changed all the same).
  void Apply(const IoEvent& event);

  // The entry of `pfn`, if it has one.
  std::optional<Entry> Lookup(Pfn pfn) const;

  // Send-time check (I2): if `pfn` has an entry whose recorded hash equals
  // `page_hash` (the PageHash of the content about to be sent), returns its
  // block. Otherwise returns no block, and a stale entry is removed
  // (reason kForgotten). Either way returns the generation of the check.
  VerifyResult Verify(Pfn pfn, uint64_t page_hash);

  // Removes the entry of `pfn` (the page is known to have changed).
  void Forget(Pfn pfn);

  // Pages currently mapped to `addr` (the reverse index).
  std::vector<Pfn> PagesOf(BlockAddr addr) const;

  // Called for every entry removed from now on. Pass {} to clear.
  void SetRemovalListener(RemovalListener listener);

  // Number of entries.
  uint64_t size() const;

  // The current value of the generation counter.
  uint64_t generation() const;

  // Bytes of memory held by the map (its tables, not counting the object).
  uint64_t MemoryBytes() const;

 private:
  struct Impl;
  const uint64_t nr_pfns_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace p2bmig

#endif  // P2BMIG_P2B_MAP_H_
