// Throughput of p2bmig-trackd's record path, end to end in one process:
// records written to a FIFO standing in for /dev/xen-blkback-tap, read and
// decoded by the daemon, frames turned into pfns (M2P of a test host), the
// request's range read from the image and hashed, the event applied to the
// domain's map and streamed to a client (TrackdIoTap) that applies it to
// its own map; one drain per batch. Each record is a 128 KiB read (32
// segments), the size Linux guests issue most for page-cache reads.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p2bmig/p2b_map.h>

#include "xen/blkback_tap.h"
#include "xen/trackd.h"
#include "xen/trackd_client.h"
#include "xen/trackd_host.h"

namespace p2bmig {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kImageBlocks = 16384;  // 64 MiB image
constexpr uint64_t kGuestPfns = 65536;    // 256 MiB guest
constexpr uint64_t kMfnBase = 1000000;
constexpr int kSegments = 32;
constexpr int kBatch = 1000;

void BM_TrackdRecords(benchmark::State& state) {
  spdlog::set_level(spdlog::level::warn);
  char tmpl[] = "/tmp/p2bmig-bench-trackd-XXXXXX";
  const fs::path dir = mkdtemp(tmpl);
  {
    std::vector<char> block(kPageSize);
    std::ofstream img(dir / "disk.img", std::ios::binary);
    for (uint64_t b = 0; b < kImageBlocks; ++b) {
      for (size_t i = 0; i < block.size(); ++i) block[i] = static_cast<char>(b * 31 + i * 7);
      img.write(block.data(), kPageSize);
    }
    std::ofstream(dir / "host.txt") << "domain 1 " << kGuestPfns << " " << kMfnBase << "\n"
                                    << "vbd 1 51712 " << (dir / "disk.img").string() << "\n";
  }
  mkfifo((dir / "tap").c_str(), 0600);
  auto host = OpenFileTrackdHost((dir / "host.txt").string());
  TrackdOptions opt;
  opt.tap_path = (dir / "tap").string();
  opt.socket_path = (dir / "trackd.sock").string();
  Trackd daemon(opt, host.get());
  int stop[2];
  if (pipe(stop) != 0) std::abort();
  std::thread server([&] { daemon.Run(stop[0]); });
  const int writer = open(opt.tap_path.c_str(), O_WRONLY | O_CLOEXEC);

  P2bMap map(kGuestPfns);
  auto tap = TrackdIoTap::Connect(opt.socket_path, 1, &map);
  tap->SetListener([&map](const IoEvent& ev) { map.Apply(ev); });

  // One batch of records, encoded once: reads of consecutive 128 KiB
  // ranges into consecutive pages.
  std::vector<uint8_t> batch;
  for (int i = 0; i < kBatch; ++i) {
    TapRecord r;
    r.domid = 1;
    r.handle = 51712;
    r.op = BlkifOp::kRead;
    const uint64_t first_block = (uint64_t(i) * kSegments) % kImageBlocks;
    r.sector = first_block * kSectorsPerPage;
    r.nr_sectors = kSegments * kSectorsPerPage;
    for (int s = 0; s < kSegments; ++s) {
      r.segments.push_back(TapSegment{kMfnBase + (uint64_t(i) * kSegments + s) % kGuestPfns, 0, 7});
    }
    const std::vector<uint8_t> b = EncodeTapRecord(r);
    batch.insert(batch.end(), b.begin(), b.end());
  }
  for (auto _ : state) {
    size_t done = 0;
    while (done < batch.size()) {
      const ssize_t n = write(writer, batch.data() + done, batch.size() - done);
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
    tap->Drain();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kBatch);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kBatch * kSegments *
                          static_cast<int64_t>(kPageSize));
  state.counters["events_received"] = static_cast<double>(tap->events_received());
  state.counters["client_map_entries"] = static_cast<double>(map.size());

  tap.reset();
  if (write(stop[1], "s", 1) != 1) std::abort();
  server.join();
  close(writer);
  close(stop[0]);
  close(stop[1]);
  fs::remove_all(dir);
}
BENCHMARK(BM_TrackdRecords)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

}  // namespace
}  // namespace p2bmig

BENCHMARK_MAIN();
