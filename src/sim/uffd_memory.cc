#include "sim/uffd_memory.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace p2bmig::sim {
namespace {

[[noreturn]] void Fail(const char* what) {
  throw Error(ErrorKind::kIo, fmt::format("userfaultfd: {}: {}", what, std::strerror(errno)));
}

}  // namespace

UffdMemory::UffdMemory(GuestMemory* memory, std::span<const Pfn> missing) : memory_(memory) {
  if (memory_->kind() != GuestMemory::Kind::kLazyRestore) {
    throw Error(ErrorKind::kInternal, "userfaultfd needs anonymous guest memory");
  }
  fd_ = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd_ < 0) Fail("cannot create (needs root or vm.unprivileged_userfaultfd=1)");
  uffdio_api api{};
  api.api = UFFD_API;
  if (::ioctl(fd_, UFFDIO_API, &api) != 0) {
    ::close(fd_);
    Fail("UFFDIO_API");
  }
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(memory_->base());
  reg.range.len = memory_->bytes();
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (::ioctl(fd_, UFFDIO_REGISTER, &reg) != 0) {
    ::close(fd_);
    Fail("UFFDIO_REGISTER");
  }
  registered_ = true;
  // Drop what earlier records put there: the newest record of these pages
  // is a mapping not fetched yet. Contiguous runs in one call each.
  for (size_t i = 0; i < missing.size();) {
    size_t j = i + 1;
    while (j < missing.size() && missing[j] == missing[j - 1] + 1) ++j;
    if (::madvise(memory_->page(missing[i]), (j - i) * kPageSize, MADV_DONTNEED) != 0) {
      Fail("MADV_DONTNEED");
    }
    i = j;
  }
}

UffdMemory::~UffdMemory() {
  Release();
  ::close(fd_);
}

void UffdMemory::Release() {
  if (!registered_) return;
  registered_ = false;
  uffdio_range range{reinterpret_cast<uint64_t>(memory_->base()), memory_->bytes()};
  ::ioctl(fd_, UFFDIO_UNREGISTER, &range);
  ::ioctl(fd_, UFFDIO_WAKE, &range);
}

bool UffdMemory::Install(Pfn pfn, const uint8_t* data) {
  uffdio_copy copy{};
  copy.dst = reinterpret_cast<uint64_t>(memory_->page(pfn));
  copy.src = reinterpret_cast<uint64_t>(data);
  copy.len = kPageSize;
  copy.mode = 0;  // and wake the accesses waiting for it
  for (;;) {
    if (::ioctl(fd_, UFFDIO_COPY, &copy) == 0) return true;
    if (errno == EEXIST) return false;  // present: it may hold the guest's writes
    if (errno == EAGAIN || errno == EINTR) {
      if (copy.copy > 0) return true;
      copy.copy = 0;
      continue;
    }
    Fail(fmt::format("UFFDIO_COPY of pfn {:#x}", pfn).c_str());
  }
}

void UffdMemory::TakeFaults(std::vector<Pfn>* pfns) {
  uffd_msg msgs[64];
  for (;;) {
    ssize_t n = ::read(fd_, msgs, sizeof(msgs));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // EAGAIN: nothing waiting
    for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
      uint64_t addr = msgs[i].arg.pagefault.address;
      uint64_t base = reinterpret_cast<uint64_t>(memory_->base());
      if (addr < base || addr >= base + memory_->bytes()) continue;
      pfns->push_back((addr - base) / kPageSize);
    }
  }
}

void UffdMemory::Wake(Pfn pfn) {
  uffdio_range range{reinterpret_cast<uint64_t>(memory_->page(pfn)), kPageSize};
  ::ioctl(fd_, UFFDIO_WAKE, &range);
}

}  // namespace p2bmig::sim
