// BlockIndex and the hint-free mapper without a migration: what the index
// finds, what a write removes (from the index and from the p2b map, whole or
// partial blocks), that an entry is only ever made from a block the index
// still holds, and the pfn-less write event.

#include "source/block_index.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <p2bmig/hash.h>
#include <p2bmig/p2b_map.h>

#include "source/hint_free.h"
#include "test_util/sim_fixture.h"

namespace p2bmig {
namespace {

// An image of `blocks` distinct blocks, except the all-zero blocks listed
// and block 7, which repeats block 3.
std::vector<uint8_t> MakeImage(uint64_t blocks, std::vector<uint64_t> zero_blocks) {
  std::vector<uint8_t> img(blocks * kPageSize);
  for (uint64_t b = 0; b < blocks; ++b) {
    for (uint64_t w = 0; w < kPageSize / 8; ++w) {
      const uint64_t v = b * 1000003 + w + 1;
      std::memcpy(img.data() + b * kPageSize + w * 8, &v, 8);
    }
  }
  if (blocks > 7) std::memcpy(img.data() + 7 * kPageSize, img.data() + 3 * kPageSize, kPageSize);
  for (uint64_t b : zero_blocks) std::memset(img.data() + b * kPageSize, 0, kPageSize);
  return img;
}

uint64_t HashOfBlock(const std::vector<uint8_t>& img, uint64_t b) {
  return PageHash(img.data() + b * kPageSize);
}

class BlockIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = MakeImage(300, {5, 6});  // 1.2 MiB: more than one 1 MiB read
    path_ = dir_.File("disk.img");
    std::ofstream(path_, std::ios::binary)
        .write(reinterpret_cast<const char*>(image_.data()),
               static_cast<std::streamsize>(image_.size()));
  }
  test::TempDir dir_;
  std::vector<uint8_t> image_;
  std::string path_;
};

TEST_F(BlockIndexTest, BuildIndexesEveryNonZeroBlock) {
  BlockIndex index;
  const BlockIndexStats st = index.Build({path_});
  EXPECT_EQ(st.bytes_read, image_.size());
  EXPECT_EQ(st.blocks, 300u);
  EXPECT_EQ(st.blocks_zero, 2u);
  // 298 non-zero blocks, block 7 equal to block 3 (one of them is kept).
  EXPECT_EQ(index.size(), 297u);
  EXPECT_EQ(index.Lookup(HashOfBlock(image_, 299)), (BlockAddr{0, 299}));
  EXPECT_EQ(index.Lookup(HashOfBlock(image_, 260)), (BlockAddr{0, 260}));
  const auto dup = index.Lookup(HashOfBlock(image_, 3));
  ASSERT_TRUE(dup);
  EXPECT_TRUE(dup->block == 3 || dup->block == 7);
  EXPECT_FALSE(index.Lookup(HashOfBlock(image_, 5)));  // zero
  EXPECT_GT(index.MemoryBytes(), 300u * 8);
}

TEST_F(BlockIndexTest, WritesRemoveEveryBlockTheyTouch) {
  BlockIndex index;
  index.Build({path_});
  // Sectors 81..88: the last sector of block 10 and all of block 11 but its
  // last sector. Both blocks go, their neighbours stay.
  index.Invalidate(0, 10 * 8 + 7, 8);
  EXPECT_FALSE(index.Lookup(HashOfBlock(image_, 10)));
  EXPECT_FALSE(index.Lookup(HashOfBlock(image_, 11)));
  EXPECT_TRUE(index.Lookup(HashOfBlock(image_, 9)));
  EXPECT_TRUE(index.Lookup(HashOfBlock(image_, 12)));
  // Beyond the image, other disks, empty writes: nothing happens.
  index.Invalidate(0, 300 * 8, 8);
  index.Invalidate(3, 0, 8);
  index.Invalidate(0, 12 * 8, 0);
  EXPECT_TRUE(index.Lookup(HashOfBlock(image_, 12)));
}

TEST_F(BlockIndexTest, UnreadableImageIsAnIoError) {
  BlockIndex index;
  try {
    index.Build({dir_.File("missing.img")});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("missing.img"), std::string::npos);
  }
}

TEST(HintFreeTest, InvalidateOnlyEventRemovesEntriesAndRecordsNothing) {
  P2bMap map(64);
  // pfn 1 -> block 2 and pfn 2 -> block 3, as from full-page reads.
  for (Pfn pfn : {1, 2}) {
    IoEvent read;
    read.op = IoOp::kRead;
    read.sector = (pfn + 1) * 8;
    IoSegment seg;
    seg.pfn = pfn;
    seg.hash = 100 + pfn;
    read.segments.push_back(seg);
    map.Apply(read);
  }
  ASSERT_EQ(map.size(), 2u);
  // A whole-block write of block 2 by sectors only: even though a write of
  // the same content would keep an entry with a tap, here the content is
  // unknown and the entry must go.
  const IoEvent ev = InvalidateOnlyEvent(0, 16, 8);
  for (const IoSegment& seg : ev.segments) EXPECT_FALSE(seg.full_page());
  map.Apply(ev);
  EXPECT_FALSE(map.Lookup(1));
  EXPECT_TRUE(map.Lookup(2));
  EXPECT_EQ(map.size(), 1u);
  // One sector of block 3.
  map.Apply(InvalidateOnlyEvent(0, 3 * 8 + 4, 1));
  EXPECT_EQ(map.size(), 0u);
}

TEST_F(BlockIndexTest, MapperMakesEntriesOnlyFromBlocksStillIndexed) {
  BlockIndex index;
  index.Build({path_});
  P2bMap map(64);
  HintFreeMapper mapper(&index, &map);
  const uint64_t h20 = HashOfBlock(image_, 20);
  mapper.Propose(9, h20);
  ASSERT_TRUE(map.Lookup(9));
  EXPECT_EQ(map.Lookup(9)->addr, (BlockAddr{0, 20}));
  EXPECT_TRUE(map.Verify(9, h20).addr);  // the filter would send a mapping
  // Block 20 is overwritten (partially): pfn 9's entry goes with it, and a
  // page with the old content finds nothing any more.
  mapper.OnWrite(0, 20 * 8 + 3, 2);
  EXPECT_FALSE(map.Lookup(9));
  mapper.Propose(10, h20);
  EXPECT_FALSE(map.Lookup(10));
  // A page whose content is on no block gets nothing.
  std::vector<uint8_t> other(kPageSize, 0xEE);
  mapper.Propose(11, PageHash(other.data()));
  EXPECT_FALSE(map.Lookup(11));
  // Reads from a tap are ignored; its writes invalidate.
  mapper.Propose(12, HashOfBlock(image_, 30));
  IoEvent tap_write;
  tap_write.op = IoOp::kWrite;
  tap_write.sector = 30 * 8;
  IoSegment seg;
  seg.pfn = 40;
  seg.hash = HashOfBlock(image_, 30);  // same content: a tap would keep it
  tap_write.segments.push_back(seg);
  mapper.OnEvent(tap_write);
  EXPECT_FALSE(map.Lookup(12));
  EXPECT_FALSE(map.Lookup(40));
  const HintFreeStats st = mapper.stats();
  EXPECT_EQ(st.pages_looked_up, 4u);
  EXPECT_EQ(st.entries_created, 2u);
  EXPECT_EQ(st.writes, 2u);
}

}  // namespace
}  // namespace p2bmig
