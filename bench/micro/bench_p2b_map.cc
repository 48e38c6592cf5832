// Micro-benchmarks of P2bMap: the cost of feeding it block I/O (Apply), of
// the send-time check (Verify), and its memory per guest page.

#include <cstdint>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include <p2bmig/p2b_map.h>

namespace p2bmig {
namespace {

constexpr uint64_t kPagesPerGiB = (uint64_t{1} << 30) / kPageSize;
constexpr int kPagesPerRequest = 32;  // 128 KiB, a typical readahead request

// Fake content hash of a block: distinct per block.
uint64_t BlockHash(uint64_t block) { return block * 0x9E3779B97F4A7C15ull; }

// `count` read requests of 32 pages each at random aligned places of a
// 16 GiB disk, into random pages of the guest.
std::vector<IoEvent> RandomReads(uint64_t nr_pfns, size_t count) {
  std::mt19937_64 rng(42);
  const uint64_t disk_blocks = 16 * kPagesPerGiB;
  std::vector<IoEvent> events(count);
  for (IoEvent& e : events) {
    e.op = IoOp::kRead;
    e.disk = static_cast<uint32_t>(rng() % 2);
    const uint64_t block = rng() % (disk_blocks - kPagesPerRequest);
    e.sector = block * kSectorsPerPage;
    for (int i = 0; i < kPagesPerRequest; ++i) {
      e.segments.push_back(IoSegment{rng() % nr_pfns, 0, 7, BlockHash(block + i)});
    }
  }
  return events;
}

// Maps every page of `map` to a block of its own.
void MapAll(P2bMap* map) {
  for (uint64_t base = 0; base < map->nr_pfns(); base += kPagesPerRequest) {
    IoEvent e;
    e.op = IoOp::kRead;
    e.sector = base * kSectorsPerPage;
    for (uint64_t p = base; p < base + kPagesPerRequest && p < map->nr_pfns(); ++p) {
      e.segments.push_back(IoSegment{p, 0, 7, BlockHash(p)});
    }
    map->Apply(e);
  }
}

void BM_ApplyRead32(benchmark::State& state) {
  const uint64_t nr_pfns = static_cast<uint64_t>(state.range(0)) * kPagesPerGiB;
  P2bMap map(nr_pfns);
  const auto events = RandomReads(nr_pfns, 1 << 14);
  size_t i = 0;
  for (auto _ : state) {
    map.Apply(events[i]);
    i = (i + 1) % events.size();
  }
  state.SetItemsProcessed(state.iterations() * kPagesPerRequest);
  state.counters["entries"] = static_cast<double>(map.size());
}
BENCHMARK(BM_ApplyRead32)->Arg(1)->Arg(4)->ArgName("GiB");

void BM_Verify(benchmark::State& state) {
  const uint64_t nr_pfns = static_cast<uint64_t>(state.range(0)) * kPagesPerGiB;
  P2bMap map(nr_pfns);
  MapAll(&map);
  uint64_t pfn = 0;
  uint64_t mapped = 0;
  for (auto _ : state) {
    const auto r = map.Verify(pfn, BlockHash(pfn));
    mapped += r.addr.has_value();
    // A stride that visits pages in an order unrelated to memory layout.
    pfn = (pfn + 7919) % nr_pfns;
  }
  benchmark::DoNotOptimize(mapped);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Verify)->Arg(1)->Arg(4)->ArgName("GiB");

void BM_MemoryPerPage(benchmark::State& state) {
  const uint64_t nr_pfns = static_cast<uint64_t>(state.range(0)) * kPagesPerGiB;
  for (auto _ : state) {
    P2bMap map(nr_pfns);
    MapAll(&map);
    state.counters["entries"] = static_cast<double>(map.size());
    state.counters["bytes_per_page"] =
        static_cast<double>(map.MemoryBytes()) / static_cast<double>(nr_pfns);
    state.counters["MiB"] = static_cast<double>(map.MemoryBytes()) / (1 << 20);
  }
}
BENCHMARK(BM_MemoryPerPage)
    ->Arg(1)
    ->Arg(4)
    ->ArgName("GiB")
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace p2bmig

BENCHMARK_MAIN();
