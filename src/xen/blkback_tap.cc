// Decoding of the blkback tap's records and their translation to IoEvents.

#include "xen/blkback_tap.h"

#include <algorithm>

#include <fmt/format.h>

#include "stream/wire.h"

namespace p2bmig {

namespace {

using wire::LoadLe;
using wire::StoreLe;

[[noreturn]] void Bad(const std::string& what) {
  throw Error(ErrorKind::kMalformedStream, "blkback tap: " + what);
}

bool KnownOp(uint8_t op) {
  switch (static_cast<BlkifOp>(op)) {
    case BlkifOp::kRead:
    case BlkifOp::kWrite:
    case BlkifOp::kWriteBarrier:
    case BlkifOp::kFlushDiskcache:
    case BlkifOp::kDiscard:
      return true;
  }
  return false;
}

const char* OpName(BlkifOp op) {
  switch (op) {
    case BlkifOp::kRead:
      return "read";
    case BlkifOp::kWrite:
      return "write";
    case BlkifOp::kWriteBarrier:
      return "barrier";
    case BlkifOp::kFlushDiskcache:
      return "flush";
    case BlkifOp::kDiscard:
      return "discard";
  }
  return "?";
}

// Decodes the record of exactly `size` bytes at `p`.
TapRecord DecodeRecord(const uint8_t* p, size_t size) {
  TapRecord r;
  const uint8_t type = p[3];
  if (type != static_cast<uint8_t>(TapRecordType::kIo) &&
      type != static_cast<uint8_t>(TapRecordType::kLost)) {
    Bad(fmt::format("unknown record type {}", type));
  }
  r.type = static_cast<TapRecordType>(type);
  r.domid = LoadLe<uint16_t>(p + 4);
  const uint16_t nseg = LoadLe<uint16_t>(p + 6);
  r.handle = LoadLe<uint32_t>(p + 8);
  r.flags = LoadLe<uint16_t>(p + 12);
  const uint8_t op = p[14];
  r.status = static_cast<int8_t>(p[15]);
  r.sector = LoadLe<uint64_t>(p + 16);
  r.nr_sectors = LoadLe<uint64_t>(p + 24);
  r.seq = LoadLe<uint64_t>(p + 32);
  if (nseg > kTapMaxSegments) Bad(fmt::format("{} segments (at most {})", nseg, kTapMaxSegments));
  if (size != kTapHeaderSize + nseg * kTapSegmentSize) {
    Bad(fmt::format("record of {} bytes with {} segments", size, nseg));
  }
  if (r.type == TapRecordType::kLost) {
    if (nseg != 0) Bad("lost-records report with segments");
    if (r.domid >= kFirstReservedDomid && r.domid != kTapAllDomains) {
      Bad(fmt::format("lost-records report for domain {}", r.domid));
    }
    return r;
  }
  if (!KnownOp(op)) Bad(fmt::format("unknown operation {}", op));
  r.op = static_cast<BlkifOp>(op);
  if (r.domid >= kFirstReservedDomid) Bad(fmt::format("request of domain {}", r.domid));
  if (r.op == BlkifOp::kDiscard && nseg != 0) Bad("discard with segments");
  r.segments.resize(nseg);
  uint64_t sectors = 0;
  for (size_t i = 0; i < nseg; ++i) {
    const uint8_t* s = p + kTapHeaderSize + i * kTapSegmentSize;
    TapSegment& seg = r.segments[i];
    seg.mfn = LoadLe<uint64_t>(s);
    seg.first_sect = s[8];
    seg.last_sect = s[9];
    if (seg.first_sect > seg.last_sect || seg.last_sect >= kSectorsPerPage) {
      Bad(fmt::format("segment {} covers sectors {}..{} of a page", i, seg.first_sect,
                      seg.last_sect));
    }
    sectors += seg.last_sect - seg.first_sect + 1u;
  }
  if (r.op != BlkifOp::kDiscard && sectors != r.nr_sectors) {
    Bad(fmt::format("segments cover {} sectors, the header says {}", sectors, r.nr_sectors));
  }
  // A request without data (a flush) may carry any sector number: blkfront
  // leaves it unset, and it names no range.
  if (r.nr_sectors != 0 && r.sector > UINT64_MAX / kSectorSize - r.nr_sectors) {
    Bad(fmt::format("sectors {}+{} overflow", r.sector, r.nr_sectors));
  }
  return r;
}

}  // namespace

std::vector<uint8_t> EncodeTapRecord(const TapRecord& r) {
  const size_t nseg = r.segments.size();
  std::vector<uint8_t> out(kTapHeaderSize + nseg * kTapSegmentSize, 0);
  uint8_t* p = out.data();
  StoreLe<uint16_t>(p, static_cast<uint16_t>(out.size()));
  p[2] = kTapVersion;
  p[3] = static_cast<uint8_t>(r.type);
  StoreLe<uint16_t>(p + 4, r.domid);
  StoreLe<uint16_t>(p + 6, static_cast<uint16_t>(nseg));
  StoreLe<uint32_t>(p + 8, r.handle);
  StoreLe<uint16_t>(p + 12, r.flags);
  p[14] = static_cast<uint8_t>(r.op);
  p[15] = static_cast<uint8_t>(r.status);
  StoreLe<uint64_t>(p + 16, r.sector);
  StoreLe<uint64_t>(p + 24, r.nr_sectors);
  StoreLe<uint64_t>(p + 32, r.seq);
  for (size_t i = 0; i < nseg; ++i) {
    uint8_t* s = p + kTapHeaderSize + i * kTapSegmentSize;
    StoreLe<uint64_t>(s, r.segments[i].mfn);
    s[8] = r.segments[i].first_sect;
    s[9] = r.segments[i].last_sect;
  }
  return out;
}

void TapDecoder::Feed(const uint8_t* data, size_t len) {
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  buf_.insert(buf_.end(), data, data + len);
}

std::optional<TapRecord> TapDecoder::Next() {
  if (broken_) Bad("decoder used after a malformed record without Reset()");
  if (buffered() < kTapHeaderSize) return std::nullopt;
  const uint8_t* p = buf_.data() + pos_;
  const size_t size = LoadLe<uint16_t>(p);
  const uint8_t version = p[2];
  if (version != kTapVersion || size < kTapHeaderSize || size > kTapMaxRecord || size % 8 != 0) {
    broken_ = true;
    Bad(
        fmt::format("record header with size {} and version {} (expected version {}, "
                    "{}..{} bytes)",
                    size, version, kTapVersion, kTapHeaderSize, kTapMaxRecord));
  }
  if (buffered() < size) return std::nullopt;
  try {
    TapRecord r = DecodeRecord(p, size);
    pos_ += size;
    // Keep the buffer from growing without bound on a long stream.
    if (pos_ >= (size_t{1} << 16)) {
      buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(pos_));
      pos_ = 0;
    }
    return r;
  } catch (const Error&) {
    broken_ = true;
    throw;
  }
}

void TapDecoder::Reset() {
  buf_.clear();
  pos_ = 0;
  broken_ = false;
}

bool TapRecordCarriesData(const TapRecord& r) {
  return r.type == TapRecordType::kIo && r.status == kBlkifRspOkay && r.op != BlkifOp::kDiscard &&
         !r.segments.empty();
}

IoEvent TapRecordToIoEvent(const TapRecord& r, uint32_t disk,
                           const std::function<std::optional<Pfn>(uint64_t mfn)>& m2p) {
  IoEvent ev;
  ev.op = r.op == BlkifOp::kRead ? IoOp::kRead : IoOp::kWrite;
  ev.disk = disk;
  ev.sector = r.sector;
  ev.segments.reserve(r.segments.size());
  for (const TapSegment& s : r.segments) {
    IoSegment seg;
    std::optional<Pfn> pfn;
    if (s.mfn != kTapInvalidMfn) pfn = m2p(s.mfn);
    seg.pfn = pfn.value_or(kNoPfn);
    seg.first_sect = s.first_sect;
    seg.last_sect = s.last_sect;
    ev.segments.push_back(seg);
  }
  return ev;
}

std::optional<std::vector<IoEvent>> InvalidationEvents(
    const TapRecord& r, uint32_t disk, const std::function<std::optional<Pfn>(uint64_t mfn)>& m2p,
    uint64_t max_sectors) {
  std::vector<IoEvent> out;
  if (r.type != TapRecordType::kIo) return out;
  if (r.op == BlkifOp::kRead) {
    // The pages may hold part of the data: drop their entries.
    uint64_t sector = r.sector;
    for (const TapSegment& s : r.segments) {
      const uint32_t n = s.last_sect - s.first_sect + 1u;
      if (s.mfn != kTapInvalidMfn) {
        if (std::optional<Pfn> pfn = m2p(s.mfn)) {
          IoEvent ev;
          ev.op = IoOp::kRead;
          ev.disk = disk;
          ev.sector = sector;
          ev.segments.push_back(IoSegment{*pfn, 0, static_cast<uint8_t>(std::min(n, 7u) - 1)});
          out.push_back(std::move(ev));
        }
      }
      sector += n;
    }
    return out;
  }
  if (r.op != BlkifOp::kDiscard && r.segments.empty()) return out;  // a pure flush
  if (r.nr_sectors > max_sectors) return std::nullopt;
  // Every block of [sector, sector + nr_sectors) may have changed.
  constexpr size_t kSegmentsPerEvent = 1024;
  constexpr uint64_t kChunk = kSectorsPerPage - 1;  // never a full page
  uint64_t sector = r.sector;
  const uint64_t end = r.sector + r.nr_sectors;
  while (sector < end) {
    IoEvent ev;
    ev.op = IoOp::kWrite;
    ev.disk = disk;
    ev.sector = sector;
    while (sector < end && ev.segments.size() < kSegmentsPerEvent) {
      const uint64_t n = std::min(kChunk, end - sector);
      ev.segments.push_back(IoSegment{kNoPfn, 0, static_cast<uint8_t>(n - 1)});
      sector += n;
    }
    out.push_back(std::move(ev));
  }
  return out;
}

std::string DescribeTapRecord(const TapRecord& r) {
  if (r.type == TapRecordType::kLost) {
    return fmt::format("lost {} record(s) of {} (seq {})", r.lost(),
                       r.domid == kTapAllDomains ? std::string("several domains")
                                                 : fmt::format("domain {}", r.domid),
                       r.seq);
  }
  return fmt::format(
      "{} of domain {} device {}: sectors {}+{}, {} segment(s), status {}{} (seq {})", OpName(r.op),
      r.domid, r.handle, r.sector, r.nr_sectors, r.segments.size(), r.status,
      r.persistent() ? ", persistent grants" : "", r.seq);
}

}  // namespace p2bmig
