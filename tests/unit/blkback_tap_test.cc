// Tests of the blkback tap's record decoder, the translation of records to
// IoEvents, and p2bmig-trackd's socket protocol: all from byte buffers built
// here, the kernel's layout written out by hand where it matters.

#include "xen/blkback_tap.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include <p2bmig/p2b_map.h>

#include "xen/trackd_protocol.h"

namespace p2bmig {
namespace {

using Bytes = std::vector<uint8_t>;

template <typename T>
void Put(Bytes& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof(v));  // the test machine is little-endian
}

// A record laid out field by field as struct xen_blkback_tap_hdr and
// xen_blkback_tap_seg in the kernel patch.
Bytes KernelRecord(uint8_t type, uint16_t domid, uint32_t handle, uint16_t flags, uint8_t op,
                   int8_t status, uint64_t sector, uint64_t nr_sectors, uint64_t seq,
                   const std::vector<TapSegment>& segs) {
  Bytes b(40 + 16 * segs.size(), 0);
  Put<uint16_t>(b, 0, static_cast<uint16_t>(b.size()));
  b[2] = 1;
  b[3] = type;
  Put<uint16_t>(b, 4, domid);
  Put<uint16_t>(b, 6, static_cast<uint16_t>(segs.size()));
  Put<uint32_t>(b, 8, handle);
  Put<uint16_t>(b, 12, flags);
  b[14] = op;
  b[15] = static_cast<uint8_t>(status);
  Put<uint64_t>(b, 16, sector);
  Put<uint64_t>(b, 24, nr_sectors);
  Put<uint64_t>(b, 32, seq);
  for (size_t i = 0; i < segs.size(); ++i) {
    Put<uint64_t>(b, 40 + 16 * i, segs[i].mfn);
    b[40 + 16 * i + 8] = segs[i].first_sect;
    b[40 + 16 * i + 9] = segs[i].last_sect;
  }
  return b;
}

TapRecord DecodeOne(const Bytes& b) {
  TapDecoder d;
  d.Feed(b.data(), b.size());
  std::optional<TapRecord> r = d.Next();
  EXPECT_TRUE(r.has_value());
  EXPECT_EQ(d.buffered(), 0u);
  return r.value_or(TapRecord{});
}

ErrorKind DecodeError(const Bytes& b) {
  TapDecoder d;
  d.Feed(b.data(), b.size());
  try {
    d.Next();
  } catch (const Error& e) {
    return e.kind();
  }
  return ErrorKind::kInternal;
}

TEST(BlkbackTap, DecodesTheKernelLayout) {
  const Bytes b =
      KernelRecord(1, 7, 51712, 0, 0, 0, 4096, 12, 99, {{0x123456789a, 0, 7}, {0x42, 2, 5}});
  const TapRecord r = DecodeOne(b);
  EXPECT_EQ(r.type, TapRecordType::kIo);
  EXPECT_EQ(r.domid, 7);
  EXPECT_EQ(r.handle, 51712u);
  EXPECT_FALSE(r.persistent());
  EXPECT_EQ(r.op, BlkifOp::kRead);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.sector, 4096u);
  EXPECT_EQ(r.nr_sectors, 12u);
  EXPECT_EQ(r.seq, 99u);
  ASSERT_EQ(r.segments.size(), 2u);
  EXPECT_EQ(r.segments[0].mfn, 0x123456789au);
  EXPECT_EQ(r.segments[1].mfn, 0x42u);
  EXPECT_EQ(r.segments[1].first_sect, 2);
  EXPECT_EQ(r.segments[1].last_sect, 5);
  // The encoder writes the same bytes.
  EXPECT_EQ(EncodeTapRecord(r), b);
}

TEST(BlkbackTap, DecodesFlagsStatusAndLossReports) {
  TapRecord r = DecodeOne(KernelRecord(1, 3, 5, kTapFlagPersistent, 1, -1, 8, 8, 1, {{9, 0, 7}}));
  EXPECT_TRUE(r.persistent());
  EXPECT_EQ(r.op, BlkifOp::kWrite);
  EXPECT_EQ(r.status, -1);
  r = DecodeOne(KernelRecord(2, kTapAllDomains, 0, 0, 0, 0, 0, 17, 5, {}));
  EXPECT_EQ(r.type, TapRecordType::kLost);
  EXPECT_EQ(r.domid, kTapAllDomains);
  EXPECT_EQ(r.lost(), 17u);
  r = DecodeOne(KernelRecord(1, 3, 5, 0, 5, 0, 1000, 1u << 20, 2, {}));
  EXPECT_EQ(r.op, BlkifOp::kDiscard);
  EXPECT_EQ(r.nr_sectors, 1u << 20);
}

// blkfront leaves a flush's sector number unset (Linux guests send ~0): a
// request without data names no range and must not be taken for an overflow.
TEST(BlkbackTap, FlushWithoutDataDecodesWhateverItsSector) {
  TapRecord r = DecodeOne(KernelRecord(1, 3, 5, 0, 3, 0, UINT64_MAX, 0, 4, {}));
  EXPECT_EQ(r.op, BlkifOp::kFlushDiskcache);
  EXPECT_EQ(r.sector, UINT64_MAX);
  auto events = InvalidationEvents(
      r, 0, [](uint64_t) { return std::optional<Pfn>(); }, 1u << 20);
  ASSERT_TRUE(events.has_value());
  EXPECT_TRUE(events->empty());
}

TEST(BlkbackTap, IndirectRequestsOfTheLargestSize) {
  std::vector<TapSegment> segs(kTapMaxSegments);
  for (size_t i = 0; i < segs.size(); ++i) segs[i] = TapSegment{1000 + i, 0, 7};
  const Bytes b = KernelRecord(1, 1, 1, 0, 1, 0, 0, 8 * segs.size(), 0, segs);
  EXPECT_EQ(b.size(), kTapMaxRecord);
  const TapRecord r = DecodeOne(b);
  ASSERT_EQ(r.segments.size(), kTapMaxSegments);
  EXPECT_EQ(r.segments[255].mfn, 1255u);
}

TEST(BlkbackTap, RecordsSplitAcrossReadsAreReassembled) {
  Bytes stream;
  for (int i = 0; i < 5; ++i) {
    Bytes b = KernelRecord(1, 2, 3, 0, 0, 0, 8u * i, 8, i, {{77u + i, 0, 7}});
    stream.insert(stream.end(), b.begin(), b.end());
  }
  TapDecoder d;
  std::vector<TapRecord> got;
  for (uint8_t byte : stream) {
    d.Feed(&byte, 1);
    while (std::optional<TapRecord> r = d.Next()) got.push_back(*r);
  }
  ASSERT_EQ(got.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(got[i].seq, static_cast<uint64_t>(i));
    EXPECT_EQ(got[i].segments[0].mfn, 77u + i);
  }
}

TEST(BlkbackTap, RefusesEveryBrokenLayout) {
  const std::vector<TapSegment> one = {{5, 0, 7}};
  const Bytes good = KernelRecord(1, 2, 3, 0, 0, 0, 0, 8, 0, one);
  ASSERT_EQ(DecodeError(good), ErrorKind::kInternal);  // i.e. no error

  Bytes b = good;
  b[2] = 2;  // version
  EXPECT_EQ(DecodeError(b), ErrorKind::kMalformedStream);
  b = good;
  Put<uint16_t>(b, 0, 32);  // smaller than a header
  EXPECT_EQ(DecodeError(b), ErrorKind::kMalformedStream);
  b = good;
  Put<uint16_t>(b, 0, static_cast<uint16_t>(kTapMaxRecord + 8));
  EXPECT_EQ(DecodeError(b), ErrorKind::kMalformedStream);
  b = good;
  Put<uint16_t>(b, 6, 2);  // two segments announced, one present
  EXPECT_EQ(DecodeError(b), ErrorKind::kMalformedStream);
  b = good;
  b[3] = 3;  // type
  EXPECT_EQ(DecodeError(b), ErrorKind::kMalformedStream);
  b = good;
  b[14] = 6;  // BLKIF_OP_INDIRECT is never reported as such
  EXPECT_EQ(DecodeError(b), ErrorKind::kMalformedStream);
  b = good;
  b[40 + 9] = 8;  // last_sect past the page
  EXPECT_EQ(DecodeError(b), ErrorKind::kMalformedStream);
  b = good;
  b[40 + 8] = 5;
  b[40 + 9] = 4;  // first > last
  EXPECT_EQ(DecodeError(b), ErrorKind::kMalformedStream);
  b = good;
  Put<uint64_t>(b, 24, 9);  // header disagrees with the segments
  EXPECT_EQ(DecodeError(b), ErrorKind::kMalformedStream);
  b = good;
  Put<uint16_t>(b, 4, 0x7ff0);  // DOMID_FIRST_RESERVED
  EXPECT_EQ(DecodeError(b), ErrorKind::kMalformedStream);
  b = good;
  Put<uint64_t>(b, 16, UINT64_MAX / 512);  // range overflows
  EXPECT_EQ(DecodeError(b), ErrorKind::kMalformedStream);
  EXPECT_EQ(DecodeError(KernelRecord(1, 2, 3, 0, 5, 0, 0, 8, 0, one)),
            ErrorKind::kMalformedStream);  // discard with segments
  EXPECT_EQ(DecodeError(KernelRecord(2, 2, 3, 0, 0, 0, 0, 8, 0, one)),
            ErrorKind::kMalformedStream);  // loss report with segments
}

TEST(BlkbackTap, DecoderStaysBrokenUntilReset) {
  Bytes b = KernelRecord(1, 2, 3, 0, 0, 0, 0, 8, 0, {{5, 0, 7}});
  Bytes bad = b;
  bad[2] = 9;
  TapDecoder d;
  d.Feed(bad.data(), bad.size());
  d.Feed(b.data(), b.size());
  EXPECT_THROW(d.Next(), Error);
  EXPECT_THROW(d.Next(), Error);  // boundaries cannot be trusted any more
  d.Reset();
  d.Feed(b.data(), b.size());
  EXPECT_TRUE(d.Next().has_value());
}

std::optional<Pfn> TestM2p(uint64_t mfn) {
  if (mfn >= 1000 && mfn < 2000) return mfn - 1000;
  return std::nullopt;
}

TEST(BlkbackTap, DataRequestsBecomeEventsWithGuestPfns) {
  const TapRecord r = DecodeOne(KernelRecord(1, 2, 3, 0, 2 /* barrier with data */, 0, 64, 13, 0,
                                             {{1005, 0, 7}, {kTapInvalidMfn, 0, 3}, {5000, 7, 7}}));
  ASSERT_TRUE(TapRecordCarriesData(r));
  const IoEvent ev = TapRecordToIoEvent(r, 4, TestM2p);
  EXPECT_EQ(ev.op, IoOp::kWrite);
  EXPECT_EQ(ev.disk, 4u);
  EXPECT_EQ(ev.sector, 64u);
  ASSERT_EQ(ev.segments.size(), 3u);
  EXPECT_EQ(ev.segments[0].pfn, 5u);
  EXPECT_EQ(ev.segments[1].pfn, kNoPfn);
  EXPECT_EQ(ev.segments[2].pfn, kNoPfn);  // not a guest frame
  EXPECT_EQ(ev.segments[1].last_sect, 3);

  TapRecord failed = r;
  failed.status = -1;
  EXPECT_FALSE(TapRecordCarriesData(failed));
  TapRecord flush = r;
  flush.op = BlkifOp::kFlushDiskcache;
  flush.segments.clear();
  EXPECT_FALSE(TapRecordCarriesData(flush));
}

uint64_t H(int i) { return 0x1111111111ull * static_cast<uint64_t>(i + 1); }

// A map with pfns 0..15 mapped to blocks 0..15 of disk 0.
void Fill(P2bMap& map) {
  for (Pfn p = 0; p < 16; ++p) {
    IoEvent ev;
    ev.op = IoOp::kRead;
    ev.sector = p * 8;
    ev.segments.push_back(IoSegment{p, 0, 7, H(static_cast<int>(p))});
    map.Apply(ev);
  }
  ASSERT_EQ(map.size(), 16u);
}

TEST(BlkbackTap, FailedReadDropsOnlyItsPages) {
  P2bMap map(64);
  Fill(map);
  // A failed read of blocks 40..41 into pfns 3 and 4: those pages hold
  // unknown data now; nothing else changed.
  const TapRecord r =
      DecodeOne(KernelRecord(1, 2, 3, 0, 0, -1, 320, 16, 0, {{1003, 0, 7}, {1004, 0, 7}}));
  auto evs = InvalidationEvents(r, 0, TestM2p, 1 << 20);
  ASSERT_TRUE(evs.has_value());
  for (const IoEvent& ev : *evs) map.Apply(ev);
  EXPECT_FALSE(map.Lookup(3));
  EXPECT_FALSE(map.Lookup(4));
  EXPECT_EQ(map.size(), 14u);
}

TEST(BlkbackTap, FailedWriteAndDiscardDropEveryBlockTheyTouch) {
  P2bMap map(64);
  Fill(map);
  // Failed unaligned write of sectors 17..33 (blocks 2, 3, 4): whatever it
  // wrote, those blocks may have changed.
  TapRecord w = DecodeOne(
      KernelRecord(1, 2, 3, 0, 1, -1, 17, 17, 0, {{1030, 0, 7}, {1031, 0, 7}, {1032, 7, 7}}));
  auto evs = InvalidationEvents(w, 0, TestM2p, 1 << 20);
  ASSERT_TRUE(evs.has_value());
  for (const IoEvent& ev : *evs) map.Apply(ev);
  for (Pfn p = 0; p < 16; ++p) EXPECT_EQ(map.Lookup(p).has_value(), p < 2 || p > 4) << p;

  // Discard of sectors 56..80 (blocks 7..10): exactly those go.
  const TapRecord d = DecodeOne(KernelRecord(1, 2, 3, 0, 5, 0, 56, 25, 0, {}));
  evs = InvalidationEvents(d, 0, TestM2p, 1 << 20);
  ASSERT_TRUE(evs.has_value());
  for (const IoEvent& ev : *evs) {
    for (const IoSegment& s : ev.segments) EXPECT_FALSE(s.full_page());
    map.Apply(ev);
  }
  for (Pfn p = 5; p < 16; ++p) EXPECT_EQ(map.Lookup(p).has_value(), p < 7 || p > 10) << p;
  // Another disk's blocks are untouched.
  evs = InvalidationEvents(d, 1, TestM2p, 1 << 20);
  for (const IoEvent& ev : *evs) map.Apply(ev);
  EXPECT_TRUE(map.Lookup(11).has_value());
  // Too large to do block by block: the caller must drop the map.
  EXPECT_FALSE(InvalidationEvents(d, 0, TestM2p, 24).has_value());
}

TEST(TrackdProtocol, MessagesRoundTrip) {
  IoEvent ev;
  ev.op = IoOp::kWrite;
  ev.disk = 3;
  ev.sector = 123456789;
  ev.segments = {IoSegment{kNoPfn, 0, 6, 0}, IoSegment{42, 0, 7, 0xabcdef0123456789ull}};
  FrameReader fr;
  Bytes all = EncodeEvent(ev);
  const Bytes dev = EncodeDevices({TrackdDevice{51712, 0, kDeviceMappable, "/images/a.img"},
                                   TrackdDevice{51728, 1, kDevicePersistent, "/dev/vg/b"}});
  const Bytes snap = EncodeSnapshot(4096, {SnapshotEntry{7, BlockAddr{1, 99}, 0x5555}});
  all.insert(all.end(), dev.begin(), dev.end());
  all.insert(all.end(), snap.begin(), snap.end());
  fr.Feed(all.data(), all.size());

  std::optional<Frame> f = fr.Next();
  ASSERT_TRUE(f);
  const IoEvent got = DecodeEvent(*f);
  EXPECT_EQ(got.op, IoOp::kWrite);
  EXPECT_EQ(got.disk, 3u);
  EXPECT_EQ(got.sector, 123456789u);
  ASSERT_EQ(got.segments.size(), 2u);
  EXPECT_EQ(got.segments[0].pfn, kNoPfn);
  EXPECT_EQ(got.segments[0].last_sect, 6);
  EXPECT_EQ(got.segments[1].hash, 0xabcdef0123456789ull);

  f = fr.Next();
  ASSERT_TRUE(f);
  const std::vector<TrackdDevice> devs = DecodeDevices(*f);
  ASSERT_EQ(devs.size(), 2u);
  EXPECT_EQ(devs[1].path, "/dev/vg/b");
  EXPECT_EQ(devs[1].flags, kDevicePersistent);

  f = fr.Next();
  ASSERT_TRUE(f);
  uint64_t nr_pfns = 0;
  const std::vector<SnapshotEntry> entries = DecodeSnapshot(*f, &nr_pfns);
  EXPECT_EQ(nr_pfns, 4096u);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].addr, (BlockAddr{1, 99}));
  EXPECT_FALSE(fr.Next());
}

TEST(TrackdProtocol, TruncatedAndOversizedMessagesAreRefused) {
  IoEvent ev;
  ev.segments = {IoSegment{1, 0, 7, 0}};
  Bytes b = EncodeEvent(ev);
  Frame f;
  f.type = TrackdMsg::kEvent;
  f.payload.assign(b.begin() + 8, b.end() - 1);
  EXPECT_THROW(DecodeEvent(f), Error);
  f.payload.assign(b.begin() + 8, b.end());
  f.payload.push_back(0);
  EXPECT_THROW(DecodeEvent(f), Error);
  // A count that promises more segments than the message holds.
  f.payload.assign(b.begin() + 8, b.end());
  f.payload[16] = 0xff;
  EXPECT_THROW(DecodeEvent(f), Error);

  Bytes huge(8, 0);
  huge[0] = 104;
  Put<uint32_t>(huge, 4, kMaxFramePayload + 1);
  FrameReader fr;
  fr.Feed(huge.data(), huge.size());
  EXPECT_THROW(fr.Next(), Error);

  Frame watch;
  watch.type = TrackdMsg::kWatch;
  const Bytes w = EncodeWatch(5);
  watch.payload.assign(w.begin() + 8, w.end());
  EXPECT_EQ(DecodeWatch(watch), 5u);
  watch.payload[0] = 9;  // another protocol version
  EXPECT_THROW(DecodeWatch(watch), Error);
}

}  // namespace
}  // namespace p2bmig
