// Whole migrations whose target reads the guest's disk through a real NFS
// server (nfs-ganesha on loopback, through libnfs), NFSv3 and NFSv4, with
// target memory compared byte for byte with the source's at pause time (I1).
// The source writes the image in the exported directory, as a Dom0 whose
// disk sits on the NAS would.

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <unistd.h>

#include "sim/content.h"
#include "sim/sim_host.h"
#include "test_util/sim_fixture.h"

namespace p2bmig::test {
namespace {

const char* kServerScript = P2BMIG_SOURCE_DIR "/scripts/nfs-server.sh";
const char* kExportDir = "/tmp/p2bmig-nfs-export";  // shared with the other NFS tests

int Shell(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

// Writes fresh content over cached blocks and writes them back, right before
// the guest is paused: the blocks that pages were sent as mappings to change
// under the target's feet (I3, I4).
class OverwriteBeforePause : public DomainWrapper {
 public:
  OverwriteBeforePause(sim::SimGuest* guest) : DomainWrapper(guest), guest_(guest) {}
  void Pause() override {
    sim::Rng rng(99);
    guest_->WriteFile(0, 0, 512, rng);
    guest_->Writeback(1024);
    DomainWrapper::Pause();
  }

 private:
  sim::SimGuest* guest_;
};

class NfsMigration : public ::testing::TestWithParam<int> {
 protected:
  static void SetUpTestSuite() {
    if (Shell("command -v ganesha.nfsd") != 0) return;
    std::filesystem::create_directories(kExportDir);
    was_running_ = Shell(std::string(kServerScript) + " status") == 0;
    ASSERT_EQ(Shell(std::string(kServerScript) + " start " + kExportDir), 0);
    started_ = true;
  }
  static void TearDownTestSuite() {
    if (started_ && !was_running_) Shell(std::string(kServerScript) + " stop");
  }

  void SetUp() override {
    if (!started_) GTEST_SKIP() << "nfs-ganesha is not installed";
    // A name never used before: the server caches directory entries, and a
    // file replaced behind its back (not through NFS) could still be served
    // under the old name.
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    name_ = "migration-" + std::to_string(getpid()) + "-" + info->name() + ".img";
    for (char& c : name_) c = c == '/' ? '-' : c;
    path_ = std::string(kExportDir) + "/" + name_;
    sim::CreateDiskImage(path_, 64u << 20, 21);
  }
  void TearDown() override { std::filesystem::remove(path_); }

  // A 32 MiB guest running the database workload on the exported image.
  sim::SourceOptions DatabaseGuest(uint64_t seed) const {
    sim::SourceOptions so;
    so.guest.memory_pages = 8192;
    so.guest.kernel_pages = 256;
    so.guest.buffer_pages = 64;
    so.guest.disk_paths = {path_};
    so.workload = "database";
    so.seed = seed;
    return so;
  }

  std::string Url() const {
    return "nfs://127.0.0.1/export/" + name_ + "?version=" + std::to_string(GetParam()) +
           (GetParam() == 3 ? "&nfsport=2049&mountport=20048" : "");
  }

  MigrationResult Migrate(bool overwrite_before_pause, uint64_t rate_bps = 200'000'000,
                          sim::SourceHost** source_out = nullptr) {
    sim::SourceOptions so = DatabaseGuest(5);
    // Mappings wait for a full window instead of turning into data: how many
    // blocks go through NFS must not depend on how fast the server answers.
    so.filter.data_when_window_full = false;
    if (overwrite_before_pause) {
      so.wrap_domain = [](Domain* d) -> std::unique_ptr<Domain> {
        return std::make_unique<OverwriteBeforePause>(static_cast<sim::SimGuest*>(d));
      };
    }
    sim::SourceHost source(so);
    sim::TargetOptions to;
    to.memory_pages = so.guest.memory_pages;
    to.disks = {Url()};
    sim::TargetHost target(to);
    source.WarmUp();
    if (source_out != nullptr) *source_out = &source;
    return RunMigration(&source, &target, rate_bps);
  }

  static inline bool started_ = false;
  static inline bool was_running_ = false;
  std::string name_, path_;
};

TEST_P(NfsMigration, MemoryIsExactWithBlocksReadThroughNfs) {
  MigrationResult r = Migrate(false);
  EXPECT_EQ(r.differing_pages, 0u);
  EXPECT_NE(r.target.store.find("nfs://"), std::string::npos) << r.target.store;
  EXPECT_GT(r.target.resolver.fetches_applied, 8192u / 2);
  EXPECT_GT(r.target.resolver.nas_bytes, 16u << 20);
}

TEST_P(NfsMigration, OverwriteRightBeforeThePauseIsResent) {
  MigrationResult r = Migrate(true);
  EXPECT_EQ(r.differing_pages, 0u);
  // The overwritten blocks' pages went out as mappings and had to go again.
  EXPECT_GT(r.source.filter.pages_resent + r.source.filter.mappings_invalidated, 0u);
}

// The NFS server restarts in the middle of a migration (a clean stop takes
// ganesha about 4 s). The target's store reconnects and its reads resume;
// the migration must either complete with exact memory or fail cleanly.
TEST_P(NfsMigration, ServerRestartDuringMigration) {
  std::thread restart([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    Shell(std::string(kServerScript) + " stop");
    Shell(std::string(kServerScript) + " start " + kExportDir);
  });
  bool completed = false;
  auto t0 = std::chrono::steady_clock::now();
  try {
    MigrationResult r = Migrate(false, 20'000'000);
    EXPECT_EQ(r.differing_pages, 0u);
    // Fetches cannot finish while the server is down: the migration waited.
    EXPECT_GT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0)
        << "the restart did not overlap the migration";
    completed = true;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo) << e.what();
  }
  restart.join();
  EXPECT_TRUE(completed) << "the store did not ride out a restart of a few seconds";
}

// Lazy restore, and the NFS server goes away right after the guest resumed
// on the target with pages still missing: the pages it waits for, then all
// the others, come from the source's paused copy, and memory is exact.
TEST_P(NfsMigration, LazyRestoreRecoversFromTheSourceWhenTheServerStops) {
  if (GetParam() != 3) GTEST_SKIP() << "one NFS version is enough for this one";
  sim::SourceOptions so = DatabaseGuest(6);
  so.mode = sim::Mode::kLazy;
  so.flow_control = false;  // leave as much as possible for after the resume
  sim::SourceHost source(so);
  sim::TargetOptions to;
  to.memory_pages = so.guest.memory_pages;
  to.disks = {Url()};
  to.allow_lazy = to.lazy_required = true;
  to.workload = so.workload;
  to.seed = so.seed;
  to.run_after_s = 0.1;
  to.resolver.lazy_storage_stall_s = 2;
  // No read reaches the server before the resume, so every mapped page is
  // missing then, and every read goes to the stopped server.
  GatedStore* gate = nullptr;
  to.wrap_store = [&gate](BlockStore* store) -> std::unique_ptr<BlockStore> {
    auto gated = std::make_unique<GatedStore>(store);
    gate = gated.get();
    return gated;
  };
  to.on_resume = [&gate] {
    Shell(std::string(kServerScript) + " stop");
    gate->Open();
  };
  sim::TargetHost target(to);
  source.WarmUp();
  MigrationResult r;
  try {
    r = RunMigration(&source, &target, 0);
  } catch (...) {
    Shell(std::string(kServerScript) + " start " + kExportDir);
    throw;
  }
  Shell(std::string(kServerScript) + " start " + kExportDir);
  const LazyStats& l = r.target.lazy_stats;
  ASSERT_TRUE(r.target.lazy);
  EXPECT_EQ(r.differing_pages, 0u);
  ASSERT_GT(l.missing_at_resume, 0u) << "everything was fetched before the resume";
  EXPECT_EQ(l.from_source, l.missing_at_resume);
  EXPECT_EQ(l.fetched, 0u);
  EXPECT_EQ(l.storage_failures, 1u);
  EXPECT_GE(r.source.pages_served, l.from_source);
}

INSTANTIATE_TEST_SUITE_P(Versions, NfsMigration, ::testing::Values(3, 4),
                         [](const auto& info) { return "v" + std::to_string(info.param); });

}  // namespace
}  // namespace p2bmig::test
