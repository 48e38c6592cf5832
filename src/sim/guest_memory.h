// GuestMemory: the RAM of a simulated guest, an mmap'd region of 4 KiB pages,
// with a dirty bitmap that plays the role of Xen's log-dirty mode.
//
// The region is backed by a file when a path is given (so that another process,
// the demo's checker, can compare source and target memory byte for byte) or
// is anonymous otherwise. New memory is zero, as memory Xen populates is.
//
// Memory for a lazy restore (kLazyRestore) is anonymous and private, since
// userfaultfd reports missing pages only of anonymous or shmem mappings,
// never of a regular file; pages are made missing later (UffdMemory). Sync()
// then writes its content to the path, for the same comparison.
//
// Thread safety: pages may be read and written from any thread; MarkDirty and
// PeekAndClean are lock-free and may race with each other as Xen's do: a bit
// set after PeekAndClean read its word is seen by the next call.

#ifndef P2BMIG_SIM_GUEST_MEMORY_H_
#define P2BMIG_SIM_GUEST_MEMORY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <p2bmig/types.h>

namespace p2bmig::sim {

class GuestMemory {
 public:
  enum class Kind { kPopulated, kLazyRestore };

  // Maps `nr_pages` pages. With a non-empty `backing_path`, the file is created
  // (truncated) and allocated, then mapped shared (kPopulated) or written by
  // Sync (kLazyRestore). Throws Error(kIo) if it cannot be allocated.
  GuestMemory(uint64_t nr_pages, const std::string& backing_path = "",
              Kind kind = Kind::kPopulated);
  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  uint64_t nr_pages() const { return nr_pages_; }
  uint8_t* page(Pfn pfn) { return base_ + pfn * kPageSize; }
  const uint8_t* page(Pfn pfn) const { return base_ + pfn * kPageSize; }
  const std::string& backing_path() const { return path_; }

  // Records that `pfn` was written. Call after the write has landed, so that a
  // concurrent PeekAndClean either copies the new content or sees the bit.
  void MarkDirty(Pfn pfn);
  // Appends the dirty pfns to `out` and clears their bits.
  void PeekAndClean(std::vector<Pfn>* out);
  uint64_t dirty_count() const;

  // Makes the backing file's content durable and visible to other processes.
  // REQUIRES for kLazyRestore: every page present (or no userfaultfd).
  void Sync();

  uint8_t* base() { return base_; }
  size_t bytes() const { return nr_pages_ * kPageSize; }
  Kind kind() const { return kind_; }

 private:
  uint64_t nr_pages_;
  std::string path_;
  Kind kind_;
  uint8_t* base_ = nullptr;
  std::unique_ptr<std::atomic<uint64_t>[]> dirty_;
  uint64_t dirty_words_;
};

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_GUEST_MEMORY_H_
