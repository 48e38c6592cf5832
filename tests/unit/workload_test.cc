// Workload warm-up: the guest's memory has the profile's make-up (page cache,
// heap, stale free memory, few zero pages), reproducibly from the seed.

#include "sim/workload.h"

#include <gtest/gtest.h>

#include <p2bmig/hash.h>

#include "sim/content.h"
#include "sim/sim_guest.h"
#include "test_util/sim_fixture.h"

namespace p2bmig::test {
namespace {

struct Census {
  double cache = 0, anon = 0, zero = 0;
};

Census WarmUp(const std::string& workload, uint64_t seed, std::string* memory_hash = nullptr) {
  TempDir dir;
  std::string image = dir.File("disk.img");
  sim::CreateDiskImage(image, 128u << 20, seed);
  sim::SimGuestConfig c;
  c.memory_pages = 16384;  // 64 MiB
  c.kernel_pages = 512;
  c.buffer_pages = 64;
  c.disk_paths = {image};
  sim::SimGuest guest(c, seed);
  sim::WorkloadRunner runner(&guest, sim::GetWorkload(workload), seed);
  runner.WarmUp();
  sim::GuestMemoryUse use = guest.MemoryUse();
  Census out;
  const double n = static_cast<double>(c.memory_pages);
  out.cache = static_cast<double>(use.cache) / n;
  out.anon = static_cast<double>(use.anon) / n;
  uint64_t zero = 0, h = 0;
  for (Pfn p = 0; p < c.memory_pages; ++p) {
    zero += IsZeroPage(guest.memory().page(p)) ? 1 : 0;
    h = h * 31 + PageHash(guest.memory().page(p));
  }
  out.zero = static_cast<double>(zero) / n;
  if (memory_hash) *memory_hash = std::to_string(h);
  return out;
}

TEST(Workload, WarmUpHasTheProfilesMakeUp) {
  for (const char* name : {"fileserver", "database", "kernel-build", "memory"}) {
    sim::WorkloadProfile p = sim::GetWorkload(name);
    Census c = WarmUp(name, 7);
    EXPECT_NEAR(c.cache, p.warm_cache_fraction, 0.03) << name;
    EXPECT_NEAR(c.anon, p.warm_anon_fraction, 0.03) << name;
    // Zero pages: file blocks and heap pages that are zero, kernel zero
    // pages, and the free pages not aged; a guest that has run a while has
    // few (a real one had 3.8%).
    EXPECT_LT(c.zero, 0.15) << name;
    EXPECT_GT(c.zero, 0.01) << name;
  }
}

TEST(Workload, IdleGuestKeepsNeverUsedMemoryZero) {
  Census c = WarmUp("idle", 7);
  EXPECT_GT(c.zero, 0.3);
}

TEST(Workload, WarmUpIsReproducible) {
  std::string a, b, other;
  WarmUp("fileserver", 11, &a);
  WarmUp("fileserver", 11, &b);
  WarmUp("fileserver", 12, &other);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, other);
}

}  // namespace
}  // namespace p2bmig::test
