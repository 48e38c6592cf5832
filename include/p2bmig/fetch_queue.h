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
//     and holds at most 2 * max_inflight_reads read buffers (reads in flight
//     plus landed reads not yet delivered), so the memory it uses is bounded
//     however slowly the caller collects,
//   * serves requests roughly in submission order (the oldest pending block
//     starts each read), so what the restore needs first arrives first,
//   * lets a block jump the queue (Prioritize): a guest that runs before its
//     memory is complete (lazy restore) is blocked on it. Such a read is
//     short, starts at once even beyond the in-flight and held-buffer limits
//     (up to max_urgent_reads of them), and takes pending neighbours of the
//     block along,
//   * starts the next reads from the store's completion callbacks, so the
//     store stays busy while the caller's thread is busy elsewhere or waits
//     for a CPU; only delivery needs the caller.
// Failed reads are retried up to `retries` times, then reported as an error.
//
// Thread safety: Submit, Prioritize, Poll, Drain, pending and stats are meant
// for one thread at a time (the resolver's); `deliver` runs on that thread,
// inside Poll or Drain, and may call Submit. Internally, reads are also
// started and completed on the BlockStore's threads, and
// FetchOptions::on_read_done runs there.

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
  // Called whenever a read completes or fails, once a following Poll can
  // see it. Runs on the thread that completed the read: a thread of the
  // store's own (the NFS store's event loop, a POSIX reader thread), or the
  // thread inside ReadAsync for a store that completes reads there, i.e. any
  // thread, concurrently with the queue's caller. It must be thread-safe,
  // must not block and must not call into the queue (e.g. to wake a poll()
  // loop by writing to an eventfd).
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
