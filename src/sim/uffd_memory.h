// UffdMemory: the simulated host's missing pages for a lazy restore, made
// with userfaultfd. The guest's memory is registered for missing-page faults
// (UFFDIO_REGISTER_MODE_MISSING); the pages still owed are dropped
// (MADV_DONTNEED), so the guest's first access to one blocks in the kernel
// until Install fills it (UFFDIO_COPY, which wakes the access). UFFDIO_COPY
// refuses a page that is present (EEXIST), so an install never overwrites
// what the guest has written.
//
// Thread safety: the guest's threads access memory freely; Install,
// TakeFaults and Wake are for the one thread that serves faults. Destroying
// the object unregisters the memory and wakes every waiting access (a
// stopped guest's threads then read zero pages and must discard what they
// do).

#ifndef P2BMIG_SIM_UFFD_MEMORY_H_
#define P2BMIG_SIM_UFFD_MEMORY_H_

#include <span>
#include <vector>

#include <p2bmig/lazy.h>

#include "sim/guest_memory.h"

namespace p2bmig::sim {

class UffdMemory : public MissingPageMemory {
 public:
  // Registers all of `memory` and makes `missing` missing. Throws Error
  // (kIo) if userfaultfd is not available.
  // REQUIRES: memory->kind() == kLazyRestore; no guest thread runs yet.
  UffdMemory(GuestMemory* memory, std::span<const Pfn> missing);
  ~UffdMemory() override;

  bool Install(Pfn pfn, const uint8_t* data) override;
  int fault_fd() const override { return fd_; }
  void TakeFaults(std::vector<Pfn>* pfns) override;
  void Wake(Pfn pfn) override;

  // Unregisters the memory: waiting accesses are woken, later ones no
  // longer fault. Idempotent.
  void Release();

 private:
  GuestMemory* memory_;
  int fd_ = -1;
  bool registered_ = false;
};

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_UFFD_MEMORY_H_
