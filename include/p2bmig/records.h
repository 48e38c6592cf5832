// The migration stream's records: Xen's libxc migration v2 framing (image
// header, domain header, 8-byte aligned records) and p2bmig's extension
// records. docs/stream-format.md is the specification; this header and
// src/stream/ follow it.
//
// Thread safety: value types and pure functions.

#ifndef P2BMIG_RECORDS_H_
#define P2BMIG_RECORDS_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <p2bmig/types.h>

namespace p2bmig {

// --- Image and domain headers (libxc-migration-stream, version 3) ---------

inline constexpr uint64_t kImageMarker = 0xFFFFFFFFFFFFFFFFull;
inline constexpr uint32_t kImageId = 0x58454E46;  // "XENF"
inline constexpr uint32_t kImageVersion = 3;

enum class DomainType : uint32_t { kX86Pv = 1, kX86Hvm = 2 };

struct ImageHeader {
  uint32_t version = kImageVersion;
  uint16_t options = 0;  // bit 0: big endian (never set: we are x86)
};

struct DomainHeader {
  DomainType type = DomainType::kX86Hvm;
  uint16_t page_shift = kPageShift;
  uint16_t xen_major = 4;
  uint16_t xen_minor = 17;
};

inline constexpr size_t kImageHeaderSize = 24;
inline constexpr size_t kDomainHeaderSize = 16;

// --- Records ---------------------------------------------------------------

namespace rec {
// libxc record types (docs/specs/libxc-migration-stream.pandoc).
inline constexpr uint32_t kEnd = 0x00000000;
inline constexpr uint32_t kPageData = 0x00000001;
inline constexpr uint32_t kX86PvInfo = 0x00000002;
inline constexpr uint32_t kX86PvP2mFrames = 0x00000003;
inline constexpr uint32_t kX86PvVcpuBasic = 0x00000004;
inline constexpr uint32_t kX86PvVcpuExtended = 0x00000005;
inline constexpr uint32_t kX86PvVcpuXsave = 0x00000006;
inline constexpr uint32_t kSharedInfo = 0x00000007;
inline constexpr uint32_t kX86TscInfo = 0x00000008;
inline constexpr uint32_t kHvmContext = 0x00000009;
inline constexpr uint32_t kHvmParams = 0x0000000A;
inline constexpr uint32_t kToolstack = 0x0000000B;
inline constexpr uint32_t kX86PvVcpuMsrs = 0x0000000C;
inline constexpr uint32_t kVerify = 0x0000000D;
inline constexpr uint32_t kCheckpoint = 0x0000000E;
inline constexpr uint32_t kCheckpointDirtyPfnList = 0x0000000F;
inline constexpr uint32_t kStaticDataEnd = 0x00000010;
inline constexpr uint32_t kX86CpuidPolicy = 0x00000011;
inline constexpr uint32_t kX86MsrPolicy = 0x00000012;

// p2bmig extension records. Bit 31 is clear: they are mandatory, so a
// restore that does not know them fails loudly instead of losing memory.
inline constexpr uint32_t kP2bDisks = 0x7FFF0000;
inline constexpr uint32_t kP2bPageMappings = 0x7FFF0001;
inline constexpr uint32_t kP2bZeroPages = 0x7FFF0002;
// Optional (bit 31 set): the source reads fetch credits on the connection's
// reverse direction. Body: {uint32 max_unfetched_mappings; uint32 reserved}.
inline constexpr uint32_t kP2bFetchCredits = 0xFFFF0003;
// Optional: the source offers lazy restore. It keeps the paused guest until
// the target reports every page present, and answers page requests on the
// same connection after END (docs/stream-format.md, section 4).
// Body: {uint32 flags (0); uint32 reserved}.
inline constexpr uint32_t kP2bLazyResume = 0xFFFF0004;

inline constexpr uint32_t kOptionalBit = 0x80000000;
}  // namespace rec

// Human-readable name of a record type ("PAGE_DATA", "P2B_PAGE_MAPPINGS", ...).
std::string RecordTypeName(uint32_t type);

// One record: its type and its body (length = body.size(), without padding).
struct Record {
  uint32_t type = rec::kEnd;
  std::vector<uint8_t> body;
};

// Limits a reader enforces on untrusted input.
struct StreamLimits {
  uint32_t max_record_length = 16u << 20;  // bytes of body
  uint32_t max_batch_pages = 4096;         // entries in one PAGE_DATA / extension record
};

// --- PAGE_DATA -------------------------------------------------------------

inline constexpr uint64_t kPfnMask = (uint64_t{1} << 52) - 1;
inline constexpr int kPageTypeShift = 60;
// Page types (XEN_DOMCTL_PFINFO_* >> 28), stored in bits 60..63.
namespace page_type {
inline constexpr uint32_t kNotab = 0x0;
inline constexpr uint32_t kL1tab = 0x1;
inline constexpr uint32_t kL4tab = 0x4;
inline constexpr uint32_t kBroken = 0xD;
inline constexpr uint32_t kXalloc = 0xE;
inline constexpr uint32_t kXtab = 0xF;
}  // namespace page_type

// True if pages of this type carry 4 KiB of data in PAGE_DATA.
bool PageTypeHasData(uint32_t type);

struct PageRef {
  Pfn pfn = 0;
  uint32_t type = page_type::kNotab;
};

// A parsed view of a PAGE_DATA record. Valid while the record lives.
struct PageDataView {
  std::vector<PageRef> pages;
  // data_index[i] is the index into `data` of pages[i]'s content, or -1.
  std::vector<int32_t> data_index;
  const uint8_t* data = nullptr;  // pages with data, 4 KiB each, in order

  const uint8_t* PageData(size_t i) const {
    return data_index[i] < 0 ? nullptr : data + size_t(data_index[i]) * kPageSize;
  }
};

// Parses and checks a PAGE_DATA body. Throws Error(kMalformedStream).
PageDataView ParsePageData(const Record& record, const StreamLimits& limits = {});

// Accumulates pages into PAGE_DATA records.
class PageDataBuilder {
 public:
  // REQUIRES: `data` is kPageSize bytes if the type has data, else nullptr.
  void Add(Pfn pfn, uint32_t type, const uint8_t* data);
  size_t count() const { return pfns_.size(); }
  bool empty() const { return pfns_.empty(); }
  // Builds the record and resets the builder.
  Record Finish();

 private:
  std::vector<uint64_t> pfns_;
  std::vector<uint8_t> data_;
};

// --- P2B_DISKS -------------------------------------------------------------

// The size in bytes of each of the domain's disks, in configuration order.
std::vector<uint64_t> ParseP2bDisks(const Record& record, const StreamLimits& limits = {});
Record MakeP2bDisks(std::span<const uint64_t> disk_sizes);

// --- P2B_PAGE_MAPPINGS -----------------------------------------------------

struct PageMapping {
  Pfn pfn = 0;
  uint32_t type = page_type::kNotab;
  BlockAddr addr;
  uint64_t hash = 0;  // PageHash of the page's content when it was sent
};
inline constexpr size_t kPageMappingSize = 32;

std::vector<PageMapping> ParsePageMappings(const Record& record, const StreamLimits& limits = {});
Record MakePageMappings(std::span<const PageMapping> mappings);

// --- P2B_ZERO_PAGES --------------------------------------------------------

std::vector<PageRef> ParseZeroPages(const Record& record, const StreamLimits& limits = {});
Record MakeZeroPages(std::span<const PageRef> pages);

}  // namespace p2bmig

#endif  // P2BMIG_RECORDS_H_
