// Tests of the libnfs BlockStore and of the fetch queue over it, against a
// real NFS server (nfs-ganesha on loopback, started by scripts/nfs-server.sh).
// Skipped only where ganesha is not installed.

#include "storage/nfs_block_store.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include <p2bmig/block_store.h>
#include <p2bmig/fetch_queue.h>
#include <p2bmig/types.h>

namespace p2bmig {
namespace {

namespace fs = std::filesystem;

const char* kServerScript = P2BMIG_SOURCE_DIR "/scripts/nfs-server.sh";
// Shared by every test process: the server has fixed ports, so all tests use
// one export and keep apart by file name.
const char* kExportDir = "/tmp/p2bmig-nfs-export";

constexpr size_t kSmallSize = 16u << 20;
constexpr size_t kBigSize = 256u << 20;

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t x = rng();
    std::memcpy(&v[i], &x, 8);
  }
  return v;
}

int Shell(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

class NfsBlockStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (Shell("command -v ganesha.nfsd") != 0) return;
    installed_ = true;
    fs::create_directories(kExportDir);
    was_running_ = Shell(std::string(kServerScript) + " status") == 0;
    ASSERT_EQ(Shell(std::string(kServerScript) + " start " + kExportDir), 0)
        << "cannot start the NFS server (" << kServerScript << ")";
    std::string tag = std::to_string(getpid());
    small_name_ = "small-" + tag + ".img";
    big_name_ = "big-" + tag + ".img";
    small_ = new std::vector<uint8_t>(RandomBytes(kSmallSize + 1234, 1));  // not block-aligned
    big_ = new std::vector<uint8_t>(RandomBytes(kBigSize, 2));
    Write(small_name_, *small_);
    Write(big_name_, *big_);
  }

  static void TearDownTestSuite() {
    if (!installed_) return;
    fs::remove(fs::path(kExportDir) / small_name_);
    fs::remove(fs::path(kExportDir) / big_name_);
    delete small_;
    delete big_;
    small_ = big_ = nullptr;
    if (!was_running_) Shell(std::string(kServerScript) + " stop");
  }

  void SetUp() override {
    if (!installed_) GTEST_SKIP() << "nfs-ganesha is not installed (scripts/setup.sh)";
  }

  static void Write(const std::string& name, const std::vector<uint8_t>& data) {
    std::ofstream f(fs::path(kExportDir) / name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(data.data()), data.size());
    ASSERT_TRUE(f.good());
  }

  static std::string Url(const std::string& name, int version) {
    std::string url = "nfs://127.0.0.1/export/" + name + "?version=" + std::to_string(version);
    if (version == 3) url += "&nfsport=2049&mountport=20048";
    return url;
  }

  // Reads synchronously; returns the error message or "" on success.
  static std::string Read(BlockStore* store, uint32_t disk, uint64_t offset, size_t len,
                          uint8_t* buf) {
    std::promise<std::exception_ptr> p;
    store->ReadAsync(disk, offset, len, buf,
                     [&p](std::exception_ptr e) { p.set_value(std::move(e)); });
    auto f = p.get_future();
    if (f.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
      ADD_FAILURE() << "read did not complete";
      std::abort();  // the callback would write to a dead promise
    }
    std::exception_ptr e = f.get();
    if (!e) return "";
    try {
      std::rethrow_exception(e);
    } catch (const Error& x) {
      EXPECT_EQ(x.kind(), ErrorKind::kIo);
      return x.what();
    }
  }

  void CheckReads(int version) {
    auto store = OpenNfsBlockStore({Url(small_name_, version)});
    ASSERT_EQ(store->nr_disks(), 1u);
    ASSERT_EQ(store->DiskSize(0), small_->size());
    EXPECT_NE(store->Describe().find(small_name_), std::string::npos);
    std::vector<uint8_t> buf(5u << 20);
    struct Case {
      uint64_t offset;
      size_t len;
    };
    std::vector<Case> cases = {{0, 4096},
                               {4096 * 7, 4096},
                               {12345, 999},
                               {0, 5u << 20},  // larger than the server's maximum read
                               {3u << 20, (1u << 20) + 1},
                               {small_->size() - 1234, 1234},  // up to the end
                               {small_->size() - 10000, 10000}};
    std::mt19937_64 rng(version);
    for (int i = 0; i < 50; i++) {
      size_t len = 1 + rng() % (256 << 10);
      cases.push_back({rng() % (small_->size() - len), len});
    }
    for (const Case& c : cases) {
      std::fill(buf.begin(), buf.end(), 0xEE);
      ASSERT_EQ(Read(store.get(), 0, c.offset, c.len, buf.data()), "") << c.offset;
      ASSERT_EQ(std::memcmp(buf.data(), small_->data() + c.offset, c.len), 0)
          << "offset " << c.offset << " len " << c.len;
    }
    // Past the end, and a disk that does not exist: errors, not crashes.
    std::string e = Read(store.get(), 0, small_->size() - 100, 4096, buf.data());
    EXPECT_NE(e.find(small_name_), std::string::npos) << e;
    EXPECT_NE(e.find("offset"), std::string::npos) << e;
    EXPECT_NE(Read(store.get(), 1, 0, 4096, buf.data()), "");
    EXPECT_NE(Read(store.get(), 0, ~uint64_t{0} - 5, 4096, buf.data()), "");
  }

  static bool installed_;
  static bool was_running_;
  static std::string small_name_, big_name_;
  static std::vector<uint8_t>* small_;
  static std::vector<uint8_t>* big_;
};

bool NfsBlockStoreTest::installed_ = false;
bool NfsBlockStoreTest::was_running_ = false;
std::string NfsBlockStoreTest::small_name_;
std::string NfsBlockStoreTest::big_name_;
std::vector<uint8_t>* NfsBlockStoreTest::small_ = nullptr;
std::vector<uint8_t>* NfsBlockStoreTest::big_ = nullptr;

TEST_F(NfsBlockStoreTest, ReadsMatchFileV3) { CheckReads(3); }

TEST_F(NfsBlockStoreTest, ReadsMatchFileV4) { CheckReads(4); }

TEST_F(NfsBlockStoreTest, OpenBlockStoreDispatchesNfs) {
  auto store = OpenBlockStore({Url(small_name_, 3), Url(big_name_, 4)});
  ASSERT_EQ(store->nr_disks(), 2u);
  EXPECT_EQ(store->DiskSize(1), kBigSize);
  std::vector<uint8_t> buf(4096);
  ASSERT_EQ(Read(store.get(), 1, kBigSize - 4096, 4096, buf.data()), "");
  EXPECT_EQ(std::memcmp(buf.data(), big_->data() + kBigSize - 4096, 4096), 0);
}

TEST_F(NfsBlockStoreTest, MissingImageThrows) {
  try {
    OpenNfsBlockStore({Url("no-such-image.img", 3)});
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("no-such-image.img"), std::string::npos) << e.what();
  }
}

TEST_F(NfsBlockStoreTest, ManyReadsInFlight) {
  auto store = OpenNfsBlockStore({Url(big_name_, 3)}, {.connections = 2});
  constexpr int kReads = 2000;
  std::vector<uint8_t> bufs(size_t{kReads} * 4096);
  std::vector<uint64_t> offsets(kReads);
  std::mt19937_64 rng(9);
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, failed = 0;
  for (int i = 0; i < kReads; i++) {
    offsets[i] = (rng() % (kBigSize / 4096)) * 4096;
    store->ReadAsync(0, offsets[i], 4096, &bufs[size_t{4096} * i], [&](std::exception_ptr e) {
      std::lock_guard<std::mutex> l(mu);
      done++;
      if (e) failed++;
      cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(60), [&] { return done == kReads; }));
  }
  EXPECT_EQ(failed, 0);
  for (int i = 0; i < kReads; i++) {
    ASSERT_EQ(std::memcmp(&bufs[size_t{4096} * i], big_->data() + offsets[i], 4096), 0) << i;
  }
}

TEST_F(NfsBlockStoreTest, FetchQueueRunsAndRandomBlocks) {
  for (int version : {3, 4}) {
    SCOPED_TRACE("version " + std::to_string(version));
    auto store = OpenNfsBlockStore({Url(big_name_, version)});
    FetchQueue q(store.get());
    const uint64_t nblocks = kBigSize / kPageSize;
    std::mt19937_64 rng(version);
    std::map<uint64_t, uint64_t> tags;
    uint64_t tag = 0;
    // Page-cache-like runs of 8-256 blocks in random places, with random
    // single blocks between them; some blocks requested twice.
    for (int i = 0; i < 300; i++) {
      uint64_t len = 8 + rng() % 249;
      uint64_t start = rng() % (nblocks - len);
      for (uint64_t b = start; b < start + len; b++) {
        tags[tag] = b;
        q.Submit(tag++, BlockAddr{0, b});
      }
      for (int j = 0; j < 20; j++) {
        uint64_t b = rng() % nblocks;
        tags[tag] = b;
        q.Submit(tag++, BlockAddr{0, b});
      }
    }
    std::vector<int> seen(tag, 0);
    q.Drain([&](uint64_t t, const uint8_t* data) {
      ASSERT_LT(t, tag);
      seen[t]++;
      ASSERT_EQ(std::memcmp(data, big_->data() + tags[t] * kPageSize, kPageSize), 0)
          << "tag " << t << " block " << tags[t];
    });
    for (uint64_t t = 0; t < tag; t++) ASSERT_EQ(seen[t], 1) << "tag " << t;
    FetchStats s = q.stats();
    EXPECT_EQ(s.requests, tag);
    EXPECT_LT(s.reads, s.unique_blocks / 4);  // the runs were coalesced
  }
}

// The server goes away and comes back while reads stream: every read either
// returns the right bytes or fails with kIo, none hangs, and reads succeed
// again once the server is back.
TEST_F(NfsBlockStoreTest, ServerRestartDuringReads) {
  for (int version : {3, 4}) {
    SCOPED_TRACE("version " + std::to_string(version));
    auto store = OpenNfsBlockStore({Url(big_name_, version)});
    constexpr int kSlots = 32;
    constexpr size_t kLen = 64 << 10;
    std::vector<std::vector<uint8_t>> bufs(kSlots, std::vector<uint8_t>(kLen));
    std::vector<uint64_t> offsets(kSlots);
    std::mutex mu;
    std::condition_variable cv;
    std::vector<int> free_slots;
    std::atomic<int> ok{0}, failed{0}, wrong{0}, ok_after_restart{0};
    std::atomic<bool> restarted{false};
    for (int i = 0; i < kSlots; i++) free_slots.push_back(i);
    std::mt19937_64 rng(version);
    auto issue = [&](int slot) {
      offsets[slot] = rng() % (kBigSize - kLen);
      store->ReadAsync(0, offsets[slot], kLen, bufs[slot].data(), [&, slot](std::exception_ptr e) {
        if (e) {
          failed++;
          try {
            std::rethrow_exception(e);
          } catch (const Error& x) {
            EXPECT_EQ(x.kind(), ErrorKind::kIo);
          }
        } else if (std::memcmp(bufs[slot].data(), big_->data() + offsets[slot], kLen) != 0) {
          wrong++;
        } else {
          ok++;
          if (restarted) ok_after_restart++;
        }
        std::lock_guard<std::mutex> l(mu);
        free_slots.push_back(slot);
        cv.notify_all();
      });
    };

    std::atomic<bool> stop{false};
    std::thread reader([&] {
      for (;;) {
        std::vector<int> slots;
        {
          std::unique_lock<std::mutex> l(mu);
          // A read that takes longer than this has hung.
          bool progress = cv.wait_for(l, std::chrono::seconds(40), [&] {
            return stop ? free_slots.size() == kSlots : !free_slots.empty();
          });
          EXPECT_TRUE(progress) << "reads hang";
          if (!progress) std::abort();
          if (stop) return;
          slots.swap(free_slots);
        }
        for (int s : slots) issue(s);
      }
    });

    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    int before = ok;
    EXPECT_GT(before, 0);
    ASSERT_EQ(Shell(std::string(kServerScript) + " stop"), 0);
    ASSERT_EQ(Shell(std::string(kServerScript) + " start " + kExportDir), 0);
    restarted = true;
    std::this_thread::sleep_for(std::chrono::seconds(2));
    {
      std::lock_guard<std::mutex> l(mu);
      stop = true;
    }
    cv.notify_all();
    reader.join();
    EXPECT_EQ(wrong, 0);
    EXPECT_GT(ok_after_restart, 0) << "no read succeeded after the server came back";
    std::cerr << "[          ] v" << version << ": " << ok << " reads ok (" << ok_after_restart
              << " after the restart), " << failed << " failed\n";
  }
}

// A server that stays away: reads fail with kIo once the reconnect budget is
// spent, in bounded time, and the store recovers when the server is back.
TEST_F(NfsBlockStoreTest, ServerGoneFailsReadsThenRecovers) {
  auto store = OpenNfsBlockStore({Url(small_name_, 3)}, {.reconnect_attempts = 3});
  std::vector<uint8_t> buf(8192);
  ASSERT_EQ(Read(store.get(), 0, 0, 8192, buf.data()), "");
  ASSERT_EQ(Shell(std::string(kServerScript) + " stop"), 0);
  auto t0 = std::chrono::steady_clock::now();
  std::string e = Read(store.get(), 0, 4096, 8192, buf.data());
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_NE(e, "");
  EXPECT_NE(e.find(small_name_), std::string::npos) << e;
  EXPECT_LT(waited, std::chrono::seconds(20));
  ASSERT_EQ(Shell(std::string(kServerScript) + " start " + kExportDir), 0);
  ASSERT_EQ(Read(store.get(), 0, 4096, 8192, buf.data()), "");
  EXPECT_EQ(std::memcmp(buf.data(), small_->data() + 4096, 8192), 0);
}

}  // namespace
}  // namespace p2bmig
