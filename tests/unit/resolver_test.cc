// The resolver on its own: records in, plain v2 out, against a real image
// file through the POSIX store (delayed where a test needs late fetches).

#include <cstring>

#include <gtest/gtest.h>

#include <p2bmig/block_store.h>
#include <p2bmig/hash.h>
#include <p2bmig/resolver.h>

#include "sim/content.h"
#include "test_util/record_collector.h"
#include "test_util/sim_fixture.h"

namespace p2bmig::test {
namespace {

constexpr uint64_t kDiskBytes = 4u << 20;  // 1024 blocks
constexpr uint64_t kPfns = 256;

class ResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = dir_.File("disk0.img");
    sim::CreateDiskImage(image_, kDiskBytes, 7);
    store_ = OpenPosixBlockStore({image_});
  }

  std::vector<uint8_t> Block(uint64_t block) {
    std::vector<uint8_t> data(kPageSize);
    FILE* f = std::fopen(image_.c_str(), "rb");
    std::fseek(f, static_cast<long>(block * kPageSize), SEEK_SET);
    EXPECT_EQ(std::fread(data.data(), 1, kPageSize, f), kPageSize);
    std::fclose(f);
    return data;
  }

  std::unique_ptr<Resolver> Make(BlockStore* store) {
    ResolverOptions opt;
    opt.nr_pfns = kPfns;
    auto r = std::make_unique<Resolver>(store, &out_, opt);
    r->WriteHeaders(ImageHeader{}, DomainHeader{});
    return r;
  }

  static Record Disks() { return MakeP2bDisks(std::vector<uint64_t>{kDiskBytes}); }
  PageMapping Map(Pfn pfn, uint64_t block) {
    return {pfn, page_type::kNotab, {0, block}, PageHash(Block(block).data())};
  }
  static Record Data(Pfn pfn, uint8_t fill) {
    std::vector<uint8_t> page(kPageSize, fill);
    PageDataBuilder b;
    b.Add(pfn, page_type::kNotab, page.data());
    return b.Finish();
  }
  static Record End() { return Record{rec::kEnd, {}}; }

  TempDir dir_;
  std::string image_;
  std::unique_ptr<BlockStore> store_;
  RecordCollector out_;
};

TEST_F(ResolverTest, MappingBecomesPageDataWithTheBlocksContent) {
  auto r = Make(store_.get());
  r->WriteRecord(Disks());
  std::vector<PageMapping> m = {Map(3, 10), Map(4, 11), Map(5, 10)};
  r->WriteRecord(MakePageMappings(m));
  r->WriteRecord(End());
  auto mem = out_.Memory();
  EXPECT_EQ(mem[3], Block(10));
  EXPECT_EQ(mem[4], Block(11));
  EXPECT_EQ(mem[5], Block(10));
  EXPECT_EQ(out_.records.back().type, rec::kEnd);
  for (const Record& rec : out_.records) EXPECT_LT(rec.type, rec::kP2bDisks) << "p2b record leaked";
  EXPECT_EQ(r->stats().fetches_applied, 3u);
}

TEST_F(ResolverTest, LaterDataWinsOverALateFetch) {
  DelayedStore slow(store_.get(), 1, 50'000);  // reads complete 0-50 ms late
  auto r = Make(&slow);
  r->WriteRecord(Disks());
  for (Pfn p = 0; p < 64; ++p) {
    std::vector<PageMapping> m = {Map(p, p)};
    r->WriteRecord(MakePageMappings(m));
    r->WriteRecord(Data(p, static_cast<uint8_t>(p + 1)));  // newer than the mapping
  }
  r->WriteRecord(End());
  auto mem = out_.Memory();
  for (Pfn p = 0; p < 64; ++p) {
    EXPECT_EQ(mem[p], std::vector<uint8_t>(kPageSize, static_cast<uint8_t>(p + 1))) << p;
  }
  EXPECT_EQ(r->stats().fetches_superseded, 64u);
  EXPECT_EQ(r->stats().fetches_applied, 0u);
}

TEST_F(ResolverTest, LaterMappingWinsOverEarlierMappingAndData) {
  DelayedStore slow(store_.get(), 2, 20'000);
  auto r = Make(&slow);
  r->WriteRecord(Disks());
  r->WriteRecord(Data(9, 0xAA));
  std::vector<PageMapping> first = {Map(9, 100)};
  std::vector<PageMapping> second = {Map(9, 200)};
  r->WriteRecord(MakePageMappings(first));
  r->WriteRecord(MakePageMappings(second));
  r->WriteRecord(End());
  EXPECT_EQ(out_.Memory()[9], Block(200));
}

TEST_F(ResolverTest, ZeroPagesBecomeZeros) {
  auto r = Make(store_.get());
  r->WriteRecord(Disks());
  r->WriteRecord(Data(1, 0x55));
  std::vector<PageRef> z = {{1, page_type::kNotab}, {2, page_type::kNotab}};
  r->WriteRecord(MakeZeroPages(z));
  r->WriteRecord(End());
  auto mem = out_.Memory();
  EXPECT_EQ(mem[1], std::vector<uint8_t>(kPageSize, 0));
  EXPECT_EQ(mem[2], std::vector<uint8_t>(kPageSize, 0));
}

TEST_F(ResolverTest, FetchesAreDrainedBeforeVerifyAndTscInfo) {
  DelayedStore slow(store_.get(), 3, 20'000);
  auto r = Make(&slow);
  r->WriteRecord(Disks());
  std::vector<PageMapping> m = {Map(7, 1)};
  r->WriteRecord(MakePageMappings(m));
  r->WriteRecord(Record{rec::kVerify, {}});
  std::vector<uint32_t> types = out_.Types();
  ASSERT_EQ(types.size(), 2u);
  EXPECT_EQ(types[0], rec::kPageData);
  EXPECT_EQ(types[1], rec::kVerify);
}

TEST_F(ResolverTest, AMismatchingBlockFailsTheMigration) {
  auto r = Make(store_.get());
  r->WriteRecord(Disks());
  PageMapping m = Map(3, 10);
  m.hash ^= 1;  // what a source that skipped verification would send
  r->WriteRecord(MakePageMappings(std::vector<PageMapping>{m}));
  try {
    r->WriteRecord(End());
    FAIL() << "a block that does not match its hash was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kVerification);
  }
  for (const Record& rec : out_.records) EXPECT_NE(rec.type, rec::kEnd);
  EXPECT_TRUE(out_.Memory().count(3) == 0) << "wrong memory was passed to the restore";
}

TEST_F(ResolverTest, AMismatchLaterReplacedByDataIsFine) {
  auto r = Make(store_.get());
  r->WriteRecord(Disks());
  PageMapping m = Map(3, 10);
  m.hash ^= 1;
  r->WriteRecord(MakePageMappings(std::vector<PageMapping>{m}));
  r->WriteRecord(Data(3, 0x42));
  r->WriteRecord(End());
  EXPECT_EQ(out_.Memory()[3], std::vector<uint8_t>(kPageSize, 0x42));
}

TEST_F(ResolverTest, StreamCannotNameBlocksOutsideTheTargetsDisks) {
  for (PageMapping bad :
       {PageMapping{1, 0, {1, 0}, 0}, PageMapping{1, 0, {0, kDiskBytes / kPageSize}, 0},
        PageMapping{kPfns, 0, {0, 0}, 0}, PageMapping{1, page_type::kL1tab, {0, 0}, 0}}) {
    RecordCollector out;
    ResolverOptions opt;
    opt.nr_pfns = kPfns;
    Resolver r(store_.get(), &out, opt);
    r.WriteHeaders(ImageHeader{}, DomainHeader{});
    r.WriteRecord(Disks());
    try {
      r.WriteRecord(MakePageMappings(std::vector<PageMapping>{bad}));
      FAIL() << "accepted disk " << bad.addr.disk << " block " << bad.addr.block << " pfn "
             << bad.pfn;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kMalformedStream);
    }
  }
}

TEST_F(ResolverTest, DiskConfigurationMustMatchTheSource) {
  auto r = Make(store_.get());
  EXPECT_THROW(r->WriteRecord(MakeP2bDisks(std::vector<uint64_t>{kDiskBytes * 2})), Error);
  auto r2 = Make(store_.get());
  EXPECT_THROW(r2->WriteRecord(MakeP2bDisks(std::vector<uint64_t>{kDiskBytes, kDiskBytes})), Error);
  auto r3 = Make(store_.get());
  EXPECT_THROW(r3->WriteRecord(MakePageMappings(std::vector<PageMapping>{Map(1, 1)})), Error)
      << "mappings before P2B_DISKS";
}

TEST_F(ResolverTest, PendingFetchesStayWithinTheirBudget) {
  // A source that ignores fetch credits sends mappings as fast as it can:
  // the resolver waits for the storage instead of queueing without bound.
  ResolverOptions opt;
  opt.nr_pfns = kPfns;
  opt.max_pending_fetches = 8;
  Resolver r(store_.get(), &out_, opt);
  r.WriteHeaders(ImageHeader{}, DomainHeader{});
  r.WriteRecord(Disks());
  std::vector<PageMapping> maps;
  for (Pfn p = 0; p < 200; ++p) maps.push_back(Map(p % kPfns, p));
  r.WriteRecord(MakePageMappings(maps));
  EXPECT_LE(r.stats().peak_pending_fetches, 8u);
  r.WriteRecord(End());
  EXPECT_EQ(r.stats().fetches_applied + r.stats().fetches_superseded, 200u);
  EXPECT_EQ(out_.Memory()[199 % kPfns], Block(199));
}

TEST_F(ResolverTest, PlainStreamsPassThroughUnchanged) {
  auto r = Make(store_.get());
  Record d = Data(5, 0x11);
  r->WriteRecord(d);
  r->WriteRecord(Record{rec::kX86TscInfo, std::vector<uint8_t>(24, 0)});
  r->WriteRecord(End());
  ASSERT_EQ(out_.records.size(), 3u);
  EXPECT_EQ(out_.records[0].body, d.body);
  EXPECT_EQ(out_.Types(), (std::vector<uint32_t>{rec::kPageData, rec::kX86TscInfo, rec::kEnd}));
}

}  // namespace
}  // namespace p2bmig::test
