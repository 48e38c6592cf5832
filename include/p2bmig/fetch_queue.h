// FetchQueue: the target's NAS fetch queue. Takes requests for 4 KiB blocks
// (each with a caller-chosen tag), reads them from a BlockStore while the
// migration stream keeps flowing, and hands back the block contents.
//
// It is fast because it is smart about shared storage: random 4 KiB reads are
// slow on NFS, large sequential reads are fast, so it
//   * reads each block once however many requests name it,
//   * coalesces adjacent and near-adjacent blocks (gap <= max_gap_blocks) of a
//     disk into reads of up to max_read_bytes,
//   * keeps at most max_inflight_reads reads and max_inflight_bytes in flight,
//   * serves requests roughly in submission order (the oldest pending block
//     starts each read), so what the restore needs first arrives first;
//   * lets a block jump the queue (Prioritize): a guest that runs before its
//     memory is complete (lazy restore) is blocked on it. Such a read is
//     short, starts at once even beyond the in-flight limits, and takes
//     pending neighbours of the block along.
// Failed reads are retried up to `retries` times, then reported as an error.
//
// Thread safety: Submit, Poll, Drain and stats are meant for one thread (the
// resolver's); reads complete on the BlockStore's threads internally.

#ifndef P2BMIG_FETCH_QUEUE_H_
#define P2BMIG_FETCH_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include <p2bmig/block_store.h>
#include <p2bmig/types.h>

namespace p2bmig {

struct FetchOptions {
  size_t max_read_bytes = 1u << 20;
  uint32_t max_gap_blocks = 8;
  size_t max_inflight_reads = 16;
  size_t max_inflight_bytes = 64u << 20;
  int retries = 3;
  // Prioritized reads span at most this many blocks (the faulting block and
  // its pending neighbours), and up to this many may exceed max_inflight_reads.
  uint32_t urgent_read_blocks = 16;
  size_t max_urgent_reads = 4;
  // Called on a store thread whenever a read completes (e.g. to wake a
  // poll() loop); must not block or call into the queue.
  std::function<void()> on_read_done;
};

struct FetchStats {
  uint64_t requests = 0;       // Submit calls
  uint64_t unique_blocks = 0;  // distinct blocks read
  uint64_t reads = 0;          // read operations issued to the store
  uint64_t bytes_read = 0;     // bytes read from the store (gaps included)
  uint64_t retries = 0;        // reads retried after an error
  uint64_t urgent_reads = 0;   // reads started by Prioritize
};

class FetchQueue {
 public:
  // Called once per submitted request with its tag and the block's 4 KiB.
  // `data` is valid only during the call.
  using Deliver = std::function<void(uint64_t tag, const uint8_t* data)>;

  // REQUIRES: `store` outlives the queue.
  FetchQueue(BlockStore* store, FetchOptions options = {});
  ~FetchQueue();  // waits for reads in flight
  FetchQueue(const FetchQueue&) = delete;
  FetchQueue& operator=(const FetchQueue&) = delete;

  // Queues a request for block `addr`; never blocks on I/O.
  // REQUIRES: addr.disk < store->nr_disks() and the block lies inside the disk.
  void Submit(uint64_t tag, BlockAddr addr);

  // Moves block `addr` to the front: if it is pending (no read covers it
  // yet) a short read of it starts now. Returns false if no request for the
  // block is waiting for a read (delivered, unknown, or already being read).
  bool Prioritize(BlockAddr addr);

  // Delivers every request completed so far; returns how many. Throws
  // Error(kIo) if a read failed after its retries.
  size_t Poll(const Deliver& deliver);

  // Delivers every request submitted so far, waiting for them; throws like
  // Poll.
  void Drain(const Deliver& deliver);

  // Requests submitted and not yet delivered.
  size_t pending() const;

  FetchStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace p2bmig

#endif  // P2BMIG_FETCH_QUEUE_H_
