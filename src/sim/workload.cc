#include "sim/workload.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <utility>

#include <fmt/format.h>

namespace p2bmig::sim {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<WorkloadProfile> Profiles() {
  std::vector<WorkloadProfile> v;
  WorkloadProfile p;

  p = {};
  p.name = "idle";
  p.description = "idle after boot: page cache from boot, a few daemons";
  p.warm_cache_fraction = 0.35;
  p.warm_anon_fraction = 0.10;
  p.stale_free_share = 0.2;  // most free memory never used since boot
  p.anon_pages_per_s = 200;
  p.read_blocks_per_s = 50;
  p.memory_ops_per_s = 200;
  v.push_back(p);

  p = {};
  p.name = "fileserver";
  p.description = "file server (Postmark-like): large page cache, small-file churn";
  p.warm_cache_fraction = 0.60;
  p.warm_anon_fraction = 0.10;
  p.read_blocks_per_s = 3000;
  p.write_blocks_per_s = 800;
  p.writeback_pages_per_s = 800;
  p.anon_pages_per_s = 500;
  p.memory_ops_per_s = 2000;
  v.push_back(p);

  p = {};
  p.name = "kernel-build";
  p.description = "kernel build: sources in page cache, compiler heap churn";
  p.warm_cache_fraction = 0.45;
  p.warm_anon_fraction = 0.20;
  p.read_blocks_per_s = 1500;
  p.write_blocks_per_s = 600;
  p.writeback_pages_per_s = 600;
  p.anon_pages_per_s = 3000;
  p.memory_ops_per_s = 4000;
  v.push_back(p);

  p = {};
  p.name = "database";
  p.description = "database whose buffer pool lives in the page cache";
  p.warm_cache_fraction = 0.70;
  p.warm_anon_fraction = 0.05;
  p.read_blocks_per_s = 2000;
  p.write_blocks_per_s = 300;
  p.writeback_pages_per_s = 300;
  p.anon_pages_per_s = 300;
  p.hot_read_share = 0.9;
  p.memory_ops_per_s = 3000;
  v.push_back(p);

  p = {};
  p.name = "memory";
  p.description = "memory-intensive, little page cache";
  p.warm_cache_fraction = 0.03;
  p.warm_anon_fraction = 0.75;
  p.anon_pages_per_s = 6000;
  p.read_blocks_per_s = 20;
  p.memory_ops_per_s = 8000;
  v.push_back(p);

  p = {};
  p.name = "cache-rewrite";
  p.description = "rewrites its page cache while migrating";
  p.warm_cache_fraction = 0.60;
  p.warm_anon_fraction = 0.05;
  p.read_blocks_per_s = 1000;
  p.write_blocks_per_s = 4000;
  p.writeback_pages_per_s = 4000;
  p.scribble_pages_per_s = 500;
  p.anon_pages_per_s = 200;
  p.memory_ops_per_s = 1000;
  v.push_back(p);

  p = {};
  p.name = "stress";
  p.description = "everything at once, for tests: races of I/O, writes and rounds";
  p.warm_cache_fraction = 0.50;
  p.warm_anon_fraction = 0.10;
  p.read_blocks_per_s = 20000;
  p.write_blocks_per_s = 5000;
  p.writeback_pages_per_s = 5000;
  p.anon_pages_per_s = 5000;
  p.scribble_pages_per_s = 2000;
  p.raw_ops_per_s = 4000;
  p.raw_write_ops_per_s = 2000;
  p.reclaim_pages_per_s = 1000;
  p.hot_read_share = 0.7;
  p.threads = 3;
  p.memory_ops_per_s = 4000;
  v.push_back(p);
  return v;
}

}  // namespace

WorkloadProfile GetWorkload(const std::string& name) {
  for (const WorkloadProfile& p : Profiles()) {
    if (p.name == name) return p;
  }
  throw Error(ErrorKind::kInvalidArgument, fmt::format("unknown workload '{}' (known: {})", name,
                                                       fmt::join(WorkloadNames(), ", ")));
}

Pfn PickTouchedPfn(Rng& rng, uint64_t nr_pages, uint64_t seed) {
  if (rng.Chance(0.8)) {
    // The k-th page of the hot set, scattered over memory by a fixed mix.
    Rng mix(seed * 0x9E3779B97F4A7C15ull + rng.Below(std::max<uint64_t>(nr_pages / 8, 1)));
    return mix.Next() % nr_pages;
  }
  return rng.Below(nr_pages);
}

MemoryAccess DrawMemoryAccess(Rng& rng, uint64_t nr_pages, uint64_t seed) {
  MemoryAccess a;
  a.pfn = PickTouchedPfn(rng, nr_pages, seed);
  a.offset = static_cast<uint32_t>(rng.Below(kPageSize / 8) * 8);
  if (rng.Chance(0.5)) a.value = rng.Next() | 1;
  return a;
}

uint64_t PerformMemoryAccess(uint8_t* page, const MemoryAccess& access) {
  // Word-atomic, as a CPU's aligned 8-byte accesses are: the resumed guest's
  // threads may hit one word at once, and a lost XOR would show as a
  // difference in the exactness check.
  auto word = [page](uint32_t off) {
    return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(page + off));
  };
  if (access.value == 0) {
    uint64_t sum = 0;
    uint32_t off = std::min<uint32_t>(access.offset, kPageSize - 64);
    for (uint32_t i = 0; i < 64; i += 8) sum += word(off + i).load(std::memory_order_relaxed);
    return sum;
  }
  return word(access.offset).fetch_xor(access.value, std::memory_order_relaxed) ^ access.value;
}

std::vector<std::string> WorkloadNames() {
  std::vector<std::string> names;
  for (const WorkloadProfile& p : Profiles()) names.push_back(p.name);
  return names;
}

WorkloadRunner::WorkloadRunner(SimGuest* guest, WorkloadProfile profile, uint64_t seed)
    : guest_(guest), profile_(std::move(profile)), seed_(seed) {}

WorkloadRunner::~WorkloadRunner() {
  try {
    Stop();
  } catch (...) {
  }
}

void WorkloadRunner::WarmUp() {
  Rng rng(seed_ ^ 0x5741524D);
  const uint64_t pages = guest_->nr_pfns();
  const uint64_t cache_target = static_cast<uint64_t>(profile_.warm_cache_fraction * pages);
  const uint64_t anon_target = static_cast<uint64_t>(profile_.warm_anon_fraction * pages);
  if (guest_->nr_disks() > 0) {
    // Files read at boot and since: runs of 8..256 blocks, mostly forward.
    uint64_t cached = 0;
    int stuck = 0;
    while (cached < cache_target && stuck < 64) {
      uint32_t disk = static_cast<uint32_t>(rng.Below(guest_->nr_disks()));
      uint64_t blocks = guest_->disk_blocks(disk);
      uint32_t len = static_cast<uint32_t>(8 + rng.Below(249));
      uint64_t start = rng.Below(blocks > len ? blocks - len : 1);
      uint64_t before = guest_->cached_pages();
      guest_->ReadFile(disk, start, len);
      uint64_t after = guest_->cached_pages();
      stuck = after > before ? 0 : stuck + 1;
      cached = after;
    }
  }
  // TouchAnon also rewrites pages it allocated before: go on until the heap
  // has its size.
  for (int guard = 0; guest_->anon_pages() < anon_target && guard < 1000000; ++guard) {
    guest_->TouchAnon(256, anon_target, rng);
  }
  guest_->AgeFreePages(profile_.stale_free_share, rng);
}

void WorkloadRunner::Start() {
  stop_ = false;
  for (int i = 0; i < profile_.threads; ++i) {
    threads_.emplace_back([this, i] { ThreadMain(i); });
  }
}

void WorkloadRunner::Stop() {
  stop_ = true;
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  std::lock_guard lock(error_mu_);
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void WorkloadRunner::ThreadMain(int index) {
  Rng rng(seed_ * 1000003 + static_cast<uint64_t>(index));
  // Work in slices of 10 ms of guest time; each thread does its share.
  const double scale = 0.01 / profile_.threads;
  auto next = Clock::now();
  try {
    while (!stop_) {
      RunSlice(rng, scale);
      next += std::chrono::milliseconds(10);
      auto now = Clock::now();
      if (next > now) {
        std::this_thread::sleep_until(next);
      } else if (now - next > std::chrono::milliseconds(100)) {
        next = now;  // paused or overloaded: do not try to catch up
      }
    }
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kAborted) return;  // the guest was halted
    std::lock_guard lock(error_mu_);
    if (!error_) error_ = std::current_exception();
  } catch (...) {
    std::lock_guard lock(error_mu_);
    if (!error_) error_ = std::current_exception();
  }
}

void WorkloadRunner::RunSlice(Rng& rng, double scale) {
  // Converts a rate into a whole number of operations for this slice,
  // carrying fractions over at random so that small rates still happen.
  auto count = [&](double per_s) {
    double x = per_s * scale;
    auto n = static_cast<uint64_t>(x);
    return n + (rng.Chance(x - std::floor(x)) ? 1 : 0);
  };
  const WorkloadProfile& p = profile_;
  const uint32_t nr_disks = guest_->nr_disks();
  const uint64_t anon_limit =
      static_cast<uint64_t>((p.warm_anon_fraction + 0.05) * guest_->nr_pfns());
  if (nr_disks > 0) {
    for (uint64_t left = count(p.read_blocks_per_s); left > 0;) {
      uint32_t disk = static_cast<uint32_t>(rng.Below(nr_disks));
      uint64_t blocks = guest_->disk_blocks(disk);
      auto len = static_cast<uint32_t>(std::min<uint64_t>(left, 4 + rng.Below(60)));
      uint64_t span =
          rng.Chance(p.hot_read_share) ? std::max<uint64_t>(blocks / 8, len + 1) : blocks;
      uint64_t start = rng.Below(span > len ? span - len : 1);
      guest_->ReadFile(disk, start, len);
      left -= len;
      ++ops_;
    }
    for (uint64_t left = count(p.write_blocks_per_s); left > 0;) {
      uint32_t disk = static_cast<uint32_t>(rng.Below(nr_disks));
      uint64_t blocks = guest_->disk_blocks(disk);
      auto len = static_cast<uint32_t>(std::min<uint64_t>(left, 1 + rng.Below(16)));
      uint64_t span = std::max<uint64_t>(blocks / 8, len + 1);
      guest_->WriteFile(disk, rng.Below(span - len), len, rng);
      left -= len;
      ++ops_;
    }
    if (uint64_t n = count(p.writeback_pages_per_s)) {
      guest_->Writeback(static_cast<uint32_t>(n));
      ++ops_;
    }
    for (uint64_t i = count(p.raw_ops_per_s); i > 0; --i) {
      uint32_t disk = static_cast<uint32_t>(rng.Below(nr_disks));
      uint64_t sectors = guest_->disk_blocks(disk) * kSectorsPerPage;
      // Half whole aligned blocks (several pages then map one block), half
      // partial or unaligned requests, which must never create entries.
      bool whole = rng.Chance(0.5);
      uint32_t nr = whole ? 8 : static_cast<uint32_t>(1 + rng.Below(8));
      uint32_t page_sect = whole ? 0 : static_cast<uint32_t>(rng.Below(kSectorsPerPage - nr + 1));
      uint64_t sector = whole ? rng.Below(sectors / 8 / 8) * 8 : rng.Below(sectors / 8 - 8);
      guest_->RawRead(disk, sector, nr, page_sect, rng);
      ++ops_;
    }
    for (uint64_t i = count(p.raw_write_ops_per_s); i > 0; --i) {
      uint32_t disk = static_cast<uint32_t>(rng.Below(nr_disks));
      uint64_t sectors = guest_->disk_blocks(disk) * kSectorsPerPage;
      bool whole = rng.Chance(0.5);
      uint32_t nr = whole ? 8 : static_cast<uint32_t>(1 + rng.Below(8));
      uint32_t page_sect = whole ? 0 : static_cast<uint32_t>(rng.Below(kSectorsPerPage - nr + 1));
      // Aim at the hot set, where cache pages map blocks.
      uint64_t sector = rng.Below(sectors / 8 - 8);
      if (whole) sector &= ~uint64_t{7};
      guest_->RawWrite(disk, sector, nr, page_sect, rng);
      ++ops_;
    }
  }
  if (uint64_t n = count(p.anon_pages_per_s)) {
    guest_->TouchAnon(static_cast<uint32_t>(n), anon_limit, rng);
    ++ops_;
  }
  if (uint64_t n = count(p.scribble_pages_per_s)) {
    guest_->ScribbleCache(static_cast<uint32_t>(n), rng);
    ++ops_;
  }
  if (uint64_t n = count(p.reclaim_pages_per_s)) {
    guest_->ReclaimCache(static_cast<uint32_t>(n), anon_limit, rng);
    ++ops_;
  }
  if (uint64_t n = count(p.memory_ops_per_s)) {
    guest_->TouchMemory(static_cast<uint32_t>(n), seed_, rng);
    memory_ops_ += n;
  }
}

}  // namespace p2bmig::sim
