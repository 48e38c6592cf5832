#include "sim/sim_guest.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <p2bmig/hash.h>

#include "sim/workload.h"

namespace p2bmig::sim {

// One guest operation: waits while the guest is paused, and Pause() waits for
// it to finish.
class SimGuest::Step {
 public:
  explicit Step(SimGuest* guest) : guest_(guest) {
    std::unique_lock lock(guest_->gate_mu_);
    guest_->gate_cv_.wait(lock, [&] { return !guest_->paused_ || guest_->halted_; });
    if (guest_->halted_) throw Error(ErrorKind::kAborted, "guest halted");
    ++guest_->running_steps_;
  }
  ~Step() {
    std::lock_guard lock(guest_->gate_mu_);
    if (--guest_->running_steps_ == 0) guest_->gate_cv_.notify_all();
  }
  Step(const Step&) = delete;
  Step& operator=(const Step&) = delete;

 private:
  SimGuest* guest_;
};

namespace {
constexpr uint32_t kMaxRequestPages = 32;
}  // namespace

SimGuest::SimGuest(const SimGuestConfig& config, uint64_t seed)
    : config_(config), seed_(seed), memory_(config.memory_pages, config.memory_path) {
  if (config_.kernel_pages + config_.buffer_pages >= config_.memory_pages) {
    throw Error(ErrorKind::kInvalidArgument, "guest memory too small for its kernel");
  }
  for (const std::string& path : config_.disk_paths) {
    Disk d;
    d.path = path;
    d.fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    struct stat st {};
    if (d.fd < 0 || ::fstat(d.fd, &st) != 0) {
      int err = errno;
      for (Disk& o : disks_) ::close(o.fd);
      if (d.fd >= 0) ::close(d.fd);
      throw Error(ErrorKind::kIo,
                  fmt::format("cannot open disk image {}: {}", path, std::strerror(err)));
    }
    d.size = static_cast<uint64_t>(st.st_size) / kPageSize * kPageSize;
    disks_.push_back(d);
  }
  pages_.resize(config_.memory_pages);
  Rng rng(seed);
  Pfn pfn = 0;
  for (; pfn < config_.kernel_pages; ++pfn) {
    pages_[pfn].use = PageUse::kKernel;
    FillPage(memory_.page(pfn), rng.Chance(0.8) ? ContentKind::kBinary : ContentKind::kZero, rng);
  }
  for (; pfn < config_.kernel_pages + config_.buffer_pages; ++pfn) {
    pages_[pfn].use = PageUse::kBuffer;
    buffers_.push_back(pfn);
  }
  // Hand out free pages from the top, as a buddy allocator would.
  for (Pfn p = config_.memory_pages; p-- > pfn;) free_.push_back(p);
}

uint64_t SimGuest::CorruptKernelPages() const {
  // Boot again into a scratch page, in the same order with the same seed.
  Rng rng(seed_);
  std::vector<uint8_t> page(kPageSize);
  uint64_t bad = 0;
  for (Pfn pfn = 0; pfn < config_.kernel_pages; ++pfn) {
    FillPage(page.data(), rng.Chance(0.8) ? ContentKind::kBinary : ContentKind::kZero, rng);
    if (std::memcmp(page.data(), memory_.page(pfn), kPageSize) != 0) {
      ++bad;
    }
  }
  return bad;
}

SimGuest::~SimGuest() {
  for (Disk& d : disks_) ::close(d.fd);
}

// --- Guest operations ------------------------------------------------------

void SimGuest::ReadFile(uint32_t disk, uint64_t first_block, uint32_t nr_blocks) {
  Step step(this);
  std::lock_guard lock(mu_);
  nr_blocks = static_cast<uint32_t>(
      std::min<uint64_t>(nr_blocks, disk_blocks(disk) - std::min(first_block, disk_blocks(disk))));
  uint64_t run_start = 0;
  std::vector<Pfn> run;
  auto flush = [&] {
    if (!run.empty()) ReadBlocksLocked(disk, run_start, run);
    run.clear();
  };
  for (uint64_t b = first_block; b < first_block + nr_blocks; ++b) {
    if (cache_.count(CacheKey(disk, b)) != 0) {
      flush();
      continue;
    }
    if (run.size() == kMaxRequestPages) flush();
    if (run.empty()) run_start = b;
    Pfn p = AllocPage();
    pages_[p] = {PageUse::kCache, false, disk, b};
    cache_[CacheKey(disk, b)] = p;
    cache_fifo_.push_back(p);
    run.push_back(p);
  }
  flush();
}

void SimGuest::WriteFile(uint32_t disk, uint64_t first_block, uint32_t nr_blocks, Rng& rng) {
  Step step(this);
  std::lock_guard lock(mu_);
  for (uint64_t b = first_block; b < first_block + nr_blocks && b < disk_blocks(disk); ++b) {
    auto it = cache_.find(CacheKey(disk, b));
    Pfn p;
    if (it != cache_.end()) {
      p = it->second;
    } else {
      p = AllocPage();
      pages_[p] = {PageUse::kCache, false, disk, b};
      cache_[CacheKey(disk, b)] = p;
      cache_fifo_.push_back(p);
    }
    pages_[p].modified = true;
    WritePage(p, DrawFileContent(rng), rng);
  }
}

void SimGuest::Writeback(uint32_t max_pages) {
  Step step(this);
  std::lock_guard lock(mu_);
  std::vector<Pfn> todo;
  for (Pfn p : cache_fifo_) {
    if (todo.size() >= max_pages) break;
    if (pages_[p].use == PageUse::kCache && pages_[p].modified &&
        std::find(todo.begin(), todo.end(), p) == todo.end()) {
      todo.push_back(p);
    }
  }
  std::sort(todo.begin(), todo.end(), [&](Pfn a, Pfn b) {
    return std::pair(pages_[a].disk, pages_[a].block) < std::pair(pages_[b].disk, pages_[b].block);
  });
  std::vector<Pfn> run;
  for (Pfn p : todo) {
    if (!run.empty() && (run.size() == kMaxRequestPages || pages_[p].disk != pages_[run[0]].disk ||
                         pages_[p].block != pages_[run.back()].block + 1)) {
      WriteBackLocked(run);
      run.clear();
    }
    run.push_back(p);
  }
  if (!run.empty()) WriteBackLocked(run);
}

void SimGuest::TouchAnon(uint32_t nr_pages, uint64_t anon_limit, Rng& rng) {
  Step step(this);
  std::lock_guard lock(mu_);
  for (uint32_t i = 0; i < nr_pages; ++i) {
    Pfn p;
    if (anon_.size() < anon_limit && (anon_.empty() || rng.Chance(0.5))) {
      p = AllocPage();
      pages_[p] = {PageUse::kAnon, false, 0, 0};
      anon_.push_back(p);
    } else if (!anon_.empty()) {
      p = anon_[rng.Below(anon_.size())];
    } else {
      return;
    }
    WritePage(p, DrawAnonContent(rng), rng);
  }
}

void SimGuest::ScribbleCache(uint32_t nr_pages, Rng& rng) {
  Step step(this);
  std::lock_guard lock(mu_);
  for (uint32_t i = 0; i < nr_pages && !cache_fifo_.empty(); ++i) {
    Pfn p = cache_fifo_[rng.Below(cache_fifo_.size())];
    if (pages_[p].use != PageUse::kCache) continue;
    uint64_t word = rng.Next() | 1;  // never a no-op write
    size_t off = rng.Below(kPageSize / 8) * 8;
    uint64_t old;
    std::memcpy(&old, memory_.page(p) + off, 8);
    word ^= old == word ? 2 : 0;
    std::memcpy(memory_.page(p) + off, &word, 8);
    memory_.MarkDirty(p);
    pages_[p].modified = true;
  }
}

void SimGuest::TouchMemory(uint32_t nr, uint64_t seed, Rng& rng) {
  Step step(this);
  std::lock_guard lock(mu_);
  uint64_t sink = 0;
  for (uint32_t i = 0; i < nr; ++i) {
    MemoryAccess a = DrawMemoryAccess(rng, memory_.nr_pages(), seed);
    // Loads only: the profile's own anonymous-page and file writes already
    // make the guest's dirty rate (calibrated against the baseline), the
    // page cache must change only through file writes, and kernel pages
    // stay as boot wrote them (the failure check compares them). The
    // target's resumed guest makes the stores (ResumedGuest).
    a.value = 0;
    sink += PerformMemoryAccess(memory_.page(a.pfn), a);
  }
  touch_sink_ += sink;
}

void SimGuest::RawRead(uint32_t disk, uint64_t sector, uint32_t nr_sectors, uint32_t page_sect,
                       Rng& rng) {
  RawIo(IoOp::kRead, disk, sector, nr_sectors, page_sect, rng);
}

void SimGuest::RawWrite(uint32_t disk, uint64_t sector, uint32_t nr_sectors, uint32_t page_sect,
                        Rng& rng) {
  RawIo(IoOp::kWrite, disk, sector, nr_sectors, page_sect, rng);
}

void SimGuest::RawIo(IoOp op, uint32_t disk, uint64_t sector, uint32_t nr_sectors,
                     uint32_t page_sect, Rng& rng) {
  Step step(this);
  std::lock_guard lock(mu_);
  uint64_t disk_sectors = disks_[disk].size / kSectorSize;
  if (nr_sectors == 0 || page_sect + nr_sectors > kSectorsPerPage ||
      sector + nr_sectors > disk_sectors) {
    return;
  }
  Pfn p = buffers_[rng.Below(buffers_.size())];
  if (op == IoOp::kWrite) WritePage(p, DrawFileContent(rng), rng);  // fresh data to write
  DiskIo(op, disk, sector * kSectorSize,
         {{memory_.page(p) + page_sect * kSectorSize, nr_sectors * kSectorSize}});
  if (op == IoOp::kRead) memory_.MarkDirty(p);  // the backend wrote guest memory
  IoSegment seg{p, static_cast<uint8_t>(page_sect),
                static_cast<uint8_t>(page_sect + nr_sectors - 1), 0};
  if (seg.full_page()) seg.hash = PageHash(memory_.page(p));
  Report(IoEvent{op, disk, sector, {seg}});
}

void SimGuest::ReclaimCache(uint32_t nr_pages, uint64_t anon_limit, Rng& rng) {
  Step step(this);
  std::lock_guard lock(mu_);
  for (uint32_t i = 0; i < nr_pages && !cache_fifo_.empty() && anon_.size() < anon_limit;) {
    // Keep some page cache: with none left and no free page, the next file
    // read would have nowhere to go.
    if (free_.empty() && cache_.size() <= pages_.size() / 8) break;
    Pfn p = cache_fifo_.front();
    cache_fifo_.pop_front();
    PageState& st = pages_[p];
    auto it = cache_.find(CacheKey(st.disk, st.block));
    if (st.use != PageUse::kCache || it == cache_.end() || it->second != p) continue;
    if (st.modified) {
      cache_fifo_.push_back(p);  // dirty: keep it, write-back will come
      if (++i >= nr_pages) break;
      continue;
    }
    cache_.erase(it);
    st = {PageUse::kAnon, false, 0, 0};
    anon_.push_back(p);
    WritePage(p, DrawAnonContent(rng), rng);
    ++i;
  }
}

GuestMemoryUse SimGuest::MemoryUse() const {
  std::lock_guard lock(mu_);
  GuestMemoryUse u;
  for (const PageState& st : pages_) {
    switch (st.use) {
      case PageUse::kFree:
        ++u.free;
        break;
      case PageUse::kKernel:
        ++u.kernel;
        break;
      case PageUse::kCache:
        ++u.cache;
        break;
      case PageUse::kAnon:
        ++u.anon;
        break;
      case PageUse::kBuffer:
        ++u.buffer;
        break;
    }
  }
  return u;
}

uint64_t SimGuest::anon_pages() const {
  std::lock_guard lock(mu_);
  return anon_.size();
}

void SimGuest::AgeFreePages(double share, Rng& rng) {
  Step step(this);
  std::lock_guard lock(mu_);
  for (Pfn p : free_) {
    if (!rng.Chance(share)) continue;
    // Half freed heap, half evicted file pages.
    WritePage(p, rng.Chance(0.5) ? DrawAnonContent(rng) : DrawFileContent(rng), rng);
  }
}

uint64_t SimGuest::cached_pages() const {
  std::lock_guard lock(mu_);
  return cache_.size();
}

// --- Internals -------------------------------------------------------------

Pfn SimGuest::AllocPage() {
  if (!free_.empty()) {
    Pfn p = free_.back();
    free_.pop_back();
    return p;
  }
  while (!cache_fifo_.empty()) {
    Pfn p = cache_fifo_.front();
    cache_fifo_.pop_front();
    PageState& st = pages_[p];
    if (st.use != PageUse::kCache) continue;
    auto it = cache_.find(CacheKey(st.disk, st.block));
    if (it == cache_.end() || it->second != p) continue;
    if (st.modified) WriteBackLocked({p});
    cache_.erase(it);
    st = PageState{};
    return p;
  }
  throw Error(ErrorKind::kInternal, "simulated guest ran out of memory");
}

void SimGuest::ReadBlocksLocked(uint32_t disk, uint64_t first_block, const std::vector<Pfn>& pfns) {
  std::vector<iovec> iov;
  for (Pfn p : pfns) iov.push_back({memory_.page(p), kPageSize});
  DiskIo(IoOp::kRead, disk, first_block * kPageSize, iov);
  IoEvent ev{IoOp::kRead, disk, first_block * kSectorsPerPage, {}};
  for (Pfn p : pfns) {
    memory_.MarkDirty(p);  // the backend wrote guest memory
    ev.segments.push_back({p, 0, kSectorsPerPage - 1, PageHash(memory_.page(p))});
  }
  Report(ev);
}

void SimGuest::WriteBackLocked(const std::vector<Pfn>& pfns) {
  const PageState& first = pages_[pfns[0]];
  std::vector<iovec> iov;
  IoEvent ev{IoOp::kWrite, first.disk, first.block * kSectorsPerPage, {}};
  for (Pfn p : pfns) {
    iov.push_back({memory_.page(p), kPageSize});
    ev.segments.push_back({p, 0, kSectorsPerPage - 1, PageHash(memory_.page(p))});
    pages_[p].modified = false;
  }
  DiskIo(IoOp::kWrite, first.disk, first.block * kPageSize, iov);
  Report(ev);
}

void SimGuest::Report(const IoEvent& event) {
  if (listener_) listener_(event);
}

void SimGuest::DiskIo(IoOp op, uint32_t disk, uint64_t offset, const std::vector<iovec>& iov_in) {
  std::vector<iovec> iov = iov_in;
  size_t idx = 0;
  while (idx < iov.size()) {
    ssize_t n = op == IoOp::kRead
                    ? ::preadv(disks_[disk].fd, iov.data() + idx,
                               static_cast<int>(iov.size() - idx), static_cast<off_t>(offset))
                    : ::pwritev(disks_[disk].fd, iov.data() + idx,
                                static_cast<int>(iov.size() - idx), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw Error(
          ErrorKind::kIo,
          fmt::format("guest {} of {} at {} failed: {}", op == IoOp::kRead ? "read" : "write",
                      disks_[disk].path, offset, n == 0 ? "end of file" : std::strerror(errno)));
    }
    offset += static_cast<uint64_t>(n);
    for (size_t left = static_cast<size_t>(n); left > 0 && idx < iov.size();) {
      size_t take = std::min(left, iov[idx].iov_len);
      iov[idx].iov_base = static_cast<uint8_t*>(iov[idx].iov_base) + take;
      iov[idx].iov_len -= take;
      left -= take;
      if (iov[idx].iov_len == 0) ++idx;
    }
  }
}

void SimGuest::WritePage(Pfn pfn, ContentKind kind, Rng& rng) {
  FillPage(memory_.page(pfn), kind, rng);
  memory_.MarkDirty(pfn);
}

// --- Domain ----------------------------------------------------------------

std::vector<uint64_t> SimGuest::DiskSizes() const {
  std::vector<uint64_t> sizes;
  for (const Disk& d : disks_) sizes.push_back(d.size);
  return sizes;
}

void SimGuest::ReadPages(std::span<const Pfn> pfns, uint8_t* out) {
  for (size_t i = 0; i < pfns.size(); ++i) {
    std::memcpy(out + i * kPageSize, memory_.page(pfns[i]), kPageSize);
  }
}

void SimGuest::EnableLogDirty() {
  std::vector<Pfn> discard;
  memory_.PeekAndClean(&discard);
}

void SimGuest::MarkDirty(std::span<const Pfn> pfns) {
  for (Pfn p : pfns) memory_.MarkDirty(p);
}

void SimGuest::Pause() {
  std::unique_lock lock(gate_mu_);
  paused_ = true;
  gate_cv_.wait(lock, [&] { return running_steps_ == 0; });
}

void SimGuest::Resume() {
  std::lock_guard lock(gate_mu_);
  paused_ = false;
  gate_cv_.notify_all();
}

void SimGuest::Halt() {
  std::lock_guard lock(gate_mu_);
  halted_ = true;
  gate_cv_.notify_all();
}

bool SimGuest::paused() const {
  std::lock_guard lock(gate_mu_);
  return paused_;
}

void SimGuest::FlushDisks() {
  for (const Disk& d : disks_) {
    if (::fdatasync(d.fd) != 0) {
      throw Error(ErrorKind::kIo,
                  fmt::format("cannot flush disk {}: {}", d.path, std::strerror(errno)));
    }
  }
}

// --- IoTap -----------------------------------------------------------------

void SimGuest::SetListener(Listener listener) {
  std::lock_guard lock(mu_);
  listener_ = std::move(listener);
}

void SimGuest::Drain() {
  // Requests are reported inside the step that issues them, so waiting for
  // the steps running now is waiting for every request in flight.
  std::unique_lock lock(gate_mu_);
  if (paused_) return;
  paused_ = true;
  gate_cv_.wait(lock, [&] { return running_steps_ == 0; });
  paused_ = false;
  gate_cv_.notify_all();
}

}  // namespace p2bmig::sim
