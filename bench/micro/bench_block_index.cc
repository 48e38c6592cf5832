// Micro-benchmarks of the hint-free mode's BlockIndex: building it over a
// disk image (read from the page cache, so this is the hashing and indexing
// cost, not the storage's), lookups, and its memory per indexed block.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <p2bmig/hash.h>

#include "sim/content.h"
#include "source/block_index.h"

namespace p2bmig {
namespace {

// One image for all runs, 256 MiB of the simulated host's disk content.
const std::string& Image() {
  static const std::string path = [] {
    char tmpl[] = "/tmp/p2bmig-bench-index-XXXXXX";
    const int fd = mkstemp(tmpl);
    if (fd >= 0) close(fd);
    sim::CreateDiskImage(tmpl, uint64_t{256} << 20, 7);
    std::atexit([] { unlink(Image().c_str()); });
    return std::string(tmpl);
  }();
  return path;
}

void BM_BlockIndexBuild(benchmark::State& state) {
  const std::string& path = Image();
  BlockIndexStats st;
  uint64_t memory = 0;
  for (auto _ : state) {
    BlockIndex index;
    st = index.Build({path});
    memory = index.MemoryBytes();
    benchmark::DoNotOptimize(index.size());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * st.bytes_read));
  state.counters["blocks_indexed"] = static_cast<double>(st.blocks_indexed);
  state.counters["memory_bytes_per_indexed_block"] =
      st.blocks_indexed ? static_cast<double>(memory) / static_cast<double>(st.blocks_indexed) : 0;
}
BENCHMARK(BM_BlockIndexBuild)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_BlockIndexLookup(benchmark::State& state) {
  BlockIndex index;
  index.Build({Image()});
  std::vector<uint64_t> hashes;
  for (uint64_t i = 0; i < 4096; ++i) hashes.push_back(i * 0x9E3779B97F4A7C15ull);
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(index.Lookup(hashes[i++ & 4095]));
  }
}
BENCHMARK(BM_BlockIndexLookup);

}  // namespace
}  // namespace p2bmig

BENCHMARK_MAIN();
