// The target's memory budget while receiving: records read ahead of a busy
// resolver are bounded in bytes, not only in number (records may be 16 MiB).

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include <p2bmig/block_store.h>
#include <p2bmig/resolver.h>
#include <p2bmig/stream.h>

#include "sim/content.h"
#include "sim/fetch_credits.h"
#include "test_util/sim_fixture.h"

namespace p2bmig::test {
namespace {

// A restore that stalls on its first record (long enough for the reader to
// fill any budget, even in a sanitizer build) and then takes its time.
class SlowSink : public RecordSink {
 public:
  void WriteHeaders(const ImageHeader&, const DomainHeader&) override {}
  void WriteRecord(const Record& r) override {
    if (r.type != rec::kPageData) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(first_ ? 1500 : 5));
    first_ = false;
  }

 private:
  bool first_ = true;
};

TEST(ReceiveBudgetTest, RecordsReadAheadStayWithinTheByteBudget) {
  TempDir dir;
  const std::string image = dir.File("disk0.img");
  sim::CreateDiskImage(image, 4u << 20, 1);
  const std::string stream = dir.File("guest.stream");
  constexpr int kRecords = 24;  // of 4 MiB each: 96 MiB in all
  {
    auto out = OpenFileForWrite(stream);
    StreamWriter w(out.get());
    w.WriteHeaders(ImageHeader{}, DomainHeader{});
    std::vector<uint8_t> page(kPageSize, 0x42);
    for (int r = 0; r < kRecords; ++r) {
      PageDataBuilder b;
      for (Pfn p = 0; p < 1024; ++p) b.Add(p, page_type::kNotab, page.data());
      w.WriteRecord(b.Finish());
    }
    w.WriteRecord(Record{rec::kEnd, {}});
  }
  auto store = OpenPosixBlockStore({image});
  SlowSink sink;
  ResolverOptions opt;
  opt.nr_pfns = 1024;
  Resolver resolver(store.get(), &sink, opt);
  auto in = OpenFileForRead(stream);
  sim::ReceiveStats stats;
  sim::ReceiveWithCredits(in.get(), opt.limits, &resolver, false, {}, &stats);
  // The reader runs far ahead of the slow sink: only the budget stops it.
  EXPECT_GT(stats.peak_queued_bytes, 16u << 20);
  EXPECT_LE(stats.peak_queued_bytes, 32u << 20);
}

}  // namespace
}  // namespace p2bmig::test
