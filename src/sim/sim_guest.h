// SimGuest: a simulated guest on the simulated host. It is a Domain (what the
// save loop and the filter see) and an IoTap (what Dom0's block backend would
// report), and it models just enough of a guest operating system to make
// realistic memory: a page allocator, a page cache over its disks with
// write-back, anonymous memory, and raw block I/O through buffer pages
// (partial, unaligned and repeated requests).
//
// Every guest operation runs as one step that Pause() waits for: when Pause
// returns no operation is running and every request it issued has completed
// and been reported, like a paused Xen domain whose backend has drained.
//
// Thread safety: guest operations may run on several threads at once (the
// workload's), concurrently with the Domain calls of a migration.

#ifndef P2BMIG_SIM_SIM_GUEST_H_
#define P2BMIG_SIM_SIM_GUEST_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <sys/uio.h>

#include <p2bmig/domain.h>
#include <p2bmig/io_event.h>

#include "sim/content.h"
#include "sim/guest_memory.h"

namespace p2bmig::sim {

struct SimGuestConfig {
  std::string name = "sim-guest";
  uint64_t memory_pages = 1u << 17;     // 512 MiB
  std::string memory_path;              // empty: anonymous memory
  std::vector<std::string> disk_paths;  // images on the shared storage
  uint64_t kernel_pages = 4096;         // fixed kernel text and data
  uint64_t buffer_pages = 256;          // pages used for raw block I/O
};

struct GuestMemoryUse {
  uint64_t kernel = 0, cache = 0, anon = 0, buffer = 0, free = 0;
};

class SimGuest : public Domain, public IoTap {
 public:
  // Opens the disks (read-write) and fills the kernel pages. Throws Error.
  SimGuest(const SimGuestConfig& config, uint64_t seed);
  ~SimGuest() override;

  // --- Guest operations (each one step; blocks while paused) ---
  // Reads whole blocks through the page cache (misses go to the disk in
  // requests of up to 32 contiguous blocks).
  void ReadFile(uint32_t disk, uint64_t first_block, uint32_t nr_blocks);
  // Writes new content into cached blocks (read-modify-write is not modelled:
  // the whole block is replaced); they are written back later.
  void WriteFile(uint32_t disk, uint64_t first_block, uint32_t nr_blocks, Rng& rng);
  // Writes back up to `max_pages` modified cache pages (oldest first).
  void Writeback(uint32_t max_pages);
  // Writes `nr_pages` anonymous pages (allocating up to `anon_limit` pages).
  void TouchAnon(uint32_t nr_pages, uint64_t anon_limit, Rng& rng);
  // Changes cached pages in memory (writes through a shared file mapping).
  void ScribbleCache(uint32_t nr_pages, Rng& rng);
  // Reads sectors [sector, sector + nr_sectors) into a buffer page at sector
  // offset `page_sect` (nr_sectors + page_sect <= 8). Covers partial,
  // unaligned and repeated reads.
  void RawRead(uint32_t disk, uint64_t sector, uint32_t nr_sectors, uint32_t page_sect, Rng& rng);
  // Writes part or all of a freshly written buffer page to the disk, bypassing
  // the page cache (overwrites blocks that cache pages may still map).
  void RawWrite(uint32_t disk, uint64_t sector, uint32_t nr_sectors, uint32_t page_sect, Rng& rng);
  // The CPU side: `nr` single-page memory accesses (DrawMemoryAccess with
  // `seed`), as loads: the workload's other operations make its writes.
  void TouchMemory(uint32_t nr, uint64_t seed, Rng& rng);
  // Evicts up to `nr_pages` clean cache pages and reuses them as anonymous
  // memory with new content, while there are fewer than `anon_limit`
  // anonymous pages (else the guest would end up with no page cache left to
  // evict, and out of memory, however long it runs).
  void ReclaimCache(uint32_t nr_pages, uint64_t anon_limit, Rng& rng);

  // Writes stale content into a share of the free pages: what they held
  // before they were freed (heap of exited processes, evicted cache), as in a
  // guest that has run for a while. Linux does not clear freed pages, so only
  // never-used memory is zero. The pages stay free.
  void AgeFreePages(double share, Rng& rng);

  // Ends all guest activity for good: operations waiting on a pause, and all
  // later ones, throw Error(kAborted) without touching memory. Used when the
  // guest is discarded (after a migration, its memory must stay as it was at
  // the final pause).
  void Halt();

  // Pages of the guest's kernel (written once at boot, never again) whose
  // content is not what boot wrote: 0 for a guest nothing has corrupted.
  uint64_t CorruptKernelPages() const;

  GuestMemoryUse MemoryUse() const;
  uint64_t cached_pages() const;
  uint64_t anon_pages() const;
  uint64_t disk_blocks(uint32_t disk) const { return disks_[disk].size / kPageSize; }
  uint32_t nr_disks() const { return static_cast<uint32_t>(disks_.size()); }
  GuestMemory& memory() { return memory_; }
  bool paused() const;

  // --- Domain ---
  std::string name() const override { return config_.name; }
  DomainType type() const override { return DomainType::kX86Hvm; }
  uint64_t nr_pfns() const override { return memory_.nr_pages(); }
  std::vector<uint64_t> DiskSizes() const override;
  void ReadPages(std::span<const Pfn> pfns, uint8_t* out) override;
  void EnableLogDirty() override;
  void DisableLogDirty() override {}
  void PeekAndCleanDirty(std::vector<Pfn>* dirty) override { memory_.PeekAndClean(dirty); }
  void MarkDirty(std::span<const Pfn> pfns) override;
  void Pause() override;
  void Resume() override;
  void FlushDisks() override;

  // --- IoTap ---
  void SetListener(Listener listener) override;
  void Drain() override;

 private:
  enum class PageUse : uint8_t { kFree, kKernel, kCache, kAnon, kBuffer };
  struct PageState {
    PageUse use = PageUse::kFree;
    bool modified = false;  // cache page not yet written back
    uint32_t disk = 0;
    uint64_t block = 0;
  };
  struct Disk {
    std::string path;
    int fd = -1;
    uint64_t size = 0;
  };
  class Step;  // RAII: one guest operation, blocks while paused

  static uint64_t CacheKey(uint32_t disk, uint64_t block) { return (uint64_t{disk} << 48) | block; }
  // REQUIRES: mu_ held. Returns a free page, evicting a cache page if needed.
  Pfn AllocPage();
  // REQUIRES: mu_ held. Reads `blocks` (contiguous) of `disk` into `pfns`.
  void ReadBlocksLocked(uint32_t disk, uint64_t first_block, const std::vector<Pfn>& pfns);
  // REQUIRES: mu_ held. Writes cache pages (contiguous blocks) to the disk.
  void WriteBackLocked(const std::vector<Pfn>& pfns);
  // A raw request through a buffer page (RawRead, RawWrite).
  void RawIo(IoOp op, uint32_t disk, uint64_t sector, uint32_t nr_sectors, uint32_t page_sect,
             Rng& rng);
  void Report(const IoEvent& event);  // REQUIRES: mu_ held
  void DiskIo(IoOp op, uint32_t disk, uint64_t offset, const std::vector<iovec>& iov);
  // Writes new content into a page and marks it dirty.
  void WritePage(Pfn pfn, ContentKind kind, Rng& rng);

  SimGuestConfig config_;
  uint64_t seed_;
  GuestMemory memory_;
  std::vector<Disk> disks_;

  mutable std::mutex mu_;  // page states, allocator, cache index, listener
  std::vector<PageState> pages_;
  std::vector<Pfn> free_;
  std::deque<Pfn> cache_fifo_;  // eviction order (may hold stale pfns)
  std::unordered_map<uint64_t, Pfn> cache_;
  std::vector<Pfn> anon_;
  std::vector<Pfn> buffers_;
  Listener listener_;

  mutable std::mutex gate_mu_;  // pause gate
  std::condition_variable gate_cv_;
  bool paused_ = false;
  bool halted_ = false;
  int running_steps_ = 0;
  uint64_t touch_sink_ = 0;  // keeps the reads of TouchMemory; guarded by mu_
};

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_SIM_GUEST_H_
