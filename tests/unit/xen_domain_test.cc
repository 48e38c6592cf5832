// Tests of XenDomain that run without Xen: opening fails clearly when this is
// not a dom0, and the pure logic behind ReadPages, MarkDirty and
// PeekAndCleanDirty (batches, pfn range checks, runs, dirty bitmaps).

#include "xen/xen_domain.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <p2bmig/types.h>

namespace p2bmig {
namespace {

bool RunningOnXenDom0() {
  struct stat st;
  return stat("/dev/xen/privcmd", &st) == 0 || stat("/proc/xen/privcmd", &st) == 0;
}

TEST(XenDomainTest, OpenWithoutControlNodeIsClearIoError) {
  XenOpenOptions options;
  options.control_nodes = {"/nonexistent/p2bmig-test/privcmd"};
  try {
    XenDomain::Open(1, {}, options);
    FAIL() << "Open succeeded without a control node";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cannot open the Xen control interface: is this a Xen dom0?"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("/nonexistent/p2bmig-test/privcmd"), std::string::npos) << msg;
  }
}

TEST(XenDomainTest, OpenWithDefaultsOutsideDom0Fails) {
  if (RunningOnXenDom0()) GTEST_SKIP() << "this is a Xen dom0";
  try {
    XenDomain::Open(0, {});
    FAIL() << "Open succeeded outside a Xen dom0";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("is this a Xen dom0?"), std::string::npos) << msg;
    EXPECT_NE(msg.find("/dev/xen/privcmd"), std::string::npos) << msg;
    EXPECT_NE(msg.find("/proc/xen/privcmd"), std::string::npos) << msg;
  }
}

TEST(XenDomainTest, ControlInterfaceCheckAcceptsAnyExistingNode) {
  const std::vector<std::string> nodes = {"/nonexistent/privcmd", "/dev/null"};
  EXPECT_NO_THROW(CheckXenControlInterface(nodes));
  EXPECT_THROW(CheckXenControlInterface({}), Error);
}

TEST(XenDomainTest, PfnRangeCheckNamesTheFirstBadPfn) {
  const std::vector<Pfn> ok = {0, 5, 99};
  EXPECT_NO_THROW(CheckPfnRange(ok, 100, "ReadPages"));
  const std::vector<Pfn> bad = {3, 100, 200};
  try {
    CheckPfnRange(bad, 100, "ReadPages of domain 7");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("0x64"), std::string::npos) << msg;
    EXPECT_NE(msg.find("domain 7"), std::string::npos) << msg;
  }
}

TEST(XenDomainTest, CoalescePfnsSortsDeduplicatesAndMerges) {
  const std::vector<Pfn> pfns = {10, 3, 4, 11, 5, 4, 20, 12};
  const std::vector<PfnRun> expected = {{3, 3}, {10, 3}, {20, 1}};
  EXPECT_EQ(CoalescePfns(pfns), expected);
  EXPECT_TRUE(CoalescePfns({}).empty());
}

TEST(XenDomainTest, CoalescePfnsSplitsLongRuns) {
  std::vector<Pfn> pfns;
  for (Pfn p = 100; p < 110; ++p) pfns.push_back(p);
  const std::vector<PfnRun> expected = {{100, 4}, {104, 4}, {108, 2}};
  EXPECT_EQ(CoalescePfns(pfns, 4), expected);
}

TEST(XenDomainTest, SplitBatchesCoversEverythingOnce) {
  EXPECT_TRUE(SplitBatches(0, XenDomain::kMapBatchPages).empty());
  auto b = SplitBatches(2500, 1024);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0], (std::pair<size_t, size_t>{0, 1024}));
  EXPECT_EQ(b[1], (std::pair<size_t, size_t>{1024, 2048}));
  EXPECT_EQ(b[2], (std::pair<size_t, size_t>{2048, 2500}));
  EXPECT_EQ(SplitBatches(1024, 1024).size(), 1u);
  EXPECT_THROW(SplitBatches(1, 0), Error);
}

TEST(XenDomainTest, DirtyBitmapToPfns) {
  std::vector<uint64_t> bitmap = {0x8000000000000005ull, 0x2ull, 0xFFFFFFFFFFFFFFFFull};
  // 130 pfns: bits 128 and 129 of the last word count, the rest lie outside.
  const std::vector<Pfn> expected = {0, 2, 63, 65, 128, 129};
  EXPECT_EQ(DirtyBitmapToPfns(bitmap, 130), expected);
  EXPECT_TRUE(DirtyBitmapToPfns(bitmap, 0).empty());
}

TEST(XenDomainTest, RestorePfnBoundCoversRamAndTheHolesBelow4GiB) {
  // A 4 GiB HVM guest with a 256 MiB MMIO hole has RAM up to 4.25 GiB.
  const uint64_t four_gib = 1u << 20;
  EXPECT_GT(RestorePfnBound(four_gib + 256), four_gib + (256u << 8));
  EXPECT_EQ(RestorePfnBound(0), kPfnsBelow4GiB);
  EXPECT_EQ(RestorePfnBound(32768), 32768 + kPfnsBelow4GiB);
}

}  // namespace
}  // namespace p2bmig
