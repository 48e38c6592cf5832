// Tests of the NAS fetch queue over a real image file (POSIX store), with
// wrappers that record, slow down or fail reads.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include <p2bmig/block_store.h>
#include <p2bmig/fetch_queue.h>
#include <p2bmig/types.h>

namespace p2bmig {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kImageBlocks = 4096;  // 16 MiB

// Records every read and how many run at once; can slow reads down, or hold
// their completions back until the test releases them (the queue starts
// reads from completions, so holding them is what makes the order of reads
// deterministic).
class RecordingStore : public BlockStoreWrapper {
 public:
  using BlockStoreWrapper::BlockStoreWrapper;

  void ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf, ReadDone done) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      reads_.push_back({offset / kPageSize, len / kPageSize});
      cur_reads_++;
      cur_bytes_ += len;
      max_reads_ = std::max(max_reads_, cur_reads_);
      max_bytes_ = std::max(max_bytes_, cur_bytes_);
    }
    BlockStoreWrapper::ReadAsync(disk, offset, len, buf,
                                 [this, len, done = std::move(done)](std::exception_ptr e) {
                                   if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
                                   {
                                     std::lock_guard<std::mutex> l(mu_);
                                     if (hold_) {
                                       held_.push_back({len, std::move(done), e});
                                       cv_.notify_all();
                                       return;
                                     }
                                   }
                                   Finish(len, done, e);
                                 });
  }

  // From now on, completions wait for Release().
  void Hold() {
    std::lock_guard<std::mutex> l(mu_);
    hold_ = true;
  }
  // Waits until `n` completions are held (a read of the POSIX store takes
  // microseconds; the deadline only stops a broken queue from hanging).
  bool WaitHeld(size_t n) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, std::chrono::seconds(60), [&] { return held_.size() >= n; });
  }
  // Runs the completions held so far on this thread; with `keep_holding`
  // later ones are held again, otherwise they run as they come.
  void Release(bool keep_holding) {
    std::vector<Held> held;
    {
      std::lock_guard<std::mutex> l(mu_);
      held.swap(held_);
      hold_ = keep_holding;
    }
    for (auto& h : held) Finish(h.len, h.done, h.error);
  }

  // (first block, number of blocks) of each read, in issue order.
  std::vector<std::pair<uint64_t, uint64_t>> reads() {
    std::lock_guard<std::mutex> l(mu_);
    return reads_;
  }
  size_t max_reads() {
    std::lock_guard<std::mutex> l(mu_);
    return max_reads_;
  }
  size_t max_bytes() {
    std::lock_guard<std::mutex> l(mu_);
    return max_bytes_;
  }
  size_t cur_reads() {
    std::lock_guard<std::mutex> l(mu_);
    return cur_reads_;
  }
  void set_delay(std::chrono::microseconds d) { delay_ = d; }

 private:
  struct Held {
    size_t len;
    ReadDone done;
    std::exception_ptr error;
  };

  void Finish(size_t len, const ReadDone& done, std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> l(mu_);
      cur_reads_--;
      cur_bytes_ -= len;
    }
    done(e);
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<uint64_t, uint64_t>> reads_;
  size_t cur_reads_ = 0, cur_bytes_ = 0, max_reads_ = 0, max_bytes_ = 0;
  bool hold_ = false;
  std::vector<Held> held_;
  std::chrono::microseconds delay_{0};
};

// Fails reads that cover `bad_block` (the first `failures` of them, or all
// when negative): immediately on the caller's thread, or with
// `on_store_thread` from the completion of the real read, on the store's
// thread (where the queue then retries them).
class FailingStore : public BlockStoreWrapper {
 public:
  FailingStore(BlockStore* target, uint64_t bad_block, int failures, bool on_store_thread = false)
      : BlockStoreWrapper(target),
        bad_block_(bad_block),
        failures_(failures),
        on_store_thread_(on_store_thread) {}

  void ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf, ReadDone done) override {
    uint64_t first = offset / kPageSize, last = (offset + len) / kPageSize - 1;
    if (bad_block_ >= first && bad_block_ <= last && failures_ != 0) {
      if (failures_ > 0) failures_--;
      failed_++;
      if (on_store_thread_) {
        BlockStoreWrapper::ReadAsync(
            disk, offset, len, buf, [done = std::move(done)](std::exception_ptr) {
              done(std::make_exception_ptr(Error(ErrorKind::kIo, "injected failure")));
            });
        return;
      }
      done(std::make_exception_ptr(Error(ErrorKind::kIo, "injected failure")));
      return;
    }
    BlockStoreWrapper::ReadAsync(disk, offset, len, buf, std::move(done));
  }
  int failed() const { return failed_; }

 private:
  uint64_t bad_block_;
  std::atomic<int> failures_;
  const bool on_store_thread_;
  std::atomic<int> failed_{0};
};

class FetchQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (fs::temp_directory_path() / ("p2bmig-fq-" + std::to_string(getpid()) + ".img"));
    image_.resize(kImageBlocks * kPageSize);
    std::mt19937_64 rng(42);
    for (size_t i = 0; i < image_.size(); i += 8) {
      uint64_t v = rng();
      std::memcpy(&image_[i], &v, 8);
    }
    std::ofstream(path_, std::ios::binary)
        .write(reinterpret_cast<const char*>(image_.data()), image_.size());
    store_ = OpenPosixBlockStore({path_.string()}, {.threads = 4});
  }
  void TearDown() override {
    store_.reset();
    fs::remove(path_);
  }

  const uint8_t* Block(uint64_t b) const { return image_.data() + b * kPageSize; }

  // Drains `q`, checking that each tag arrives once with its block's bytes.
  void DrainAndCheck(FetchQueue& q, const std::map<uint64_t, uint64_t>& tag_to_block) {
    std::map<uint64_t, int> seen;
    q.Drain([&](uint64_t tag, const uint8_t* data) {
      auto it = tag_to_block.find(tag);
      ASSERT_NE(it, tag_to_block.end()) << "unknown tag " << tag;
      seen[tag]++;
      ASSERT_EQ(std::memcmp(data, Block(it->second), kPageSize), 0)
          << "tag " << tag << " block " << it->second;
    });
    EXPECT_EQ(seen.size(), tag_to_block.size());
    for (auto& [tag, n] : seen) EXPECT_EQ(n, 1) << "tag " << tag;
    EXPECT_EQ(q.pending(), 0u);
  }

  fs::path path_;
  std::vector<uint8_t> image_;
  std::unique_ptr<BlockStore> store_;
};

TEST_F(FetchQueueTest, DeliversFileContent) {
  FetchQueue q(store_.get());
  std::map<uint64_t, uint64_t> tags;
  std::mt19937_64 rng(1);
  uint64_t tag = 0;
  // Random blocks, runs, and repeats, mixed.
  for (int i = 0; i < 2000; i++) {
    uint64_t b = rng() % kImageBlocks;
    int run = (i % 5 == 0) ? static_cast<int>(rng() % 64) + 1 : 1;
    for (int j = 0; j < run && b + j < kImageBlocks; j++) {
      tags[tag] = b + j;
      q.Submit(tag++, BlockAddr{0, b + j});
    }
  }
  EXPECT_EQ(q.pending(), tags.size());
  DrainAndCheck(q, tags);
  FetchStats s = q.stats();
  EXPECT_EQ(s.requests, tags.size());
  std::set<uint64_t> distinct;
  for (auto& [t, b] : tags) distinct.insert(b);
  EXPECT_GE(s.unique_blocks,
            distinct.size());  // a block requested again after delivery is read again
  EXPECT_GE(s.bytes_read, s.unique_blocks * kPageSize);
  EXPECT_EQ(s.retries, 0u);
}

TEST_F(FetchQueueTest, ManyTagsOnOneBlockReadOnce) {
  FetchQueue q(store_.get());
  std::map<uint64_t, uint64_t> tags;
  for (uint64_t t = 0; t < 100; t++) {
    tags[t] = 77;
    q.Submit(t, BlockAddr{0, 77});
  }
  DrainAndCheck(q, tags);
  EXPECT_EQ(q.stats().reads, 1u);
  EXPECT_EQ(q.stats().unique_blocks, 1u);
  EXPECT_EQ(q.stats().bytes_read, kPageSize);
}

TEST_F(FetchQueueTest, TagJoinsReadInFlight) {
  RecordingStore rec(store_.get());
  rec.Hold();
  FetchQueue q(&rec);
  q.Submit(1, BlockAddr{0, 9});  // issued at once
  q.Submit(2, BlockAddr{0, 9});  // joins it
  rec.Release(false);
  DrainAndCheck(q, {{1, 9}, {2, 9}});
  EXPECT_EQ(rec.reads().size(), 1u);
}

TEST_F(FetchQueueTest, CoalescesAdjacentBlocks) {
  RecordingStore rec(store_.get());
  FetchOptions o;
  o.max_inflight_reads = 1;
  FetchQueue q(&rec, o);
  std::map<uint64_t, uint64_t> tags;
  rec.Hold();                          // until everything is submitted
  q.Submit(9999, BlockAddr{0, 4000});  // occupies the only read slot
  tags[9999] = 4000;
  // 1024 adjacent blocks, submitted in a shuffled order.
  std::vector<uint64_t> blocks(1024);
  for (uint64_t i = 0; i < 1024; i++) blocks[i] = 1000 + i;
  std::shuffle(blocks.begin(), blocks.end(), std::mt19937(3));
  for (uint64_t i = 0; i < blocks.size(); i++) {
    tags[i] = blocks[i];
    q.Submit(i, BlockAddr{0, blocks[i]});
  }
  rec.Release(false);
  DrainAndCheck(q, tags);
  // The blocker, then 1024 blocks in reads of 1 MiB.
  auto reads = rec.reads();
  EXPECT_EQ(reads.size(), 5u);
  for (size_t i = 1; i < reads.size(); i++) EXPECT_EQ(reads[i].second, 256u);
  EXPECT_EQ(q.stats().reads, 5u);
  EXPECT_EQ(q.stats().bytes_read, 1025 * kPageSize);
}

TEST_F(FetchQueueTest, GapBoundRespected) {
  RecordingStore rec(store_.get());
  FetchOptions o;
  o.max_inflight_reads = 1;
  o.max_gap_blocks = 8;
  FetchQueue q(&rec, o);
  std::map<uint64_t, uint64_t> tags = {{0, 4000}, {1, 100}, {2, 105}, {3, 114}, {4, 124}};
  rec.Hold();
  for (auto& [t, b] : tags) q.Submit(t, BlockAddr{0, b});
  rec.Release(false);
  DrainAndCheck(q, tags);
  // 105 -> 114 is a gap of 8 blocks (coalesced), 114 -> 124 one of 9 (not).
  std::vector<std::pair<uint64_t, uint64_t>> want = {{4000, 1}, {100, 15}, {124, 1}};
  EXPECT_EQ(rec.reads(), want);
  EXPECT_EQ(q.stats().bytes_read, 17 * kPageSize);
  EXPECT_EQ(q.stats().unique_blocks, 5u);
}

TEST_F(FetchQueueTest, ReadSizeBounded) {
  RecordingStore rec(store_.get());
  FetchOptions o;
  o.max_read_bytes = 64 << 10;
  FetchQueue q(&rec, o);
  std::map<uint64_t, uint64_t> tags;
  for (uint64_t b = 0; b < 1000; b++) {
    tags[b] = b;
    q.Submit(b, BlockAddr{0, b});
  }
  DrainAndCheck(q, tags);
  for (auto& [first, n] : rec.reads()) EXPECT_LE(n, 16u);
}

TEST_F(FetchQueueTest, InflightLimitsRespected) {
  RecordingStore rec(store_.get());
  rec.set_delay(std::chrono::milliseconds(2));
  FetchOptions o;
  o.max_inflight_reads = 3;
  o.max_gap_blocks = 0;
  FetchQueue q(&rec, o);
  std::map<uint64_t, uint64_t> tags;
  for (uint64_t i = 0; i < 200; i++) {
    tags[i] = i * 20;  // never adjacent
    q.Submit(i, BlockAddr{0, i * 20});
  }
  DrainAndCheck(q, tags);
  EXPECT_LE(rec.max_reads(), 3u);
  EXPECT_GE(rec.max_reads(), 2u);  // the store does see concurrency
  EXPECT_EQ(rec.reads().size(), 200u);
}

TEST_F(FetchQueueTest, InflightBytesRespected) {
  RecordingStore rec(store_.get());
  rec.set_delay(std::chrono::milliseconds(2));
  FetchOptions o;
  o.max_read_bytes = 64 << 10;
  o.max_inflight_bytes = 128 << 10;
  o.max_inflight_reads = 16;
  FetchQueue q(&rec, o);
  std::map<uint64_t, uint64_t> tags;
  uint64_t tag = 0;
  for (uint64_t run = 0; run < 40; run++) {
    for (uint64_t b = 0; b < 32; b++) {
      tags[tag] = run * 100 + b;
      q.Submit(tag++, BlockAddr{0, run * 100 + b});
    }
  }
  DrainAndCheck(q, tags);
  EXPECT_LE(rec.max_bytes(), size_t{128} << 10);
}

TEST_F(FetchQueueTest, OldestFirst) {
  RecordingStore rec(store_.get());
  FetchOptions o;
  o.max_inflight_reads = 1;
  o.max_gap_blocks = 0;
  FetchQueue q(&rec, o);
  std::vector<uint64_t> blocks = {100, 3000, 10, 2000, 500, 11, 4095, 0};
  std::map<uint64_t, uint64_t> tags;
  rec.Hold();
  for (uint64_t i = 0; i < blocks.size(); i++) {
    tags[i] = blocks[i];
    q.Submit(i, BlockAddr{0, blocks[i]});
  }
  rec.Release(false);
  std::vector<uint64_t> delivered;
  q.Drain([&](uint64_t tag, const uint8_t* data) { delivered.push_back(tags[tag]); });
  // 10 and 11 are adjacent: 11 rides along with 10.
  std::vector<std::pair<uint64_t, uint64_t>> want = {{100, 1}, {3000, 1}, {10, 2}, {2000, 1},
                                                     {500, 1}, {4095, 1}, {0, 1}};
  EXPECT_EQ(rec.reads(), want);
  std::vector<uint64_t> want_delivered = {100, 3000, 10, 11, 2000, 500, 4095, 0};
  EXPECT_EQ(delivered, want_delivered);
}

TEST_F(FetchQueueTest, ErrorAfterRetriesThrows) {
  FailingStore failing(store_.get(), 50, -1);
  FetchOptions o;
  o.retries = 3;
  FetchQueue q(&failing, o);
  q.Submit(1, BlockAddr{0, 50});
  q.Submit(2, BlockAddr{0, 3000});
  try {
    q.Drain([](uint64_t, const uint8_t*) {});
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("injected failure"), std::string::npos) << e.what();
  }
  EXPECT_EQ(failing.failed(), 4);  // the first attempt and 3 retries
  EXPECT_EQ(q.stats().retries, 3u);
  // Stays failed.
  EXPECT_THROW(q.Poll([](uint64_t, const uint8_t*) {}), Error);
}

TEST_F(FetchQueueTest, ErrorWaitsForReadsInFlight) {
  RecordingStore rec(store_.get());
  rec.set_delay(std::chrono::milliseconds(10));
  FailingStore failing(&rec, 50, -1);
  FetchOptions o;
  o.retries = 0;
  o.max_gap_blocks = 0;
  auto q = std::make_unique<FetchQueue>(&failing, o);
  for (uint64_t i = 1; i <= 10; i++) q->Submit(i, BlockAddr{0, i * 100});
  q->Submit(0, BlockAddr{0, 50});
  EXPECT_THROW(q->Drain([](uint64_t, const uint8_t*) {}), Error);
  EXPECT_EQ(rec.cur_reads(), 0u);  // nothing left pointing into the queue
  q.reset();
}

TEST_F(FetchQueueTest, TransientFailureRetried) {
  FailingStore failing(store_.get(), 50, 2);
  FetchOptions o;
  o.retries = 3;
  FetchQueue q(&failing, o);
  std::map<uint64_t, uint64_t> tags = {{1, 50}, {2, 51}, {3, 3000}};
  for (auto& [t, b] : tags) q.Submit(t, BlockAddr{0, b});
  DrainAndCheck(q, tags);
  EXPECT_EQ(q.stats().retries, 2u);
  EXPECT_EQ(failing.failed(), 2);
}

// The next reads start from the completions of the last ones, on the store's
// thread, while the caller's thread is away; the store runs ahead of the
// caller by at most twice the window (reads in flight plus landed reads).
TEST_F(FetchQueueTest, CompletionsStartNextReadsWithoutTheCaller) {
  RecordingStore rec(store_.get());
  FetchOptions o;
  o.max_inflight_reads = 2;
  o.max_gap_blocks = 0;
  FetchQueue q(&rec, o);
  rec.Hold();
  std::map<uint64_t, uint64_t> tags;
  for (uint64_t i = 0; i < 10; i++) {
    tags[i] = i * 50;
    q.Submit(i, BlockAddr{0, i * 50});
  }
  EXPECT_EQ(rec.reads().size(), 2u);  // the window, started by Submit
  ASSERT_TRUE(rec.WaitHeld(2));
  // Completions run on another thread; this one does not call the queue.
  std::thread([&rec] { rec.Release(true); }).join();
  std::vector<std::pair<uint64_t, uint64_t>> want = {{0, 1}, {50, 1}, {100, 1}, {150, 1}};
  EXPECT_EQ(rec.reads(), want);  // each completion started the next oldest block
  ASSERT_TRUE(rec.WaitHeld(2));
  std::thread([&rec] { rec.Release(true); }).join();
  // Four buffers held (2 * window), none delivered: the store waits for the
  // caller now, however long it stays away.
  EXPECT_EQ(rec.reads(), want);
  EXPECT_EQ(rec.cur_reads(), 0u);
  EXPECT_EQ(q.pending(), 10u);
  rec.Release(false);
  DrainAndCheck(q, tags);
  EXPECT_EQ(rec.reads().size(), 10u);
  EXPECT_LE(rec.max_reads(), 2u);
}

// A read that fails on the store's thread is retried from there, and the
// failure still reaches the caller once the retries are used up.
TEST_F(FetchQueueTest, ErrorOnStoreThreadAfterRetriesThrows) {
  FailingStore failing(store_.get(), 50, -1, /*on_store_thread=*/true);
  FetchOptions o;
  o.retries = 2;
  FetchQueue q(&failing, o);
  q.Submit(1, BlockAddr{0, 50});
  for (uint64_t b = 1000; b < 1100; b++) q.Submit(b, BlockAddr{0, b});
  try {
    q.Drain([](uint64_t, const uint8_t*) {});
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("injected failure"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("blocks 50..50"), std::string::npos) << e.what();
  }
  EXPECT_EQ(failing.failed(), 3);
  EXPECT_EQ(q.stats().retries, 2u);
  EXPECT_THROW(q.Poll([](uint64_t, const uint8_t*) {}), Error);
}

TEST_F(FetchQueueTest, TransientFailureOnStoreThreadRetried) {
  FailingStore failing(store_.get(), 50, 2, /*on_store_thread=*/true);
  FetchOptions o;
  o.retries = 3;
  FetchQueue q(&failing, o);
  std::map<uint64_t, uint64_t> tags = {{1, 50}, {2, 51}, {3, 3000}};
  for (uint64_t b = 0; b < 300; b++) tags[100 + b] = 2000 + b * 3;
  for (auto& [t, b] : tags) q.Submit(t, BlockAddr{0, b});
  DrainAndCheck(q, tags);
  EXPECT_EQ(q.stats().retries, 2u);
  EXPECT_EQ(failing.failed(), 2);
}

TEST_F(FetchQueueTest, DestructorWaitsForReads) {
  RecordingStore rec(store_.get());
  rec.set_delay(std::chrono::milliseconds(5));
  {
    FetchQueue q(&rec);
    for (uint64_t i = 0; i < 100; i++) q.Submit(i, BlockAddr{0, i * 30});
  }
  EXPECT_EQ(rec.cur_reads(), 0u);
}

TEST_F(FetchQueueTest, PollDeliversWithoutWaiting) {
  FetchQueue q(store_.get());
  std::map<uint64_t, uint64_t> tags;
  for (uint64_t i = 0; i < 64; i++) {
    tags[i] = i * 7;
    q.Submit(i, BlockAddr{0, i * 7});
  }
  size_t total = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (q.pending() > 0 && std::chrono::steady_clock::now() < deadline) {
    total += q.Poll([&](uint64_t tag, const uint8_t* data) {
      EXPECT_EQ(std::memcmp(data, Block(tags[tag]), kPageSize), 0);
    });
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  EXPECT_EQ(total, 64u);
  EXPECT_EQ(q.pending(), 0u);
}

}  // namespace
}  // namespace p2bmig

namespace p2bmig {
namespace {

// A block the guest waits for jumps the queue: with the one ordinary read
// slot busy, it is read at once, in a short read, and its data is right.
TEST_F(FetchQueueTest, PrioritizedBlockIsReadBeforeOlderOnes) {
  RecordingStore rec(store_.get());
  FetchOptions o;
  o.max_inflight_reads = 1;
  o.urgent_read_blocks = 4;
  FetchQueue q(&rec, o);
  rec.Hold();  // no read completes, so none starts the next one
  std::map<uint64_t, uint64_t> tags;
  // Blocks 100 apart: every one is a read of its own.
  for (uint64_t i = 0; i < 40; ++i) {
    tags[i] = i * 100;
    q.Submit(i, {0, i * 100});
  }
  EXPECT_TRUE(q.Prioritize({0, 3900}));
  EXPECT_FALSE(q.Prioritize({0, 3900})) << "already being read";
  EXPECT_FALSE(q.Prioritize({0, 3901})) << "never asked for";
  EXPECT_FALSE(q.Prioritize({0, 0})) << "the ordinary read in flight covers it";
  EXPECT_FALSE(q.Prioritize({7, 0})) << "no such disk";
  auto reads = rec.reads();
  ASSERT_EQ(reads.size(), 2u);
  EXPECT_EQ(reads[0].first, 0u);     // the oldest block, started by Submit
  EXPECT_EQ(reads[1].first, 3900u);  // the prioritized one, right after
  EXPECT_EQ(reads[1].second, 1u);
  EXPECT_EQ(q.stats().urgent_reads, 1u);
  rec.Release(false);
  DrainAndCheck(q, tags);
  // It was not read a second time in its place in the queue.
  size_t reads_of_3900 = 0;
  for (auto [first, count] : rec.reads()) reads_of_3900 += first <= 3900 && 3900 < first + count;
  EXPECT_EQ(reads_of_3900, 1u);
  EXPECT_EQ(rec.reads().size(), 40u);
}

// A prioritized read takes pending neighbours along, up to its limit.
TEST_F(FetchQueueTest, PrioritizedReadTakesPendingNeighbours) {
  RecordingStore rec(store_.get());
  FetchOptions o;
  o.max_inflight_reads = 1;
  o.urgent_read_blocks = 4;
  FetchQueue q(&rec, o);
  rec.Hold();
  std::map<uint64_t, uint64_t> tags;
  tags[0] = 0;
  q.Submit(0, {0, 0});  // occupies the ordinary slot
  for (uint64_t b = 1000; b < 1010; ++b) {
    tags[b] = b;
    q.Submit(b, {0, b});
  }
  EXPECT_TRUE(q.Prioritize({0, 1001}));
  auto reads = rec.reads();
  ASSERT_EQ(reads.size(), 2u);
  EXPECT_LE(reads[1].first, 1001u);
  EXPECT_GT(reads[1].first + reads[1].second, 1001u);
  EXPECT_EQ(reads[1].second, 4u);
  rec.Release(false);
  DrainAndCheck(q, tags);
}

// Prioritized reads start even when the ordinary reads may not: the window
// is full and every buffer the ordinary reads may hold is held by landed
// reads nobody collected. They have a bound of their own (max_urgent_reads
// buffers); prioritized blocks beyond it start once the caller delivers.
TEST_F(FetchQueueTest, PrioritizedReadsBypassTheHeldBufferBound) {
  RecordingStore rec(store_.get());
  FetchOptions o;
  o.max_inflight_reads = 1;  // at most 2 buffers for ordinary reads
  o.max_gap_blocks = 0;
  o.urgent_read_blocks = 1;
  o.max_urgent_reads = 2;
  FetchQueue q(&rec, o);
  rec.Hold();
  std::map<uint64_t, uint64_t> tags;
  for (uint64_t i = 0; i < 10; ++i) {
    tags[i] = i * 100;
    q.Submit(i, {0, i * 100});
  }
  // Blocks 0 and 100 land; nobody collects them.
  ASSERT_TRUE(rec.WaitHeld(1));
  rec.Release(true);
  ASSERT_TRUE(rec.WaitHeld(1));
  rec.Release(true);
  EXPECT_EQ(rec.cur_reads(), 0u);
  ASSERT_EQ(rec.reads().size(), 2u) << "the held-buffer bound stops ordinary reads";
  for (uint64_t b : {700, 800, 900}) EXPECT_TRUE(q.Prioritize({0, b}));
  std::vector<std::pair<uint64_t, uint64_t>> want = {{0, 1}, {100, 1}, {700, 1}, {800, 1}};
  EXPECT_EQ(rec.reads(), want) << "two urgent reads start at once, the third waits";
  // Both land; still nobody collects: the third waits for a delivery.
  ASSERT_TRUE(rec.WaitHeld(2));
  rec.Release(true);
  EXPECT_EQ(rec.reads(), want);
  EXPECT_EQ(q.stats().urgent_reads, 2u);
  rec.Release(false);
  DrainAndCheck(q, tags);
  EXPECT_EQ(q.stats().urgent_reads, 3u);
  EXPECT_EQ(rec.reads().size(), 10u);  // each block read once
}

// The read-done hook runs once per completed read attempt, failed ones
// included, and only once the read is visible: a Poll right after it
// delivers without waiting.
TEST_F(FetchQueueTest, ReadDoneHookRunsAfterTheReadIsVisible) {
  FailingStore failing(store_.get(), 50, 2, /*on_store_thread=*/true);
  std::mutex mu;
  std::condition_variable cv;
  int calls = 0;
  FetchOptions o;
  o.retries = 3;
  o.on_read_done = [&] {
    std::lock_guard<std::mutex> l(mu);
    calls++;
    cv.notify_all();
  };
  FetchQueue q(&failing, o);
  q.Submit(1, {0, 3000});
  {
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(60), [&] { return calls >= 1; }));
  }
  size_t delivered = q.Poll([&](uint64_t tag, const uint8_t* data) {
    EXPECT_EQ(tag, 1u);
    EXPECT_EQ(std::memcmp(data, Block(3000), kPageSize), 0);
  });
  EXPECT_EQ(delivered, 1u);
  q.Submit(2, {0, 50});  // fails twice, then lands
  {
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(60), [&] { return calls >= 4; }));
  }
  EXPECT_EQ(q.Poll([](uint64_t, const uint8_t*) {}), 1u);
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(q.stats().retries, 2u);
}

}  // namespace
}  // namespace p2bmig
