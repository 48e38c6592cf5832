// p2bmig-trackd as a process: its tap is a FIFO fed with records built by
// the test (a named stand-in for /dev/xen-blkback-tap: the patched kernel
// module cannot be loaded on a machine without Xen; the real module runs in
// the Xen system test), its host a text file (--test-host) naming domains,
// their vbds and their frames. Clients connect the way the save helper does
// (TrackdIoTap, OpenTracking) and check snapshots, streamed events, loss
// reports, dying domains and the refusal of persistent grants.

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p2bmig/hash.h>
#include <p2bmig/p2b_map.h>

#include "xen/blkback_tap.h"
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
  // A disk that is none of the domain's: configured for another guest.
  try {
    OpenTracking(7, 4096, {disks[0], (dir_ / "c.img").string()}, config);
    ADD_FAILURE() << "a foreign disk was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("c.img) is none of this domain's devices"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace p2bmig
