// Framing of a migration v2 stream: the big-endian image header, the
// little-endian domain header, and records padded to 8 bytes.

#include <array>
#include <cstring>

#include <fmt/format.h>

#include <p2bmig/stream.h>

#include "stream/wire.h"

namespace p2bmig {

using wire::LoadBe;
using wire::LoadLe;
using wire::Malformed;
using wire::StoreBe;
using wire::StoreLe;

namespace {

constexpr size_t kRecordHeaderSize = 8;
constexpr size_t kAlign = 8;
constexpr uint16_t kOptionBigEndian = 0x1;

size_t PaddingOf(size_t length) { return (kAlign - length % kAlign) % kAlign; }

}  // namespace

StreamReader::StreamReader(ByteStream* in, StreamLimits limits) : in_(in), limits_(limits) {}

void StreamReader::ReadHeaders(ImageHeader* image, DomainHeader* domain) {
  // Image header, network byte order: "!QIIHHI".
  std::array<uint8_t, kImageHeaderSize> ih;
  in_->ReadExact(ih.data(), ih.size());
  const uint64_t marker = LoadBe<uint64_t>(&ih[0]);
  const uint32_t id = LoadBe<uint32_t>(&ih[8]);
  const uint32_t version = LoadBe<uint32_t>(&ih[12]);
  const uint16_t options = LoadBe<uint16_t>(&ih[16]);
  const uint16_t res1 = LoadBe<uint16_t>(&ih[18]);
  const uint32_t res2 = LoadBe<uint32_t>(&ih[20]);
  if (marker != kImageMarker) Malformed(fmt::format("bad image marker {:#018x}", marker));
  if (id != kImageId) Malformed(fmt::format("bad image id {:#010x}, expected \"XENF\"", id));
  if (version < 2 || version > 3) {
    Malformed(fmt::format("unsupported image version {} (2 or 3 expected)", version));
  }
  if (options & ~kOptionBigEndian) {
    Malformed(fmt::format("reserved bits set in image options: {:#06x}", options));
  }
  if (options & kOptionBigEndian) Malformed("big-endian streams are not supported");
  if (res1 != 0 || res2 != 0) Malformed("reserved fields set in image header");
  image->version = version;
  image->options = options;

  // Domain header, little-endian: {u32 type; u16 page_shift; u16 reserved;
  // u32 xen_major; u32 xen_minor}.
  std::array<uint8_t, kDomainHeaderSize> dh;
  in_->ReadExact(dh.data(), dh.size());
  const uint32_t type = LoadLe<uint32_t>(&dh[0]);
  const uint16_t page_shift = LoadLe<uint16_t>(&dh[4]);
  const uint16_t res3 = LoadLe<uint16_t>(&dh[6]);
  const uint32_t major = LoadLe<uint32_t>(&dh[8]);
  const uint32_t minor = LoadLe<uint32_t>(&dh[12]);
  if (type != static_cast<uint32_t>(DomainType::kX86Pv) &&
      type != static_cast<uint32_t>(DomainType::kX86Hvm)) {
    Malformed(fmt::format("unknown domain type {:#x}", type));
  }
  if (page_shift != kPageShift) Malformed(fmt::format("page shift {}, expected 12", page_shift));
  if (res3 != 0) Malformed("reserved field set in domain header");
  if (major > 0xFFFF || minor > 0xFFFF) {
    Malformed(fmt::format("implausible Xen version {}.{}", major, minor));
  }
  domain->type = static_cast<DomainType>(type);
  domain->page_shift = page_shift;
  domain->xen_major = static_cast<uint16_t>(major);
  domain->xen_minor = static_cast<uint16_t>(minor);
}

void StreamReader::ReadRecord(Record* record) {
  std::array<uint8_t, kRecordHeaderSize> rh;
  in_->ReadExact(rh.data(), rh.size());
  const uint32_t type = LoadLe<uint32_t>(&rh[0]);
  const uint32_t length = LoadLe<uint32_t>(&rh[4]);
  if (length > limits_.max_record_length) {
    Malformed(fmt::format("record {} ({}): length {} exceeds the limit {}", records_read_,
                          RecordTypeName(type), length, limits_.max_record_length));
  }
  record->type = type;
  record->body.resize(length);
  if (length > 0) in_->ReadExact(record->body.data(), length);
  const size_t pad = PaddingOf(length);
  if (pad > 0) {
    std::array<uint8_t, kAlign> padding{};
    in_->ReadExact(padding.data(), pad);
    for (size_t i = 0; i < pad; ++i) {
      if (padding[i] != 0) {
        Malformed(
            fmt::format("record {} ({}): non-zero padding", records_read_, RecordTypeName(type)));
      }
    }
  }
  ++records_read_;
}

void StreamWriter::WriteHeaders(const ImageHeader& image, const DomainHeader& domain) {
  std::array<uint8_t, kImageHeaderSize + kDomainHeaderSize> h{};
  StoreBe<uint64_t>(&h[0], kImageMarker);
  StoreBe<uint32_t>(&h[8], kImageId);
  StoreBe<uint32_t>(&h[12], image.version);
  StoreBe<uint16_t>(&h[16], image.options);
  uint8_t* d = &h[kImageHeaderSize];
  StoreLe<uint32_t>(d + 0, static_cast<uint32_t>(domain.type));
  StoreLe<uint16_t>(d + 4, domain.page_shift);
  StoreLe<uint32_t>(d + 8, domain.xen_major);
  StoreLe<uint32_t>(d + 12, domain.xen_minor);
  out_->WriteAll(h.data(), h.size());
}

void StreamWriter::WriteRecord(const Record& record) {
  if (record.body.size() > UINT32_MAX) {
    throw Error(ErrorKind::kInternal, fmt::format("record {} of {} bytes is too long",
                                                  RecordTypeName(record.type), record.body.size()));
  }
  std::array<uint8_t, kRecordHeaderSize> rh;
  StoreLe<uint32_t>(&rh[0], record.type);
  StoreLe<uint32_t>(&rh[4], static_cast<uint32_t>(record.body.size()));
  out_->WriteAll(rh.data(), rh.size());
  if (!record.body.empty()) out_->WriteAll(record.body.data(), record.body.size());
  const size_t pad = PaddingOf(record.body.size());
  if (pad > 0) {
    static constexpr std::array<uint8_t, kAlign> kZeros{};
    out_->WriteAll(kZeros.data(), pad);
  }
  if (record.type == rec::kEnd) out_->Flush();
}

uint64_t Pump(StreamReader* reader, RecordSink* sink) {
  ImageHeader image;
  DomainHeader domain;
  reader->ReadHeaders(&image, &domain);
  sink->WriteHeaders(image, domain);
  uint64_t n = 0;
  Record record;
  do {
    reader->ReadRecord(&record);
    sink->WriteRecord(record);
    ++n;
  } while (record.type != rec::kEnd);
  return n;
}

}  // namespace p2bmig
