// Encoding and decoding of p2bmig-trackd's socket protocol.

#include "xen/trackd_protocol.h"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <unistd.h>

#include "stream/wire.h"

namespace p2bmig {

namespace {

using wire::LoadLe;
using wire::StoreLe;

[[noreturn]] void Bad(const std::string& what) {
  throw Error(ErrorKind::kMalformedStream, "p2bmig-trackd protocol: " + what);
}

class Out {
 public:
  template <typename T>
  void Put(T v) {
    const size_t at = b_.size();
    b_.resize(at + sizeof(T));
    StoreLe<T>(b_.data() + at, v);
  }
  void Bytes(const std::string& s) { b_.insert(b_.end(), s.begin(), s.end()); }
  std::vector<uint8_t>& bytes() { return b_; }

 private:
  std::vector<uint8_t> b_;
};

class In {
 public:
  explicit In(const Frame& f) : p_(f.payload.data()), n_(f.payload.size()) {}
  template <typename T>
  T Get() {
    Need(sizeof(T));
    T v = LoadLe<T>(p_ + at_);
    at_ += sizeof(T);
    return v;
  }
  std::string Text(size_t len) {
    Need(len);
    std::string s(reinterpret_cast<const char*>(p_ + at_), len);
    at_ += len;
    return s;
  }
  void Need(size_t len) const {
    if (len > n_ - at_) Bad(fmt::format("message ends after {} of {} bytes", n_, at_ + len));
  }
  void End() const {
    if (at_ != n_) Bad(fmt::format("{} trailing byte(s) in a message", n_ - at_));
  }
  size_t left() const { return n_ - at_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t at_ = 0;
};

void Expect(const Frame& f, TrackdMsg type) {
  if (f.type != type) {
    Bad(fmt::format("message {} where {} was expected", static_cast<uint32_t>(f.type),
                    static_cast<uint32_t>(type)));
  }
}

}  // namespace

std::vector<uint8_t> EncodeFrame(TrackdMsg type, const std::vector<uint8_t>& payload) {
  if (payload.size() > kMaxFramePayload) {
    throw Error(ErrorKind::kInternal, "p2bmig-trackd protocol: message too large");
  }
  std::vector<uint8_t> out(8 + payload.size());
  StoreLe<uint32_t>(out.data(), static_cast<uint32_t>(type));
  StoreLe<uint32_t>(out.data() + 4, static_cast<uint32_t>(payload.size()));
  std::memcpy(out.data() + 8, payload.data(), payload.size());
  return out;
}

std::vector<uint8_t> EncodeWatch(uint32_t domid) {
  Out o;
  o.Put<uint32_t>(kTrackdProtocolVersion);
  o.Put<uint32_t>(domid);
  return EncodeFrame(TrackdMsg::kWatch, o.bytes());
}

std::vector<uint8_t> EncodeToken(TrackdMsg type, uint64_t token) {
  Out o;
  o.Put<uint64_t>(token);
  return EncodeFrame(type, o.bytes());
}

std::vector<uint8_t> EncodeText(TrackdMsg type, const std::string& text) {
  Out o;
  o.Bytes(text.substr(0, 65536));
  return EncodeFrame(type, o.bytes());
}

std::vector<uint8_t> EncodeDevices(const std::vector<TrackdDevice>& devices) {
  Out o;
  o.Put<uint32_t>(static_cast<uint32_t>(devices.size()));
  for (const TrackdDevice& d : devices) {
    o.Put<uint32_t>(d.devid);
    o.Put<uint32_t>(d.disk);
    o.Put<uint32_t>(d.flags);
    o.Put<uint32_t>(static_cast<uint32_t>(d.path.size()));
    o.Bytes(d.path);
  }
  return EncodeFrame(TrackdMsg::kDevices, o.bytes());
}

std::vector<uint8_t> EncodeSnapshot(uint64_t nr_pfns, const std::vector<SnapshotEntry>& entries) {
  Out o;
  o.Put<uint64_t>(nr_pfns);
  o.Put<uint32_t>(static_cast<uint32_t>(entries.size()));
  for (const SnapshotEntry& e : entries) {
    o.Put<uint64_t>(e.pfn);
    o.Put<uint32_t>(e.addr.disk);
    o.Put<uint32_t>(0);
    o.Put<uint64_t>(e.addr.block);
    o.Put<uint64_t>(e.hash);
  }
  return EncodeFrame(TrackdMsg::kSnapshot, o.bytes());
}

std::vector<uint8_t> EncodeEvent(const IoEvent& ev) {
  Out o;
  o.Put<uint8_t>(ev.op == IoOp::kRead ? 0 : 1);
  o.Put<uint8_t>(0);
  o.Put<uint16_t>(0);
  o.Put<uint32_t>(ev.disk);
  o.Put<uint64_t>(ev.sector);
  o.Put<uint32_t>(static_cast<uint32_t>(ev.segments.size()));
  o.Put<uint32_t>(0);
  for (const IoSegment& s : ev.segments) {
    o.Put<uint64_t>(s.pfn);
    o.Put<uint8_t>(s.first_sect);
    o.Put<uint8_t>(s.last_sect);
    o.Put<uint16_t>(0);
    o.Put<uint32_t>(0);
    o.Put<uint64_t>(s.hash);
  }
  return EncodeFrame(TrackdMsg::kEvent, o.bytes());
}

uint32_t DecodeWatch(const Frame& f) {
  Expect(f, TrackdMsg::kWatch);
  In in(f);
  const uint32_t version = in.Get<uint32_t>();
  const uint32_t domid = in.Get<uint32_t>();
  in.End();
  if (version != kTrackdProtocolVersion) {
    Bad(fmt::format("client speaks version {}, this daemon {}", version, kTrackdProtocolVersion));
  }
  return domid;
}

uint64_t DecodeToken(const Frame& f) {
  In in(f);
  const uint64_t token = in.Get<uint64_t>();
  in.End();
  return token;
}

std::string DecodeText(const Frame& f) { return In(f).Text(f.payload.size()); }

std::vector<TrackdDevice> DecodeDevices(const Frame& f) {
  Expect(f, TrackdMsg::kDevices);
  In in(f);
  const uint32_t n = in.Get<uint32_t>();
  if (n > 4096) Bad(fmt::format("{} devices", n));
  std::vector<TrackdDevice> out(n);
  for (TrackdDevice& d : out) {
    d.devid = in.Get<uint32_t>();
    d.disk = in.Get<uint32_t>();
    d.flags = in.Get<uint32_t>();
    d.path = in.Text(in.Get<uint32_t>());
  }
  in.End();
  return out;
}

std::vector<SnapshotEntry> DecodeSnapshot(const Frame& f, uint64_t* nr_pfns) {
  Expect(f, TrackdMsg::kSnapshot);
  In in(f);
  *nr_pfns = in.Get<uint64_t>();
  const uint32_t n = in.Get<uint32_t>();
  in.Need(uint64_t{n} * 32);
  std::vector<SnapshotEntry> out(n);
  for (SnapshotEntry& e : out) {
    e.pfn = in.Get<uint64_t>();
    e.addr.disk = in.Get<uint32_t>();
    in.Get<uint32_t>();
    e.addr.block = in.Get<uint64_t>();
    e.hash = in.Get<uint64_t>();
  }
  in.End();
  return out;
}

IoEvent DecodeEvent(const Frame& f) {
  Expect(f, TrackdMsg::kEvent);
  In in(f);
  IoEvent ev;
  const uint8_t op = in.Get<uint8_t>();
  if (op > 1) Bad(fmt::format("event with operation {}", op));
  ev.op = op == 0 ? IoOp::kRead : IoOp::kWrite;
  in.Get<uint8_t>();
  in.Get<uint16_t>();
  ev.disk = in.Get<uint32_t>();
  ev.sector = in.Get<uint64_t>();
  const uint32_t n = in.Get<uint32_t>();
  in.Get<uint32_t>();
  if (n > kMaxEventSegments) Bad(fmt::format("event with {} segments", n));
  in.Need(uint64_t{n} * 24);
  ev.segments.resize(n);
  for (IoSegment& s : ev.segments) {
    s.pfn = in.Get<uint64_t>();
    s.first_sect = in.Get<uint8_t>();
    s.last_sect = in.Get<uint8_t>();
    in.Get<uint16_t>();
    in.Get<uint32_t>();
    s.hash = in.Get<uint64_t>();
  }
  in.End();
  return ev;
}

void FrameReader::Feed(const uint8_t* data, size_t len) {
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  buf_.insert(buf_.end(), data, data + len);
}

std::optional<Frame> FrameReader::Next() {
  if (buf_.size() - pos_ < 8) return std::nullopt;
  const uint8_t* p = buf_.data() + pos_;
  const uint32_t len = LoadLe<uint32_t>(p + 4);
  if (len > kMaxFramePayload) Bad(fmt::format("message of {} bytes", len));
  if (buf_.size() - pos_ < 8 + size_t{len}) return std::nullopt;
  Frame f;
  f.type = static_cast<TrackdMsg>(LoadLe<uint32_t>(p));
  f.payload.assign(p + 8, p + 8 + len);
  pos_ += 8 + size_t{len};
  if (pos_ >= (size_t{1} << 20)) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(pos_));
    pos_ = 0;
  }
  return f;
}

void WriteAllFd(int fd, const std::vector<uint8_t>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw Error(ErrorKind::kIo, fmt::format("write to p2bmig-trackd: {}", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
}

namespace {

// Reads exactly `len` bytes; false at end of stream before the first byte.
bool ReadExact(int fd, uint8_t* p, size_t len) {
  size_t done = 0;
  while (done < len) {
    const ssize_t n = read(fd, p + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw Error(ErrorKind::kIo, fmt::format("read from p2bmig-trackd: {}", std::strerror(errno)));
    }
    if (n == 0) {
      if (done == 0) return false;
      throw Error(ErrorKind::kIo, "p2bmig-trackd closed the connection in the middle of a message");
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

std::optional<Frame> ReadFrame(int fd) {
  uint8_t hdr[8];
  if (!ReadExact(fd, hdr, sizeof(hdr))) return std::nullopt;
  const uint32_t len = LoadLe<uint32_t>(hdr + 4);
  if (len > kMaxFramePayload) Bad(fmt::format("message of {} bytes", len));
  Frame f;
  f.type = static_cast<TrackdMsg>(LoadLe<uint32_t>(hdr));
  f.payload.resize(len);
  if (len > 0 && !ReadExact(fd, f.payload.data(), len)) {
    throw Error(ErrorKind::kIo, "p2bmig-trackd closed the connection in the middle of a message");
  }
  return f;
}

}  // namespace p2bmig
