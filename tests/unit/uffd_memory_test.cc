// UffdMemory against the kernel's userfaultfd: missing pages block the
// accessing thread until installed, installs never overwrite a present page.

#include "sim/uffd_memory.h"

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <poll.h>

#include "sim/guest_memory.h"

namespace p2bmig::sim {
namespace {

class UffdMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (Pfn p = 0; p < 16; ++p) std::memset(memory_.page(p), 0x11, kPageSize);
  }
  GuestMemory memory_{16, "", GuestMemory::Kind::kLazyRestore};
};

TEST_F(UffdMemoryTest, AccessToMissingPageWaitsForItsInstall) {
  std::vector<Pfn> missing = {3, 4, 9};
  UffdMemory uffd(&memory_, missing);
  // Present pages keep their content and do not fault.
  EXPECT_EQ(memory_.page(2)[0], 0x11);
  std::atomic<int> seen{-1};
  std::thread guest([&] { seen = memory_.page(4)[100]; });  // blocks
  pollfd pfd{uffd.fault_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 5000), 1) << "no fault reported";
  std::vector<Pfn> faults;
  uffd.TakeFaults(&faults);
  ASSERT_EQ(faults, std::vector<Pfn>{4});
  EXPECT_EQ(seen.load(), -1) << "the access went ahead of the install";
  std::vector<uint8_t> page(kPageSize, 0x42);
  EXPECT_TRUE(uffd.Install(4, page.data()));
  guest.join();
  EXPECT_EQ(seen.load(), 0x42);
}

TEST_F(UffdMemoryTest, InstallNeverOverwritesAPresentPage) {
  std::vector<Pfn> missing = {5};
  UffdMemory uffd(&memory_, missing);
  std::vector<uint8_t> first(kPageSize, 0x01), second(kPageSize, 0x02);
  EXPECT_TRUE(uffd.Install(5, first.data()));
  memory_.page(5)[7] = 0x77;  // the guest writes
  EXPECT_FALSE(uffd.Install(5, second.data()));
  EXPECT_EQ(memory_.page(5)[7], 0x77);
  EXPECT_EQ(memory_.page(5)[8], 0x01);
  // A page that was never missing is present too.
  EXPECT_FALSE(uffd.Install(6, second.data()));
  EXPECT_EQ(memory_.page(6)[0], 0x11);
}

TEST_F(UffdMemoryTest, ReleaseWakesWaitingAccesses) {
  std::vector<Pfn> missing = {7};
  auto uffd = std::make_unique<UffdMemory>(&memory_, missing);
  std::atomic<bool> done{false};
  std::thread guest([&] {
    volatile uint8_t v = memory_.page(7)[0];
    (void)v;
    done = true;
  });
  pollfd pfd{uffd->fault_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 5000), 1);
  EXPECT_FALSE(done.load());
  uffd->Release();
  guest.join();
  EXPECT_TRUE(done.load());
}

}  // namespace
}  // namespace p2bmig::sim
