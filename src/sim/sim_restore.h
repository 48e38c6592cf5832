// SimRestore: the simulated host's restore, the counterpart of libxc's
// xg_sr_restore.c for a plain v2 stream: it writes PAGE_DATA into the target
// guest's memory and, after a VERIFY record, compares instead of writing (as
// `xl migrate --debug` does). Like stock Xen it rejects p2bmig's records:
// they must have been resolved before they reach it.
//
// Thread safety: one thread.

#ifndef P2BMIG_SIM_SIM_RESTORE_H_
#define P2BMIG_SIM_SIM_RESTORE_H_

#include <cstdint>

#include <p2bmig/stream.h>

#include "sim/guest_memory.h"

namespace p2bmig::sim {

class SimRestore : public RecordSink {
 public:
  explicit SimRestore(GuestMemory* memory) : memory_(memory) {}

  void WriteHeaders(const ImageHeader& image, const DomainHeader& domain) override;
  void WriteRecord(const Record& record) override;

  bool complete() const { return complete_; }
  uint64_t pages_written() const { return pages_written_; }
  uint64_t verify_mismatches() const { return verify_mismatches_; }
  uint64_t pages_verified() const { return pages_verified_; }

 private:
  GuestMemory* memory_;
  bool headers_ = false;
  bool verify_ = false;
  bool complete_ = false;
  uint64_t pages_written_ = 0;
  uint64_t pages_verified_ = 0;
  uint64_t verify_mismatches_ = 0;
};

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_SIM_RESTORE_H_
