#include "sim/guest_memory.h"

#include <bit>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

namespace p2bmig::sim {

GuestMemory::GuestMemory(uint64_t nr_pages, const std::string& backing_path)
    : nr_pages_(nr_pages), path_(backing_path), dirty_words_((nr_pages + 63) / 64) {
  const size_t bytes = nr_pages * kPageSize;
  int fd = -1;
  // Populated up front, as a running guest's memory is: first-touch faults
  // would otherwise be charged to the migration.
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE;
  if (!path_.empty()) {
    fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    // Allocated, not just sized: on a full file system a sparse file would
    // turn a later write into the guest's memory into SIGBUS.
    int err = fd < 0 ? errno : ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
    if (err != 0) {
      if (fd >= 0) {
        ::close(fd);
        ::unlink(path_.c_str());
      }
      throw Error(ErrorKind::kIo, fmt::format("cannot create guest memory file {} ({} MiB): {}",
                                              path_, bytes >> 20, std::strerror(err)));
    }
    flags = MAP_SHARED | MAP_POPULATE;
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, fd, 0);
  int err = errno;
  if (fd >= 0) ::close(fd);
  if (p == MAP_FAILED) {
    throw Error(ErrorKind::kIo, fmt::format("cannot map {} MiB of guest memory: {}", bytes >> 20,
                                            std::strerror(err)));
  }
  base_ = static_cast<uint8_t*>(p);
  dirty_ = std::make_unique<std::atomic<uint64_t>[]>(dirty_words_);
  for (uint64_t i = 0; i < dirty_words_; ++i) dirty_[i].store(0, std::memory_order_relaxed);
}

GuestMemory::~GuestMemory() { ::munmap(base_, nr_pages_ * kPageSize); }

void GuestMemory::MarkDirty(Pfn pfn) {
  dirty_[pfn / 64].fetch_or(uint64_t{1} << (pfn % 64), std::memory_order_release);
}

void GuestMemory::PeekAndClean(std::vector<Pfn>* out) {
  for (uint64_t w = 0; w < dirty_words_; ++w) {
    if (dirty_[w].load(std::memory_order_relaxed) == 0) continue;
    uint64_t bits = dirty_[w].exchange(0, std::memory_order_acq_rel);
    while (bits != 0) {
      int b = std::countr_zero(bits);
      out->push_back(w * 64 + static_cast<uint64_t>(b));
      bits &= bits - 1;
    }
  }
}

uint64_t GuestMemory::dirty_count() const {
  uint64_t n = 0;
  for (uint64_t w = 0; w < dirty_words_; ++w) {
    n += static_cast<uint64_t>(std::popcount(dirty_[w].load(std::memory_order_relaxed)));
  }
  return n;
}

void GuestMemory::Sync() {
  if (!path_.empty()) ::msync(base_, nr_pages_ * kPageSize, MS_SYNC);
}

}  // namespace p2bmig::sim
