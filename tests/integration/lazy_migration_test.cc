// Lazy restore on the simulated host, in one process: the target resumes the
// guest as soon as the pages sent as data are in place, the guest runs
// (reads and read-modify-writes of its memory, faulting in missing pages
// through userfaultfd) while the rest is fetched, and the check is exact:
// every page equals the source's at its pause, except that pages the
// resumed guest wrote must hold the source's content with its logged writes
// replayed on top. Also: shared storage failing after the resume (pages come
// from the source instead), and the source dying in that window (the target
// must stop the guest and fail).

#include <atomic>
#include <cstdio>

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <p2bmig/block_store.h>
#include <p2bmig/transport.h>

#include "sim/content.h"
#include "sim/sim_host.h"
#include "test_util/sim_fixture.h"

namespace p2bmig::test {
namespace {

// Fault injection (a NAS that becomes unreachable at a chosen moment;
// nfs_migration_test.cc does it for real by stopping the server): once
// `failing` is set, every read fails.
class SwitchableFailingStore : public BlockStoreWrapper {
 public:
  SwitchableFailingStore(BlockStore* target, std::atomic<bool>* failing, uint64_t seed,
                         uint32_t delay_us)
      : BlockStoreWrapper(target),
        failing_(failing),
        delayed_(target, seed, delay_us, delay_us / 2) {}
  void ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf, ReadDone done) override {
    if (failing_->load()) {
      done(std::make_exception_ptr(Error(ErrorKind::kIo, "injected: storage unreachable")));
      return;
    }
    delayed_.ReadAsync(disk, offset, len, buf, std::move(done));
  }

 private:
  std::atomic<bool>* failing_;
  DelayedStore delayed_;
};

struct LazySetup {
  uint64_t memory_pages = 8192;  // 32 MiB
  uint64_t disk_bytes = 64u << 20;
  std::string workload = "database";
  uint64_t seed = 1;
  // Slow storage (every read 50-100 ms): much is still missing at resume.
  uint32_t fetch_delay_us = 100'000;
  uint64_t rate_bps = 0;
};

class LazyMigration {
 public:
  explicit LazyMigration(const LazySetup& s) : setup_(s) {
    image_ = dir_.File("disk0.img");
    sim::CreateDiskImage(image_, s.disk_bytes, s.seed);
    sim::SourceOptions so;
    so.guest.memory_pages = s.memory_pages;
    so.guest.kernel_pages = s.memory_pages / 32;
    so.guest.buffer_pages = 64;
    so.guest.disk_paths = {image_};
    so.workload = s.workload;
    so.seed = s.seed;
    so.mode = sim::Mode::kLazy;
    so.flow_control = false;
    source_ = std::make_unique<sim::SourceHost>(so);
    sim::TargetOptions to;
    to.memory_pages = s.memory_pages;
    to.disks = {image_};
    to.allow_lazy = true;
    to.lazy_required = true;
    to.workload = s.workload;
    to.seed = s.seed;
    to.run_after_s = 0.1;
    to.wrap_store = [this](BlockStore* store) -> std::unique_ptr<BlockStore> {
      return std::make_unique<SwitchableFailingStore>(store, &storage_failing_, setup_.seed,
                                                      setup_.fetch_delay_us);
    };
    to.on_resume = [this] {
      if (on_resume_) on_resume_();
    };
    target_ = std::make_unique<sim::TargetHost>(to);
  }

  // Runs both ends over a socketpair; `on_resume` runs on the target right
  // after the guest resumed. Errors are returned, not thrown.
  void Run(std::function<void()> on_resume = {}) {
    source_->WarmUp();
    on_resume_ = std::move(on_resume);
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    source_fd_ = fds[0];
    auto src = NewFdByteStream(fds[0], true, "source end");
    auto dst = NewFdByteStream(fds[1], true, "target end");
    std::unique_ptr<ByteStream> limited;
    ByteStream* link = src.get();
    if (setup_.rate_bps != 0) {
      limited = NewRateLimitedStream(src.get(), setup_.rate_bps);
      link = limited.get();
    }
    std::thread t([&] {
      try {
        result.target = target_->Receive(dst.get());
      } catch (...) {
        target_error = std::current_exception();
      }
      dst->CloseWrite();
    });
    try {
      result.source = source_->Migrate(link);
      src->CloseWrite();
    } catch (...) {
      source_error = std::current_exception();
      try {
        src->CloseWrite();
      } catch (...) {
      }
    }
    t.join();
    if (!target_error && !source_error) {
      result.differing_pages = DifferingPagesAfterLazyRestore(source_->guest().memory(),
                                                              target_->memory(), result.target);
    }
  }

  // The source host dies: its end of the connection goes away at once.
  void KillSource() { ::shutdown(source_fd_, SHUT_RDWR); }
  void FailStorage() { storage_failing_ = true; }

  MigrationResult result;
  std::exception_ptr source_error, target_error;

 private:
  LazySetup setup_;
  TempDir dir_;
  std::string image_;
  std::atomic<bool> storage_failing_{false};
  std::function<void()> on_resume_;
  int source_fd_ = -1;
  std::unique_ptr<sim::SourceHost> source_;
  std::unique_ptr<sim::TargetHost> target_;
};

std::string What(const std::exception_ptr& e) {
  if (!e) return "";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  }
}

TEST(LazyMigration, GuestRunsBeforeMemoryIsCompleteAndMemoryIsExact) {
  LazySetup s;
  LazyMigration m(s);
  m.Run();
  ASSERT_FALSE(m.source_error) << What(m.source_error);
  ASSERT_FALSE(m.target_error) << What(m.target_error);
  const sim::TargetReport& t = m.result.target;
  ASSERT_TRUE(t.lazy);
  EXPECT_EQ(m.result.differing_pages, 0u);
  // The guest resumed with pages missing, waited for some, and wrote to
  // pages that were missing when it resumed.
  EXPECT_GT(t.lazy_stats.missing_at_resume, 100u);
  EXPECT_GT(t.lazy_stats.faults, 0u);
  EXPECT_EQ(t.lazy_stats.fault_wait_s.size(), t.lazy_stats.faults);
  EXPECT_GT(t.writes_to_missing, 0u);
  // From the storage, or (a fault that waited over 0.5 s) from the source.
  EXPECT_EQ(t.lazy_stats.fetched + t.lazy_stats.from_source, t.lazy_stats.missing_at_resume);
  EXPECT_GT(t.lazy_stats.fetched, t.lazy_stats.from_source);
  EXPECT_EQ(t.lazy_stats.already_present, 0u);
  EXPECT_GT(t.all_present_ns, t.resume_ns);
  // The source kept its guest until the target had every page.
  EXPECT_GE(m.result.source.all_present_ns, t.all_present_ns);
  EXPECT_GE(m.result.source.pages_served, t.lazy_stats.from_source);
  std::printf(
      "lazy: %llu missing at resume, %llu faults, %zu guest writes (%llu to missing pages)\n",
      static_cast<unsigned long long>(t.lazy_stats.missing_at_resume),
      static_cast<unsigned long long>(t.lazy_stats.faults), t.guest_writes.size(),
      static_cast<unsigned long long>(t.writes_to_missing));
}

TEST(LazyMigration, StorageFailureAfterResumeIsRecoveredFromTheSource) {
  LazySetup s;
  LazyMigration m(s);
  m.Run([&m] { m.FailStorage(); });
  ASSERT_FALSE(m.source_error) << What(m.source_error);
  ASSERT_FALSE(m.target_error) << What(m.target_error);
  const sim::TargetReport& t = m.result.target;
  EXPECT_EQ(m.result.differing_pages, 0u);
  EXPECT_EQ(t.lazy_stats.storage_failures, 1u);
  EXPECT_GT(t.lazy_stats.from_source, 0u);
  EXPECT_EQ(t.lazy_stats.fetched + t.lazy_stats.from_source, t.lazy_stats.missing_at_resume);
  EXPECT_GE(m.result.source.pages_served, t.lazy_stats.from_source);
}

TEST(LazyMigration, SourceLostWhilePagesAreMissingFailsTheTarget) {
  LazySetup s;
  LazyMigration m(s);
  m.Run([&m] {
    m.KillSource();
    m.FailStorage();
  });
  // Neither side reports a migrated guest.
  ASSERT_TRUE(m.target_error) << "the target completed without the pages it could not fetch";
  ASSERT_TRUE(m.source_error);
  try {
    std::rethrow_exception(m.target_error);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNetwork) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
}

TEST(LazyMigration, SourceLostWithStorageStillThereCompletes) {
  LazySetup s;
  LazyMigration m(s);
  m.Run([&m] { m.KillSource(); });
  // The target needs nothing from the source: it finishes from the storage.
  ASSERT_FALSE(m.target_error) << What(m.target_error);
  const LazyStats& l = m.result.target.lazy_stats;
  EXPECT_EQ(l.fetched + l.from_source, l.missing_at_resume);
  EXPECT_GT(l.fetched, 0u);
  EXPECT_TRUE(m.source_error);  // it never heard that every page was present
}

}  // namespace
}  // namespace p2bmig::test
