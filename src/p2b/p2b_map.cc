// P2bMap: one 16-byte slot per guest page, and a reverse index (block ->
// pages) that is a chained hash table whose nodes are those same slots, so
// that the whole map costs 17 bytes per guest page whatever it holds.

#include <algorithm>
#include <bit>
#include <limits>
#include <mutex>
#include <string>

#include <p2bmig/p2b_map.h>

namespace p2bmig {

namespace {

constexpr uint32_t kNil = std::numeric_limits<uint32_t>::max();
constexpr uint64_t kHash48Mask = (uint64_t{1} << P2bMap::kHashBits) - 1;
constexpr int kDiskShift = 40;
constexpr int kHashHiShift = 48;

// All ones: block kMaxBlock of disk 255 with hash bits 32..47 all set. That
// one combination is never recorded (see Pack), so the value is free.
constexpr uint64_t kEmpty = std::numeric_limits<uint64_t>::max();

// Sectors at or beyond this lie past every block an entry can hold, and
// multiplying them by 512 could overflow.
constexpr uint64_t kSectorLimit = uint64_t{1} << 54;

// One slot per pfn. `loc` packs block (bits 0..39), disk (40..47) and hash
// bits 32..47 (48..63); `hash_lo` holds hash bits 0..31; `next` links the
// slot into its bucket's chain.
struct Slot {
  uint64_t loc = kEmpty;
  uint32_t hash_lo = 0;
  uint32_t next = kNil;
};
static_assert(sizeof(Slot) == 16, "the memory budget assumes 16-byte slots");

constexpr uint64_t AddrBits(uint64_t loc) { return loc & ((uint64_t{1} << kHashHiShift) - 1); }

constexpr uint64_t PackAddr(BlockAddr addr) {
  return addr.block | (uint64_t{addr.disk} << kDiskShift);
}

constexpr BlockAddr UnpackAddr(uint64_t loc) {
  return BlockAddr{static_cast<uint32_t>((loc >> kDiskShift) & 0xFF), loc & P2bMap::kMaxBlock};
}

constexpr uint64_t SlotHash48(const Slot& s) { return ((s.loc >> kHashHiShift) << 32) | s.hash_lo; }

constexpr bool Mappable(BlockAddr addr) {
  return addr.disk < P2bMap::kMaxDisks && addr.block <= P2bMap::kMaxBlock;
}

// Bucket of a block: a 64-bit finalizer (splitmix64) so that consecutive
// blocks of one disk spread over the table.
inline uint64_t MixAddr(uint64_t addr_bits) {
  uint64_t x = addr_bits + 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

struct P2bMap::Impl {
  explicit Impl(uint64_t nr_pfns) : nr_slots(nr_pfns) {
    // One bucket per 4 pages, rounded down to a power of two so the budget of
    // 4 bytes per 4 pages is never exceeded.
    nr_buckets = std::bit_floor(std::max<uint64_t>(1, nr_pfns / 4));
    mask = nr_buckets - 1;
    slots = std::make_unique<Slot[]>(nr_slots);
    buckets = std::make_unique<uint32_t[]>(nr_buckets);
    std::fill_n(buckets.get(), nr_buckets, kNil);
  }

  uint32_t& Head(uint64_t addr_bits) { return buckets[MixAddr(addr_bits) & mask]; }
  uint32_t Head(uint64_t addr_bits) const { return buckets[MixAddr(addr_bits) & mask]; }

  // Unlinks `pfn`'s slot from its chain and reports the removal.
  // REQUIRES: mu held, slot of `pfn` in use.
  void Remove(uint32_t pfn, RemovalReason reason) {
    Slot& s = slots[pfn];
    uint32_t* link = &Head(AddrBits(s.loc));
    while (*link != pfn) link = &slots[*link].next;
    *link = s.next;
    const BlockAddr addr = UnpackAddr(s.loc);
    s = Slot{};
    --nr_entries;
    const uint64_t gen = ++generation;
    if (listener) listener(Removal{pfn, addr, reason, gen});
  }

  // Records pfn -> addr, replacing whatever pfn had. A pfn already holding
  // exactly this entry is left alone, so nothing is reported for it.
  // REQUIRES: mu held, Mappable(addr).
  void Record(uint32_t pfn, BlockAddr addr, uint64_t hash) {
    const uint64_t hash48 = hash & kHash48Mask;
    const uint64_t loc = PackAddr(addr) | ((hash48 >> 32) << kHashHiShift);
    Slot& s = slots[pfn];
    if (s.loc == loc && s.hash_lo == static_cast<uint32_t>(hash48)) return;
    if (s.loc != kEmpty) Remove(pfn, RemovalReason::kPageOverwritten);
    // The one value that would read back as "empty": give up this mapping
    // (not recording an entry is always safe).
    if (loc == kEmpty) return;
    uint32_t& head = Head(AddrBits(loc));
    s.loc = loc;
    s.hash_lo = static_cast<uint32_t>(hash48);
    s.next = head;
    head = pfn;
    ++nr_entries;
  }

  // Removes every entry of `addr` whose hash differs from `keep_hash48`, or
  // every entry of `addr` if `keep_hash48` is unset.
  // REQUIRES: mu held.
  void RemoveBlock(BlockAddr addr, std::optional<uint64_t> keep_hash48) {
    if (!Mappable(addr)) return;  // nothing can be mapped there
    const uint64_t bits = PackAddr(addr);
    uint32_t pfn = Head(bits);
    while (pfn != kNil) {
      const Slot& s = slots[pfn];
      const uint32_t next = s.next;
      if (AddrBits(s.loc) == bits && (!keep_hash48 || SlotHash48(s) != *keep_hash48)) {
        Remove(pfn, RemovalReason::kBlockWritten);
      }
      pfn = next;
    }
  }

  void ApplyRead(uint32_t disk, uint64_t offset, const IoSegment& seg, bool in_range) {
    if (!in_range) return;
    const uint32_t pfn = static_cast<uint32_t>(seg.pfn);
    const BlockAddr addr{disk, offset / kPageSize};
    if (seg.full_page() && offset % kPageSize == 0 && Mappable(addr)) {
      Record(pfn, addr, seg.hash);
    } else if (slots[pfn].loc != kEmpty) {
      // The page now holds something no block is known to hold.
      Remove(pfn, RemovalReason::kPageOverwritten);
    }
  }

  void ApplyWrite(uint32_t disk, uint64_t offset, const IoSegment& seg, bool in_range) {
    const uint64_t first = offset / kPageSize;
    const uint64_t last = (offset + uint64_t{seg.nr_sectors()} * kSectorSize - 1) / kPageSize;
    if (seg.full_page() && offset % kPageSize == 0) {
      const BlockAddr addr{disk, first};
      RemoveBlock(addr, seg.hash & kHash48Mask);
      if (in_range && Mappable(addr)) Record(static_cast<uint32_t>(seg.pfn), addr, seg.hash);
      return;
    }
    // Partial or unaligned: the new content of the touched blocks is unknown.
    for (uint64_t b = first; b <= last; ++b) RemoveBlock(BlockAddr{disk, b}, std::nullopt);
  }

  std::mutex mu;
  const uint64_t nr_slots;
  uint64_t nr_buckets = 0;
  uint64_t mask = 0;
  std::unique_ptr<Slot[]> slots;
  std::unique_ptr<uint32_t[]> buckets;
  uint64_t nr_entries = 0;
  uint64_t generation = 0;
  RemovalListener listener;
};

P2bMap::P2bMap(uint64_t nr_pfns) : nr_pfns_(nr_pfns) {
  // Chains link pfns as uint32 and kNil is reserved: 16 TiB guests at most.
  if (nr_pfns >= kNil) {
    throw Error(ErrorKind::kInvalidArgument,
                "p2b map: guest of " + std::to_string(nr_pfns) + " pages is too large");
  }
  impl_ = std::make_unique<Impl>(nr_pfns);
}

P2bMap::~P2bMap() = default;

void P2bMap::Apply(const IoEvent& event) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const bool malformed =
      std::any_of(event.segments.begin(), event.segments.end(), [](const IoSegment& seg) {
        return seg.first_sect > seg.last_sect || seg.last_sect >= kSectorsPerPage;
      });
  if (malformed) {
    // blkback refuses such requests without doing any I/O, so the disk did
    // not change; a read's pages are dropped all the same, to be safe.
    if (event.op != IoOp::kRead) return;
    for (const IoSegment& seg : event.segments) {
      if (seg.pfn < nr_pfns_ && impl_->slots[seg.pfn].loc != kEmpty) {
        impl_->Remove(static_cast<uint32_t>(seg.pfn), RemovalReason::kPageOverwritten);
      }
    }
    return;
  }
  // Beyond kSectorLimit every block is past kMaxBlock: such a request can
  // neither create nor (having no entries to hit) remove entries, but a read
  // still changes the pages it lands in. Disk kMaxDisks marks it unmappable.
  const bool far = event.sector >= kSectorLimit;
  const uint32_t disk = far ? kMaxDisks : event.disk;
  uint64_t offset = far ? 0 : event.sector * kSectorSize;
  for (const IoSegment& seg : event.segments) {
    const bool in_range = seg.pfn < nr_pfns_;
    if (event.op == IoOp::kRead) {
      impl_->ApplyRead(disk, offset, seg, in_range);
    } else {
      impl_->ApplyWrite(disk, offset, seg, in_range);
    }
    offset += uint64_t{seg.nr_sectors()} * kSectorSize;
  }
}

std::optional<P2bMap::Entry> P2bMap::Lookup(Pfn pfn) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (pfn >= nr_pfns_) return std::nullopt;
  const Slot& s = impl_->slots[pfn];
  if (s.loc == kEmpty) return std::nullopt;
  return Entry{UnpackAddr(s.loc), SlotHash48(s)};
}

P2bMap::VerifyResult P2bMap::Verify(Pfn pfn, uint64_t page_hash) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  VerifyResult result;
  result.generation = ++impl_->generation;
  if (pfn >= nr_pfns_) return result;
  const Slot& s = impl_->slots[pfn];
  if (s.loc == kEmpty) return result;
  if (SlotHash48(s) == (page_hash & kHash48Mask)) {
    result.addr = UnpackAddr(s.loc);
  } else {
    impl_->Remove(static_cast<uint32_t>(pfn), RemovalReason::kForgotten);
  }
  return result;
}

void P2bMap::Forget(Pfn pfn) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (pfn < nr_pfns_ && impl_->slots[pfn].loc != kEmpty) {
    impl_->Remove(static_cast<uint32_t>(pfn), RemovalReason::kForgotten);
  }
}

std::vector<Pfn> P2bMap::PagesOf(BlockAddr addr) const {
  std::vector<Pfn> pages;
  if (!Mappable(addr)) return pages;
  std::lock_guard<std::mutex> lock(impl_->mu);
  const uint64_t bits = PackAddr(addr);
  for (uint32_t pfn = impl_->Head(bits); pfn != kNil; pfn = impl_->slots[pfn].next) {
    if (AddrBits(impl_->slots[pfn].loc) == bits) pages.push_back(pfn);
  }
  std::sort(pages.begin(), pages.end());
  return pages;
}

void P2bMap::SetRemovalListener(RemovalListener listener) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->listener = std::move(listener);
}

uint64_t P2bMap::size() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->nr_entries;
}

uint64_t P2bMap::generation() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->generation;
}

uint64_t P2bMap::MemoryBytes() const {
  return impl_->nr_slots * sizeof(Slot) + impl_->nr_buckets * sizeof(uint32_t);
}

}  // namespace p2bmig
