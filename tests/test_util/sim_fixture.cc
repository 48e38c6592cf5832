#include "test_util/sim_fixture.h"

#include <cstdlib>
#include <cstring>
#include <exception>

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <p2bmig/transport.h>

#include "sim/fetch_credits.h"
#include "sim/resumed_guest.h"

namespace p2bmig::test {

// A peer that fails closes its end; writes must then fail, not kill the test.
[[maybe_unused]] const bool kSigpipeIgnored = [] {
  ::signal(SIGPIPE, SIG_IGN);
  return true;
}();

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "p2bmig-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::pair<std::unique_ptr<ByteStream>, std::unique_ptr<ByteStream>> StreamPair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw std::runtime_error("socketpair failed");
  }
  return {NewFdByteStream(fds[0], true, "socketpair source end"),
          NewFdByteStream(fds[1], true, "socketpair target end")};
}

DelayedStore::DelayedStore(BlockStore* target, uint64_t seed, uint32_t max_delay_us,
                           uint32_t min_delay_us)
    : BlockStoreWrapper(target),
      rng_(seed),
      max_delay_us_(max_delay_us),
      min_delay_us_(std::min(min_delay_us, max_delay_us)) {
  thread_ = std::thread([this] { Run(); });
}

DelayedStore::~DelayedStore() {
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return outstanding_ == 0; });
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void DelayedStore::ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf,
                             ReadDone done) {
  {
    std::lock_guard lock(mu_);
    ++outstanding_;
  }
  target()->ReadAsync(disk, offset, len, buf, [this, done = std::move(done)](std::exception_ptr e) {
    std::lock_guard lock(mu_);
    auto due =
        std::chrono::steady_clock::now() +
        std::chrono::microseconds(min_delay_us_ + rng_.Below(max_delay_us_ - min_delay_us_ + 1));
    items_.push(Item{due, seq_++, e, done});
    cv_.notify_all();
  });
}

void DelayedStore::Run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    if (items_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto due = items_.top().due;
    if (std::chrono::steady_clock::now() < due) {
      cv_.wait_until(lock, due);
      continue;
    }
    Item item = items_.top();
    items_.pop();
    lock.unlock();
    item.done(item.error);
    lock.lock();
    --outstanding_;
    cv_.notify_all();
  }
}

GatedStore::GatedStore(BlockStore* target, double safety_s) : BlockStoreWrapper(target) {
  safety_ = std::thread([this, safety_s] {
    std::unique_lock lock(mu_);
    bool stop = cv_.wait_for(lock, std::chrono::duration<double>(safety_s),
                             [this] { return open_ || stop_; });
    lock.unlock();
    if (!stop) Open();
  });
}

GatedStore::~GatedStore() {
  Open();
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  safety_.join();
}

void GatedStore::ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf,
                           ReadDone done) {
  {
    std::lock_guard lock(mu_);
    if (!open_) {
      held_.push_back({disk, offset, len, buf, std::move(done)});
      return;
    }
  }
  BlockStoreWrapper::ReadAsync(disk, offset, len, buf, std::move(done));
}

void GatedStore::Open() {
  std::vector<Held> held;
  {
    std::lock_guard lock(mu_);
    if (open_) return;
    open_ = true;
    held.swap(held_);
    cv_.notify_all();
  }
  for (Held& h : held)
    BlockStoreWrapper::ReadAsync(h.disk, h.offset, h.len, h.buf, std::move(h.done));
}

bool GatedStore::opened() {
  std::lock_guard lock(mu_);
  return open_;
}

MigrationResult RunMigration(sim::SourceHost* source, sim::TargetHost* target, uint64_t rate_bps) {
  auto [src_end, dst_end] = StreamPair();
  std::unique_ptr<ByteStream> limited;
  ByteStream* link = src_end.get();
  if (rate_bps != 0) {
    limited = NewRateLimitedStream(src_end.get(), rate_bps);
    link = limited.get();
  }
  MigrationResult result;
  std::exception_ptr target_error;
  // The target end is closed when the target is done, as a process exiting
  // would: a source still writing then fails instead of blocking.
  std::thread t([&, dst = std::move(dst_end)]() mutable {
    try {
      result.target = target->Receive(dst.get());
      // As p2bmig receive does once the memory is stored.
      if (!result.target.source_lost) sim::SendCommit(dst.get());
    } catch (...) {
      target_error = std::current_exception();
    }
    dst->CloseWrite();
    dst.reset();
  });
  std::exception_ptr source_error;
  try {
    result.source = source->Migrate(link);
    src_end->CloseWrite();
  } catch (...) {
    source_error = std::current_exception();
    src_end->CloseWrite();
  }
  t.join();
  if (source_error) std::rethrow_exception(source_error);
  if (target_error) std::rethrow_exception(target_error);
  result.differing_pages =
      DifferingPagesAfterLazyRestore(source->guest().memory(), target->memory(), result.target);
  return result;
}

uint64_t DifferingPagesAfterLazyRestore(const sim::GuestMemory& source,
                                        const sim::GuestMemory& target,
                                        const sim::TargetReport& report) {
  if (report.guest_writes.empty()) return DifferingPages(source, target);
  if (source.nr_pages() != target.nr_pages()) {
    return std::max(source.nr_pages(), target.nr_pages());
  }
  // What the target must hold: the source's memory at its pause with the
  // resumed guest's read-modify-writes replayed on top.
  std::vector<uint8_t> expected(source.nr_pages() * kPageSize);
  std::memcpy(expected.data(), source.page(0), expected.size());
  sim::ApplyGuestWrites(expected.data(), source.nr_pages(), report.guest_writes);
  uint64_t n = 0;
  for (Pfn p = 0; p < source.nr_pages(); ++p) {
    n += std::memcmp(expected.data() + p * kPageSize, target.page(p), kPageSize) != 0 ? 1 : 0;
  }
  return n;
}

uint64_t DifferingPages(const sim::GuestMemory& a, const sim::GuestMemory& b) {
  if (a.nr_pages() != b.nr_pages()) return std::max(a.nr_pages(), b.nr_pages());
  uint64_t n = 0;
  for (Pfn p = 0; p < a.nr_pages(); ++p) {
    n += std::memcmp(a.page(p), b.page(p), kPageSize) != 0 ? 1 : 0;
  }
  return n;
}

}  // namespace p2bmig::test
