// P2BMIG_TRACKING=index: BlockIndex + BlockWriteTrace + HintFreeMapper.

#include "xen/hint_free_tracking.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include <fmt/format.h>
#include <sys/stat.h>

#include "source/block_index.h"
#include "source/hint_free.h"
#include "xen/write_trace.h"

namespace p2bmig {

namespace {

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) == nullptr) {
    throw Error(ErrorKind::kIo, fmt::format("{}: {}", path, std::strerror(errno)));
  }
  return buf;
}

}  // namespace

std::string BlockDeviceOf(const std::string& image, const std::string& sys_block) {
  struct stat st;
  if (stat(image.c_str(), &st) != 0) {
    throw Error(ErrorKind::kIo, fmt::format("{}: {}", image, std::strerror(errno)));
  }
  if (S_ISBLK(st.st_mode)) return image;
  const std::string want = RealPath(image);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(sys_block, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("loop", 0) != 0) continue;
    std::ifstream in(entry.path() / "loop" / "backing_file");
    std::string backing;
    if (!std::getline(in, backing)) continue;
    if (backing == want) return "/dev/" + name;
  }
  throw Error(ErrorKind::kIo,
              fmt::format("no loop device backs {}: hint-free tracking traces writes at the block "
                          "device xen-blkback serves a disk from (QEMU-served disks have none)",
                          image));
}

Tracking OpenHintFreeTracking(uint64_t nr_pfns, const std::vector<std::string>& disks) {
  std::vector<std::string> devices;
  for (const std::string& d : disks) devices.push_back(BlockDeviceOf(d));
  Tracking t;
  t.map = std::make_unique<P2bMap>(nr_pfns);
  auto index = std::make_shared<BlockIndex>();
  // The mapper holds the index; the trace's listener and the filter's front
  // sink hold the mapper, so it lives as long as either.
  struct Owned {
    std::shared_ptr<BlockIndex> index;
    HintFreeMapper mapper;
    Owned(std::shared_ptr<BlockIndex> i, P2bMap* map)
        : index(std::move(i)), mapper(index.get(), map) {}
  };
  auto owned = std::make_shared<Owned>(index, t.map.get());
  auto trace = BlockWriteTrace::Open(devices);
  trace->SetListener([owned](const IoEvent& ev) { owned->mapper.OnEvent(ev); });
  const BlockIndexStats st = index->Build(disks);
  const uint64_t nr = nr_pfns;
  t.wrap_filter = [owned, nr](RecordSink* filter) -> std::unique_ptr<RecordSink> {
    return std::make_unique<HintFreeSink>(&owned->mapper, filter, nr);
  };
  std::string devs;
  for (const std::string& d : devices) devs += (devs.empty() ? "" : ",") + d;
  t.description = fmt::format(
      "hint-free (P2BMIG_TRACKING=index): index of {} block(s) of {} MiB built in {:.1f} s, "
      "{} written meanwhile; writes traced on {}",
      st.blocks_indexed, st.bytes_read >> 20, st.seconds, st.blocks_written, devs);
  t.tap = std::move(trace);
  return t;
}

}  // namespace p2bmig
