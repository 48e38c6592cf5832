// BlockIndex: a hash table from content hash to block, with per-block hashes
// so that a write can drop what it overwrote.

#include "source/block_index.h"

#include <cerrno>
#include <chrono>
#include <cstring>

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p2bmig/hash.h>

namespace p2bmig {

namespace {

constexpr size_t kChunkBytes = size_t{1} << 20;
constexpr uint64_t kBlocksPerChunk = kChunkBytes / kPageSize;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

BlockIndexStats BlockIndex::Build(const std::vector<std::string>& paths) {
  const auto start = std::chrono::steady_clock::now();
  BlockIndexStats stats;
  std::vector<Fd> fds(paths.size());
  std::vector<uint64_t> blocks(paths.size());
  for (size_t d = 0; d < paths.size(); ++d) {
    fds[d].fd = open(paths[d].c_str(), O_RDONLY | O_CLOEXEC);
    if (fds[d].fd < 0) {
      throw Error(ErrorKind::kIo,
                  fmt::format("block index: cannot open {}: {}", paths[d], std::strerror(errno)));
    }
    const off_t end = lseek(fds[d].fd, 0, SEEK_END);
    if (end < 0) {
      throw Error(ErrorKind::kIo,
                  fmt::format("block index: size of {}: {}", paths[d], std::strerror(errno)));
    }
    blocks[d] = static_cast<uint64_t>(end) / kPageSize;  // a partial last block is never mapped
    stats.blocks += blocks[d];
  }
  {
    std::lock_guard lock(mu_);
    block_hash_.assign(paths.size(), {});
    written_.assign(paths.size(), {});
    for (size_t d = 0; d < paths.size(); ++d) {
      block_hash_[d].assign(blocks[d], 0);
      written_[d].assign(blocks[d], false);
    }
    building_ = true;
  }
  std::vector<uint8_t> buf(kChunkBytes);
  std::vector<uint64_t> hashes(kBlocksPerChunk);
  for (size_t d = 0; d < paths.size(); ++d) {
    for (uint64_t first = 0; first < blocks[d]; first += kBlocksPerChunk) {
      const uint64_t n = std::min(kBlocksPerChunk, blocks[d] - first);
      {
        // From here on a write to these blocks keeps them out of the index.
        std::lock_guard lock(mu_);
        for (uint64_t b = first; b < first + n; ++b) written_[d][b] = false;
      }
      size_t done = 0;
      const size_t want = n * kPageSize;
      while (done < want) {
        const ssize_t r = pread(fds[d].fd, buf.data() + done, want - done,
                                static_cast<off_t>(first * kPageSize + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          throw Error(ErrorKind::kIo,
                      fmt::format("block index: read of {} at {}: {}", paths[d],
                                  first * kPageSize + done, r < 0 ? std::strerror(errno) : "EOF"));
        }
        done += static_cast<size_t>(r);
      }
      stats.bytes_read += want;
      for (uint64_t i = 0; i < n; ++i) {
        const uint8_t* block = buf.data() + i * kPageSize;
        hashes[i] = IsZeroPage(block) ? 0 : PageHash(block);
      }
      std::lock_guard lock(mu_);
      for (uint64_t i = 0; i < n; ++i) {
        const uint64_t b = first + i;
        if (written_[d][b]) {
          ++stats.blocks_written;
        } else if (hashes[i] == 0) {
          ++stats.blocks_zero;
        } else {
          block_hash_[d][b] = hashes[i];
          by_hash_.emplace(hashes[i], BlockAddr{static_cast<uint32_t>(d), b});
        }
      }
    }
  }
  {
    std::lock_guard lock(mu_);
    building_ = false;
    written_.clear();
    written_.shrink_to_fit();
    stats.blocks_indexed = by_hash_.size();
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

void BlockIndex::DropLocked(uint32_t disk, uint64_t block) {
  uint64_t& h = block_hash_[disk][block];
  if (h == 0) return;
  auto it = by_hash_.find(h);
  if (it != by_hash_.end() && it->second.disk == disk && it->second.block == block) {
    by_hash_.erase(it);
  }
  h = 0;
}

void BlockIndex::Invalidate(uint32_t disk, uint64_t sector, uint64_t nr_sectors) {
  if (nr_sectors == 0) return;
  std::lock_guard lock(mu_);
  if (disk >= block_hash_.size()) return;
  const uint64_t nr_blocks = block_hash_[disk].size();
  const uint64_t first = sector / kSectorsPerPage;
  if (first >= nr_blocks) return;
  const uint64_t last = std::min(nr_blocks - 1, (sector + nr_sectors - 1) / kSectorsPerPage);
  for (uint64_t b = first; b <= last; ++b) {
    DropLocked(disk, b);
    if (building_) written_[disk][b] = true;
  }
}

std::optional<BlockAddr> BlockIndex::Lookup(uint64_t hash) const {
  std::lock_guard lock(mu_);
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  return it->second;
}

uint64_t BlockIndex::size() const {
  std::lock_guard lock(mu_);
  return by_hash_.size();
}

uint64_t BlockIndex::MemoryBytes() const {
  std::lock_guard lock(mu_);
  uint64_t bytes = 0;
  for (const auto& v : block_hash_) bytes += v.capacity() * sizeof(uint64_t);
  // Node (key, value, next pointer, cached hash) plus a bucket pointer.
  bytes += by_hash_.size() * (sizeof(uint64_t) + sizeof(BlockAddr) + 2 * sizeof(void*)) +
           by_hash_.bucket_count() * sizeof(void*);
  return bytes;
}

}  // namespace p2bmig
