// libFuzzer target for the stream reader and the record parsers. The input is
// a migration stream: headers, then records up to END or the first Error.
// Every record that the reader accepts is also parsed with the parser of its
// type. Besides crashes, leaks and UB, these are findings (abort):
//   * an exception other than p2bmig::Error;
//   * the accepted input not being canonical: writing back what was read
//     must give the bytes that were consumed (the reader checks every
//     reserved field and padding byte, so there is one encoding);
//   * a parser accepting a body that the matching builder does not rebuild
//     byte for byte.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <p2bmig/records.h>
#include <p2bmig/stream.h>

#include "fuzz_config.h"
#include "memory_byte_stream.h"

namespace p2bmig::fuzz {
namespace {

[[noreturn]] void Finding(const char* what) {
  std::fprintf(stderr, "FINDING: %s\n", what);
  std::abort();
}

void CheckRebuilt(const Record& record, const Record& rebuilt, const char* name) {
  if (rebuilt.type != record.type || rebuilt.body != record.body) Finding(name);
}

// Parses a record with its type's parser and rebuilds it from the result.
void ParseAndRebuild(const Record& record, const StreamLimits& limits) {
  switch (record.type) {
    case rec::kPageData: {
      PageDataView view = ParsePageData(record, limits);
      if (view.pages.size() != view.data_index.size()) Finding("PAGE_DATA: index size");
      PageDataBuilder builder;
      for (size_t i = 0; i < view.pages.size(); ++i) {
        const uint8_t* data = view.PageData(i);
        if ((data != nullptr) != PageTypeHasData(view.pages[i].type)) {
          Finding("PAGE_DATA: data presence does not follow the page type");
        }
        builder.Add(view.pages[i].pfn, view.pages[i].type, data);
      }
      CheckRebuilt(record, builder.Finish(), "PAGE_DATA does not rebuild");
      break;
    }
    case rec::kP2bPageMappings: {
      std::vector<PageMapping> m = ParsePageMappings(record, limits);
      if (m.empty() || m.size() > limits.max_batch_pages) Finding("P2B_PAGE_MAPPINGS: count");
      CheckRebuilt(record, MakePageMappings(m), "P2B_PAGE_MAPPINGS does not rebuild");
      break;
    }
    case rec::kP2bZeroPages: {
      std::vector<PageRef> z = ParseZeroPages(record, limits);
      if (z.empty() || z.size() > limits.max_batch_pages) Finding("P2B_ZERO_PAGES: count");
      CheckRebuilt(record, MakeZeroPages(z), "P2B_ZERO_PAGES does not rebuild");
      break;
    }
    case rec::kP2bDisks: {
      std::vector<uint64_t> d = ParseP2bDisks(record, limits);
      if (d.empty()) Finding("P2B_DISKS: no disks");
      CheckRebuilt(record, MakeP2bDisks(d), "P2B_DISKS does not rebuild");
      break;
    }
    default:
      (void)RecordTypeName(record.type);
      break;
  }
}

// Whether what `out` holds equals the first bytes `in` consumed.
void CheckCanonical(const uint8_t* data, const MemoryByteStream& in, const MemoryByteStream& out) {
  const std::vector<uint8_t>& w = out.written();
  if (w.size() != in.position() || std::memcmp(w.data(), data, w.size()) != 0) {
    Finding("what was read does not write back to the bytes consumed");
  }
}

void RunOne(const uint8_t* data, size_t size) {
  const StreamLimits limits = FuzzLimits();
  MemoryByteStream in(data, size);
  MemoryByteStream out;
  StreamReader reader(&in, limits);
  StreamWriter writer(&out);
  try {
    ImageHeader image;
    DomainHeader domain;
    reader.ReadHeaders(&image, &domain);
    writer.WriteHeaders(image, domain);
    CheckCanonical(data, in, out);
    Record record;
    do {
      reader.ReadRecord(&record);
      writer.WriteRecord(record);
      CheckCanonical(data, in, out);
      try {
        ParseAndRebuild(record, limits);
      } catch (const Error&) {
        // A record the parser rejects: an expected outcome; keep reading.
      }
    } while (record.type != rec::kEnd);
  } catch (const Error&) {
    // Malformed or truncated stream: an expected outcome.
  }
  if (reader.records_read() > size / 8) Finding("more records than 8-byte headers");
}

}  // namespace
}  // namespace p2bmig::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  p2bmig::fuzz::RunOne(data, size);
  return 0;
}
