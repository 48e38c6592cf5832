// The filter on its own: a simulated guest as its Domain and IoTap, a p2b
// map fed with hand-made I/O events, and the records it emits.

#include <algorithm>
#include <cstring>

#include <gtest/gtest.h>

#include <p2bmig/filter.h>
#include <p2bmig/hash.h>

#include "sim/content.h"
#include "sim/sim_guest.h"
#include "test_util/record_collector.h"
#include "test_util/sim_fixture.h"

namespace p2bmig::test {
namespace {

class FilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = dir_.File("disk0.img");
    sim::CreateDiskImage(image_, 1u << 20, 3);
    sim::SimGuestConfig cfg;
    cfg.memory_pages = 1024;
    cfg.kernel_pages = 16;
    cfg.buffer_pages = 16;
    cfg.disk_paths = {image_};
    guest_ = std::make_unique<sim::SimGuest>(cfg, 1);
    map_ = std::make_unique<P2bMap>(guest_->nr_pfns());
    filter_ = std::make_unique<Filter>(map_.get(), guest_.get(), guest_.get(), &out_);
    filter_->WriteHeaders(ImageHeader{}, DomainHeader{});
  }

  uint8_t* Page(Pfn p) { return guest_->memory().page(p); }

  // Fills page `p` with a pattern and records a completed read of `block`
  // into it, as the tap would after the guest read the block.
  void ReadInto(Pfn p, uint64_t block, uint8_t fill, IoOp op = IoOp::kRead) {
    std::memset(Page(p), fill, kPageSize);
    IoEvent ev{op, 0, block * kSectorsPerPage, {{p, 0, 7, PageHash(Page(p))}}};
    map_->Apply(ev);
  }

  void SendPages(std::initializer_list<Pfn> pfns, uint32_t type = page_type::kNotab) {
    PageDataBuilder b;
    for (Pfn p : pfns) b.Add(p, type, Page(p));
    filter_->WriteRecord(b.Finish());
  }

  std::vector<PageMapping> Mappings() const {
    std::vector<PageMapping> all;
    for (const Record& r : out_.records) {
      if (r.type != rec::kP2bPageMappings) continue;
      for (const PageMapping& m : ParsePageMappings(r)) all.push_back(m);
    }
    return all;
  }

  TempDir dir_;
  std::string image_;
  std::unique_ptr<sim::SimGuest> guest_;
  std::unique_ptr<P2bMap> map_;
  RecordCollector out_;
  std::unique_ptr<Filter> filter_;
};

TEST_F(FilterTest, DisksAreAnnouncedAfterTheHeaders) {
  ASSERT_TRUE(out_.headers);
  ASSERT_EQ(out_.records.size(), 1u);
  EXPECT_EQ(ParseP2bDisks(out_.records[0]), std::vector<uint64_t>{1u << 20});
}

TEST_F(FilterTest, VerifiedPagesLeaveAsMappingsOthersAsData) {
  ReadInto(100, 5, 0x11);
  ReadInto(101, 6, 0x22);
  Page(101)[17] ^= 1;  // the guest changed it since: must go as data (I2)
  SendPages({100, 101, 102});
  std::vector<PageMapping> m = Mappings();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].pfn, 100u);
  EXPECT_EQ(m[0].addr, (BlockAddr{0, 5}));
  EXPECT_EQ(m[0].hash, PageHash(Page(100)));
  auto mem = out_.Memory();
  EXPECT_EQ(mem.count(100), 0u);
  ASSERT_EQ(mem.count(101), 1u);
  EXPECT_EQ(0, std::memcmp(mem[101].data(), Page(101), kPageSize));
  EXPECT_FALSE(map_->Lookup(101).has_value()) << "a stale entry must be dropped";
  FilterStats s = filter_->stats();
  EXPECT_EQ(s.pages_mapped, 1u);
  EXPECT_EQ(s.pages_data, 1u);
  EXPECT_EQ(s.pages_zero, 1u);  // pfn 102 was never written
}

TEST_F(FilterTest, OnlyRegularPagesAreMapped) {
  ReadInto(100, 5, 0x11);
  SendPages({100}, page_type::kL1tab);
  EXPECT_TRUE(Mappings().empty());
}

TEST_F(FilterTest, AnOverwrittenBlockMakesItsPageGoAgainBeforeTscInfo) {
  ReadInto(100, 5, 0x11);
  SendPages({100});
  ASSERT_EQ(Mappings().size(), 1u);
  // Another page is written to block 5 with other content: the target could
  // no longer read page 100's content there (I3).
  ReadInto(200, 5, 0x99, IoOp::kWrite);
  std::vector<Pfn> dirty;
  SendPages({300});  // the next record lets the filter mark pages dirty
  guest_->PeekAndCleanDirty(&dirty);
  EXPECT_NE(std::find(dirty.begin(), dirty.end(), Pfn{100}), dirty.end())
      << "pre-copy was not asked to send page 100 again";
  size_t before = out_.records.size();
  filter_->WriteRecord(Record{rec::kX86TscInfo, std::vector<uint8_t>(24, 0)});
  ASSERT_EQ(out_.records.size(), before + 2);
  EXPECT_EQ(out_.records[before].type, rec::kPageData);
  EXPECT_EQ(out_.records[before + 1].type, rec::kX86TscInfo);
  PageDataView v = ParsePageData(out_.records[before]);
  ASSERT_EQ(v.pages.size(), 1u);
  EXPECT_EQ(v.pages[0].pfn, 100u);
  EXPECT_EQ(0, std::memcmp(v.PageData(0), Page(100), kPageSize));
  EXPECT_EQ(filter_->stats().pages_resent, 1u);
}

TEST_F(FilterTest, ARemappedPageIsNotResent) {
  ReadInto(100, 5, 0x11);
  SendPages({100});
  ReadInto(200, 5, 0x99, IoOp::kWrite);  // invalidates the mapping sent
  ReadInto(100, 9, 0x33);                // the page now holds block 9
  SendPages({100});                      // and goes again, as a fresh mapping
  ASSERT_EQ(Mappings().size(), 2u);
  EXPECT_EQ(Mappings()[1].addr, (BlockAddr{0, 9}));
  filter_->WriteRecord(Record{rec::kX86TscInfo, std::vector<uint8_t>(24, 0)});
  EXPECT_EQ(filter_->stats().pages_resent, 0u);
}

TEST_F(FilterTest, SameContentRewriteKeepsTheMapping) {
  ReadInto(100, 5, 0x11);
  SendPages({100});
  ReadInto(100, 5, 0x11, IoOp::kWrite);  // write-back of the unchanged page
  filter_->WriteRecord(Record{rec::kX86TscInfo, std::vector<uint8_t>(24, 0)});
  EXPECT_EQ(filter_->stats().pages_resent, 0u);
}

TEST_F(FilterTest, AfterVerifyEverythingPassesUnchanged) {
  ReadInto(100, 5, 0x11);
  filter_->WriteRecord(Record{rec::kVerify, {}});
  PageDataBuilder b;
  b.Add(100, page_type::kNotab, Page(100));
  b.Add(102, page_type::kNotab, Page(102));  // a zero page
  Record r = b.Finish();
  filter_->WriteRecord(r);
  EXPECT_EQ(out_.records.back().body, r.body);
  EXPECT_TRUE(Mappings().empty());
}

// The target's fetch credits as the test sets them: what the filter would
// read from the link's reverse direction. A wait is recorded and, as a
// target that catches up would, satisfied at once.
class ScriptedCredits : public FetchCredits {
 public:
  void WaitForFetched(uint64_t n) override {
    waits.push_back(n);
    fetched = std::max(fetched, n);
  }
  uint64_t Fetched() override { return fetched; }

  uint64_t fetched = 0;
  std::vector<uint64_t> waits;
};

class FilterWithCreditsTest : public FilterTest {
 protected:
  // Replaces the fixture's filter by one with a window of `window` mappings.
  void UseCredits(uint64_t window, bool data_when_full) {
    filter_.reset();
    out_.records.clear();
    FilterOptions o;
    o.max_unfetched_mappings = window;
    o.data_when_window_full = data_when_full;
    filter_ = std::make_unique<Filter>(map_.get(), guest_.get(), guest_.get(), &out_, o, &credits_);
    filter_->WriteHeaders(ImageHeader{}, DomainHeader{});
  }

  std::vector<Pfn> MappedPfns() const {
    std::vector<Pfn> pfns;
    for (const PageMapping& m : Mappings()) pfns.push_back(m.pfn);
    return pfns;
  }

  ScriptedCredits credits_;
};

TEST_F(FilterWithCreditsTest, AFullWindowSendsMappablePagesAsData) {
  UseCredits(2, true);
  for (Pfn p = 100; p < 105; ++p) ReadInto(p, p - 90, static_cast<uint8_t>(p));
  SendPages({100, 101, 102, 103, 104});
  // Two fill the window; the other three leave with their content, exact.
  EXPECT_EQ(MappedPfns(), (std::vector<Pfn>{100, 101}));
  auto mem = out_.Memory();
  for (Pfn p = 102; p < 105; ++p) {
    ASSERT_EQ(mem.count(p), 1u) << p;
    EXPECT_EQ(0, std::memcmp(mem[p].data(), Page(p), kPageSize)) << p;
  }
  EXPECT_EQ(mem.count(100) + mem.count(101), 0u);
  EXPECT_TRUE(credits_.waits.empty()) << "the filter waited instead of sending data";
  EXPECT_EQ(filter_->stats().pages_data_window_full, 3u);
  EXPECT_EQ(filter_->UnfetchedMappings(), 2u);

  // The target reports one fetched: one more mapping fits, then data again.
  credits_.fetched = 1;
  for (Pfn p = 105; p < 107; ++p) ReadInto(p, p - 90, static_cast<uint8_t>(p));
  SendPages({105, 106});
  EXPECT_EQ(MappedPfns(), (std::vector<Pfn>{100, 101, 105}));
  EXPECT_EQ(out_.Memory().count(106), 1u);
  EXPECT_EQ(filter_->stats().pages_data_window_full, 4u);
  EXPECT_EQ(filter_->stats().pages_mapped, 3u);
}

TEST_F(FilterWithCreditsTest, WithoutDataWhenFullTheFilterWaits) {
  UseCredits(2, false);
  for (Pfn p = 100; p < 105; ++p) ReadInto(p, p - 90, static_cast<uint8_t>(p));
  SendPages({100, 101, 102, 103, 104});
  EXPECT_EQ(MappedPfns(), (std::vector<Pfn>{100, 101, 102, 103, 104}));
  EXPECT_EQ(credits_.waits, (std::vector<uint64_t>{3}));
  EXPECT_EQ(filter_->stats().pages_data_window_full, 0u);
}

TEST_F(FilterWithCreditsTest, ASmallerWindowTakesEffectAtTheNextRecord) {
  UseCredits(100, true);
  for (Pfn p = 100; p < 104; ++p) ReadInto(p, p - 90, static_cast<uint8_t>(p));
  SendPages({100, 101});
  filter_->SetMaxUnfetchedMappings(3);
  SendPages({102, 103});
  EXPECT_EQ(MappedPfns(), (std::vector<Pfn>{100, 101, 102}));
  EXPECT_EQ(out_.Memory().count(103), 1u);
}

TEST_F(FilterTest, APageWhoseBlockWasRewrittenGoesAsData) {
  ReadInto(100, 5, 0x11);
  SendPages({100});
  ASSERT_EQ(Mappings().size(), 1u);
  // The guest rewrites the page and writes it back to block 5: the mapping
  // sent is stale, and the page maps block 5 with its new content.
  ReadInto(100, 5, 0x12, IoOp::kWrite);
  ASSERT_TRUE(map_->Lookup(100).has_value());
  SendPages({100});
  EXPECT_EQ(Mappings().size(), 1u) << "a page of a block being rewritten was mapped again";
  auto mem = out_.Memory();
  ASSERT_EQ(mem.count(100), 1u);
  EXPECT_EQ(0, std::memcmp(mem[100].data(), Page(100), kPageSize));
  EXPECT_EQ(filter_->stats().pages_data_rewritten, 1u);
  // Nothing is left to re-send at the end: the newest record is data.
  filter_->WriteRecord(Record{rec::kX86TscInfo, std::vector<uint8_t>(24, 0)});
  EXPECT_EQ(filter_->stats().pages_resent, 0u);
}

TEST_F(FilterTest, APageWhoseBlockWasRewrittenBeforeItsFirstSendGoesAsData) {
  ReadInto(100, 5, 0x11);
  ReadInto(101, 6, 0x21);
  ReadInto(100, 5, 0x12, IoOp::kWrite);  // block 5 rewritten during the migration
  SendPages({100, 101});
  ASSERT_EQ(Mappings().size(), 1u);
  EXPECT_EQ(Mappings()[0].pfn, 101u);
  auto mem = out_.Memory();
  ASSERT_EQ(mem.count(100), 1u);
  EXPECT_EQ(0, std::memcmp(mem[100].data(), Page(100), kPageSize));
  EXPECT_EQ(filter_->stats().pages_data_rewritten, 1u);
}

TEST_F(FilterTest, APageReusedForAnotherBlockIsMappedAgain) {
  ReadInto(100, 5, 0x11);
  SendPages({100});
  ReadInto(200, 5, 0x99, IoOp::kWrite);  // block 5 rewritten: the mapping is stale
  ReadInto(100, 9, 0x33);                // the page now caches block 9, not rewritten
  SendPages({100});
  ASSERT_EQ(Mappings().size(), 2u);
  EXPECT_EQ(Mappings()[1].addr, (BlockAddr{0, 9}));
  EXPECT_EQ(filter_->stats().pages_data_rewritten, 0u);
}

TEST_F(FilterTest, RewrittenBlocksMayStillBeMappedWhenAsked) {
  filter_.reset();
  out_.records.clear();
  FilterOptions o;
  o.data_after_block_rewrite = false;
  filter_ = std::make_unique<Filter>(map_.get(), guest_.get(), guest_.get(), &out_, o);
  filter_->WriteHeaders(ImageHeader{}, DomainHeader{});
  ReadInto(100, 5, 0x11);
  SendPages({100});
  ReadInto(100, 5, 0x12, IoOp::kWrite);
  SendPages({100});
  ASSERT_EQ(Mappings().size(), 2u);
  EXPECT_EQ(Mappings()[1].hash, PageHash(Page(100)));
}

}  // namespace
}  // namespace p2bmig::test
