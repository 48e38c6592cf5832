// ResumedGuest: the simulated guest running on the target after a lazy
// restore, before and after its memory is complete. It carries on the CPU
// side of the source's workload (the same memory accesses, at the same rate,
// over the same hot set) on the target's memory, so its first access to a
// missing page blocks until the page is installed. Its operating system's
// own state (page cache index, allocator) stays behind on the source, so it
// does no disk I/O.
//
// Every write is logged: (pfn, offset, value XORed in). A write is a
// read-modify-write, so replaying the log onto the source's memory at its
// pause gives exactly what the target must hold (ApplyGuestWrites); a page
// installed with wrong content, or installed over a write, shows.
//
// Thread safety: Start, Stop and the accessors from one thread; the guest's
// threads are its own.

#ifndef P2BMIG_SIM_RESUMED_GUEST_H_
#define P2BMIG_SIM_RESUMED_GUEST_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "sim/guest_memory.h"
#include "sim/workload.h"

namespace p2bmig::sim {

class ResumedGuest {
 public:
  // REQUIRES: `memory` outlives the guest.
  ResumedGuest(GuestMemory* memory, const WorkloadProfile& profile, uint64_t seed);
  ~ResumedGuest();  // stops
  ResumedGuest(const ResumedGuest&) = delete;
  ResumedGuest& operator=(const ResumedGuest&) = delete;

  void Start();
  // Joins the threads. REQUIRES: no access is blocked on a page that will
  // never come (release the userfaultfd first when giving up).
  void Stop();

  uint64_t ops() const { return ops_.load(); }
  // The writes done so far. REQUIRES: stopped.
  const std::vector<MemoryAccess>& writes() const { return writes_; }

 private:
  void ThreadMain(int index);

  GuestMemory* memory_;
  WorkloadProfile profile_;
  uint64_t seed_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ops_{0};
  std::vector<std::thread> threads_;
  std::vector<std::vector<MemoryAccess>> thread_writes_;
  std::vector<MemoryAccess> writes_;
};

// Applies `writes` to a copy of memory (`nr_pages` pages at `base`).
void ApplyGuestWrites(uint8_t* base, uint64_t nr_pages, const std::vector<MemoryAccess>& writes);

// The log as a file: 24-byte little-endian entries {pfn u64, offset u32,
// reserved u32, value u64}.
void SaveGuestWrites(const std::string& path, const std::vector<MemoryAccess>& writes);
std::vector<MemoryAccess> LoadGuestWrites(const std::string& path);

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_RESUMED_GUEST_H_
