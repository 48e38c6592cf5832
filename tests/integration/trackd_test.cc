// p2bmig-trackd as a process: its tap is a FIFO fed with records built by
// the test (a named stand-in for /dev/xen-blkback-tap: the patched kernel
// module cannot be loaded on a machine without Xen; the real module runs in
// the Xen system test), its host a text file (--test-host) naming domains,
// their vbds and their frames. Clients connect the way the save helper does
// (TrackdIoTap, OpenTracking) and check snapshots, streamed events, loss
// reports, dying domains and the refusal of persistent grants.

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p2bmig/domain.h>
#include <p2bmig/hash.h>
#include <p2bmig/p2b_map.h>
#include <p2bmig/records.h>
#include <p2bmig/stream.h>

#include "test_util/memory_stream.h"
#include "xen/blkback_tap.h"
#include "xen/helper_args.h"
#include "xen/save_helper.h"
#include "xen/trackd_client.h"
#include "xen/tracking.h"

namespace p2bmig {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

constexpr uint64_t kHashMask = (uint64_t{1} << P2bMap::kHashBits) - 1;
constexpr uint64_t kMfnBase7 = 500000;  // domain 7's frames: kMfnBase7 + pfn
constexpr uint64_t kMfnBase8 = 900000;
constexpr uint32_t kXvda = 51712;
constexpr uint32_t kXvdb = 51728;

class TrackdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/p2bmig-trackd-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    tap_ = dir_ / "tap";
    ASSERT_EQ(mkfifo(tap_.c_str(), 0600), 0);
    sock_ = (dir_ / "run" / "trackd.sock").string();
    // Two images of 256 blocks with distinct random blocks.
    std::mt19937_64 rng(7);
    for (const char* name : {"a.img", "b.img", "c.img"}) {
      Bytes img(256 * kPageSize);
      for (auto& b : img) b = static_cast<uint8_t>(rng());
      WriteFile(dir_ / name, img);
    }
    SetHost(
        "domain 7 4096 500000\n"
        "vbd 7 51728 " +
        (dir_ / "b.img").string() + "\n" +  // configured second
        "vbd 7 51712 " + (dir_ / "a.img").string() + "\n" +
        "domain 8 1024 900000\n"
        "vbd 8 51712 " +
        (dir_ / "c.img").string() + "\n");
  }

  void TearDown() override {
    StopDaemon();
    if (writer_ >= 0) close(writer_);
    fs::remove_all(dir_);
  }

  static void WriteFile(const fs::path& p, const Bytes& b) {
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }

  void SetHost(const std::string& text) {
    const fs::path tmp = dir_ / "host.tmp";
    std::ofstream(tmp) << text;
    fs::rename(tmp, dir_ / "host.txt");
  }

  void StartDaemon() {
    pid_ = fork();
    if (pid_ == 0) {
      const int null = open("/dev/null", O_WRONLY);
      if (getenv("TRACKD_TEST_LOG") == nullptr) dup2(null, 2);
      execl(P2BMIG_TRACKD_BINARY, P2BMIG_TRACKD_BINARY, "--foreground", "--tap", tap_.c_str(),
            "--socket", sock_.c_str(), "--test-host", (dir_ / "host.txt").c_str(),
            "--housekeeping-ms", "100", "--log-level", "debug", static_cast<char*>(nullptr));
      _exit(127);
    }
    ASSERT_GT(pid_, 0);
    // Our end of the FIFO: the daemon opens it read-write, so this does not
    // block once it runs.
    for (int i = 0; i < 200 && !fs::exists(sock_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    ASSERT_TRUE(fs::exists(sock_)) << "p2bmig-trackd did not start";
    EXPECT_EQ(fs::status(sock_).permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::owner_write);
    writer_ = open(tap_.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(writer_, 0);
  }

  int StopDaemon() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

  void Feed(const TapRecord& r) {
    const Bytes b = EncodeTapRecord(r);
    ASSERT_EQ(write(writer_, b.data(), b.size()), static_cast<ssize_t>(b.size()));
  }
  void FeedBytes(const Bytes& b) {
    ASSERT_EQ(write(writer_, b.data(), b.size()), static_cast<ssize_t>(b.size()));
  }

  static TapRecord Io(uint16_t domid, uint32_t handle, BlkifOp op, uint64_t sector,
                      std::vector<TapSegment> segs, int8_t status = 0, uint16_t flags = 0) {
    TapRecord r;
    r.domid = domid;
    r.handle = handle;
    r.op = op;
    r.sector = sector;
    r.status = status;
    r.flags = flags;
    for (const TapSegment& s : segs) r.nr_sectors += s.last_sect - s.first_sect + 1u;
    r.segments = std::move(segs);
    return r;
  }
  // Full pages for pfns first.. of a domain whose frames start at mfn_base.
  static std::vector<TapSegment> Pages(uint64_t mfn_base, Pfn first, int n) {
    std::vector<TapSegment> s;
    for (int i = 0; i < n; ++i) s.push_back(TapSegment{mfn_base + first + i, 0, 7});
    return s;
  }

  uint64_t BlockHash(const char* image, uint64_t block) {
    Bytes page(kPageSize);
    std::ifstream in(dir_ / image, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(block * kPageSize));
    in.read(reinterpret_cast<char*>(page.data()), kPageSize);
    return PageHash(page.data()) & kHashMask;
  }

  void ExpectEntry(const P2bMap& map, Pfn pfn, uint32_t disk, uint64_t block, const char* image) {
    std::optional<P2bMap::Entry> e = map.Lookup(pfn);
    ASSERT_TRUE(e.has_value()) << "pfn " << pfn;
    EXPECT_EQ(e->addr, (BlockAddr{disk, block})) << "pfn " << pfn;
    EXPECT_EQ(e->hash48, BlockHash(image, block)) << "pfn " << pfn;
  }

  fs::path dir_;
  fs::path tap_;
  std::string sock_;
  pid_t pid_ = -1;
  int writer_ = -1;
};

// A client as the save helper has it: a map and a tap applying to it.
struct Watcher {
  std::unique_ptr<P2bMap> map;
  std::unique_ptr<TrackdIoTap> tap;
  Watcher(const std::string& sock, uint32_t domid, uint64_t nr_pfns)
      : map(std::make_unique<P2bMap>(nr_pfns)) {
    tap = TrackdIoTap::Connect(sock, domid, map.get());
    P2bMap* m = map.get();
    tap->SetListener([m](const IoEvent& ev) { m->Apply(ev); });
  }
};

TEST_F(TrackdTest, SnapshotThenStreamedEvents) {
  StartDaemon();
  // Reads before anyone watches: pfns 10..13 <- blocks 2..5 of xvda (disk 0,
  // a.img), an indirect read of 40 pages <- blocks 100..139 of xvdb (disk 1).
  Feed(Io(7, kXvda, BlkifOp::kRead, 2 * 8, Pages(kMfnBase7, 10, 4)));
  Feed(Io(7, kXvdb, BlkifOp::kRead, 100 * 8, Pages(kMfnBase7, 200, 40)));
  // Neither a partial page nor an unaligned one creates entries (I2).
  Feed(Io(7, kXvda, BlkifOp::kRead, 50 * 8, {{kMfnBase7 + 30, 0, 3}}));
  Feed(Io(7, kXvda, BlkifOp::kRead, 60 * 8 + 1, {{kMfnBase7 + 31, 0, 7}}));
  // A frame that is not the guest's.
  Feed(Io(7, kXvda, BlkifOp::kRead, 70 * 8, {{42, 0, 7}}));

  Watcher w(sock_, 7, 4096);
  ASSERT_EQ(w.tap->devices().size(), 2u);
  EXPECT_EQ(w.tap->devices()[0].devid, kXvda);
  EXPECT_EQ(w.tap->devices()[0].path, (dir_ / "a.img").string());
  EXPECT_EQ(w.tap->devices()[1].devid, kXvdb);
  EXPECT_EQ(w.tap->snapshot_entries(), 44u);
  EXPECT_EQ(w.map->size(), 44u);
  for (Pfn p = 10; p < 14; ++p) ExpectEntry(*w.map, p, 0, p - 8, "a.img");
  for (Pfn p = 200; p < 240; ++p) ExpectEntry(*w.map, p, 1, p - 100, "b.img");
  EXPECT_FALSE(w.map->Lookup(30));
  EXPECT_FALSE(w.map->Lookup(31));

  // Streamed: a write of pfn 500 to block 7 of xvdb, after the image got the
  // new content (the daemon hashes the image, as the target will read it).
  {
    std::fstream img(dir_ / "b.img", std::ios::in | std::ios::out | std::ios::binary);
    img.seekp(120 * kPageSize);
    const std::string junk(kPageSize, 'x');
    img.write(junk.data(), kPageSize);
  }
  Feed(Io(7, kXvdb, BlkifOp::kWrite, 120 * 8, Pages(kMfnBase7, 500, 1)));
  // A read into pfn 11 of another block replaces its entry.
  Feed(Io(7, kXvda, BlkifOp::kRead, 9 * 8, Pages(kMfnBase7, 11, 1)));
  w.tap->Drain();
  EXPECT_EQ(w.tap->events_received(), 2u);
  ExpectEntry(*w.map, 500, 1, 120, "b.img");
  // pfn 220 had block 120's old content: the write removed it.
  EXPECT_FALSE(w.map->Lookup(220));
  ExpectEntry(*w.map, 11, 0, 9, "a.img");
  EXPECT_EQ(w.map->size(), 44u);

  // Failed write and discard only remove.
  Feed(Io(7, kXvda, BlkifOp::kWrite, 2 * 8, Pages(kMfnBase7, 600, 1), -1));
  TapRecord discard = Io(7, kXvdb, BlkifOp::kDiscard, 130 * 8, {});
  discard.nr_sectors = 5 * 8;
  Feed(discard);
  w.tap->Drain();
  EXPECT_FALSE(w.map->Lookup(10));  // block 2 of a.img
  EXPECT_FALSE(w.map->Lookup(600));
  for (Pfn p = 230; p < 235; ++p) EXPECT_FALSE(w.map->Lookup(p)) << p;
  EXPECT_TRUE(w.map->Lookup(229));
  EXPECT_TRUE(w.map->Lookup(235));

  // A second client gets the daemon's current map as its snapshot.
  Watcher w2(sock_, 7, 4096);
  EXPECT_EQ(w2.map->size(), w.map->size());
  for (Pfn p = 0; p < 4096; ++p) {
    ASSERT_EQ(w2.map->Lookup(p).has_value(), w.map->Lookup(p).has_value()) << p;
  }
  EXPECT_EQ(StopDaemon(), 0);
}

TEST_F(TrackdTest, DrainCoversEverythingTheTapHeld) {
  StartDaemon();
  Watcher w(sock_, 7, 4096);
  // More than the FIFO holds at once, written while the client waits.
  constexpr int kRecords = 3000;
  std::thread feeder([&] {
    for (int i = 0; i < kRecords; ++i) {
      Feed(Io(7, kXvda, BlkifOp::kRead, uint64_t(i % 256) * 8, Pages(kMfnBase7, i % 4096, 1)));
    }
  });
  feeder.join();
  w.tap->Drain();
  EXPECT_EQ(w.tap->events_received(), static_cast<uint64_t>(kRecords));
  ExpectEntry(*w.map, kRecords - 1, 0, (kRecords - 1) % 256, "a.img");
}

TEST_F(TrackdTest, DrainWaitsForRequestsInFlight) {
  const std::string base = "domain 7 4096 500000\nvbd 7 51712 " + (dir_ / "a.img").string() + "\n";
  SetHost(base + "inflight 7 51712 1\n");
  StartDaemon();
  Watcher w(sock_, 7, 4096);
  // blkback says one request of xvda is still being served: the drain must
  // wait for it, and then include its record.
  std::atomic<bool> drained{false};
  std::thread drainer([&] {
    w.tap->Drain();
    drained = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(drained.load());
  Feed(Io(7, kXvda, BlkifOp::kRead, 8, Pages(kMfnBase7, 77, 1)));
  SetHost(base + "inflight 7 51712 0\n");
  drainer.join();
  EXPECT_TRUE(drained.load());
  ExpectEntry(*w.map, 77, 0, 1, "a.img");
}

TEST_F(TrackdTest, LostRecordsDropTheAffectedMaps) {
  StartDaemon();
  Feed(Io(7, kXvda, BlkifOp::kRead, 0, Pages(kMfnBase7, 0, 8)));
  Feed(Io(8, kXvda, BlkifOp::kRead, 0, Pages(kMfnBase8, 0, 8)));
  Watcher w7(sock_, 7, 4096);
  Watcher w8(sock_, 8, 1024);
  ASSERT_EQ(w7.map->size(), 8u);
  ASSERT_EQ(w8.map->size(), 8u);

  TapRecord lost;
  lost.type = TapRecordType::kLost;
  lost.domid = 7;
  lost.nr_sectors = 3;
  Feed(lost);
  // Records after the loss are good again.
  Feed(Io(7, kXvda, BlkifOp::kRead, 64, Pages(kMfnBase7, 100, 1)));
  w7.tap->Drain();
  w8.tap->Drain();
  EXPECT_EQ(w7.tap->resets_received(), 1u);
  EXPECT_EQ(w7.map->size(), 1u);
  ExpectEntry(*w7.map, 100, 0, 8, "a.img");
  EXPECT_EQ(w8.tap->resets_received(), 0u);
  EXPECT_EQ(w8.map->size(), 8u);
  // The daemon's own map was dropped too.
  EXPECT_EQ(Watcher(sock_, 7, 4096).map->size(), 1u);

  lost.domid = kTapAllDomains;
  Feed(lost);
  w7.tap->Drain();
  w8.tap->Drain();
  EXPECT_EQ(w7.map->size(), 0u);
  EXPECT_EQ(w8.map->size(), 0u);

  // Garbage from the tap: no record boundary can be trusted, every map goes.
  Feed(Io(8, kXvda, BlkifOp::kRead, 0, Pages(kMfnBase8, 0, 2)));
  w8.tap->Drain();
  ASSERT_EQ(w8.map->size(), 2u);
  Bytes junk(40, 0xee);
  FeedBytes(junk);
  w8.tap->Drain();
  EXPECT_EQ(w8.map->size(), 0u);
  EXPECT_EQ(w8.tap->resets_received(), 2u);
  // And the daemon reads on.
  Feed(Io(8, kXvda, BlkifOp::kRead, 0, Pages(kMfnBase8, 5, 1)));
  w8.tap->Drain();
  EXPECT_EQ(w8.map->size(), 1u);
}

TEST_F(TrackdTest, ADomainThatDiesIsForgotten) {
  StartDaemon();
  Feed(Io(8, kXvda, BlkifOp::kRead, 0, Pages(kMfnBase8, 0, 4)));
  Watcher w(sock_, 8, 1024);
  ASSERT_EQ(w.map->size(), 4u);
  SetHost("domain 7 4096 500000\nvbd 7 51712 " + (dir_ / "a.img").string() + "\n");
  // The client learns it: its next drain fails, so a save cannot go on with
  // a map that no longer follows the guest.
  bool failed = false;
  for (int i = 0; i < 100 && !failed; ++i) {
    try {
      w.tap->Drain();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } catch (const Error& e) {
      failed = true;
      EXPECT_NE(std::string(e.what()).find("domain 8 is gone"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(failed);
  try {
    Watcher again(sock_, 8, 1024);
    ADD_FAILURE() << "watching a dead domain succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("there is no domain 8"), std::string::npos) << e.what();
  }
  // A domain 8 born again starts from nothing.
  SetHost("domain 8 1024 900000\nvbd 8 51712 " + (dir_ / "c.img").string() + "\n");
  EXPECT_EQ(Watcher(sock_, 8, 1024).map->size(), 0u);
}

TEST_F(TrackdTest, PersistentGrantsAreRefused) {
  SetHost("domain 7 4096 500000\nvbd 7 51712 " + (dir_ / "a.img").string() + "\n" +
          "domain 9 1024 700000\nvbd 9 51712 " + (dir_ / "c.img").string() + " persistent\n");
  StartDaemon();
  // Known from xenstore: refused at once.
  try {
    Watcher w(sock_, 9, 1024);
    ADD_FAILURE() << "a domain with persistent grants was served";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("persistent grants"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("feature_persistent=0"), std::string::npos);
  }
  // Known from the tap's flag: a client already watching is told, and its
  // drain fails; later clients are refused.
  Feed(Io(7, kXvda, BlkifOp::kRead, 0, Pages(kMfnBase7, 0, 2)));
  Watcher w(sock_, 7, 4096);
  ASSERT_EQ(w.map->size(), 2u);
  Feed(Io(7, kXvda, BlkifOp::kRead, 8, Pages(kMfnBase7, 2, 1), 0, kTapFlagPersistent));
  EXPECT_THROW(w.tap->Drain(), Error);
  EXPECT_THROW(Watcher(sock_, 7, 4096), Error);
}

TEST_F(TrackdTest, OpenTrackingAsTheSaveHelperDoes) {
  TrackingConfig config;
  config.trackd_socket = sock_;
  const std::vector<std::string> disks = {(dir_ / "a.img").string(), (dir_ / "b.img").string()};
  // No daemon: a clear error, before anything starts.
  try {
    OpenTracking(7, 4096, disks, config);
    ADD_FAILURE() << "no daemon, yet tracking opened";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("is p2bmig-trackd running?"), std::string::npos);
  }
  // Asked for explicitly, an empty map without a daemon.
  TrackingConfig none;
  none.source = TrackingSource::kNone;
  EXPECT_EQ(OpenTracking(7, 4096, disks, none).map->size(), 0u);

  StartDaemon();
  Feed(Io(7, kXvdb, BlkifOp::kRead, 8, Pages(kMfnBase7, 3, 3)));
  Tracking t = OpenTracking(7, 4096, disks, config);
  EXPECT_EQ(t.snapshot_pages, 3u);
  EXPECT_NE(t.description.find("snapshot of 3 mapped page(s)"), std::string::npos);
  Feed(Io(7, kXvda, BlkifOp::kRead, 8, Pages(kMfnBase7, 9, 1)));
  t.tap->Drain();
  ExpectEntry(*t.map, 9, 0, 1, "a.img");
  ExpectEntry(*t.map, 3, 1, 1, "b.img");
  // The stream numbers disks as the helper's configuration does, whatever
  // the daemon's numbering (devid order).
  const std::vector<std::string> swapped = {disks[1], disks[0]};
  Tracking s = OpenTracking(7, 4096, swapped, config);
  ExpectEntry(*s.map, 9, 1, 1, "a.img");
  ExpectEntry(*s.map, 3, 0, 1, "b.img");
  Feed(Io(7, kXvda, BlkifOp::kRead, 16, Pages(kMfnBase7, 20, 1)));
  s.tap->Drain();
  ExpectEntry(*s.map, 20, 1, 2, "a.img");
  // A disk the helper does not name never gets entries.
  Tracking only_b = OpenTracking(7, 4096, {disks[1]}, config);
  ExpectEntry(*only_b.map, 3, 0, 1, "b.img");
  EXPECT_FALSE(only_b.map->Lookup(9));
  EXPECT_FALSE(only_b.map->Lookup(20));
  // A disk the daemon does not track (QEMU-backed, say) gets no mappings,
  // and the helper says so.
  Tracking mixed = OpenTracking(7, 4096, {(dir_ / "c.img").string(), disks[0]}, config);
  ExpectEntry(*mixed.map, 9, 1, 1, "a.img");
  EXPECT_FALSE(mixed.map->Lookup(3));
  EXPECT_NE(
      mixed.description.find("disk 0 (" + (dir_ / "c.img").string() + ") is not a blkback device"),
      std::string::npos)
      << mixed.description;
  // None of the disks is the domain's: configured for another guest.
  try {
    OpenTracking(7, 4096, {(dir_ / "c.img").string()}, config);
    ADD_FAILURE() << "a foreign disk was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("none of P2BMIG_DISKS is a blkback device"),
              std::string::npos)
        << e.what();
  }
}

// Guest memory for the save below: pfn p holds `pages[p]` (zeros if absent).
class MemoryDomain : public Domain {
 public:
  std::map<Pfn, Bytes> pages;
  std::vector<uint64_t> disk_sizes;
  std::string name() const override { return "memory"; }
  DomainType type() const override { return DomainType::kX86Hvm; }
  uint64_t nr_pfns() const override { return 4096; }
  std::vector<uint64_t> DiskSizes() const override { return disk_sizes; }
  void ReadPages(std::span<const Pfn> pfns, uint8_t* out) override {
    for (size_t i = 0; i < pfns.size(); ++i) {
      auto it = pages.find(pfns[i]);
      if (it == pages.end()) {
        std::memset(out + i * kPageSize, 0, kPageSize);
      } else {
        std::memcpy(out + i * kPageSize, it->second.data(), kPageSize);
      }
    }
  }
  void EnableLogDirty() override {}
  void DisableLogDirty() override {}
  void PeekAndCleanDirty(std::vector<Pfn>* dirty) override { dirty->clear(); }
  void MarkDirty(std::span<const Pfn>) override {}
  void Pause() override {}
  void Resume() override {}
  void FlushDisks() override {}
};

// The save helper in p2bmig mode, its map from the daemon: pages whose
// content is a block the guest read travel as mappings; a disk write that
// lands while the stream is being written (here: between the memory pass
// and X86_TSC_INFO, written by the fake real helper itself) reaches the
// helper through the drain, and the overwritten page travels as data.
TEST_F(TrackdTest, SaveHelperSendsTrackedPagesAsMappings) {
  StartDaemon();
  MemoryDomain dom;
  dom.disk_sizes = {256 * kPageSize, 256 * kPageSize};
  auto block = [&](const char* image, uint64_t b) {
    Bytes page(kPageSize);
    std::ifstream in(dir_ / image, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(b * kPageSize));
    in.read(reinterpret_cast<char*>(page.data()), kPageSize);
    return page;
  };
  // The guest read blocks 2..5 of xvda into pfns 10..13 and block 7 of xvdb
  // into pfn 14; pfn 15 holds something no block holds.
  for (Pfn p = 10; p < 14; ++p) dom.pages[p] = block("a.img", p - 8);
  dom.pages[14] = block("b.img", 7);
  dom.pages[15] = Bytes(kPageSize, 0x5a);
  Feed(Io(7, kXvda, BlkifOp::kRead, 2 * 8, Pages(kMfnBase7, 10, 4)));
  Feed(Io(7, kXvdb, BlkifOp::kRead, 7 * 8, Pages(kMfnBase7, 14, 1)));

  // The libxc stream the real helper writes: one PAGE_DATA with pfns
  // 10..15, then X86_TSC_INFO and END, split after PAGE_DATA.
  test::MemoryStream head_mem, tail_mem;
  {
    StreamWriter w(&head_mem);
    w.WriteHeaders(ImageHeader{}, DomainHeader{});
    PageDataBuilder b;
    for (Pfn p = 10; p < 16; ++p) b.Add(p, page_type::kNotab, dom.pages[p].data());
    w.WriteRecord(b.Finish());
  }
  {
    StreamWriter w(&tail_mem);
    w.WriteRecord(Record{rec::kX86TscInfo, Bytes(24, 0)});
    w.WriteRecord(Record{rec::kEnd, {}});
  }
  WriteFile(dir_ / "head", head_mem.data());
  WriteFile(dir_ / "tail", tail_mem.data());
  // Between the two, the guest writes pfn 40 to block 3 of xvda (where pfn
  // 11's content came from): the image changes, then blkback reports it.
  Bytes written(kPageSize, 0xc3);
  WriteFile(dir_ / "written", written);
  WriteFile(dir_ / "write-record",
            EncodeTapRecord(Io(7, kXvda, BlkifOp::kWrite, 3 * 8, Pages(kMfnBase7, 40, 1))));
  const fs::path helper = dir_ / "fake-libxl-save-helper";
  std::ofstream(helper) << "#!/bin/bash\n"
                        << "# Fake of Xen's libxl-save-helper (save only).\n"
                        << "d=" << dir_.string() << "\n"
                        << "cat $d/head >&\"$2\"\n"
                        << "dd if=$d/written of=$d/a.img bs=4096 seek=3 conv=notrunc status=none\n"
                        << "cat $d/write-record > $d/tap\n"
                        << "cat $d/tail >&\"$2\"\n";
  fs::permissions(helper, fs::perms::owner_all);

  const int io = open((dir_ / "saved").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(io, 0);
  SaveHelperConfig config;
  config.mode = WrapMode::kP2bmig;
  config.real_helper = helper.string();
  config.disks = {(dir_ / "a.img").string(), (dir_ / "b.img").string()};
  config.tracking.trackd_socket = sock_;
  SaveHelperHooks hooks;
  hooks.open_domain = [&](uint32_t, const std::vector<std::string>&) {
    auto d = std::make_unique<MemoryDomain>();
    d->pages = dom.pages;
    d->disk_sizes = dom.disk_sizes;
    return std::unique_ptr<Domain>(std::move(d));
  };
  const std::vector<std::string> argv = {
      "p2bmig-save-helper", "--save-domain", std::to_string(io), "-1", "7", "5", "3", "0"};
  testing::internal::CaptureStderr();
  const HelperOutcome outcome = RunSaveHelper(ParseHelperArgs(argv), config, hooks);
  const std::string log = testing::internal::GetCapturedStderr();
  close(io);
  ASSERT_EQ(outcome.exit_code, 0) << outcome.error << log;
  EXPECT_NE(log.find("snapshot of 5 mapped page(s)"), std::string::npos) << log;

  // What a restore would end up with: the last record for each pfn.
  std::ifstream in(dir_ / "saved", std::ios::binary);
  test::MemoryStream saved(Bytes(std::istreambuf_iterator<char>(in), {}));
  StreamReader reader(&saved);
  ImageHeader ih;
  DomainHeader dh;
  reader.ReadHeaders(&ih, &dh);
  std::map<Pfn, Bytes> data;
  std::map<Pfn, PageMapping> mapped;
  Record r;
  do {
    reader.ReadRecord(&r);
    if (r.type == rec::kPageData) {
      PageDataView v = ParsePageData(r);
      for (size_t i = 0; i < v.pages.size(); ++i) {
        data[v.pages[i].pfn] = Bytes(v.PageData(i), v.PageData(i) + kPageSize);
        mapped.erase(v.pages[i].pfn);
      }
    } else if (r.type == rec::kP2bPageMappings) {
      for (const PageMapping& m : ParsePageMappings(r)) {
        mapped[m.pfn] = m;
        data.erase(m.pfn);
      }
    }
  } while (r.type != rec::kEnd);
  // pfns 10, 12, 13 and 14 as mappings, with the stream's disk numbering.
  ASSERT_EQ(mapped.size(), 4u) << log;
  EXPECT_EQ(mapped[10].addr, (BlockAddr{0, 2}));
  EXPECT_EQ(mapped[12].addr, (BlockAddr{0, 4}));
  EXPECT_EQ(mapped[13].addr, (BlockAddr{0, 5}));
  EXPECT_EQ(mapped[14].addr, (BlockAddr{1, 7}));
  for (const auto& [pfn, m] : mapped) EXPECT_EQ(m.hash, PageHash(dom.pages[pfn].data())) << pfn;
  // pfn 11's block was overwritten: it must arrive as its own content.
  ASSERT_TRUE(data.count(11)) << log;
  EXPECT_EQ(data[11], dom.pages[11]);
  EXPECT_EQ(data[15], dom.pages[15]);
  // Whether pfn 11 was mapped first and sent again, or the write came
  // before its mapping was decided, depends on timing; both are exact.
  if (log.find("mapped=5 ") != std::string::npos) {
    EXPECT_NE(log.find("resent=1 "), std::string::npos) << log;
  } else {
    EXPECT_NE(log.find("mapped=4 "), std::string::npos) << log;
  }
}

}  // namespace
}  // namespace p2bmig
