// The NAS fetch queue (see fetch_queue.h for what it promises).
//
// Every block that was submitted and not yet delivered has one entry in a
// per-disk ordered map, whether it waits for a read (pending) or is covered by
// a read in flight; later requests for it only add their tag. A deque of
// (sequence number, block) in submission order finds the oldest pending block
// (entries that were read in the meantime are skipped lazily). A read starts
// at that block and grows over pending neighbours closer than the gap bound.
//
// Reads complete on the store's threads, which only move the read to a
// completion list under a mutex; everything else happens on the caller's
// thread, in Submit, Poll and Drain.

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <p2bmig/fetch_queue.h>

namespace p2bmig {

namespace {

struct Read;

struct Block {
  // Most blocks have one request: its tag is kept inline, saving an
  // allocation per block.
  uint64_t tag = 0;
  std::vector<uint64_t> more_tags;
  uint64_t seq = 0;      // submission order of the first request
  Read* read = nullptr;  // null while pending
};

// One read of blocks [first, first + count) of a disk.
struct Read {
  uint32_t disk = 0;
  uint64_t first = 0;
  uint64_t count = 0;
  std::unique_ptr<uint8_t[]> buf;
  int attempts = 0;
  bool urgent = false;       // started by Prioritize
  std::exception_ptr error;  // of the last attempt
  size_t bytes() const { return static_cast<size_t>(count) * kPageSize; }
};

std::string Describe(const Read& r) {
  return "disk " + std::to_string(r.disk) + " blocks " + std::to_string(r.first) + ".." +
         std::to_string(r.first + r.count - 1);
}

std::string What(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace

struct FetchQueue::Impl {
  BlockStore* store;
  FetchOptions options;
  uint64_t max_run_blocks;

  std::vector<std::map<uint64_t, Block>> disks;      // undelivered blocks by disk
  std::deque<std::pair<uint64_t, BlockAddr>> order;  // pending blocks, oldest first
  std::deque<BlockAddr> urgent;                      // prioritized, waiting for a slot
  size_t urgent_inflight = 0;
  uint64_t next_seq = 0;
  size_t undelivered = 0;  // requests
  std::vector<std::unique_ptr<Read>> inflight;
  std::vector<std::unique_ptr<uint8_t[]>> free_bufs;  // of max_read_bytes each
  size_t inflight_bytes = 0;
  FetchStats stats;
  std::exception_ptr failure;  // set once a read failed for good

  // Shared with the store's threads.
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Read*> completed;  // guarded by mu
  size_t in_store = 0;           // reads issued and not completed; guarded by mu

  Impl(BlockStore* s, FetchOptions o) : store(s), options(o) {
    options.max_read_bytes = std::max(options.max_read_bytes, kPageSize);
    options.max_inflight_reads = std::max<size_t>(options.max_inflight_reads, 1);
    max_run_blocks = options.max_read_bytes / kPageSize;
    disks.resize(store->nr_disks());
  }

  ~Impl() {
    // Callbacks of reads in flight point into this object.
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [this] { return in_store == 0; });
  }

  // How many blocks the next read may span given the in-flight limits; 0
  // if it has to wait. A read always fits when none is in flight.
  uint64_t RunLimit() const {
    const size_t normal = inflight.size() - urgent_inflight;
    if (normal == 0) return max_run_blocks;
    if (normal >= options.max_inflight_reads) return 0;
    if (inflight_bytes >= options.max_inflight_bytes) return 0;
    return std::min<uint64_t>(max_run_blocks,
                              (options.max_inflight_bytes - inflight_bytes) / kPageSize);
  }

  // Starts reads for the oldest pending blocks while capacity allows.
  void Pump() {
    if (failure) return;
    while (!urgent.empty() && urgent_inflight < options.max_urgent_reads) {
      BlockAddr addr = urgent.front();
      urgent.pop_front();
      auto& blocks = disks[addr.disk];
      auto it = blocks.find(addr.block);
      if (it != blocks.end() && it->second.read == nullptr) StartUrgent(blocks, it);
    }
    while (!order.empty()) {
      auto [seq, addr] = order.front();
      auto& blocks = disks[addr.disk];
      auto it = blocks.find(addr.block);
      if (it == blocks.end() || it->second.read != nullptr || it->second.seq != seq) {
        order.pop_front();  // already read as part of another run
        continue;
      }
      uint64_t limit = RunLimit();
      if (limit == 0) return;
      order.pop_front();
      auto read = std::make_unique<Read>();
      read->disk = addr.disk;
      Grow(blocks, it, limit, read.get());
      Issue(std::move(read));
    }
  }

  // Grows a read around the pending block `start` over pending blocks at
  // most max_gap_blocks apart, spanning at most `limit` blocks, and marks its
  // blocks as read by `read`. In-flight blocks are stepped over as gap.
  //
  // A cluster of near-adjacent pending blocks is cut into reads of `limit`
  // blocks counted from where the cluster starts (looked for up to a few reads
  // back), not from `start`: a run submitted in shuffled order is then read
  // in as few reads as if it had come in order.
  void Grow(std::map<uint64_t, Block>& blocks, std::map<uint64_t, Block>::iterator start,
            uint64_t limit, Read* read) {
    const uint64_t gap = options.max_gap_blocks;
    const uint64_t origin = start->first;
    uint64_t cluster = origin;
    if (start != blocks.begin()) {
      for (auto it = std::prev(start);; --it) {
        if (cluster - it->first - 1 > gap || origin - it->first >= 8 * limit) break;
        if (it->second.read == nullptr) cluster = it->first;
        if (it == blocks.begin()) break;
      }
    }
    uint64_t window = cluster + (origin - cluster) / limit * limit;
    auto it = blocks.lower_bound(window);
    while (it->second.read != nullptr) ++it;  // stops at `start` at the latest
    uint64_t first = it->first, last = first;
    for (++it; it != blocks.end(); ++it) {
      if (it->first - last - 1 > gap || it->first - first + 1 > limit) break;
      if (it->second.read == nullptr) last = it->first;
    }
    read->first = first;
    read->count = last - first + 1;
    for (it = blocks.lower_bound(first); it != blocks.end() && it->first <= last; ++it) {
      if (it->second.read == nullptr) {
        it->second.read = read;
        stats.unique_blocks++;
      }
    }
  }

  // A short read around a block the guest is waiting for, outside the
  // in-flight limits of the ordinary reads.
  void StartUrgent(std::map<uint64_t, Block>& blocks, std::map<uint64_t, Block>::iterator it) {
    auto read = std::make_unique<Read>();
    read->disk = static_cast<uint32_t>(&blocks - disks.data());
    read->urgent = true;
    Grow(blocks, it,
         std::max<uint64_t>(1, std::min<uint64_t>(options.urgent_read_blocks, max_run_blocks)),
         read.get());
    ++urgent_inflight;
    stats.urgent_reads++;
    Issue(std::move(read));
  }

  void Issue(std::unique_ptr<Read> read) {
    // Buffers are reused: a fresh 1 MiB allocation is an mmap, page faults
    // and zeroing for every read, which costs a third of the throughput.
    if (!free_bufs.empty()) {
      read->buf = std::move(free_bufs.back());
      free_bufs.pop_back();
    } else {
      read->buf.reset(new uint8_t[options.max_read_bytes]);
    }
    Read* r = read.get();
    inflight.push_back(std::move(read));
    inflight_bytes += r->bytes();
    StartRead(r);
  }

  void StartRead(Read* r) {
    stats.reads++;
    {
      std::lock_guard<std::mutex> l(mu);
      in_store++;
    }
    // Not under mu: a store may call back on this thread.
    store->ReadAsync(r->disk, r->first * kPageSize, r->bytes(), r->buf.get(),
                     [this, r](std::exception_ptr error) {
                       std::lock_guard<std::mutex> l(mu);
                       r->error = std::move(error);
                       completed.push_back(r);
                       in_store--;
                       if (options.on_read_done) options.on_read_done();
                       // Under mu, so the destructor cannot run before it returns.
                       cv.notify_all();
                     });
  }

  // Handles completed reads: retries or records failures, starts the next
  // reads, then delivers. Starting reads before delivering keeps the store
  // busy while this thread copies blocks out, which matters when the thread
  // has to share a CPU (landed reads give their buffers back only after
  // delivery, so a few more buffers may be in use for a moment). Returns how
  // many requests were delivered.
  size_t Collect(const Deliver& deliver) {
    std::vector<Read*> done;
    {
      std::lock_guard<std::mutex> l(mu);
      done.swap(completed);
    }
    std::vector<std::unique_ptr<Read>> landed;
    for (Read* r : done) {
      if (r->error) {
        if (!failure && r->attempts < options.retries) {
          r->attempts++;
          stats.retries++;
          StartRead(r);
          continue;
        }
        if (!failure) {
          failure = std::make_exception_ptr(
              Error(ErrorKind::kIo, "fetch of " + Describe(*r) + " from " + store->Describe() +
                                        " failed after " + std::to_string(r->attempts + 1) +
                                        " attempts: " + What(r->error)));
        }
        Recycle(Retire(r));
        continue;
      }
      stats.bytes_read += r->bytes();
      landed.push_back(Retire(r));
    }
    Pump();
    size_t delivered = 0;
    for (auto& r : landed) {
      if (!failure) delivered += DeliverRead(*r, deliver);
      Recycle(std::move(r));
    }
    return delivered;
  }

  size_t DeliverRead(const Read& r, const Deliver& deliver) {
    auto& blocks = disks[r.disk];
    size_t n = 0;
    auto it = blocks.lower_bound(r.first);
    while (it != blocks.end() && it->first < r.first + r.count) {
      if (it->second.read != &r) {
        ++it;
        continue;
      }
      const uint8_t* data = r.buf.get() + (it->first - r.first) * kPageSize;
      // Taken out first, so a request submitted from inside `deliver` gets a
      // fresh entry rather than joining this delivered one.
      uint64_t tag = it->second.tag;
      std::vector<uint64_t> more = std::move(it->second.more_tags);
      it = blocks.erase(it);
      undelivered -= 1 + more.size();
      n += 1 + more.size();
      deliver(tag, data);
      for (uint64_t t : more) deliver(t, data);
    }
    return n;
  }

  // Takes a read that left the store out of the in-flight set.
  std::unique_ptr<Read> Retire(Read* r) {
    inflight_bytes -= r->bytes();
    if (r->urgent) --urgent_inflight;
    auto it = std::find_if(inflight.begin(), inflight.end(),
                           [r](const std::unique_ptr<Read>& p) { return p.get() == r; });
    std::swap(*it, inflight.back());
    std::unique_ptr<Read> read = std::move(inflight.back());
    inflight.pop_back();
    return read;
  }

  void Recycle(std::unique_ptr<Read> r) { free_bufs.push_back(std::move(r->buf)); }

  // After a failure: waits for every read still in the store, then throws.
  [[noreturn]] void Fail() {
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [this] { return in_store == 0; });
    }
    Collect([](uint64_t, const uint8_t*) {});
    std::rethrow_exception(failure);
  }
};

FetchQueue::FetchQueue(BlockStore* store, FetchOptions options)
    : impl_(std::make_unique<Impl>(store, options)) {}

FetchQueue::~FetchQueue() = default;

void FetchQueue::Submit(uint64_t tag, BlockAddr addr) {
  Impl& q = *impl_;
  q.stats.requests++;
  q.undelivered++;
  if (addr.disk >= q.disks.size()) {
    // Outside the contract; fail the queue rather than index out of range.
    if (!q.failure) {
      q.failure = std::make_exception_ptr(
          Error(ErrorKind::kIo, "fetch of disk " + std::to_string(addr.disk) + " from " +
                                    q.store->Describe() + ": no such disk"));
    }
    return;
  }
  auto [it, inserted] = q.disks[addr.disk].try_emplace(addr.block);
  if (!inserted) {
    it->second.more_tags.push_back(tag);
  } else {
    it->second.tag = tag;
    it->second.seq = q.next_seq++;
    q.order.push_back({it->second.seq, addr});
    q.Pump();
  }
}

bool FetchQueue::Prioritize(BlockAddr addr) {
  Impl& q = *impl_;
  if (q.failure || addr.disk >= q.disks.size()) return false;
  auto& blocks = q.disks[addr.disk];
  auto it = blocks.find(addr.block);
  if (it == blocks.end() || it->second.read != nullptr) return false;
  if (q.urgent_inflight >= q.options.max_urgent_reads) {
    q.urgent.push_back(addr);
  } else {
    q.StartUrgent(blocks, it);
  }
  return true;
}

size_t FetchQueue::Poll(const Deliver& deliver) {
  Impl& q = *impl_;
  if (q.failure) q.Fail();
  size_t n = q.Collect(deliver);
  if (q.failure) q.Fail();
  q.Pump();
  return n;
}

void FetchQueue::Drain(const Deliver& deliver) {
  Impl& q = *impl_;
  for (;;) {
    Poll(deliver);
    if (q.undelivered == 0) return;
    std::unique_lock<std::mutex> l(q.mu);
    q.cv.wait(l, [&q] { return !q.completed.empty(); });
  }
}

size_t FetchQueue::pending() const { return impl_->undelivered; }

FetchStats FetchQueue::stats() const { return impl_->stats; }

}  // namespace p2bmig
