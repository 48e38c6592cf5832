// BlockIndex: the 4 KiB blocks of a domain's disk images by content hash,
// for the hint-free mode (no I/O tap that says which page was read from which
// block): a page whose hash is in the index equals that block, as far as the
// hash can tell, and the send-time check and the target's hash check (I2)
// hold it to that.
//
// The index is only correct while it follows every write to the images:
// Invalidate() removes the blocks a completed write touched, and must be
// called for every write from before Build() starts reading until the index
// is dropped. A write that completes while Build() reads the block it
// touches is caught too: Build() inserts a block only if no write touched it
// since it started reading that part of the image.
//
// All-zero blocks are not indexed (zero pages travel as P2B_ZERO_PAGES). Of
// several blocks with one content, the index keeps one.
//
// Cost: Build() reads every image once, sequentially (1 MiB reads), and
// hashes every block; memory is 8 bytes per block of the images plus about
// 40 bytes per distinct indexed block (a hash table node).
//
// Thread safety: all methods may be called concurrently (one mutex).

#ifndef P2BMIG_SOURCE_BLOCK_INDEX_H_
#define P2BMIG_SOURCE_BLOCK_INDEX_H_

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <p2bmig/types.h>

namespace p2bmig {

struct BlockIndexStats {
  uint64_t bytes_read = 0;
  uint64_t blocks = 0;          // blocks of the images
  uint64_t blocks_indexed = 0;  // in the index after the build
  uint64_t blocks_zero = 0;     // all-zero, not indexed
  uint64_t blocks_written = 0;  // touched by a write during the build
  double seconds = 0;
};

class BlockIndex {
 public:
  BlockIndex() = default;
  BlockIndex(const BlockIndex&) = delete;
  BlockIndex& operator=(const BlockIndex&) = delete;

  // Reads and hashes every block of `paths` (disk i is paths[i]). Throws
  // Error(kIo) if an image cannot be read. Call once.
  BlockIndexStats Build(const std::vector<std::string>& paths);

  // A completed write of sectors [sector, sector + nr_sectors) of `disk`.
  void Invalidate(uint32_t disk, uint64_t sector, uint64_t nr_sectors);

  // A block whose content hash (PageHash) is `hash`, if there is one.
  std::optional<BlockAddr> Lookup(uint64_t hash) const;

  uint64_t size() const;
  uint64_t MemoryBytes() const;

 private:
  // REQUIRES: mu_ held.
  void DropLocked(uint32_t disk, uint64_t block);

  mutable std::mutex mu_;
  // Per disk and block: the indexed hash, 0 if none.
  std::vector<std::vector<uint64_t>> block_hash_;
  // Per disk and block, while Build() runs: written since Build() began
  // reading it.
  std::vector<std::vector<bool>> written_;
  bool building_ = false;
  std::unordered_map<uint64_t, BlockAddr> by_hash_;
};

}  // namespace p2bmig

#endif  // P2BMIG_SOURCE_BLOCK_INDEX_H_
