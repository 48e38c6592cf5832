// Tests of the POSIX BlockStore and of OpenBlockStore's dispatch.

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include <p2bmig/block_store.h>
#include <p2bmig/types.h>

namespace p2bmig {
namespace {

namespace fs = std::filesystem;

class PosixBlockStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("p2bmig-posix-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string MakeImage(const std::string& name, size_t size, uint32_t seed) {
    std::vector<uint8_t> data(size);
    std::mt19937 rng(seed);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), size);
    images_[path] = std::move(data);
    return path;
  }

  // Reads synchronously; returns the error message or "" on success.
  static std::string Read(BlockStore* store, uint32_t disk, uint64_t offset, size_t len,
                          uint8_t* buf) {
    std::promise<std::exception_ptr> p;
    store->ReadAsync(disk, offset, len, buf, [&p](std::exception_ptr e) { p.set_value(e); });
    std::exception_ptr e = p.get_future().get();
    if (!e) return "";
    try {
      std::rethrow_exception(e);
    } catch (const Error& x) {
      EXPECT_EQ(x.kind(), ErrorKind::kIo);
      return x.what();
    }
  }

  fs::path dir_;
  std::map<std::string, std::vector<uint8_t>> images_;
};

TEST_F(PosixBlockStoreTest, ReadsMatchFiles) {
  std::string a = MakeImage("a.img", 1 << 20, 1);
  std::string b = MakeImage("b.img", 3 * 4096 + 100, 2);
  auto store = OpenPosixBlockStore({a, b});
  ASSERT_EQ(store->nr_disks(), 2u);
  EXPECT_EQ(store->DiskSize(0), 1u << 20);
  EXPECT_EQ(store->DiskSize(1), 3u * 4096 + 100);
  EXPECT_NE(store->Describe().find("a.img"), std::string::npos);
  EXPECT_NE(store->Describe().find("b.img"), std::string::npos);

  std::vector<uint8_t> buf(65536);
  EXPECT_EQ(Read(store.get(), 0, 12345, 65536, buf.data()), "");
  EXPECT_EQ(std::memcmp(buf.data(), images_[a].data() + 12345, 65536), 0);
  // The last, partial block of an image can be read exactly to its end.
  EXPECT_EQ(Read(store.get(), 1, 3 * 4096, 100, buf.data()), "");
  EXPECT_EQ(std::memcmp(buf.data(), images_[b].data() + 3 * 4096, 100), 0);
}

TEST_F(PosixBlockStoreTest, ManyConcurrentReads) {
  std::string a = MakeImage("a.img", 4 << 20, 3);
  auto store = OpenPosixBlockStore({a}, {.threads = 3});
  constexpr int kReads = 500;
  std::vector<std::vector<uint8_t>> bufs(kReads, std::vector<uint8_t>(4096));
  std::vector<uint64_t> offsets(kReads);
  std::mt19937_64 rng(7);
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, failed = 0;
  for (int i = 0; i < kReads; i++) {
    offsets[i] = (rng() % 1024) * 4096;
    store->ReadAsync(0, offsets[i], 4096, bufs[i].data(), [&](std::exception_ptr e) {
      std::lock_guard<std::mutex> l(mu);
      done++;
      if (e) failed++;
      cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> l(mu);
  cv.wait(l, [&] { return done == kReads; });
  EXPECT_EQ(failed, 0);
  for (int i = 0; i < kReads; i++) {
    ASSERT_EQ(std::memcmp(bufs[i].data(), images_[a].data() + offsets[i], 4096), 0) << i;
  }
}

TEST_F(PosixBlockStoreTest, OutOfBoundsIsIoError) {
  std::string a = MakeImage("a.img", 8192, 4);
  auto store = OpenPosixBlockStore({a});
  std::vector<uint8_t> buf(8192);
  std::string e = Read(store.get(), 0, 4096, 8192, buf.data());
  EXPECT_NE(e.find("a.img"), std::string::npos) << e;
  EXPECT_NE(e.find("offset 4096"), std::string::npos) << e;
  EXPECT_NE(Read(store.get(), 0, ~uint64_t{0} - 10, 4096, buf.data()), "");
  EXPECT_NE(Read(store.get(), 1, 0, 4096, buf.data()), "");
}

TEST_F(PosixBlockStoreTest, MissingFileThrows) {
  try {
    OpenPosixBlockStore({(dir_ / "missing.img").string()});
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("missing.img"), std::string::npos);
  }
}

TEST_F(PosixBlockStoreTest, DestructorWaitsForQueuedReads) {
  std::string a = MakeImage("a.img", 1 << 20, 5);
  std::atomic<int> done{0};
  std::vector<uint8_t> buf(200 * 4096);
  {
    auto store = OpenPosixBlockStore({a}, {.threads = 1});
    for (int i = 0; i < 200; i++) {
      store->ReadAsync(0, i * 4096, 4096, buf.data() + i * 4096,
                       [&done](std::exception_ptr e) { done++; });
    }
  }
  EXPECT_EQ(done.load(), 200);
  EXPECT_EQ(std::memcmp(buf.data(), images_[a].data(), buf.size()), 0);
}

TEST_F(PosixBlockStoreTest, OpenBlockStoreDispatch) {
  std::string a = MakeImage("a.img", 8192, 6);
  auto store = OpenBlockStore({a});
  EXPECT_EQ(store->nr_disks(), 1u);
  EXPECT_EQ(store->DiskSize(0), 8192u);
  try {
    OpenBlockStore({a, "nfs://127.0.0.1/export/disk.img"});
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
  }
}

}  // namespace
}  // namespace p2bmig
