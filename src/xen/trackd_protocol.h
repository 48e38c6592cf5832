// The protocol of p2bmig-trackd's Unix socket (docs/xen-integration.md,
// "p2bmig-trackd"). Every message is a frame: u32 type, u32 payload length,
// payload; all integers little-endian. A client sends kWatch once, then any
// number of kDrain. The daemon answers kWatch with kDevices, the snapshot
// (kSnapshot chunks, then kSnapshotEnd) and then streams kEvent for that
// domain until the client closes; kReset means "forget every entry", kDrained
// answers a kDrain, kError and kGone end the conversation.
//
// Payloads:
//   kWatch        u32 version (kTrackdProtocolVersion), u32 domid
//   kDrain        u64 token
//   kDevices      u32 count, then per device: u32 devid, u32 disk, u32 flags
//                 (kDeviceMappable, kDevicePersistent), u32 length, path
//   kSnapshot     u64 nr_pfns, u32 count, then count x (u64 pfn, u32 disk,
//                 u32 0, u64 block, u64 hash)
//   kSnapshotEnd  u64 total entries sent
//   kEvent        u8 op (0 read, 1 write), 3 x u8 0, u32 disk, u64 sector,
//                 u32 count, u32 0, then count x (u64 pfn, u8 first_sect,
//                 u8 last_sect, 6 x u8 0, u64 hash)
//   kReset, kError, kGone   UTF-8 text
//   kDrained      u64 token
//
// Thread safety: pure functions; a FrameReader belongs to one thread.

#ifndef P2BMIG_XEN_TRACKD_PROTOCOL_H_
#define P2BMIG_XEN_TRACKD_PROTOCOL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <p2bmig/io_event.h>
#include <p2bmig/types.h>

namespace p2bmig {

inline constexpr char kDefaultTrackdSocket[] = "/run/p2bmig/trackd.sock";
inline constexpr uint32_t kTrackdProtocolVersion = 1;
inline constexpr uint32_t kMaxFramePayload = 16u << 20;
inline constexpr uint32_t kMaxEventSegments = 4096;
inline constexpr uint32_t kSnapshotChunk = 65536;

enum class TrackdMsg : uint32_t {
  kWatch = 1,
  kDrain = 2,
  kDevices = 101,
  kSnapshot = 102,
  kSnapshotEnd = 103,
  kEvent = 104,
  kReset = 105,
  kDrained = 106,
  kError = 107,
  kGone = 108,
};

inline constexpr uint32_t kDeviceMappable = 1;
inline constexpr uint32_t kDevicePersistent = 2;

struct TrackdDevice {
  uint32_t devid = 0;
  uint32_t disk = 0;
  uint32_t flags = 0;
  std::string path;
};

struct SnapshotEntry {
  Pfn pfn = 0;
  BlockAddr addr;
  uint64_t hash = 0;
};

struct Frame {
  TrackdMsg type = TrackdMsg::kError;
  std::vector<uint8_t> payload;
};

// Encoders: the whole frame, header included.
std::vector<uint8_t> EncodeFrame(TrackdMsg type, const std::vector<uint8_t>& payload);
std::vector<uint8_t> EncodeWatch(uint32_t domid);
std::vector<uint8_t> EncodeToken(TrackdMsg type, uint64_t token);
std::vector<uint8_t> EncodeText(TrackdMsg type, const std::string& text);
std::vector<uint8_t> EncodeDevices(const std::vector<TrackdDevice>& devices);
std::vector<uint8_t> EncodeSnapshot(uint64_t nr_pfns, const std::vector<SnapshotEntry>& entries);
std::vector<uint8_t> EncodeEvent(const IoEvent& event);

// Decoders of a frame's payload; Error(kMalformedStream) on a bad payload.
uint32_t DecodeWatch(const Frame& f);  // the domid; checks the version
uint64_t DecodeToken(const Frame& f);
std::string DecodeText(const Frame& f);
std::vector<TrackdDevice> DecodeDevices(const Frame& f);
std::vector<SnapshotEntry> DecodeSnapshot(const Frame& f, uint64_t* nr_pfns);
IoEvent DecodeEvent(const Frame& f);

// Reassembles frames from bytes read from a socket.
class FrameReader {
 public:
  void Feed(const uint8_t* data, size_t len);
  // The next complete frame; Error(kMalformedStream) for an oversized one.
  std::optional<Frame> Next();

 private:
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;
};

// Blocking helpers on a socket fd: Error(kIo) on failure, and ReadFrame
// returns nothing at a clean end of stream.
void WriteAllFd(int fd, const std::vector<uint8_t>& bytes);
std::optional<Frame> ReadFrame(int fd);

}  // namespace p2bmig

#endif  // P2BMIG_XEN_TRACKD_PROTOCOL_H_
