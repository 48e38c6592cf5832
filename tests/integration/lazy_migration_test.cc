// Lazy restore on the simulated host, in one process: the target resumes the
// guest as soon as the pages sent as data are in place, the guest runs
// (reads and read-modify-writes of its memory, faulting in missing pages
// through userfaultfd) while the rest is fetched, and the check is exact:
// every page equals the source's at its pause, except that pages the
// resumed guest wrote must hold the source's content with its logged writes
// replayed on top. Also: shared storage failing after the resume (pages come
// from the source instead), and the source dying in that window (the target
// must stop the guest and fail), and the switch-over's handshake.
//
// What the tests assert does not depend on timing: the storage is held (a
// gate) until the test's condition is met -- every mapped page is then
// still missing when the guest resumes, and, where a test needs it, the
// guest has waited for a page and got it from the source before the storage
// answers anything.

#include <atomic>
#include <cstdio>

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <p2bmig/block_store.h>
#include <p2bmig/records.h>
#include <p2bmig/transport.h>

#include "sim/content.h"
#include "sim/fetch_credits.h"
#include "sim/sim_host.h"
#include "test_util/sim_fixture.h"

namespace p2bmig::test {
namespace {

// Fault injection (a NAS that becomes unreachable at a chosen moment;
// nfs_migration_test.cc does it for real by stopping the server): once
// `failing` is set, every read issued fails.
class SwitchableFailingStore : public BlockStoreWrapper {
 public:
  SwitchableFailingStore(BlockStore* target, std::atomic<bool>* failing)
      : BlockStoreWrapper(target), failing_(failing) {}
  void ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf, ReadDone done) override {
    if (failing_->load()) {
      done(std::make_exception_ptr(Error(ErrorKind::kIo, "injected: storage unreachable")));
      return;
    }
    BlockStoreWrapper::ReadAsync(disk, offset, len, buf, std::move(done));
  }

 private:
  std::atomic<bool>* failing_;
};

// The target's storage in these tests: held (gate), then failing or not,
// then slow.
class TestStore : public BlockStoreWrapper {
 public:
  TestStore(BlockStore* target, std::atomic<bool>* failing, uint64_t seed, uint32_t delay_us)
      : BlockStoreWrapper(target),
        delayed_(target, seed, delay_us, delay_us / 2),
        failing_(&delayed_, failing),
        gate_(&failing_) {}
  void ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf, ReadDone done) override {
    gate_.ReadAsync(disk, offset, len, buf, std::move(done));
  }
  GatedStore& gate() { return gate_; }

 private:
  DelayedStore delayed_;
  SwitchableFailingStore failing_;
  GatedStore gate_;  // destroyed first: opens, then the others drain
};

struct LazySetup {
  uint64_t memory_pages = 8192;  // 32 MiB
  uint64_t disk_bytes = 64u << 20;
  std::string workload = "database";
  uint64_t seed = 1;
  // Slow storage (every read 50-100 ms): much is still missing at resume.
  uint32_t fetch_delay_us = 100'000;
  uint64_t rate_bps = 0;
  bool target_allows_lazy = true;
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
    to.allow_lazy = s.target_allows_lazy;
    to.lazy_required = s.target_allows_lazy;
    to.workload = s.workload;
    to.seed = s.seed;
    to.run_after_s = 0.1;
    to.wrap_store = [this](BlockStore* store) -> std::unique_ptr<BlockStore> {
      auto wrapped =
          std::make_unique<TestStore>(store, &storage_failing_, setup_.seed, setup_.fetch_delay_us);
      gate_ = &wrapped->gate();
      return wrapped;
    };
    to.on_resume = [this] {
      if (on_resume_) on_resume_();
    };
    to.resolver.on_lazy_progress = [this](const LazyStats& l) {
      if (open_when_ && open_when_(l)) OpenStorage();
    };
    to.on_record = [this](uint32_t type, bool before) {
      if (type == rec::kEnd && !before && fail_after_end_) {
        OpenStorage();  // the resolver waits for its reads when it goes
        throw Error(ErrorKind::kInternal, "injected: target fails after END");
      }
    };
    target_ = std::make_unique<sim::TargetHost>(to);
  }

  // Runs both ends over a socketpair; `on_resume` runs on the target right
  // after the guest resumed; the storage stays held until `open_when` says
  // so (or `on_resume` opens it). Errors are returned, not thrown.
  void Run(std::function<void()> on_resume = {},
           std::function<bool(const LazyStats&)> open_when = {}) {
    source_->WarmUp();
    on_resume_ = std::move(on_resume);
    open_when_ = std::move(open_when);
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
        // The memory is where it stays (p2bmig receive stores it first).
        if (!result.target.source_lost) sim::SendCommit(dst.get());
      } catch (...) {
        target_error = std::current_exception();
      }
      OpenStorage();  // a target that failed early
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
  void OpenStorage() {
    if (gate_) gate_->Open();
  }
  void FailTargetAfterEnd() { fail_after_end_ = true; }
  sim::SourceHost& source() { return *source_; }

  MigrationResult result;
  std::exception_ptr source_error, target_error;

 private:
  LazySetup setup_;
  TempDir dir_;
  std::string image_;
  std::atomic<bool> storage_failing_{false};
  std::function<void()> on_resume_;
  std::function<bool(const LazyStats&)> open_when_;
  GatedStore* gate_ = nullptr;
  bool fail_after_end_ = false;
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
  // The storage answers only once the guest has waited for a page and got
  // it from the source (after lazy_fault_source_after_s).
  m.Run({}, [](const LazyStats& l) { return l.faults > 0 && l.from_source > 0; });
  ASSERT_FALSE(m.source_error) << What(m.source_error);
  ASSERT_FALSE(m.target_error) << What(m.target_error);
  const sim::TargetReport& t = m.result.target;
  ASSERT_TRUE(t.lazy);
  ASSERT_TRUE(m.result.source.lazy);
  EXPECT_EQ(m.result.differing_pages, 0u);
  // Every mapped page was missing at the resume; the guest waited for some.
  EXPECT_GT(t.lazy_stats.missing_at_resume, 100u);
  EXPECT_GT(t.lazy_stats.faults, 0u);
  EXPECT_EQ(t.lazy_stats.fault_wait_s.size(), t.lazy_stats.faults);
  // From the storage, or (a fault that waited) from the source; only pages
  // the guest waited for are asked of the source while the storage works.
  EXPECT_GT(t.lazy_stats.from_source, 0u);
  EXPECT_LE(t.lazy_stats.from_source, t.lazy_stats.faults);
  EXPECT_EQ(t.lazy_stats.fetched + t.lazy_stats.from_source, t.lazy_stats.missing_at_resume);
  EXPECT_EQ(t.lazy_stats.already_present, 0u);
  EXPECT_GT(t.all_present_ns, t.resume_ns);
  EXPECT_FALSE(t.source_lost);
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
  m.Run([&m] {
    m.FailStorage();
    m.OpenStorage();  // every read fails from now on
  });
  ASSERT_FALSE(m.source_error) << What(m.source_error);
  ASSERT_FALSE(m.target_error) << What(m.target_error);
  const sim::TargetReport& t = m.result.target;
  EXPECT_EQ(m.result.differing_pages, 0u);
  EXPECT_EQ(t.lazy_stats.storage_failures, 1u);
  ASSERT_GT(t.lazy_stats.missing_at_resume, 0u);
  EXPECT_EQ(t.lazy_stats.fetched, 0u);
  EXPECT_EQ(t.lazy_stats.from_source, t.lazy_stats.missing_at_resume);
  EXPECT_GE(m.result.source.pages_served, t.lazy_stats.from_source);
}

TEST(LazyMigration, SourceLostWhilePagesAreMissingFailsTheTarget) {
  LazySetup s;
  LazyMigration m(s);
  m.Run([&m] {
    m.KillSource();
    m.FailStorage();
    m.OpenStorage();
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
  // The source had acknowledged lazy restore: it keeps its guest paused.
  EXPECT_TRUE(m.source().guest_kept_paused());
  EXPECT_NE(What(m.source_error).find("paused"), std::string::npos) << What(m.source_error);
}

TEST(LazyMigration, SourceLostWithStorageStillThereCompletes) {
  LazySetup s;
  LazyMigration m(s);
  m.Run([&m] {
    m.KillSource();
    m.OpenStorage();
  });
  // The target needs nothing from the source: it finishes from the storage.
  ASSERT_FALSE(m.target_error) << What(m.target_error);
  const LazyStats& l = m.result.target.lazy_stats;
  ASSERT_GT(l.missing_at_resume, 0u);
  EXPECT_EQ(l.fetched, l.missing_at_resume);
  EXPECT_EQ(l.from_source, 0u);
  EXPECT_TRUE(m.result.target.source_lost);
  // It never heard that every page was present, nor got a commit.
  EXPECT_TRUE(m.source_error);
  EXPECT_TRUE(m.source().guest_kept_paused());
}

// A target that does not take lazy restore up restores in paper mode and
// commits; the source accepts that as a complete migration.
TEST(LazyMigration, TargetWithoutLazyRestoreCommitsInPaperMode) {
  LazySetup s;
  s.target_allows_lazy = false;
  LazyMigration m(s);
  m.OpenStorage();  // paper mode waits for every fetch before END
  m.Run();
  ASSERT_FALSE(m.source_error) << What(m.source_error);
  ASSERT_FALSE(m.target_error) << What(m.target_error);
  EXPECT_FALSE(m.result.target.lazy);
  EXPECT_FALSE(m.result.source.lazy);
  EXPECT_EQ(m.result.source.pages_served, 0u);
  EXPECT_EQ(m.result.differing_pages, 0u);
}

// The target fails after END, before it has taken lazy restore up: it
// cannot have run the guest, so the source resumes its own (I6).
TEST(LazyMigration, TargetFailingBeforeTheHandshakeLeavesTheSourceGuestRunning) {
  LazySetup s;
  LazyMigration m(s);
  m.FailTargetAfterEnd();
  m.Run();
  ASSERT_TRUE(m.target_error);
  ASSERT_TRUE(m.source_error);
  EXPECT_FALSE(m.source().guest_kept_paused()) << What(m.source_error);
  EXPECT_GT(m.source().RunOn(0.2), 0u) << "the source's guest does not run";
}

}  // namespace
}  // namespace p2bmig::test
