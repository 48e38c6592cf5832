// The NAS fetch queue (see fetch_queue.h for what it promises).
//
// Every block that was submitted and not yet delivered has one entry in a
// per-disk ordered map, whether it waits for a read (pending) or is covered by
// a read in flight; later requests for it only add their tag. A deque of
// (sequence number, block) in submission order finds the oldest pending block
// (entries that were read in the meantime are skipped lazily). A read starts
// at that block and grows over pending neighbours closer than the gap bound.
//
// Threads. The queue's state is guarded by one mutex (mu). Reads are started
// by whichever thread makes work or room for them: the caller's in Submit and
// Poll, and the store's, in the completion callback of a read, which tops the
// window up from the pending blocks as soon as the read lands. The store
// therefore never waits for the caller's thread to be scheduled to get its
// next read (a single-threaded libnfs loop does not either).
//
// A completion callback never blocks on mu: it appends the read to a short
// list under a second mutex (done_mu, held only for a push or a swap), raises
// `work` and takes mu only if it is free (Kick). If it is not, the thread
// holding mu is running, and it runs Kick itself right after it lets go, so
// the landed read is processed and the next reads start without waiting for
// a thread to be woken. (A callback blocked on mu while the caller takes a
// landed read's blocks out of the map would stall the store's event loop, and
// under load a blocked thread waits for a CPU too.)
//
// The store is called outside the mutexes, since a store may complete a read
// on the calling thread. Delivery stays on the caller's thread: Poll and Drain
// take landed reads in landing order, take their blocks' tags out of the map
// under mu and call `deliver` without it (it may Submit).
//
// Pick() is the one place that decides what to read next: retries, then
// prioritized blocks (Prioritize, for a guest blocked on them), then the
// oldest pending blocks. Prioritized ("urgent") reads are short and bounded by
// their own limit (max_urgent_reads reads holding a buffer), not by the
// in-flight or held-buffer limits of the ordinary reads, which they neither
// wait for nor count against: a guest's fault must not queue behind a window
// full of background reads.

#include <algorithm>
#include <atomic>
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
  bool urgent = false;  // started for Prioritize
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
  BlockStore* const store;
  FetchOptions options;
  uint64_t max_run_blocks;
  // Read buffers held at once (reads in the store plus landed reads not yet
  // delivered), at most: what the store may run ahead of the caller.
  size_t max_held_reads;
  uint64_t urgent_run_blocks;  // blocks an urgent read spans at most

  // Reads handed back by the store, not yet processed under mu.
  struct Done {
    Read* read;
    bool failed;
    std::string why;
  };
  std::mutex done_mu;             // never held while taking mu
  std::condition_variable cv;     // a callback ended; with done_mu
  std::vector<Done> completed;    // guarded by done_mu
  size_t in_store = 0;            // store calls whose callback has not ended; guarded by done_mu
  uint64_t callbacks_ended = 0;   // guarded by done_mu
  std::atomic<bool> work{false};  // `completed` may hold reads

  std::mutex mu;
  // Everything below is guarded by mu.
  std::vector<std::map<uint64_t, Block>> disks;      // undelivered blocks by disk
  std::deque<std::pair<uint64_t, BlockAddr>> order;  // pending blocks, oldest first
  std::deque<BlockAddr> urgent;  // prioritized blocks, waiting for an urgent slot
  size_t urgent_inflight = 0;    // urgent reads in `inflight`
  size_t urgent_held = 0;        // urgent reads holding a buffer (in flight, landed, delivering)
  uint64_t next_seq = 0;
  size_t undelivered = 0;                             // requests
  std::vector<std::unique_ptr<Read>> inflight;        // issued, not yet landed (retries included)
  std::vector<Read*> retry;                           // in `inflight`, to be issued again
  std::deque<std::unique_ptr<Read>> landed;           // read, not yet delivered; oldest first
  size_t delivering = 0;                              // reads taken out of `landed`, buffer in use
  std::vector<std::unique_ptr<uint8_t[]>> free_bufs;  // of max_read_bytes each
  size_t inflight_bytes = 0;                          // of the ordinary reads in `inflight`
  bool stopping = false;
  FetchStats stats;
  std::string failure;  // why, once a read failed for good; empty until then

  Impl(BlockStore* s, FetchOptions o) : store(s), options(o) {
    options.max_read_bytes = std::max(options.max_read_bytes, kPageSize);
    options.max_inflight_reads = std::max<size_t>(options.max_inflight_reads, 1);
    options.max_urgent_reads = std::max<size_t>(options.max_urgent_reads, 1);
    max_run_blocks = options.max_read_bytes / kPageSize;
    max_held_reads = 2 * options.max_inflight_reads;
    urgent_run_blocks = std::clamp<uint64_t>(options.urgent_read_blocks, 1, max_run_blocks);
    disks.resize(store->nr_disks());
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> l(mu);
      stopping = true;  // no new reads start
    }
    // Callbacks of reads in flight point into this object.
    WaitForStore();
  }

  void WaitForStore() {
    std::unique_lock<std::mutex> l(done_mu);
    cv.wait(l, [this] { return in_store == 0; });
  }

  // How many blocks the next ordinary read may span given the limits; 0 if
  // it has to wait. Urgent reads count against none of them. REQUIRES: mu
  // held.
  uint64_t RunLimit() const {
    if (inflight.size() + landed.size() + delivering - urgent_held >= max_held_reads) return 0;
    const size_t normal = inflight.size() - urgent_inflight;
    if (normal == 0) return max_run_blocks;  // a read always fits then
    if (normal >= options.max_inflight_reads) return 0;
    if (inflight_bytes >= options.max_inflight_bytes) return 0;
    return std::min<uint64_t>(max_run_blocks,
                              (options.max_inflight_bytes - inflight_bytes) / kPageSize);
  }

  // Chooses the reads to start now and accounts them as in flight: failed
  // reads due for another attempt first, then short reads around prioritized
  // blocks while urgent slots are free, then reads for the oldest pending
  // blocks while the limits allow. REQUIRES: mu held.
  void Pick(std::vector<Read*>* start) {
    if (!failure.empty() || stopping) return;
    for (Read* r : retry) start->push_back(r);
    retry.clear();
    while (!urgent.empty() && urgent_held < options.max_urgent_reads) {
      BlockAddr addr = urgent.front();
      urgent.pop_front();
      auto& blocks = disks[addr.disk];
      auto it = blocks.find(addr.block);
      if (it == blocks.end() || it->second.read != nullptr) continue;  // read meanwhile
      auto read = std::make_unique<Read>();
      read->disk = addr.disk;
      read->urgent = true;
      Grow(blocks, it, urgent_run_blocks, read.get());
      ++urgent_inflight;
      ++urgent_held;
      stats.urgent_reads++;
      Track(std::move(read), start);
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
      if (limit == 0) break;
      order.pop_front();
      auto read = std::make_unique<Read>();
      read->disk = addr.disk;
      Grow(blocks, it, limit, read.get());
      Track(std::move(read), start);
    }
    stats.reads += start->size();
    std::lock_guard<std::mutex> l(done_mu);
    in_store += start->size();
  }

  // Gives a picked read a buffer and accounts it as in flight.
  // REQUIRES: mu held.
  void Track(std::unique_ptr<Read> read, std::vector<Read*>* start) {
    // Buffers are reused: a fresh 1 MiB allocation is an mmap, page faults
    // and zeroing for every read, which costs a third of the throughput.
    if (!free_bufs.empty()) {
      read->buf = std::move(free_bufs.back());
      free_bufs.pop_back();
    } else {
      read->buf.reset(new uint8_t[options.max_read_bytes]);
    }
    if (!read->urgent) inflight_bytes += read->bytes();
    start->push_back(read.get());
    inflight.push_back(std::move(read));
  }

  // Grows a read around the pending block `start` over pending blocks at
  // most max_gap_blocks apart, spanning at most `limit` blocks, and marks its
  // blocks as read by `read`. In-flight blocks are stepped over as gap.
  //
  // A cluster of near-adjacent pending blocks is cut into reads of `limit`
  // blocks counted from where the cluster starts (looked for up to a few reads
  // back), not from `start`: a run submitted in shuffled order is then read
  // in as few reads as if it had come in order. REQUIRES: mu held.
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

  // Processes the reads the store handed back: landed ones join `landed`,
  // failed ones are queued for another attempt or fail the queue.
  // REQUIRES: mu held.
  void TakeCompleted() {
    std::vector<Done> done;
    {
      std::lock_guard<std::mutex> l(done_mu);
      done.swap(completed);
    }
    for (Done& d : done) {
      Read* r = d.read;
      if (!d.failed) {
        stats.bytes_read += r->bytes();
        landed.push_back(Retire(r));
      } else if (failure.empty() && !stopping && r->attempts < options.retries) {
        r->attempts++;
        stats.retries++;
        retry.push_back(r);
      } else {
        if (failure.empty()) {
          failure = "fetch of " + Describe(*r) + " from " + store->Describe() + " failed after " +
                    std::to_string(r->attempts + 1) + " attempts: " + d.why;
        }
        Recycle(Retire(r));
      }
    }
  }

  // Starts the reads Pick chose, then processes what the store handed back
  // meanwhile. Any thread; mu not held.
  void Start(std::vector<Read*>* start) {
    for (Read* r : *start) Issue(r);
    start->clear();
    Kick();
  }

  // REQUIRES: r was picked (counted in in_store); no mutex held.
  void Issue(Read* r) {
    store->ReadAsync(r->disk, r->first * kPageSize, r->bytes(), r->buf.get(),
                     [this, r](std::exception_ptr error) { OnRead(r, std::move(error)); });
  }

  // Processes completed reads and starts the next ones, unless another
  // thread holds mu: that thread runs Kick after it lets go. Any thread; mu
  // not held.
  void Kick() {
    // A store that completes a read inside ReadAsync calls back into Kick on
    // the same thread: the outer call's loop picks that read up, so nesting
    // stays one level deep.
    thread_local const Impl* kicking = nullptr;
    if (kicking == this) return;
    const Impl* outer = kicking;
    kicking = this;
    std::vector<Read*> start;
    while (work.load()) {
      if (!mu.try_lock()) break;
      work.store(false);
      TakeCompleted();
      Pick(&start);
      mu.unlock();
      for (Read* r : start) Issue(r);
      start.clear();
    }
    kicking = outer;
  }

  // The completion callback, on a store thread (or inside ReadAsync).
  void OnRead(Read* r, std::exception_ptr error) {
    Done d{r, error != nullptr, error ? What(error) : std::string()};  // the error stays here
    {
      std::lock_guard<std::mutex> l(done_mu);
      completed.push_back(std::move(d));
    }
    work.store(true);
    Kick();  // the next reads start here, not on the caller's thread
    // After the read is in `completed`, so a Poll the hook triggers sees it;
    // before in_store drops, so the destructor waits for the hook too.
    if (options.on_read_done) options.on_read_done();
    std::lock_guard<std::mutex> l(done_mu);
    in_store--;
    callbacks_ended++;
    // Under done_mu, so the destructor cannot run before this returns.
    cv.notify_all();
  }

  // Delivers landed reads in landing order until none is left; returns how
  // many requests were delivered. Caller's thread; mu not held.
  size_t Collect(const Deliver& deliver) {
    size_t n = 0;
    std::unique_ptr<Read> r;
    std::vector<std::pair<uint64_t, const uint8_t*>> out;  // reused across reads
    std::vector<Read*> start;
    for (;;) {
      bool more;
      {
        std::lock_guard<std::mutex> l(mu);
        TakeCompleted();
        if (r) {
          delivering--;
          Recycle(std::move(r));
        }
        more = failure.empty() && !landed.empty();
        if (more) {
          r = std::move(landed.front());
          landed.pop_front();
          delivering++;
          TakeTags(*r, &out);
        }
        // The delivered read's buffer slot may be the one the store waits for.
        Pick(&start);
      }
      Start(&start);
      if (!more) {
        // Start may have processed reads that landed meanwhile.
        std::lock_guard<std::mutex> l(mu);
        if (!failure.empty() || landed.empty()) break;
        continue;
      }
      n += out.size();
      for (auto& [tag, data] : out) deliver(tag, data);
      out.clear();
    }
    return n;
  }

  // Takes the blocks of a landed read out of the map and lists their
  // requests with their data in `r.buf`. Taken out before delivery, so a
  // request submitted from inside `deliver` gets a fresh entry rather than
  // joining this delivered one. REQUIRES: mu held.
  void TakeTags(const Read& r, std::vector<std::pair<uint64_t, const uint8_t*>>* out) {
    auto& blocks = disks[r.disk];
    auto it = blocks.lower_bound(r.first);
    while (it != blocks.end() && it->first < r.first + r.count) {
      if (it->second.read != &r) {
        ++it;
        continue;
      }
      const uint8_t* data = r.buf.get() + (it->first - r.first) * kPageSize;
      out->push_back({it->second.tag, data});
      for (uint64_t t : it->second.more_tags) out->push_back({t, data});
      undelivered -= 1 + it->second.more_tags.size();
      it = blocks.erase(it);
    }
  }

  // Takes a read that left the store out of the in-flight set.
  // REQUIRES: mu held.
  std::unique_ptr<Read> Retire(Read* r) {
    if (r->urgent) {
      --urgent_inflight;
    } else {
      inflight_bytes -= r->bytes();
    }
    auto it = std::find_if(inflight.begin(), inflight.end(),
                           [r](const std::unique_ptr<Read>& p) { return p.get() == r; });
    std::swap(*it, inflight.back());
    std::unique_ptr<Read> read = std::move(inflight.back());
    inflight.pop_back();
    return read;
  }

  // REQUIRES: mu held.
  void Recycle(std::unique_ptr<Read> r) {
    if (r->urgent) --urgent_held;
    if (free_bufs.size() < max_held_reads) free_bufs.push_back(std::move(r->buf));
  }

  // After a failure: waits for every callback still running, then throws.
  [[noreturn]] void Fail() {
    WaitForStore();
    std::string why;
    {
      std::lock_guard<std::mutex> l(mu);
      why = failure;
    }
    throw Error(ErrorKind::kIo, why);
  }

  bool Failed() {
    std::lock_guard<std::mutex> l(mu);
    return !failure.empty();
  }
};

FetchQueue::FetchQueue(BlockStore* store, FetchOptions options)
    : impl_(std::make_unique<Impl>(store, options)) {}

FetchQueue::~FetchQueue() = default;

void FetchQueue::Submit(uint64_t tag, BlockAddr addr) {
  Impl& q = *impl_;
  std::vector<Read*> start;
  {
    std::lock_guard<std::mutex> l(q.mu);
    q.stats.requests++;
    q.undelivered++;
    if (addr.disk >= q.disks.size()) {
      // Outside the contract; fail the queue rather than index out of range.
      if (q.failure.empty()) {
        q.failure = "fetch of disk " + std::to_string(addr.disk) + " from " + q.store->Describe() +
                    ": no such disk";
      }
      return;
    }
    auto [it, inserted] = q.disks[addr.disk].try_emplace(addr.block);
    if (!inserted) {
      it->second.more_tags.push_back(tag);
      return;
    }
    it->second.tag = tag;
    it->second.seq = q.next_seq++;
    q.order.push_back({it->second.seq, addr});
    // With the window full, the next completion starts this block's read.
    if (q.RunLimit() == 0) return;
    q.Pick(&start);
  }
  q.Start(&start);
}

bool FetchQueue::Prioritize(BlockAddr addr) {
  Impl& q = *impl_;
  std::vector<Read*> start;
  {
    std::lock_guard<std::mutex> l(q.mu);
    if (!q.failure.empty() || addr.disk >= q.disks.size()) return false;
    auto& blocks = q.disks[addr.disk];
    auto it = blocks.find(addr.block);
    if (it == blocks.end() || it->second.read != nullptr) return false;
    q.urgent.push_back(addr);
    q.Pick(&start);
  }
  q.Start(&start);
  return true;
}

size_t FetchQueue::Poll(const Deliver& deliver) {
  Impl& q = *impl_;
  if (q.Failed()) q.Fail();
  size_t n = q.Collect(deliver);
  if (q.Failed()) q.Fail();
  return n;
}

void FetchQueue::Drain(const Deliver& deliver) {
  Impl& q = *impl_;
  for (;;) {
    uint64_t seen;
    {
      std::lock_guard<std::mutex> l(q.done_mu);
      seen = q.callbacks_ended;
    }
    Poll(deliver);
    {
      std::lock_guard<std::mutex> l(q.mu);
      if (q.undelivered == 0) return;
    }
    // Whatever lands (or fails) from now on ends a callback.
    std::unique_lock<std::mutex> l(q.done_mu);
    q.cv.wait(l, [&q, seen] { return q.callbacks_ended != seen; });
  }
}

size_t FetchQueue::pending() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->undelivered;
}

FetchStats FetchQueue::stats() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->stats;
}

}  // namespace p2bmig
