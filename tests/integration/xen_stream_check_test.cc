// Streams of the simulated host checked by Xen's own verify-stream-v2: the
// baseline stream as the save loop writes it, and a p2bmig stream after the
// resolver has turned it back into plain v2. The raw p2bmig stream must be
// rejected: its records are mandatory, so a target without p2bmig fails.

#include <gtest/gtest.h>

#include <p2bmig/block_store.h>
#include <p2bmig/resolver.h>
#include <p2bmig/stream.h>

#include "sim/content.h"
#include "sim/sim_host.h"
#include "sim/sim_restore.h"
#include "test_util/sim_fixture.h"
#include "test_util/verify_stream.h"

namespace p2bmig::test {
namespace {

constexpr uint64_t kPages = 4096;

class XenStreamCheck : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (VerifyStreamV2Path(&why).empty()) GTEST_FAIL() << "verify-stream-v2 unavailable: " << why;
    image_ = dir_.File("disk0.img");
    sim::CreateDiskImage(image_, 32u << 20, 5);
  }

  // Migrates a guest running `workload` into a stream file; returns the
  // source (paused, its memory as sent).
  std::unique_ptr<sim::SourceHost> SaveTo(const std::string& file, sim::Mode mode) {
    sim::SourceOptions so;
    so.guest.memory_pages = kPages;
    so.guest.kernel_pages = 128;
    so.guest.buffer_pages = 32;
    so.guest.disk_paths = {image_};
    so.workload = "fileserver";
    so.mode = mode;
    so.flow_control = false;  // a file carries no credits back
    auto host = std::make_unique<sim::SourceHost>(so);
    host->WarmUp();
    std::unique_ptr<ByteStream> out = OpenFileForWrite(file);
    host->Migrate(out.get());
    out->Flush();
    return host;
  }

  TempDir dir_;
  std::string image_;
};

TEST_F(XenStreamCheck, BaselineStreamIsValidV2) {
  std::string file = dir_.File("baseline.stream");
  SaveTo(file, sim::Mode::kBaseline);
  CommandResult r = RunVerifyStreamV2(file);
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(XenStreamCheck, ResolvedP2bmigStreamIsValidV2AndExact) {
  std::string raw = dir_.File("p2bmig.stream");
  std::unique_ptr<sim::SourceHost> source = SaveTo(raw, sim::Mode::kP2bmig);

  // Stock Xen refuses the stream as sent...
  CommandResult refused = RunVerifyStreamV2(raw);
  EXPECT_NE(refused.exit_code, 0) << "a stream with p2bmig records passed as plain v2";

  // ...and accepts it once resolved on the target.
  std::unique_ptr<BlockStore> store = OpenPosixBlockStore({image_});
  std::string resolved = dir_.File("resolved.stream");
  {
    std::unique_ptr<ByteStream> in = OpenFileForRead(raw);
    std::unique_ptr<ByteStream> out = OpenFileForWrite(resolved);
    StreamWriter writer(out.get());
    ResolverOptions options;
    options.nr_pfns = kPages;
    Resolver resolver(store.get(), &writer, options);
    StreamReader reader(in.get());
    Pump(&reader, &resolver);
    out->Flush();
    EXPECT_GT(resolver.stats().fetches_applied, kPages / 4);
  }
  CommandResult accepted = RunVerifyStreamV2(resolved);
  EXPECT_EQ(accepted.exit_code, 0) << accepted.output;

  // The resolved stream restores the source's memory exactly.
  sim::GuestMemory target(kPages);
  sim::SimRestore restore(&target);
  std::unique_ptr<ByteStream> in = OpenFileForRead(resolved);
  StreamReader reader(in.get());
  Pump(&reader, &restore);
  EXPECT_TRUE(restore.complete());
  EXPECT_EQ(DifferingPages(source->guest().memory(), target), 0u);
}

}  // namespace
}  // namespace p2bmig::test
