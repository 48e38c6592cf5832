// Helpers for tests that run migrations on the simulated host in one process:
// a temporary directory with disk images, a connected pair of byte streams,
// a store that delays reads (so that fetches finish late and out of order),
// and a function that runs source and target side by side.

#ifndef P2BMIG_TESTS_SIM_FIXTURE_H_
#define P2BMIG_TESTS_SIM_FIXTURE_H_

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <p2bmig/block_store.h>
#include <p2bmig/byte_stream.h>

#include "sim/content.h"
#include "sim/sim_host.h"

namespace p2bmig::test {

// A fresh directory under the system's temp dir, removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Two ends of a socketpair as ByteStreams.
std::pair<std::unique_ptr<ByteStream>, std::unique_ptr<ByteStream>> StreamPair();

// Completes each read after a random delay between `min_delay_us` and
// `max_delay_us`, from its own thread, so that completions come late and out
// of order.
class DelayedStore : public BlockStoreWrapper {
 public:
  DelayedStore(BlockStore* target, uint64_t seed, uint32_t max_delay_us, uint32_t min_delay_us = 0);
  ~DelayedStore() override;
  void ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf, ReadDone done) override;

 private:
  struct Item {
    std::chrono::steady_clock::time_point due;
    uint64_t seq;
    std::exception_ptr error;
    ReadDone done;
    bool operator>(const Item& o) const { return std::tie(due, seq) > std::tie(o.due, o.seq); }
  };
  void Run();

  sim::Rng rng_;
  uint32_t max_delay_us_;
  uint32_t min_delay_us_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Item, std::vector<Item>, std::greater<>> items_;
  uint64_t seq_ = 0;
  int outstanding_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

// Holds every read until Open(): reads issued before start then, in order.
// Makes "the storage has not answered yet" a fact rather than a matter of
// timing (e.g. every mapped page still missing when a lazy restore resumes
// the guest). Opens itself at destruction, and after `safety_s` at the
// latest, so that a test that never opens it fails rather than hangs.
class GatedStore : public BlockStoreWrapper {
 public:
  explicit GatedStore(BlockStore* target, double safety_s = 120);
  ~GatedStore() override;
  void ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf, ReadDone done) override;
  void Open();  // any thread; idempotent
  bool opened();

 private:
  struct Held {
    uint32_t disk;
    uint64_t offset;
    size_t len;
    uint8_t* buf;
    ReadDone done;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  bool stop_ = false;
  std::vector<Held> held_;
  std::thread safety_;
};

struct MigrationResult {
  sim::SourceReport source;
  sim::TargetReport target;
  uint64_t differing_pages = 0;  // target vs source memory after the migration
};

// Runs source and target over a socketpair (its send rate capped at
// `rate_bps` unless 0) and compares their memory.
MigrationResult RunMigration(sim::SourceHost* source, sim::TargetHost* target,
                             uint64_t rate_bps = 0);

// Number of pages whose content differs between the two memories.
uint64_t DifferingPages(const sim::GuestMemory& a, const sim::GuestMemory& b);

// The same after a lazy restore: pages the resumed guest wrote must hold the
// source's content with those writes replayed on top; all others the
// source's content.
uint64_t DifferingPagesAfterLazyRestore(const sim::GuestMemory& source,
                                        const sim::GuestMemory& target,
                                        const sim::TargetReport& report);

}  // namespace p2bmig::test

#endif  // P2BMIG_TESTS_SIM_FIXTURE_H_
