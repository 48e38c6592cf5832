#include "sim/sim_restore.h"

#include <cstring>

#include <fmt/format.h>

namespace p2bmig::sim {

void SimRestore::WriteHeaders(const ImageHeader& image, const DomainHeader& domain) {
  if (domain.type != DomainType::kX86Hvm || domain.page_shift != kPageShift) {
    throw Error(ErrorKind::kMalformedStream, "the simulated host restores x86 HVM guests only");
  }
  headers_ = true;
}

void SimRestore::WriteRecord(const Record& record) {
  if (!headers_ || complete_) {
    throw Error(ErrorKind::kMalformedStream, "record outside a stream");
  }
  switch (record.type) {
    case rec::kPageData: {
      PageDataView view = ParsePageData(record);
      for (size_t i = 0; i < view.pages.size(); ++i) {
        const uint8_t* data = view.PageData(i);
        Pfn pfn = view.pages[i].pfn;
        if (data == nullptr) continue;
        if (pfn >= memory_->nr_pages()) {
          throw Error(
              ErrorKind::kMalformedStream,
              fmt::format("pfn {:#x} beyond the guest's {} pages", pfn, memory_->nr_pages()));
        }
        if (verify_) {
          ++pages_verified_;
          if (std::memcmp(memory_->page(pfn), data, kPageSize) != 0) ++verify_mismatches_;
        } else {
          std::memcpy(memory_->page(pfn), data, kPageSize);
          ++pages_written_;
        }
      }
      return;
    }
    case rec::kVerify:
      verify_ = true;
      return;
    case rec::kEnd:
      complete_ = true;
      return;
    case rec::kX86TscInfo:
    case rec::kHvmContext:
    case rec::kHvmParams:
    case rec::kX86CpuidPolicy:
    case rec::kX86MsrPolicy:
    case rec::kStaticDataEnd:
    case rec::kCheckpoint:
      return;
    default:
      if (record.type & rec::kOptionalBit) return;
      throw Error(
          ErrorKind::kMalformedStream,
          fmt::format("invalid record type {:#x} ({})", record.type, RecordTypeName(record.type)));
  }
}

}  // namespace p2bmig::sim
