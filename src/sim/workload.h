// Workloads for the simulated guest: named, seeded, reproducible profiles of
// what the guest does before and during a migration (page-cache reads and
// writes with write-back, anonymous memory, raw block I/O), and a runner that
// drives a SimGuest with one of them from background threads.
//
// Thread safety: a WorkloadRunner is controlled from one thread; its own
// threads call into the SimGuest.

#ifndef P2BMIG_SIM_WORKLOAD_H_
#define P2BMIG_SIM_WORKLOAD_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "sim/sim_guest.h"

namespace p2bmig::sim {

struct WorkloadProfile {
  std::string name;
  std::string description;
  // Before the migration: share of guest memory filled with page cache
  // (file reads) and with anonymous memory.
  double warm_cache_fraction = 0;
  double warm_anon_fraction = 0;
  // Share of the remaining free pages that hold stale data rather than
  // zeros. A reference Debian guest that had run a workload had 6% of its
  // memory free and 3.8% zero pages (docs/benchmarks.md); only a freshly
  // booted guest has much never-touched, zero memory.
  double stale_free_share = 0.9;
  // During the migration, per second of guest time.
  double read_blocks_per_s = 0;      // file reads through the page cache
  double write_blocks_per_s = 0;     // file writes, written back later
  double writeback_pages_per_s = 0;  // write-back of modified cache pages
  double anon_pages_per_s = 0;       // anonymous memory writes
  double scribble_pages_per_s = 0;   // in-memory changes to cached pages
  double raw_ops_per_s = 0;          // partial, unaligned, repeated raw I/O
  double raw_write_ops_per_s = 0;    // raw writes that overwrite blocks
  double reclaim_pages_per_s = 0;    // cache pages reused as anonymous memory
  // The CPU side: single-page memory accesses (half reads, half
  // read-modify-writes), mostly in a hot set (PickTouchedPfn). The same
  // accesses run on the target after a lazy restore (ResumedGuest), so
  // their rate is the guest's speed before, during and after the switch.
  double memory_ops_per_s = 0;
  // Share of file reads that go to a hot set of 1/8 of the disk.
  double hot_read_share = 0.5;
  int threads = 2;
};

// The built-in profiles, by name: idle, fileserver, kernel-build, database,
// memory, cache-rewrite, stress. Throws Error(kInvalidArgument) for others.
WorkloadProfile GetWorkload(const std::string& name);
std::vector<std::string> WorkloadNames();

// The page a memory access goes to: 80% of them to a hot set of 1/8 of the
// guest's pages (fixed by `seed`, so the same on source and target), the
// rest anywhere.
Pfn PickTouchedPfn(Rng& rng, uint64_t nr_pages, uint64_t seed);

// One memory access: reads 64 bytes, or XORs `value` into the 8 bytes at
// `offset` (a read-modify-write: its result depends on the page's content
// before it). Returns true for a write.
struct MemoryAccess {
  Pfn pfn = 0;
  uint32_t offset = 0;  // multiple of 8
  uint64_t value = 0;   // non-zero for a write
};
MemoryAccess DrawMemoryAccess(Rng& rng, uint64_t nr_pages, uint64_t seed);
// Performs it on `page` with word-atomic accesses (any thread); returns a
// value derived from what was read. REQUIRES: `page` 8-byte aligned.
uint64_t PerformMemoryAccess(uint8_t* page, const MemoryAccess& access);

class WorkloadRunner {
 public:
  WorkloadRunner(SimGuest* guest, WorkloadProfile profile, uint64_t seed);
  ~WorkloadRunner();  // stops
  WorkloadRunner(const WorkloadRunner&) = delete;
  WorkloadRunner& operator=(const WorkloadRunner&) = delete;

  // Fills page cache and anonymous memory as the profile says (synchronous).
  void WarmUp();
  // Starts the background threads; Stop() joins them. An error in a thread
  // (e.g. a full disk) stops that thread and is rethrown by Stop().
  void Start();
  void Stop();
  uint64_t ops() const { return ops_.load(); }
  uint64_t memory_ops() const { return memory_ops_.load(); }

 private:
  void ThreadMain(int index);
  void RunSlice(Rng& rng, double scale);

  SimGuest* guest_;
  WorkloadProfile profile_;
  uint64_t seed_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ops_{0};
  std::atomic<uint64_t> memory_ops_{0};
  std::vector<std::thread> threads_;
  std::exception_ptr error_;
  std::mutex error_mu_;
};

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_WORKLOAD_H_
