#include "sim/guest_memory.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

namespace p2bmig::sim {

GuestMemory::GuestMemory(uint64_t nr_pages, const std::string& backing_path, Kind kind)
    : nr_pages_(nr_pages), path_(backing_path), kind_(kind), dirty_words_((nr_pages + 63) / 64) {
  const size_t bytes = nr_pages * kPageSize;
  int fd = -1;
  if (!path_.empty()) {
    fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    // Allocated, not just sized: on a full file system a sparse file would
    // turn a later write into the guest's memory into SIGBUS (and a lazy
    // restore learns before it resumes the guest that it cannot store it).
    int err = fd < 0 ? errno : ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
    if (err != 0) {
      if (fd >= 0) {
        ::close(fd);
        ::unlink(path_.c_str());
      }
      throw Error(ErrorKind::kIo, fmt::format("cannot create guest memory file {} ({} MiB): {}",
                                              path_, bytes >> 20, std::strerror(err)));
    }
  }
  if (kind_ == Kind::kLazyRestore) {
    if (fd >= 0) ::close(fd);  // written by Sync
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
      throw Error(ErrorKind::kIo, fmt::format("cannot map {} MiB of guest memory: {}", bytes >> 20,
                                              std::strerror(errno)));
    }
    // Page-granular: a missing page is one 4 KiB page, never part of a huge one.
    ::madvise(p, bytes, MADV_NOHUGEPAGE);
    base_ = static_cast<uint8_t*>(p);
    dirty_ = std::make_unique<std::atomic<uint64_t>[]>(dirty_words_);
    for (uint64_t i = 0; i < dirty_words_; ++i) dirty_[i].store(0, std::memory_order_relaxed);
    return;
  }
  // Populated up front, as a running guest's memory is: first-touch faults
  // would otherwise be charged to the migration.
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE;
  if (fd >= 0) flags = MAP_SHARED | MAP_POPULATE;
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
  if (path_.empty()) return;
  if (kind_ == Kind::kPopulated) {
    ::msync(base_, nr_pages_ * kPageSize, MS_SYNC);
    return;
  }
  // Allocated at construction: these writes need no new blocks.
  int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    throw Error(ErrorKind::kIo,
                fmt::format("cannot open guest memory file {}: {}", path_, std::strerror(errno)));
  }
  size_t done = 0;
  while (done < bytes()) {
    ssize_t n = ::pwrite(fd, base_ + done, std::min<size_t>(bytes() - done, 64u << 20),
                         static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      throw Error(ErrorKind::kIo,
                  fmt::format("cannot write guest memory file {}: {}", path_, std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  int err = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  if (err != 0) {
    throw Error(ErrorKind::kIo,
                fmt::format("cannot write guest memory file {}: {}", path_, std::strerror(err)));
  }
}

}  // namespace p2bmig::sim
