// Tests of P2bMap: every rule of include/p2bmig/p2b_map.h, and a randomized
// comparison against a plain std::map model of the same rules.

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include <p2bmig/p2b_map.h>

namespace p2bmig {
namespace {

using Reason = P2bMap::RemovalReason;

constexpr uint64_t kHashMask = (uint64_t{1} << P2bMap::kHashBits) - 1;

IoSegment Full(Pfn pfn, uint64_t hash) { return IoSegment{pfn, 0, 7, hash}; }
IoSegment Part(Pfn pfn, uint8_t first, uint8_t last) { return IoSegment{pfn, first, last, 0}; }

IoEvent Ev(IoOp op, uint32_t disk, uint64_t sector, std::vector<IoSegment> segs) {
  IoEvent e;
  e.op = op;
  e.disk = disk;
  e.sector = sector;
  e.segments = std::move(segs);
  return e;
}
IoEvent Read(uint32_t disk, uint64_t block, std::vector<IoSegment> segs) {
  return Ev(IoOp::kRead, disk, block * kSectorsPerPage, std::move(segs));
}
IoEvent Write(uint32_t disk, uint64_t block, std::vector<IoSegment> segs) {
  return Ev(IoOp::kWrite, disk, block * kSectorsPerPage, std::move(segs));
}

// Records every removal the map reports.
struct Recorder {
  std::vector<P2bMap::Removal> removals;
  void Attach(P2bMap* map) {
    map->SetRemovalListener([this](const P2bMap::Removal& r) { removals.push_back(r); });
  }
};

std::optional<BlockAddr> AddrOf(const P2bMap& map, Pfn pfn) {
  auto e = map.Lookup(pfn);
  if (!e) return std::nullopt;
  return e->addr;
}

TEST(P2bMapTest, EmptyMap) {
  P2bMap map(1024);
  EXPECT_EQ(map.nr_pfns(), 1024u);
  EXPECT_EQ(map.size(), 0u);
  EXPECT_EQ(map.generation(), 0u);
  for (Pfn p = 0; p < 1024; ++p) EXPECT_FALSE(map.Lookup(p));
  EXPECT_TRUE(map.PagesOf({0, 0}).empty());
}

TEST(P2bMapTest, AlignedFullReadCreatesEntry) {
  P2bMap map(64);
  map.Apply(Read(1, 100, {Full(5, 0xABCDEF0123456789ull)}));
  auto e = map.Lookup(5);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->addr, (BlockAddr{1, 100}));
  EXPECT_EQ(e->hash48, 0xABCDEF0123456789ull & kHashMask);
  EXPECT_EQ(map.size(), 1u);
  EXPECT_EQ(map.PagesOf({1, 100}), std::vector<Pfn>{5});
  EXPECT_TRUE(map.PagesOf({0, 100}).empty());  // disk is part of the key
}

TEST(P2bMapTest, MultiSegmentReadMapsConsecutiveBlocks) {
  P2bMap map(64);
  map.Apply(Read(0, 10, {Full(3, 1), Full(9, 2), Full(4, 3)}));
  EXPECT_EQ(AddrOf(map, 3), (BlockAddr{0, 10}));
  EXPECT_EQ(AddrOf(map, 9), (BlockAddr{0, 11}));
  EXPECT_EQ(AddrOf(map, 4), (BlockAddr{0, 12}));
  EXPECT_EQ(map.Lookup(9)->hash48, 2u);
}

TEST(P2bMapTest, UnalignedReadCreatesNothing) {
  P2bMap map(64);
  // Sector 1: the page straddles blocks 0 and 1.
  map.Apply(Ev(IoOp::kRead, 0, 1, {Full(1, 7), Full(2, 8)}));
  EXPECT_EQ(map.size(), 0u);
  // Sector 4 (half a block) likewise.
  map.Apply(Ev(IoOp::kRead, 0, 4, {Full(1, 7)}));
  EXPECT_EQ(map.size(), 0u);
}

TEST(P2bMapTest, PartialSegmentShiftsLaterSegments) {
  P2bMap map(64);
  // A 4-sector segment first: the next full page starts at sector 4 (not
  // aligned), the one after at sector 12 (not aligned either).
  map.Apply(Read(0, 0, {Part(1, 0, 3), Full(2, 20), Full(3, 30)}));
  EXPECT_EQ(map.size(), 0u);
  // Two 4-sector segments realign the third: it lands on block 1.
  map.Apply(Read(0, 0, {Part(1, 0, 3), Part(2, 4, 7), Full(3, 30)}));
  EXPECT_EQ(map.size(), 1u);
  EXPECT_EQ(AddrOf(map, 3), (BlockAddr{0, 1}));
}

TEST(P2bMapTest, PartialReadRemovesEntry) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  map.Apply(Read(0, 7, {Full(2, 99)}));
  ASSERT_TRUE(map.Lookup(2));
  map.Apply(Read(0, 50, {Part(2, 0, 6)}));
  EXPECT_FALSE(map.Lookup(2));
  EXPECT_TRUE(map.PagesOf({0, 7}).empty());
  ASSERT_EQ(rec.removals.size(), 1u);
  EXPECT_EQ(rec.removals[0].pfn, 2u);
  EXPECT_EQ(rec.removals[0].addr, (BlockAddr{0, 7}));
  EXPECT_EQ(rec.removals[0].reason, Reason::kPageOverwritten);
}

TEST(P2bMapTest, UnalignedFullReadRemovesEntry) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  map.Apply(Read(0, 7, {Full(2, 99)}));
  map.Apply(Ev(IoOp::kRead, 0, 3, {Full(2, 99)}));
  EXPECT_FALSE(map.Lookup(2));
  ASSERT_EQ(rec.removals.size(), 1u);
  EXPECT_EQ(rec.removals[0].reason, Reason::kPageOverwritten);
}

TEST(P2bMapTest, ReadOfAnotherBlockReplacesEntry) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  map.Apply(Read(0, 7, {Full(2, 99)}));
  map.Apply(Read(1, 8, {Full(2, 100)}));
  EXPECT_EQ(AddrOf(map, 2), (BlockAddr{1, 8}));
  EXPECT_EQ(map.Lookup(2)->hash48, 100u);
  EXPECT_TRUE(map.PagesOf({0, 7}).empty());
  EXPECT_EQ(map.PagesOf({1, 8}), std::vector<Pfn>{2});
  EXPECT_EQ(map.size(), 1u);
  ASSERT_EQ(rec.removals.size(), 1u);
  EXPECT_EQ(rec.removals[0].addr, (BlockAddr{0, 7}));
  EXPECT_EQ(rec.removals[0].reason, Reason::kPageOverwritten);
}

TEST(P2bMapTest, RereadOfSameBlockSameContentReportsNothing) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  map.Apply(Read(0, 7, {Full(2, 99)}));
  const uint64_t gen = map.generation();
  map.Apply(Read(0, 7, {Full(2, 99)}));
  EXPECT_TRUE(rec.removals.empty());
  EXPECT_EQ(map.generation(), gen);
  EXPECT_EQ(map.PagesOf({0, 7}), std::vector<Pfn>{2});  // not linked twice
  EXPECT_EQ(map.size(), 1u);
}

TEST(P2bMapTest, RereadOfSameBlockNewContentUpdatesHash) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  map.Apply(Read(0, 7, {Full(2, 99)}));
  map.Apply(Read(0, 7, {Full(2, 98)}));
  ASSERT_TRUE(map.Lookup(2));
  EXPECT_EQ(map.Lookup(2)->hash48, 98u);
  EXPECT_EQ(map.PagesOf({0, 7}), std::vector<Pfn>{2});
  ASSERT_EQ(rec.removals.size(), 1u);  // the old entry was replaced
  EXPECT_EQ(rec.removals[0].reason, Reason::kPageOverwritten);
  EXPECT_FALSE(map.Verify(2, 99).addr);
}

TEST(P2bMapTest, OneBlockReadIntoSeveralPages) {
  P2bMap map(64);
  for (Pfn p : {4, 40, 12, 33}) map.Apply(Read(0, 5, {Full(p, 77)}));
  EXPECT_EQ(map.PagesOf({0, 5}), (std::vector<Pfn>{4, 12, 33, 40}));
  EXPECT_EQ(map.size(), 4u);
  // Moving one of them away leaves the others.
  map.Apply(Read(0, 6, {Full(12, 78)}));
  EXPECT_EQ(map.PagesOf({0, 5}), (std::vector<Pfn>{4, 33, 40}));
  EXPECT_EQ(map.PagesOf({0, 6}), std::vector<Pfn>{12});
}

TEST(P2bMapTest, FullWriteRecordsEntry) {
  P2bMap map(64);
  map.Apply(Write(2, 1000, {Full(8, 0x55)}));
  EXPECT_EQ(AddrOf(map, 8), (BlockAddr{2, 1000}));
  EXPECT_EQ(map.Lookup(8)->hash48, 0x55u);
}

TEST(P2bMapTest, WriteWithOtherContentRemovesAllEntriesOfBlock) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  for (Pfn p : {1, 2, 3}) map.Apply(Read(0, 9, {Full(p, 500)}));
  map.Apply(Read(0, 10, {Full(4, 600)}));
  map.Apply(Write(0, 9, {Full(20, 501)}));
  for (Pfn p : {1, 2, 3}) EXPECT_FALSE(map.Lookup(p)) << p;
  EXPECT_EQ(AddrOf(map, 4), (BlockAddr{0, 10}));  // neighbour untouched
  EXPECT_EQ(map.PagesOf({0, 9}), std::vector<Pfn>{20});
  ASSERT_EQ(rec.removals.size(), 3u);
  std::set<Pfn> removed;
  for (const auto& r : rec.removals) {
    EXPECT_EQ(r.reason, Reason::kBlockWritten);
    EXPECT_EQ(r.addr, (BlockAddr{0, 9}));
    removed.insert(r.pfn);
  }
  EXPECT_EQ(removed, (std::set<Pfn>{1, 2, 3}));
}

TEST(P2bMapTest, WriteWithSameContentKeepsEntries) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  for (Pfn p : {1, 2}) map.Apply(Read(0, 9, {Full(p, 500)}));
  map.Apply(Write(0, 9, {Full(30, 500)}));
  EXPECT_EQ(map.PagesOf({0, 9}), (std::vector<Pfn>{1, 2, 30}));
  EXPECT_TRUE(rec.removals.empty());
  // Writing the same page to the same block again changes nothing.
  const uint64_t gen = map.generation();
  map.Apply(Write(0, 9, {Full(30, 500)}));
  EXPECT_TRUE(rec.removals.empty());
  EXPECT_EQ(map.generation(), gen);
  EXPECT_EQ(map.size(), 3u);
}

TEST(P2bMapTest, WriteComparesOnlyHashBitsKept) {
  P2bMap map(64);
  map.Apply(Read(0, 9, {Full(1, 0x1234'0000'0000'0042ull)}));
  // Differs only above bit 47: the same content as far as the map can tell.
  map.Apply(Write(0, 9, {Full(2, 0xFFFF'0000'0000'0042ull)}));
  EXPECT_TRUE(map.Lookup(1));
  // Differs in bit 47: other content.
  map.Apply(Write(0, 9, {Full(3, 0x0000'8000'0000'0042ull)}));
  EXPECT_FALSE(map.Lookup(1));
  EXPECT_FALSE(map.Lookup(2));
  EXPECT_TRUE(map.Lookup(3));
}

TEST(P2bMapTest, WriteOfMappedPageToAnotherBlockMovesIt) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  map.Apply(Read(0, 1, {Full(7, 10)}));
  map.Apply(Write(0, 2, {Full(7, 10)}));
  EXPECT_EQ(AddrOf(map, 7), (BlockAddr{0, 2}));
  EXPECT_TRUE(map.PagesOf({0, 1}).empty());
  ASSERT_EQ(rec.removals.size(), 1u);
  EXPECT_EQ(rec.removals[0].addr, (BlockAddr{0, 1}));
  EXPECT_EQ(rec.removals[0].reason, Reason::kPageOverwritten);
}

TEST(P2bMapTest, PartialWriteRemovesAllEntriesOfBlock) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  for (Pfn p : {1, 2}) map.Apply(Read(0, 9, {Full(p, 500)}));
  map.Apply(Read(0, 8, {Full(3, 400)}));
  // Sectors 72..73 = inside block 9 only.
  map.Apply(Ev(IoOp::kWrite, 0, 72, {Part(40, 0, 1)}));
  EXPECT_FALSE(map.Lookup(1));
  EXPECT_FALSE(map.Lookup(2));
  EXPECT_FALSE(map.Lookup(40));  // partial writes never create entries
  EXPECT_TRUE(map.Lookup(3));
  ASSERT_EQ(rec.removals.size(), 2u);
  for (const auto& r : rec.removals) EXPECT_EQ(r.reason, Reason::kBlockWritten);
}

TEST(P2bMapTest, PartialWriteEvenWithMatchingHashRemoves) {
  P2bMap map(64);
  map.Apply(Read(0, 9, {Full(1, 500)}));
  map.Apply(Ev(IoOp::kWrite, 0, 72, {IoSegment{2, 0, 6, 500}}));
  EXPECT_FALSE(map.Lookup(1));
}

TEST(P2bMapTest, UnalignedWriteTouchesTwoBlocks) {
  P2bMap map(64);
  map.Apply(Read(0, 9, {Full(1, 500)}));
  map.Apply(Read(0, 10, {Full(2, 600)}));
  map.Apply(Read(0, 11, {Full(3, 700)}));
  // A full page at sector 76: the second half of block 9 and the first of 10.
  map.Apply(Ev(IoOp::kWrite, 0, 76, {Full(4, 500)}));
  EXPECT_FALSE(map.Lookup(1));  // even though the hash equals block 9's
  EXPECT_FALSE(map.Lookup(2));
  EXPECT_TRUE(map.Lookup(3));
  EXPECT_FALSE(map.Lookup(4));
}

TEST(P2bMapTest, UnalignedPartialWriteAcrossBoundary) {
  P2bMap map(64);
  map.Apply(Read(0, 9, {Full(1, 500)}));
  map.Apply(Read(0, 10, {Full(2, 600)}));
  // Sectors 79..80: last sector of block 9, first of block 10.
  map.Apply(Ev(IoOp::kWrite, 0, 79, {Part(4, 3, 4)}));
  EXPECT_FALSE(map.Lookup(1));
  EXPECT_FALSE(map.Lookup(2));
}

TEST(P2bMapTest, WriteOnOtherDiskLeavesEntries) {
  P2bMap map(64);
  map.Apply(Read(0, 9, {Full(1, 500)}));
  map.Apply(Write(1, 9, {Full(2, 501)}));
  EXPECT_TRUE(map.Lookup(1));
}

TEST(P2bMapTest, OutOfRangeDiskAndBlockNeverMapped) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  map.Apply(Read(P2bMap::kMaxDisks, 1, {Full(1, 5)}));
  map.Apply(Read(0, P2bMap::kMaxBlock + 1, {Full(2, 5)}));
  map.Apply(Ev(IoOp::kRead, 0, ~uint64_t{0} - 7, {Full(3, 5)}));
  map.Apply(Write(P2bMap::kMaxDisks + 7, 1, {Full(4, 5)}));
  EXPECT_EQ(map.size(), 0u);
  // The largest disk and block are fine.
  map.Apply(Read(P2bMap::kMaxDisks - 1, P2bMap::kMaxBlock, {Full(5, 5)}));
  EXPECT_EQ(AddrOf(map, 5), (BlockAddr{P2bMap::kMaxDisks - 1, P2bMap::kMaxBlock}));
  // A read of an unmappable block still replaces the page's content.
  map.Apply(Read(0, P2bMap::kMaxBlock + 1, {Full(5, 5)}));
  EXPECT_FALSE(map.Lookup(5));
  ASSERT_EQ(rec.removals.size(), 1u);
  EXPECT_EQ(rec.removals[0].reason, Reason::kPageOverwritten);
}

TEST(P2bMapTest, OutOfRangePfnsIgnored) {
  P2bMap map(16);
  map.Apply(Read(0, 3, {Full(16, 1), Full(1000, 2), Full(2, 3)}));
  EXPECT_EQ(map.size(), 1u);
  EXPECT_EQ(AddrOf(map, 2), (BlockAddr{0, 5}));  // offsets still advance
  EXPECT_FALSE(map.Lookup(16));
  EXPECT_FALSE(map.Lookup(~Pfn{0}));
  map.Forget(16);
  const auto v = map.Verify(1000, 2);
  EXPECT_FALSE(v.addr);
  EXPECT_TRUE(map.PagesOf({0, 3}).empty());
  EXPECT_TRUE(map.PagesOf({0, 4}).empty());
}

TEST(P2bMapTest, WriteFromOutOfRangePfnStillRemoves) {
  P2bMap map(16);
  map.Apply(Read(0, 3, {Full(2, 3)}));
  map.Apply(Write(0, 3, {Full(99, 4)}));
  EXPECT_FALSE(map.Lookup(2));
  EXPECT_EQ(map.size(), 0u);
}

TEST(P2bMapTest, MalformedSegmentsNeverMap) {
  P2bMap map(16);
  map.Apply(Read(0, 3, {Full(2, 3)}));
  map.Apply(Read(0, 4, {Full(1, 1), IoSegment{3, 5, 2, 0}}));
  EXPECT_FALSE(map.Lookup(1));
  map.Apply(Read(0, 4, {IoSegment{2, 0, 9, 0}}));
  EXPECT_FALSE(map.Lookup(2));
}

TEST(P2bMapTest, VerifyMatchAndMismatch) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  map.Apply(Read(3, 40, {Full(6, 0x1111'2222'3333'4444ull)}));
  auto ok = map.Verify(6, 0x1111'2222'3333'4444ull);
  ASSERT_TRUE(ok.addr);
  EXPECT_EQ(*ok.addr, (BlockAddr{3, 40}));
  // Bits above 47 are not compared.
  EXPECT_TRUE(map.Verify(6, 0xFFFF'2222'3333'4444ull).addr);
  EXPECT_TRUE(rec.removals.empty());
  auto bad = map.Verify(6, 0x1111'2222'3333'4445ull);
  EXPECT_FALSE(bad.addr);
  EXPECT_FALSE(map.Lookup(6));
  ASSERT_EQ(rec.removals.size(), 1u);
  EXPECT_EQ(rec.removals[0].reason, Reason::kForgotten);
  EXPECT_EQ(rec.removals[0].addr, (BlockAddr{3, 40}));
  EXPECT_GT(rec.removals[0].generation, bad.generation);
  EXPECT_FALSE(map.Verify(6, 0x1111'2222'3333'4444ull).addr);  // gone for good
  EXPECT_FALSE(map.Verify(7, 0).addr);                         // never mapped
}

TEST(P2bMapTest, ForgetRemoves) {
  P2bMap map(64);
  Recorder rec;
  rec.Attach(&map);
  map.Apply(Read(0, 1, {Full(6, 1), Full(7, 2)}));
  map.Forget(6);
  map.Forget(6);  // second time: nothing to remove
  map.Forget(8);  // never mapped
  EXPECT_FALSE(map.Lookup(6));
  EXPECT_TRUE(map.Lookup(7));
  ASSERT_EQ(rec.removals.size(), 1u);
  EXPECT_EQ(rec.removals[0].pfn, 6u);
  EXPECT_EQ(rec.removals[0].reason, Reason::kForgotten);
}

TEST(P2bMapTest, GenerationsStrictlyIncreaseAcrossVerifyAndRemovals) {
  P2bMap map(64);
  std::vector<uint64_t> removal_gens;
  map.SetRemovalListener([&](const P2bMap::Removal& r) { removal_gens.push_back(r.generation); });
  EXPECT_EQ(map.generation(), 0u);
  map.Apply(Read(0, 1, {Full(1, 10), Full(2, 20)}));
  EXPECT_EQ(map.generation(), 0u);  // creating entries takes no generation
  EXPECT_EQ(map.Verify(1, 10).generation, 1u);
  map.Apply(Write(0, 1, {Full(9, 11)}));  // removes 1: generation 2
  EXPECT_EQ(removal_gens, std::vector<uint64_t>{2});
  EXPECT_EQ(map.Verify(2, 20).generation, 3u);
  // A mismatch: the check takes 4, then the removal it causes takes 5.
  EXPECT_EQ(map.Verify(9, 12).generation, 4u);
  EXPECT_EQ(removal_gens, (std::vector<uint64_t>{2, 5}));
  map.Forget(2);  // 6
  EXPECT_EQ(map.Verify(5, 0).generation, 7u);
  EXPECT_EQ(removal_gens, (std::vector<uint64_t>{2, 5, 6}));
  EXPECT_EQ(map.generation(), 7u);
}

TEST(P2bMapTest, RemovalAfterSendHasLaterGeneration) {
  // The filter's question: was this entry removed after I verified it?
  P2bMap map(64);
  std::map<Pfn, uint64_t> removed_at;
  map.SetRemovalListener([&](const P2bMap::Removal& r) { removed_at[r.pfn] = r.generation; });
  map.Apply(Read(0, 1, {Full(1, 10)}));
  map.Apply(Read(0, 2, {Full(2, 20)}));
  map.Apply(Write(0, 2, {Full(30, 21)}));  // removes 2 before its send
  const auto v1 = map.Verify(1, 10);
  map.Apply(Write(0, 1, {Full(31, 11)}));  // removes 1 after its send
  EXPECT_GT(removed_at.at(1), v1.generation);
  EXPECT_LT(removed_at.at(2), v1.generation);
}

TEST(P2bMapTest, ClearedListenerIsNotCalled) {
  P2bMap map(64);
  int calls = 0;
  map.SetRemovalListener([&](const P2bMap::Removal&) { ++calls; });
  map.Apply(Read(0, 1, {Full(1, 10)}));
  map.Forget(1);
  map.SetRemovalListener({});
  map.Apply(Read(0, 1, {Full(1, 10)}));
  map.Forget(1);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(map.generation(), 2u);
}

TEST(P2bMapTest, MemoryWithinBudget) {
  for (uint64_t n : {1ull, 3ull, 4ull, 1000ull, 262144ull, 262145ull, 1048576ull + 12345}) {
    P2bMap map(n);
    EXPECT_LE(map.MemoryBytes(), 17 * n + 64) << n;
    EXPECT_GE(map.MemoryBytes(), 16 * n) << n;
  }
  // 1 GiB of guest: exactly 17 bytes per page.
  EXPECT_EQ(P2bMap(262144).MemoryBytes(), 17u * 262144);
}

TEST(P2bMapTest, MemoryDoesNotGrowWithEntries) {
  P2bMap map(4096);
  const uint64_t before = map.MemoryBytes();
  for (Pfn p = 0; p < 4096; ++p) map.Apply(Read(0, p % 97, {Full(p, p % 97)}));
  EXPECT_EQ(map.size(), 4096u);
  EXPECT_EQ(map.MemoryBytes(), before);
}

TEST(P2bMapTest, ManyBlocksCollideInBucketsCorrectly) {
  // Far more blocks than buckets: chains mix blocks; PagesOf must filter.
  P2bMap map(4096);
  for (Pfn p = 0; p < 4096; ++p) map.Apply(Read(p % 3, p, {Full(p, p * 7)}));
  for (Pfn p = 0; p < 4096; ++p) {
    ASSERT_EQ(map.PagesOf({static_cast<uint32_t>(p % 3), p}), std::vector<Pfn>{p});
    ASSERT_TRUE(map.PagesOf({static_cast<uint32_t>((p + 1) % 3), p}).empty());
  }
  for (Pfn p = 0; p < 4096; p += 2) map.Apply(Write(p % 3, p, {Part(0, 0, 0)}));
  EXPECT_EQ(map.size(), 2048u);
  for (Pfn p = 0; p < 4096; ++p) ASSERT_EQ(map.Lookup(p).has_value(), p % 2 == 1) << p;
}

// --- Randomized comparison with a reference model -------------------------

// The rules of p2b_map.h written as plainly as possible.
class ModelMap {
 public:
  explicit ModelMap(uint64_t nr_pfns) : nr_pfns_(nr_pfns) {}

  void Apply(const IoEvent& e) {
    uint64_t off = e.sector * kSectorSize;
    for (const IoSegment& s : e.segments) {
      const uint64_t len = uint64_t{s.nr_sectors()} * kSectorSize;
      const bool aligned_full = s.full_page() && off % kPageSize == 0;
      const BlockAddr addr{e.disk, off / kPageSize};
      const bool mappable = e.disk < P2bMap::kMaxDisks && addr.block <= P2bMap::kMaxBlock;
      const bool in_range = s.pfn < nr_pfns_;
      if (e.op == IoOp::kRead) {
        if (in_range) {
          if (aligned_full && mappable) {
            Set(s.pfn, addr, s.hash & kHashMask);
          } else {
            entries_.erase(s.pfn);
          }
        }
      } else if (aligned_full) {
        for (auto it = entries_.begin(); it != entries_.end();) {
          if (it->second.addr == addr && it->second.hash48 != (s.hash & kHashMask)) {
            it = entries_.erase(it);
          } else {
            ++it;
          }
        }
        if (in_range && mappable) Set(s.pfn, addr, s.hash & kHashMask);
      } else {
        for (uint64_t b = off / kPageSize; b <= (off + len - 1) / kPageSize; ++b) {
          std::erase_if(entries_, [&](const auto& kv) {
            return kv.second.addr == BlockAddr{e.disk, b};
          });
        }
      }
      off += len;
    }
  }

  bool Verify(Pfn pfn, uint64_t hash) {
    auto it = entries_.find(pfn);
    if (it == entries_.end()) return false;
    if (it->second.hash48 == (hash & kHashMask)) return true;
    entries_.erase(it);
    return false;
  }

  void Forget(Pfn pfn) { entries_.erase(pfn); }

  std::optional<P2bMap::Entry> Lookup(Pfn pfn) const {
    auto it = entries_.find(pfn);
    if (it == entries_.end()) return std::nullopt;
    return it->second;
  }

  std::vector<Pfn> PagesOf(BlockAddr addr) const {
    std::vector<Pfn> out;
    for (const auto& [pfn, e] : entries_) {
      if (e.addr == addr) out.push_back(pfn);
    }
    return out;
  }

  size_t size() const { return entries_.size(); }

 private:
  void Set(Pfn pfn, BlockAddr addr, uint64_t hash48) {
    P2bMap::Entry e;
    e.addr = addr;
    e.hash48 = hash48;
    entries_[pfn] = e;
  }

  uint64_t nr_pfns_;
  std::map<Pfn, P2bMap::Entry> entries_;
};

TEST(P2bMapTest, RandomizedAgainstModel) {
  constexpr uint64_t kPfns = 96;  // pfns up to 99 are drawn: some out of range
  constexpr uint64_t kBlocks = 40;
  for (uint32_t seed = 1; seed <= 4; ++seed) {
    std::mt19937_64 rng(seed);
    P2bMap map(kPfns);
    ModelMap model(kPfns);
    uint64_t last_gen = 0;
    uint64_t removals = 0;
    map.SetRemovalListener([&](const P2bMap::Removal& r) {
      EXPECT_GT(r.generation, last_gen);
      last_gen = r.generation;
      ++removals;
    });
    auto pick = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
    // Few distinct hashes so that "same content" happens often.
    auto hash = [&]() { return pick(4) * 0x0001'0000'0001'0001ull + (pick(2) << 50); };
    for (int step = 0; step < 4000; ++step) {
      const uint64_t what = pick(10);
      if (what < 7) {
        IoEvent e;
        e.op = pick(2) ? IoOp::kRead : IoOp::kWrite;
        e.disk = static_cast<uint32_t>(pick(3));
        // Mostly aligned requests, some sector-granular ones.
        e.sector = pick(4) == 0 ? pick(kBlocks * 8) : pick(kBlocks) * 8;
        const uint64_t nsegs = 1 + pick(4);
        for (uint64_t i = 0; i < nsegs; ++i) {
          IoSegment s;
          s.pfn = pick(kPfns + 4);
          if (pick(5) == 0) {
            s.first_sect = static_cast<uint8_t>(pick(8));
            s.last_sect = static_cast<uint8_t>(s.first_sect + pick(8 - s.first_sect));
          }
          s.hash = hash();
          e.segments.push_back(s);
        }
        map.Apply(e);
        model.Apply(e);
      } else if (what < 9) {
        const Pfn pfn = pick(kPfns + 4);
        const uint64_t h = hash();
        const uint64_t before = last_gen;
        const auto v = map.Verify(pfn, h);  // a removal it causes comes after it
        ASSERT_GT(v.generation, before);
        last_gen = std::max(last_gen, v.generation);
        ASSERT_EQ(v.addr.has_value(), model.Verify(pfn, h)) << "seed " << seed << " step " << step;
      } else {
        const Pfn pfn = pick(kPfns + 4);
        map.Forget(pfn);
        model.Forget(pfn);
      }
      ASSERT_EQ(map.size(), model.size()) << "seed " << seed << " step " << step;
      for (Pfn p = 0; p < kPfns + 4; ++p) {
        const auto a = map.Lookup(p);
        const auto b = model.Lookup(p);
        ASSERT_EQ(a.has_value(), b.has_value())
            << "seed " << seed << " step " << step << " pfn " << p;
        if (a) {
          ASSERT_EQ(a->addr, b->addr) << "seed " << seed << " step " << step << " pfn " << p;
          ASSERT_EQ(a->hash48, b->hash48) << "seed " << seed << " step " << step << " pfn " << p;
        }
      }
      if (step % 50 == 0) {
        for (uint32_t d = 0; d < 3; ++d) {
          for (uint64_t b = 0; b < kBlocks + 1; ++b) {
            ASSERT_EQ(map.PagesOf({d, b}), model.PagesOf({d, b})) << "step " << step;
          }
        }
      }
    }
    EXPECT_GT(removals, 100u);  // the run exercised removals
    EXPECT_GT(map.size(), 0u);
  }
}

}  // namespace
}  // namespace p2bmig
