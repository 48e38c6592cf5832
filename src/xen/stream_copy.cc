// Framing-aware and plain byte copies for the wrapper helper.

#include "xen/stream_copy.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <p2bmig/records.h>

namespace p2bmig {

namespace {

constexpr size_t kChunk = 64 * 1024;
constexpr size_t kRecordHeaderSize = 8;

void CopyExact(ByteStream* in, ByteStream* out, uint64_t len, std::vector<uint8_t>* buf,
               CopyStats* stats) {
  while (len > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(len, buf->size()));
    in->ReadExact(buf->data(), n);
    out->WriteAll(buf->data(), n);
    len -= n;
    stats->bytes += n;
  }
}

}  // namespace

CopyStats CopyLibxcStream(ByteStream* in, ByteStream* out) {
  CopyStats stats;
  std::vector<uint8_t> buf(kChunk);
  CopyExact(in, out, kImageHeaderSize + kDomainHeaderSize, &buf, &stats);
  for (;;) {
    uint8_t rh[kRecordHeaderSize];
    in->ReadExact(rh, sizeof(rh));
    out->WriteAll(rh, sizeof(rh));
    stats.bytes += sizeof(rh);
    uint32_t type;
    uint32_t length;
    std::memcpy(&type, rh, 4);  // little-endian, as the stream (x86 only)
    std::memcpy(&length, rh + 4, 4);
    const uint64_t padded = (uint64_t{length} + 7) & ~uint64_t{7};
    CopyExact(in, out, padded, &buf, &stats);
    ++stats.records;
    if (type == rec::kEnd) break;
  }
  out->Flush();
  return stats;
}

uint64_t CopyToEnd(ByteStream* in, ByteStream* out) {
  std::vector<uint8_t> buf(kChunk);
  uint64_t total = 0;
  for (;;) {
    const size_t n = in->ReadSome(buf.data(), buf.size());
    if (n == 0) break;
    out->WriteAll(buf.data(), n);
    total += n;
  }
  out->Flush();
  return total;
}

}  // namespace p2bmig
