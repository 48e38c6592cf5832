#include "sim/resumed_guest.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

namespace p2bmig::sim {

ResumedGuest::ResumedGuest(GuestMemory* memory, const WorkloadProfile& profile, uint64_t seed)
    : memory_(memory), profile_(profile), seed_(seed) {}

ResumedGuest::~ResumedGuest() { Stop(); }

void ResumedGuest::Start() {
  stop_ = false;
  thread_writes_.assign(static_cast<size_t>(profile_.threads), {});
  for (int i = 0; i < profile_.threads; ++i) {
    threads_.emplace_back([this, i] { ThreadMain(i); });
  }
}

void ResumedGuest::Stop() {
  stop_ = true;
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  for (auto& w : thread_writes_) {
    writes_.insert(writes_.end(), w.begin(), w.end());
    w.clear();
  }
}

void ResumedGuest::ThreadMain(int index) {
  using Clock = std::chrono::steady_clock;
  // Other draws than the source's threads (which went on from their own
  // seeds), the same hot set.
  Rng rng((seed_ ^ 0x7461726765740000ull) * 1000003 + static_cast<uint64_t>(index));
  const double per_slice = profile_.memory_ops_per_s * 0.01 / profile_.threads;
  std::vector<MemoryAccess>& log = thread_writes_[static_cast<size_t>(index)];
  uint64_t sink = 0;
  auto next = Clock::now();
  while (!stop_) {
    auto n = static_cast<uint64_t>(per_slice);
    n += rng.Chance(per_slice - std::floor(per_slice)) ? 1 : 0;
    for (uint64_t i = 0; i < n && !stop_; ++i) {
      MemoryAccess a = DrawMemoryAccess(rng, memory_->nr_pages(), seed_);
      sink += PerformMemoryAccess(memory_->page(a.pfn), a);
      if (a.value != 0) log.push_back(a);
      ops_.fetch_add(1, std::memory_order_relaxed);
    }
    // Time lost waiting for pages is not made up: the rate shows it.
    next += std::chrono::milliseconds(10);
    auto now = Clock::now();
    if (next > now) {
      std::this_thread::sleep_until(next);
    } else {
      next = now;
    }
  }
  if (sink == 42) ops_.fetch_add(0);  // keeps the reads
}

void ApplyGuestWrites(uint8_t* base, uint64_t nr_pages, const std::vector<MemoryAccess>& writes) {
  for (const MemoryAccess& w : writes) {
    if (w.pfn >= nr_pages || w.offset > kPageSize - 8) {
      throw Error(ErrorKind::kInvalidArgument, "guest write log entry outside memory");
    }
    PerformMemoryAccess(base + w.pfn * kPageSize, w);
  }
}

void SaveGuestWrites(const std::string& path, const std::vector<MemoryAccess>& writes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (const MemoryAccess& w : writes) {
    uint8_t e[24] = {};
    std::memcpy(e, &w.pfn, 8);
    std::memcpy(e + 8, &w.offset, 4);
    std::memcpy(e + 16, &w.value, 8);
    out.write(reinterpret_cast<const char*>(e), sizeof(e));
  }
  if (!out.flush()) throw Error(ErrorKind::kIo, fmt::format("cannot write {}", path));
}

std::vector<MemoryAccess> LoadGuestWrites(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, fmt::format("cannot read {}", path));
  std::vector<MemoryAccess> writes;
  uint8_t e[24];
  while (in.read(reinterpret_cast<char*>(e), sizeof(e))) {
    MemoryAccess w;
    std::memcpy(&w.pfn, e, 8);
    std::memcpy(&w.offset, e + 8, 4);
    std::memcpy(&w.value, e + 16, 8);
    writes.push_back(w);
  }
  return writes;
}

}  // namespace p2bmig::sim
