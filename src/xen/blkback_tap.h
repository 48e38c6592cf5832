// Records of the xen-blkback completion tap (/dev/xen-blkback-tap, built
// from xen-patches/linux-6.1-xen-blkback-p2b-tap.patch): their byte layout,
// a decoder that trusts nothing it reads, and the translation of a record
// into the IoEvents the p2b map understands.
//
// Layout (little-endian; docs/xen-integration.md, "Record layout"):
//   header, 40 bytes: u16 size, u8 version (1), u8 type (1 I/O, 2 lost),
//     u16 domid, u16 nr_segments, u32 handle, u16 flags (1 = persistent
//     grants), u8 op (BLKIF_OP_*), s8 status (BLKIF_RSP_*), u64
//     sector_number, u64 nr_sectors (lost records: the number dropped),
//     u64 seq
//   then nr_segments x 16 bytes: u64 mfn, u8 first_sect, u8 last_sect, 6
//     bytes of padding.
//
// Thread safety: TapDecoder is not thread-safe; the functions are pure.

#ifndef P2BMIG_XEN_BLKBACK_TAP_H_
#define P2BMIG_XEN_BLKBACK_TAP_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <p2bmig/io_event.h>
#include <p2bmig/types.h>

namespace p2bmig {

inline constexpr size_t kTapHeaderSize = 40;
inline constexpr size_t kTapSegmentSize = 16;
inline constexpr size_t kTapMaxSegments = 256;  // blkback's MAX_INDIRECT_SEGMENTS
inline constexpr size_t kTapMaxRecord = kTapHeaderSize + kTapMaxSegments * kTapSegmentSize;
inline constexpr uint8_t kTapVersion = 1;
inline constexpr uint16_t kTapFlagPersistent = 0x0001;
inline constexpr uint16_t kTapAllDomains = 0xffff;
inline constexpr uint64_t kTapInvalidMfn = ~uint64_t{0};
// Domain ids at and above DOMID_FIRST_RESERVED are not guests.
inline constexpr uint16_t kFirstReservedDomid = 0x7ff0;
// A pfn no guest has: segments whose frame has no guest pfn get it, so that
// they never create entries (writes still invalidate the blocks they hit).
inline constexpr Pfn kNoPfn = ~Pfn{0};

enum class TapRecordType : uint8_t { kIo = 1, kLost = 2 };

// BLKIF_OP_* (xen/include/public/io/blkif.h) as reported by the tap.
enum class BlkifOp : uint8_t {
  kRead = 0,
  kWrite = 1,
  kWriteBarrier = 2,
  kFlushDiskcache = 3,
  kDiscard = 5,
};
inline constexpr int8_t kBlkifRspOkay = 0;

struct TapSegment {
  uint64_t mfn = 0;
  uint8_t first_sect = 0;
  uint8_t last_sect = 7;
};

struct TapRecord {
  TapRecordType type = TapRecordType::kIo;
  uint16_t domid = 0;
  uint32_t handle = 0;  // the device's xenstore devid (blkback keeps 16 bits)
  uint16_t flags = 0;
  BlkifOp op = BlkifOp::kRead;
  int8_t status = kBlkifRspOkay;
  uint64_t sector = 0;
  uint64_t nr_sectors = 0;  // kLost: number of records dropped
  uint64_t seq = 0;
  std::vector<TapSegment> segments;

  bool persistent() const { return (flags & kTapFlagPersistent) != 0; }
  uint64_t lost() const { return nr_sectors; }
};

// The bytes of `record`, as the kernel writes them (tests and fakes).
std::vector<uint8_t> EncodeTapRecord(const TapRecord& record);

// Splits the byte stream read from the tap into records. The device returns
// whole records per read(); a FIFO standing in for it may split them, so
// bytes are buffered until a record is complete.
class TapDecoder {
 public:
  TapDecoder() = default;
  TapDecoder(const TapDecoder&) = delete;
  TapDecoder& operator=(const TapDecoder&) = delete;

  void Feed(const uint8_t* data, size_t len);

  // The next complete record, or nothing if more bytes are needed. Throws
  // Error(kMalformedStream) for a record that breaks the layout (size,
  // version, type, op, segment count or sectors); the decoder is then
  // unusable until Reset(): record boundaries can no longer be trusted.
  std::optional<TapRecord> Next();

  // Forgets buffered bytes.
  void Reset();

  size_t buffered() const { return buf_.size() - pos_; }

 private:
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;
  bool broken_ = false;
};

// True for a successful data request (read, write, or a barrier or flush
// that carried data) whose segments may create map entries.
bool TapRecordCarriesData(const TapRecord& record);

// The IoEvent of a successful data request: one segment per record
// segment, pfn = m2p(mfn) (kNoPfn if the frame has no guest pfn), hashes
// left 0 for the caller to fill. Barriers and flushes with data are writes.
// REQUIRES: TapRecordCarriesData(record).
IoEvent TapRecordToIoEvent(const TapRecord& record, uint32_t disk,
                           const std::function<std::optional<Pfn>(uint64_t mfn)>& m2p);

// Events that can only remove entries, for what cannot be mapped: a failed
// request (the pages or the blocks it touched now hold unknown content), a
// discard (its range). Reads remove the entries of their pages, writes and
// discards those of every block they touch. Each segment is at most 7
// sectors long, so none of them is a full page. A range of more than
// `max_sectors` is refused (returns nothing): the caller drops the whole map.
std::optional<std::vector<IoEvent>> InvalidationEvents(
    const TapRecord& record, uint32_t disk,
    const std::function<std::optional<Pfn>(uint64_t mfn)>& m2p, uint64_t max_sectors);

std::string DescribeTapRecord(const TapRecord& record);

}  // namespace p2bmig

#endif  // P2BMIG_XEN_BLKBACK_TAP_H_
