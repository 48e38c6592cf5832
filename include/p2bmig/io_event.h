// Completed block requests of a guest, as Dom0 sees them, and the IoTap
// interface that delivers them.
//
// A request covers a contiguous run of disk sectors and is made of segments,
// each a run of sectors inside one guest page (Xen's blkif segment:
// first_sect..last_sect of a granted frame). Only a segment that covers a whole
// page and lands on a 4 KiB-aligned disk offset can create a p2b entry (I2).
//
// Thread safety: IoEvent is a value type. IoTap implementations document their
// own threading; P2bMap::Apply may be called from any thread.

#ifndef P2BMIG_IO_EVENT_H_
#define P2BMIG_IO_EVENT_H_

#include <cstdint>
#include <functional>
#include <vector>

#include <p2bmig/types.h>

namespace p2bmig {

enum class IoOp : uint8_t { kRead, kWrite };

struct IoSegment {
  Pfn pfn = 0;
  uint8_t first_sect = 0;  // first 512-byte sector of the page touched
  uint8_t last_sect = 7;   // last sector touched (inclusive)
  // Content hash (PageHash) of the page when the request completed. Only
  // meaningful for full-page segments (first_sect == 0, last_sect == 7).
  uint64_t hash = 0;

  bool full_page() const { return first_sect == 0 && last_sect == kSectorsPerPage - 1; }
  uint32_t nr_sectors() const { return uint32_t{last_sect} - first_sect + 1; }
};

struct IoEvent {
  IoOp op = IoOp::kRead;
  uint32_t disk = 0;    // index into the domain's disk configuration
  uint64_t sector = 0;  // first 512-byte sector of the request on the disk
  std::vector<IoSegment> segments;
};

// Source of completed block requests for one domain (the sim host's disk
// model, or the xen-blkback tap on a Xen host).
class IoTap {
 public:
  using Listener = std::function<void(const IoEvent&)>;

  IoTap() = default;
  IoTap(const IoTap&) = delete;
  IoTap& operator=(const IoTap&) = delete;
  virtual ~IoTap() = default;

  // Calls `listener` once per completed request, in completion order, from
  // the thread that completed it. Replaces any earlier listener.
  virtual void SetListener(Listener listener) = 0;

  // Returns once every request that was in flight when it was called has
  // completed and been delivered to the listener (invariant I4).
  virtual void Drain() = 0;
};

}  // namespace p2bmig

#endif  // P2BMIG_IO_EVENT_H_
