#include "stream/inspect.h"

#include <map>
#include <unordered_set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <p2bmig/records.h>
#include <p2bmig/stream.h>

namespace p2bmig {

namespace {

// Counts the bytes read through it, so that errors can name their offset
// whatever `in` counts itself.
using CountingStream = ByteStreamWrapper;

struct TypeStats {
  uint64_t count = 0;
  uint64_t bytes = 0;  // on the wire: header, body and padding
};

struct Summary {
  ImageHeader image;
  DomainHeader domain;
  std::map<uint32_t, TypeStats> types;
  uint64_t records = 0;
  uint64_t total_bytes = 0;
  uint64_t pages_data = 0;
  uint64_t pages_no_data = 0;  // PAGE_DATA entries without content (XTAB...)
  uint64_t pages_mapped = 0;
  uint64_t pages_zero = 0;
  uint64_t disks = 0;
  std::unordered_set<Pfn> pfns;
};

void Account(const Record& r, const StreamLimits& limits, Summary* s) {
  switch (r.type) {
    case rec::kPageData: {
      const PageDataView v = ParsePageData(r, limits);
      for (size_t i = 0; i < v.pages.size(); ++i) {
        ++(v.data_index[i] >= 0 ? s->pages_data : s->pages_no_data);
        s->pfns.insert(v.pages[i].pfn);
      }
      break;
    }
    case rec::kP2bPageMappings:
      for (const PageMapping& m : ParsePageMappings(r, limits)) {
        ++s->pages_mapped;
        s->pfns.insert(m.pfn);
      }
      break;
    case rec::kP2bZeroPages:
      for (const PageRef& p : ParseZeroPages(r, limits)) {
        ++s->pages_zero;
        s->pfns.insert(p.pfn);
      }
      break;
    case rec::kP2bDisks:
      s->disks = ParseP2bDisks(r, limits).size();
      break;
    case rec::kEnd:
      if (!r.body.empty()) {
        throw Error(ErrorKind::kMalformedStream, "END record with a non-empty body");
      }
      break;
    default:
      break;
  }
}

const char* DomainTypeName(DomainType t) { return t == DomainType::kX86Pv ? "x86 PV" : "x86 HVM"; }

void PrintText(const Summary& s, std::ostream& out) {
  out << fmt::format("image header: version {}, options {:#x}\n", s.image.version, s.image.options);
  out << fmt::format("domain header: {}, page shift {}, Xen {}.{}\n", DomainTypeName(s.domain.type),
                     s.domain.page_shift, s.domain.xen_major, s.domain.xen_minor);
  out << fmt::format("records: {} in {} bytes\n", s.records, s.total_bytes);
  for (const auto& [type, st] : s.types) {
    out << fmt::format("  {:<28} {:>10} records {:>14} bytes\n", RecordTypeName(type), st.count,
                       st.bytes);
  }
  out << fmt::format("pages: {} data, {} mapped, {} zero, {} without data\n", s.pages_data,
                     s.pages_mapped, s.pages_zero, s.pages_no_data);
  if (s.disks > 0) out << fmt::format("disks: {}\n", s.disks);
  out << fmt::format("distinct pfns: {}\n", s.pfns.size());
  out << "stream OK\n";
}

void PrintJson(const Summary& s, std::ostream& out) {
  nlohmann::json j;
  j["image"] = {{"version", s.image.version}, {"options", s.image.options}};
  j["domain"] = {{"type", DomainTypeName(s.domain.type)},
                 {"page_shift", s.domain.page_shift},
                 {"xen_major", s.domain.xen_major},
                 {"xen_minor", s.domain.xen_minor}};
  nlohmann::json types = nlohmann::json::object();
  for (const auto& [type, st] : s.types) {
    types[RecordTypeName(type)] = {{"count", st.count}, {"bytes", st.bytes}};
  }
  j["records"] = types;
  j["record_count"] = s.records;
  j["total_bytes"] = s.total_bytes;
  j["pages"] = {{"data", s.pages_data},
                {"mapped", s.pages_mapped},
                {"zero", s.pages_zero},
                {"no_data", s.pages_no_data}};
  j["disks"] = s.disks;
  j["distinct_pfns"] = s.pfns.size();
  j["ok"] = true;
  out << j.dump(2) << "\n";
}

}  // namespace

void InspectStream(ByteStream* in, std::ostream& out, bool json) {
  CountingStream counted(in);
  StreamReader reader(&counted);
  Summary s;
  try {
    reader.ReadHeaders(&s.image, &s.domain);
  } catch (const Error& e) {
    throw Error(e.kind(), fmt::format("stream headers at byte offset 0: {}", e.what()));
  }
  Record r;
  do {
    const uint64_t offset = counted.bytes_read();
    try {
      reader.ReadRecord(&r);
      Account(r, reader.limits(), &s);
    } catch (const Error& e) {
      throw Error(e.kind(),
                  fmt::format("record {} at byte offset {}: {}", s.records, offset, e.what()));
    }
    TypeStats& st = s.types[r.type];
    ++st.count;
    st.bytes += counted.bytes_read() - offset;
    ++s.records;
  } while (r.type != rec::kEnd);
  s.total_bytes = counted.bytes_read();
  if (json) {
    PrintJson(s, out);
  } else {
    PrintText(s, out);
  }
}

}  // namespace p2bmig
