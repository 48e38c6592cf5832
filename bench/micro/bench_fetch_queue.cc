// Fetch queue vs raw libnfs on one NFS image: how close does the queue come
// to what the server can do for the access pattern?
//
//   raw_rand_4k    libnfs nfs_pread_async, 4 KiB at random blocks, at the
//                  best queue depth of 8-128 (tried once after warm-up)
//   raw_seq_1m     libnfs nfs_pread_async, 1 MiB sequential, at the best
//                  queue depth of 1-8
//   store_seq_1m   the libnfs BlockStore alone, as raw_seq_1m, each next
//                  read issued from the completion of the last (as the
//                  fetch queue drives it)
//   store_seq_1m_thread  the same, each next read issued by another thread
//                  woken by the completion
//   fq_random      FetchQueue over the libnfs store, the same random blocks
//                  (a quarter of the image: near neighbours get coalesced)
//   fq_random_gap0 the same with max_gap_blocks = 0 (only adjacent blocks
//                  coalesce): the queue's own cost on random reads
//   fq_runs        FetchQueue, runs of 8-256 adjacent blocks in random order
//
// Targets: fq_runs >= 90% of raw_seq_1m, fq_random >= 90% of raw_rand_4k.
// Prints one JSON object per line (median of the repetitions, MB/s counts
// the 4 KiB blocks asked for, 1 MB = 1e6 bytes), and last the target ratios
// (and the store's) as medians of per-repetition ratios of back-to-back runs
// ("pairs"), the figure to quote on a machine with other load.
//
// Usage: bench_fetch_queue URL [REPETITIONS]
//   e.g. scripts/nfs-server.sh start /tmp/p2bmig-nfs-export
//        head -c 256M /dev/urandom > /tmp/p2bmig-nfs-export/bench.img
//        bench_fetch_queue
//        'nfs://127.0.0.1/export/bench.img?version=3&nfsport=2049&mountport=20048'

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <nfsc/libnfs.h>
#include <poll.h>
#include <sys/resource.h>

#include <p2bmig/block_store.h>
#include <p2bmig/fetch_queue.h>
#include <p2bmig/types.h>

#include "storage/nfs_block_store.h"

namespace p2bmig {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Raw libnfs: one context, `qd` reads outstanding, offsets from a list.
class RawNfs {
 public:
  explicit RawNfs(const std::string& url) {
    nfs_ = nfs_init_context();
    nfs_url* u = nfs_parse_url_full(nfs_, url.c_str());
    if (u == nullptr) Die("bad URL");
    if (nfs_mount(nfs_, u->server, u->path) != 0) Die("mount");
    if (nfs_open(nfs_, u->file, O_RDONLY, &fh_) != 0) Die("open");
    nfs_stat_64 st;
    if (nfs_fstat64(nfs_, fh_, &st) != 0) Die("fstat");
    size_ = st.nfs_size;
    nfs_destroy_url(u);
  }
  ~RawNfs() {
    nfs_close(nfs_, fh_);
    nfs_destroy_context(nfs_);
  }
  uint64_t size() const { return size_; }

  // Reads `len` bytes at each offset, `qd` at a time; returns seconds.
  double Run(const std::vector<uint64_t>& offsets, size_t len, int qd) {
    sink_.resize(len);
    offsets_ = &offsets;
    len_ = len;
    next_ = 0;
    outstanding_ = 0;
    auto t0 = Clock::now();
    for (int i = 0; i < qd; i++) Submit();
    while (outstanding_ > 0) {
      pollfd p{nfs_get_fd(nfs_), static_cast<short>(nfs_which_events(nfs_)), 0};
      if (poll(&p, 1, 1000) < 0) Die("poll");
      if (nfs_service(nfs_, p.revents) < 0) Die("nfs_service");
    }
    return Seconds(t0);
  }

 private:
  void Submit() {
    if (next_ >= offsets_->size()) return;
    if (nfs_pread_async(nfs_, fh_, (*offsets_)[next_++], len_, &RawNfs::Done, this) != 0) {
      Die("pread_async");
    }
    outstanding_++;
  }
  static void Done(int status, nfs_context*, void* data, void* priv) {
    auto* self = static_cast<RawNfs*>(priv);
    if (status < 0) self->Die(static_cast<const char*>(data));
    std::memcpy(self->sink_.data(), data, static_cast<size_t>(status));  // as a consumer would
    self->outstanding_--;
    self->Submit();
  }
  [[noreturn]] void Die(const char* what) {
    std::fprintf(stderr, "raw libnfs: %s: %s\n", what, nfs_get_error(nfs_));
    std::exit(1);
  }

  nfs_context* nfs_ = nullptr;
  nfsfh* fh_ = nullptr;
  uint64_t size_ = 0;
  const std::vector<uint64_t>* offsets_ = nullptr;
  size_t len_ = 0;
  size_t next_ = 0;
  int outstanding_ = 0;
  std::vector<uint8_t> sink_;
};

double FetchAll(BlockStore* store, const FetchOptions& options, const std::vector<uint64_t>& blocks,
                FetchStats* stats) {
  std::vector<uint8_t> sink(kPageSize);
  auto t0 = Clock::now();
  FetchQueue q(store, options);
  for (uint64_t i = 0; i < blocks.size(); i++) q.Submit(i, BlockAddr{0, blocks[i]});
  q.Drain([&sink](uint64_t, const uint8_t* data) { std::memcpy(sink.data(), data, kPageSize); });
  double s = Seconds(t0);
  *stats = q.stats();
  return s;
}

// The store alone, each next read issued from the completion callback of
// the last: `len` bytes at each offset, `qd` at a time.
double StoreRunChained(BlockStore* store, const std::vector<uint64_t>& offsets, size_t len,
                       size_t qd) {
  struct State {
    BlockStore* store;
    const std::vector<uint64_t>* offsets;
    size_t len;
    std::mutex mu;
    std::condition_variable cv;
    size_t next = 0;  // guarded by mu
    size_t done = 0;  // guarded by mu
    std::vector<std::unique_ptr<uint8_t[]>> bufs;
    void Next(uint8_t* buf) {
      size_t i;
      {
        std::lock_guard<std::mutex> l(mu);
        i = next < offsets->size() ? next++ : offsets->size();
      }
      if (i == offsets->size()) return;
      store->ReadAsync(0, (*offsets)[i], len, buf, [this, buf](std::exception_ptr e) {
        if (e) std::abort();
        Next(buf);
        std::lock_guard<std::mutex> l(mu);
        done++;
        cv.notify_all();
      });
    }
  } st{store, &offsets, len, {}, {}, 0, 0, {}};
  for (size_t i = 0; i < qd; i++) st.bufs.emplace_back(new uint8_t[len]);
  auto t0 = Clock::now();
  for (size_t i = 0; i < qd; i++) st.Next(st.bufs[i].get());
  std::unique_lock<std::mutex> l(st.mu);
  st.cv.wait(l, [&] { return st.done == offsets.size(); });
  return Seconds(t0);
}

// The store alone, each next read issued by this thread when one completes:
// `len` bytes at each offset, `qd` at a time.
double StoreRun(BlockStore* store, const std::vector<uint64_t>& offsets, size_t len, size_t qd) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<uint8_t[]>> bufs;
  std::vector<uint8_t*> free_bufs;
  for (size_t i = 0; i < qd; i++) {
    bufs.emplace_back(new uint8_t[len]);
    free_bufs.push_back(bufs.back().get());
  }
  auto t0 = Clock::now();
  for (uint64_t off : offsets) {
    uint8_t* buf;
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return !free_bufs.empty(); });
      buf = free_bufs.back();
      free_bufs.pop_back();
    }
    store->ReadAsync(0, off, len, buf, [&, buf](std::exception_ptr e) {
      if (e) std::abort();
      std::lock_guard<std::mutex> l(mu);
      free_bufs.push_back(buf);
      cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> l(mu);
  cv.wait(l, [&] { return free_bufs.size() == qd; });
  return Seconds(t0);
}

// CPU time (user + system) of this process, all threads: the client's
// cost, which on a small machine competes with the server for the CPUs.
double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Runs `run` (which returns its wall-clock seconds), appends those to
// `secs` and the process's CPU seconds over the same run to `cpu`.
template <typename F>
double Timed(std::vector<double>* secs, std::vector<double>* cpu, F run) {
  double c0 = CpuSeconds();
  double s = run();
  cpu->push_back(CpuSeconds() - c0);
  secs->push_back(s);
  return s;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void Print(const char* name, size_t bytes, const std::vector<double>& secs,
           const std::vector<double>& cpu, double ratio_to, const FetchStats* stats) {
  double mbs = bytes / Median(secs) / 1e6;
  // cpu_per_gb: client CPU seconds per GB of blocks asked for (median);
  // cpu_share: CPU seconds over wall-clock seconds (threads busy at once).
  std::vector<double> share;
  for (size_t i = 0; i < secs.size(); i++) share.push_back(cpu[i] / secs[i]);
  std::printf(
      "{\"bench\":\"%s\",\"bytes\":%zu,\"seconds\":%.4f,\"mb_per_s\":%.1f,"
      "\"cpu_per_gb\":%.3f,\"cpu_share\":%.2f",
      name, bytes, Median(secs), mbs, Median(cpu) / (bytes / 1e9), Median(share));
  if (ratio_to > 0) std::printf(",\"ratio_to_raw\":%.3f", mbs / ratio_to);
  if (stats != nullptr) {
    std::printf(",\"reads\":%llu,\"bytes_read\":%llu",
                static_cast<unsigned long long>(stats->reads),
                static_cast<unsigned long long>(stats->bytes_read));
  }
  std::printf("}\n");
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s NFS_URL [REPETITIONS]\n", argv[0]);
    return 2;
  }
  std::string url = argv[1];
  int reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 3;
  RawNfs raw(url);
  const uint64_t nblocks = raw.size() / kPageSize;
  std::mt19937_64 rng(2024);

  // Random: 16k distinct blocks in random order.
  std::vector<uint64_t> random_blocks;
  {
    std::vector<uint64_t> all(nblocks);
    for (uint64_t i = 0; i < nblocks; i++) all[i] = i;
    std::shuffle(all.begin(), all.end(), rng);
    random_blocks.assign(all.begin(), all.begin() + std::min<uint64_t>(16384, nblocks));
  }
  // Runs: cut the image into runs of 8-256 blocks, keep half of them, and
  // shuffle the order of the runs (blocks within a run stay in order).
  std::vector<uint64_t> run_blocks;
  {
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    for (uint64_t b = 0; b < nblocks;) {
      uint64_t len = std::min<uint64_t>(8 + rng() % 249, nblocks - b);
      if (rng() % 2 == 0) runs.push_back({b, len});
      b += len;
    }
    std::shuffle(runs.begin(), runs.end(), rng);
    for (auto [b, len] : runs) {
      for (uint64_t i = 0; i < len; i++) run_blocks.push_back(b + i);
    }
  }
  std::vector<uint64_t> random_offsets, seq_offsets;
  for (uint64_t b : random_blocks) random_offsets.push_back(b * kPageSize);
  for (uint64_t off = 0; off + (1u << 20) <= raw.size(); off += 1u << 20) {
    seq_offsets.push_back(off);
  }

  // Knobs for tuning runs: FQ_INFLIGHT, FQ_INFLIGHT_KIB, FQ_GAP, FQ_READ_KIB, NFS_CONNECTIONS.
  NfsStoreOptions nfs_options;
  FetchOptions options;
  if (const char* v = std::getenv("NFS_CONNECTIONS")) nfs_options.connections = std::atoi(v);
  if (const char* v = std::getenv("FQ_INFLIGHT")) options.max_inflight_reads = std::atoi(v);
  if (const char* v = std::getenv("FQ_INFLIGHT_KIB"))
    options.max_inflight_bytes = std::atoi(v) << 10;
  if (const char* v = std::getenv("FQ_GAP")) options.max_gap_blocks = std::atoi(v);
  if (const char* v = std::getenv("FQ_READ_KIB")) options.max_read_bytes = std::atoi(v) << 10;
  auto store = OpenNfsBlockStore({url}, nfs_options);
  FetchOptions nogap = options;
  nogap.max_gap_blocks = 0;
  std::vector<double> t_store_seq, t_rand, t_seq, t_fq_rand, t_fq_rand0, t_fq_runs;
  FetchStats s_rand, s_rand0, s_runs;
  // Warm the server's cache once (every benchmark reads from memory there).
  raw.Run(seq_offsets, 1u << 20, 4);
  // The raw baselines at their best queue depth on this machine (best of two
  // runs each).
  auto best_qd = [&](const std::vector<uint64_t>& offsets, size_t len,
                     std::initializer_list<int> qds) {
    int best = 0;
    double best_s = 0;
    for (int qd : qds) {
      double t = std::min(raw.Run(offsets, len, qd), raw.Run(offsets, len, qd));
      std::printf("{\"bench\":\"qd_sweep\",\"len\":%zu,\"qd\":%d,\"mb_per_s\":%.1f}\n", len, qd,
                  offsets.size() * len / t / 1e6);
      if (best == 0 || t < best_s) best = qd, best_s = t;
    }
    return best;
  };
  const int rand_qd = best_qd(random_offsets, kPageSize, {8, 16, 32, 64, 128});
  const int seq_qd = best_qd(seq_offsets, 1u << 20, {1, 2, 4, 8});
  std::printf("{\"bench\":\"best_qd\",\"rand_4k\":%d,\"seq_1m\":%d}\n", rand_qd, seq_qd);
  // Each target pair runs back to back, and the ratio is taken per
  // repetition before the median: load from other processes changes slowly
  // compared with one pair, so it largely cancels out of the ratio.
  std::vector<double> pair_rand, pair_runs, pair_store, pair_store_thread, t_store_thread;
  std::vector<double> c_rand, c_fq_rand, c_seq, c_fq_runs, c_store_seq, c_store_thread, c_fq_rand0;
  for (int r = 0; r < reps; r++) {
    Timed(&t_rand, &c_rand, [&] { return raw.Run(random_offsets, kPageSize, rand_qd); });
    Timed(&t_fq_rand, &c_fq_rand,
          [&] { return FetchAll(store.get(), options, random_blocks, &s_rand); });
    pair_rand.push_back(t_rand.back() / t_fq_rand.back());
    Timed(&t_seq, &c_seq, [&] { return raw.Run(seq_offsets, 1u << 20, seq_qd); });
    Timed(&t_fq_runs, &c_fq_runs,
          [&] { return FetchAll(store.get(), options, run_blocks, &s_runs); });
    // Per byte: the run list covers about half the image.
    pair_runs.push_back((t_seq.back() / seq_offsets.size() / (1u << 20)) /
                        (t_fq_runs.back() / run_blocks.size() / kPageSize));
    Timed(&t_store_seq, &c_store_seq,
          [&] { return StoreRunChained(store.get(), seq_offsets, 1u << 20, seq_qd); });
    pair_store.push_back(t_seq.back() / t_store_seq.back());
    Timed(&t_store_thread, &c_store_thread,
          [&] { return StoreRun(store.get(), seq_offsets, 1u << 20, seq_qd); });
    pair_store_thread.push_back(t_seq.back() / t_store_thread.back());
    Timed(&t_fq_rand0, &c_fq_rand0,
          [&] { return FetchAll(store.get(), nogap, random_blocks, &s_rand0); });
  }
  size_t rand_bytes = random_blocks.size() * kPageSize;
  size_t seq_bytes = seq_offsets.size() << 20;
  size_t runs_bytes = run_blocks.size() * kPageSize;
  double raw_rand = rand_bytes / Median(t_rand) / 1e6;
  double raw_seq = seq_bytes / Median(t_seq) / 1e6;
  Print("raw_rand_4k", rand_bytes, t_rand, c_rand, 0, nullptr);
  Print("raw_seq_1m", seq_bytes, t_seq, c_seq, 0, nullptr);
  Print("store_seq_1m", seq_bytes, t_store_seq, c_store_seq, raw_seq, nullptr);
  Print("store_seq_1m_thread", seq_bytes, t_store_thread, c_store_thread, raw_seq, nullptr);
  Print("fq_random", rand_bytes, t_fq_rand, c_fq_rand, raw_rand, &s_rand);
  Print("fq_random_gap0", rand_bytes, t_fq_rand0, c_fq_rand0, raw_rand, &s_rand0);
  Print("fq_runs", runs_bytes, t_fq_runs, c_fq_runs, raw_seq, &s_runs);
  std::printf(
      "{\"bench\":\"pairs\",\"repetitions\":%d,\"fq_random_to_raw_rand\":%.3f,"
      "\"fq_runs_to_raw_seq\":%.3f,\"store_seq_to_raw_seq\":%.3f,"
      "\"store_seq_thread_to_raw_seq\":%.3f}\n",
      reps, Median(pair_rand), Median(pair_runs), Median(pair_store), Median(pair_store_thread));
  return 0;
}

}  // namespace
}  // namespace p2bmig

int main(int argc, char** argv) { return p2bmig::Main(argc, argv); }
