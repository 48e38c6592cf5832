// Record bodies: PAGE_DATA and p2bmig's extension records, built and parsed
// with every length, count and reserved field checked (docs/stream-format.md).

#include <bit>
#include <cstring>

#include <fmt/format.h>

#include <p2bmig/records.h>

#include "stream/wire.h"

namespace p2bmig {

static_assert(std::endian::native == std::endian::little,
              "the stream is little-endian and read with plain copies");

namespace {

// Disk indices a P2B_DISKS record may describe (the p2b map keeps 8 bits).
constexpr uint32_t kMaxStreamDisks = 256;
constexpr uint64_t kPfnReservedMask = ((uint64_t{1} << kPageTypeShift) - 1) & ~kPfnMask;

template <typename T>
void Append(std::vector<uint8_t>* out, T v) {
  const size_t at = out->size();
  out->resize(at + sizeof(v));
  std::memcpy(out->data() + at, &v, sizeof(v));
}

// Checks the {uint32 count; uint32 reserved} head shared by PAGE_DATA and the
// extension records and that the body is exactly head + count * entry_size.
uint32_t CheckCountedBody(const Record& record, const char* name, size_t entry_size,
                          uint32_t max_count) {
  const auto& b = record.body;
  if (b.size() < 8)
    wire::Malformed(fmt::format("{}: body of {} bytes, need at least 8", name, b.size()));
  const uint32_t count = wire::LoadLe<uint32_t>(b.data());
  const uint32_t reserved = wire::LoadLe<uint32_t>(b.data() + 4);
  if (reserved != 0)
    wire::Malformed(fmt::format("{}: reserved field is {:#x}, must be 0", name, reserved));
  if (count == 0) wire::Malformed(fmt::format("{}: count is 0", name));
  if (count > max_count)
    wire::Malformed(fmt::format("{}: count {} exceeds the limit {}", name, count, max_count));
  if (entry_size != 0 && b.size() != 8 + uint64_t{count} * entry_size) {
    wire::Malformed(fmt::format("{}: length {} does not match count {} (expected {})", name,
                                b.size(), count, 8 + uint64_t{count} * entry_size));
  }
  return count;
}

bool ValidPageType(uint32_t type) { return type <= 4 || (type >= 9 && type <= 0xF); }

// Splits a pfn word (pfn | type << 60) and checks its reserved bits and type.
PageRef CheckPfnWord(uint64_t word, const char* name, size_t index) {
  if (word & kPfnReservedMask) {
    wire::Malformed(fmt::format("{}: reserved bits set in pfn[{}]: {:#018x}", name, index, word));
  }
  PageRef ref{word & kPfnMask, static_cast<uint32_t>(word >> kPageTypeShift)};
  if (!ValidPageType(ref.type)) {
    wire::Malformed(fmt::format("{}: invalid page type {:#x} in pfn[{}]", name, ref.type, index));
  }
  return ref;
}

uint64_t PfnWord(Pfn pfn, uint32_t type) {
  return (pfn & kPfnMask) | (uint64_t{type & 0xF} << kPageTypeShift);
}

Record CountedRecord(uint32_t type, uint32_t count, size_t payload) {
  Record r;
  r.type = type;
  r.body.reserve(8 + payload);
  Append<uint32_t>(&r.body, count);
  Append<uint32_t>(&r.body, 0);
  return r;
}

}  // namespace

std::string RecordTypeName(uint32_t type) {
  switch (type) {
    case rec::kEnd:
      return "END";
    case rec::kPageData:
      return "PAGE_DATA";
    case rec::kX86PvInfo:
      return "X86_PV_INFO";
    case rec::kX86PvP2mFrames:
      return "X86_PV_P2M_FRAMES";
    case rec::kX86PvVcpuBasic:
      return "X86_PV_VCPU_BASIC";
    case rec::kX86PvVcpuExtended:
      return "X86_PV_VCPU_EXTENDED";
    case rec::kX86PvVcpuXsave:
      return "X86_PV_VCPU_XSAVE";
    case rec::kSharedInfo:
      return "SHARED_INFO";
    case rec::kX86TscInfo:
      return "X86_TSC_INFO";
    case rec::kHvmContext:
      return "HVM_CONTEXT";
    case rec::kHvmParams:
      return "HVM_PARAMS";
    case rec::kToolstack:
      return "TOOLSTACK";
    case rec::kX86PvVcpuMsrs:
      return "X86_PV_VCPU_MSRS";
    case rec::kVerify:
      return "VERIFY";
    case rec::kCheckpoint:
      return "CHECKPOINT";
    case rec::kCheckpointDirtyPfnList:
      return "CHECKPOINT_DIRTY_PFN_LIST";
    case rec::kStaticDataEnd:
      return "STATIC_DATA_END";
    case rec::kX86CpuidPolicy:
      return "X86_CPUID_POLICY";
    case rec::kX86MsrPolicy:
      return "X86_MSR_POLICY";
    case rec::kP2bDisks:
      return "P2B_DISKS";
    case rec::kP2bPageMappings:
      return "P2B_PAGE_MAPPINGS";
    case rec::kP2bZeroPages:
      return "P2B_ZERO_PAGES";
    case rec::kP2bFetchCredits:
      return "P2B_FETCH_CREDITS";
    case rec::kP2bLazyResume:
      return "P2B_LAZY_RESUME";
    default:
      return fmt::format("UNKNOWN_{:#010x}", type);
  }
}

// As Xen's verify-stream-v2: NOTAB and L1..L4 tables, pinned (bit 3) or not,
// carry data; BROKEN, XALLOC and XTAB do not; 5..8 are invalid.
bool PageTypeHasData(uint32_t type) { return ValidPageType(type) && (type & 0x7) <= 4; }

// --- PAGE_DATA -------------------------------------------------------------

PageDataView ParsePageData(const Record& record, const StreamLimits& limits) {
  const char* name = "PAGE_DATA";
  if (record.type != rec::kPageData) wire::Malformed("PAGE_DATA: wrong record type");
  const uint32_t count = CheckCountedBody(record, name, 0, limits.max_batch_pages);
  const auto& b = record.body;
  if (b.size() < 8 + uint64_t{count} * 8) {
    wire::Malformed(fmt::format("PAGE_DATA: length {} too short for {} pfns", b.size(), count));
  }
  PageDataView view;
  view.pages.reserve(count);
  view.data_index.reserve(count);
  int32_t with_data = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const PageRef ref = CheckPfnWord(wire::LoadLe<uint64_t>(b.data() + 8 + 8 * size_t{i}), name, i);
    view.pages.push_back(ref);
    view.data_index.push_back(PageTypeHasData(ref.type) ? with_data++ : -1);
  }
  const uint64_t expected = 8 + uint64_t{count} * 8 + uint64_t(with_data) * kPageSize;
  if (b.size() != expected) {
    wire::Malformed(
        fmt::format("PAGE_DATA: length {}, expected {} for {} pfns of which {} with data", b.size(),
                    expected, count, with_data));
  }
  view.data = b.data() + 8 + size_t{count} * 8;
  return view;
}

void PageDataBuilder::Add(Pfn pfn, uint32_t type, const uint8_t* data) {
  pfns_.push_back(PfnWord(pfn, type));
  if (PageTypeHasData(type)) data_.insert(data_.end(), data, data + kPageSize);
}

Record PageDataBuilder::Finish() {
  Record r = CountedRecord(rec::kPageData, static_cast<uint32_t>(pfns_.size()),
                           pfns_.size() * 8 + data_.size());
  for (uint64_t w : pfns_) Append<uint64_t>(&r.body, w);
  r.body.insert(r.body.end(), data_.begin(), data_.end());
  pfns_.clear();
  data_.clear();
  return r;
}

// --- P2B_DISKS -------------------------------------------------------------

std::vector<uint64_t> ParseP2bDisks(const Record& record, const StreamLimits& limits) {
  if (record.type != rec::kP2bDisks) wire::Malformed("P2B_DISKS: wrong record type");
  const uint32_t n = CheckCountedBody(record, "P2B_DISKS", 8, kMaxStreamDisks);
  std::vector<uint64_t> sizes(n);
  for (uint32_t i = 0; i < n; ++i)
    sizes[i] = wire::LoadLe<uint64_t>(record.body.data() + 8 + 8 * size_t{i});
  return sizes;
}

Record MakeP2bDisks(std::span<const uint64_t> disk_sizes) {
  Record r = CountedRecord(rec::kP2bDisks, static_cast<uint32_t>(disk_sizes.size()),
                           disk_sizes.size() * 8);
  for (uint64_t s : disk_sizes) Append<uint64_t>(&r.body, s);
  return r;
}

// --- P2B_PAGE_MAPPINGS -----------------------------------------------------

std::vector<PageMapping> ParsePageMappings(const Record& record, const StreamLimits& limits) {
  const char* name = "P2B_PAGE_MAPPINGS";
  if (record.type != rec::kP2bPageMappings) wire::Malformed("P2B_PAGE_MAPPINGS: wrong record type");
  const uint32_t n = CheckCountedBody(record, name, kPageMappingSize, limits.max_batch_pages);
  std::vector<PageMapping> out(n);
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* e = record.body.data() + 8 + kPageMappingSize * size_t{i};
    const PageRef ref = CheckPfnWord(wire::LoadLe<uint64_t>(e), name, i);
    if (!PageTypeHasData(ref.type)) {
      wire::Malformed(fmt::format("{}: entry {} has page type {:#x}, which carries no data", name,
                                  i, ref.type));
    }
    const uint32_t reserved = wire::LoadLe<uint32_t>(e + 28);
    if (reserved != 0) {
      wire::Malformed(
          fmt::format("{}: reserved field of entry {} is {:#x}, must be 0", name, i, reserved));
    }
    out[i].pfn = ref.pfn;
    out[i].type = ref.type;
    out[i].addr.block = wire::LoadLe<uint64_t>(e + 8);
    out[i].hash = wire::LoadLe<uint64_t>(e + 16);
    out[i].addr.disk = wire::LoadLe<uint32_t>(e + 24);
  }
  return out;
}

Record MakePageMappings(std::span<const PageMapping> mappings) {
  Record r = CountedRecord(rec::kP2bPageMappings, static_cast<uint32_t>(mappings.size()),
                           mappings.size() * kPageMappingSize);
  for (const PageMapping& m : mappings) {
    Append<uint64_t>(&r.body, PfnWord(m.pfn, m.type));
    Append<uint64_t>(&r.body, m.addr.block);
    Append<uint64_t>(&r.body, m.hash);
    Append<uint32_t>(&r.body, m.addr.disk);
    Append<uint32_t>(&r.body, 0);
  }
  return r;
}

// --- P2B_ZERO_PAGES --------------------------------------------------------

std::vector<PageRef> ParseZeroPages(const Record& record, const StreamLimits& limits) {
  const char* name = "P2B_ZERO_PAGES";
  if (record.type != rec::kP2bZeroPages) wire::Malformed("P2B_ZERO_PAGES: wrong record type");
  const uint32_t n = CheckCountedBody(record, name, 8, limits.max_batch_pages);
  std::vector<PageRef> out(n);
  for (uint32_t i = 0; i < n; ++i) {
    out[i] = CheckPfnWord(wire::LoadLe<uint64_t>(record.body.data() + 8 + 8 * size_t{i}), name, i);
    if (!PageTypeHasData(out[i].type)) {
      wire::Malformed(fmt::format("{}: entry {} has page type {:#x}, which carries no data", name,
                                  i, out[i].type));
    }
  }
  return out;
}

Record MakeZeroPages(std::span<const PageRef> pages) {
  Record r =
      CountedRecord(rec::kP2bZeroPages, static_cast<uint32_t>(pages.size()), pages.size() * 8);
  for (const PageRef& p : pages) Append<uint64_t>(&r.body, PfnWord(p.pfn, p.type));
  return r;
}

}  // namespace p2bmig
