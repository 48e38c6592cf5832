// Tests of the stream framing (StreamReader/Writer, Pump), the record bodies
// (PAGE_DATA and the p2bmig records), InspectStream, and conformance with
// Xen's own verify-stream-v2.

#include <cstdio>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <p2bmig/records.h>
#include <p2bmig/stream.h>

#include "stream/inspect.h"
#include "test_util/memory_stream.h"
#include "test_util/verify_stream.h"

namespace p2bmig {
namespace {

using test::MemoryStream;

template <typename T>
void Put(std::vector<uint8_t>* b, size_t at, T v) {
  std::memcpy(b->data() + at, &v, sizeof(v));
}

std::vector<uint8_t> Page(uint8_t fill) { return std::vector<uint8_t>(kPageSize, fill); }

uint64_t PfnWord(Pfn pfn, uint32_t type) { return pfn | (uint64_t{type} << kPageTypeShift); }

// Expects `fn` to throw Error of `kind` whose message contains `needle`.
void ExpectError(const std::function<void()>& fn, ErrorKind kind, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error, expected one containing \"" << needle << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

std::vector<uint8_t> Headers(ImageHeader ih = {}, DomainHeader dh = {}) {
  MemoryStream m;
  StreamWriter w(&m);
  w.WriteHeaders(ih, dh);
  return m.data();
}

Record MakeRecord(uint32_t type, std::vector<uint8_t> body) {
  Record r;
  r.type = type;
  r.body = std::move(body);
  return r;
}

// --- Framing ----------------------------------------------------------------

TEST(StreamTest, HeaderWireFormat) {
  DomainHeader dh;
  dh.type = DomainType::kX86Hvm;
  dh.xen_major = 4;
  dh.xen_minor = 17;
  const auto b = Headers({}, dh);
  ASSERT_EQ(b.size(), kImageHeaderSize + kDomainHeaderSize);
  const std::vector<uint8_t> expected = {
      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,  // marker
      'X',  'E',  'N',  'F',                           // id, big endian
      0,    0,    0,    3,                             // version 3
      0,    0,    0,    0,    0,    0,    0,    0,     // options, reserved
      2,    0,    0,    0,                             // HVM, little endian
      12,   0,    0,    0,                             // page shift, reserved
      4,    0,    0,    0,    17,   0,    0,    0,     // Xen 4.17, u32 each
  };
  EXPECT_EQ(b, expected);
}

TEST(StreamTest, HeadersRoundTrip) {
  for (auto [type, version] : {std::pair{DomainType::kX86Hvm, 3u}, {DomainType::kX86Pv, 2u}}) {
    ImageHeader ih;
    ih.version = version;
    DomainHeader dh;
    dh.type = type;
    dh.xen_major = 4;
    dh.xen_minor = 13;
    MemoryStream m(Headers(ih, dh));
    StreamReader r(&m);
    ImageHeader ih2;
    DomainHeader dh2;
    r.ReadHeaders(&ih2, &dh2);
    EXPECT_EQ(ih2.version, version);
    EXPECT_EQ(ih2.options, 0);
    EXPECT_EQ(dh2.type, type);
    EXPECT_EQ(dh2.page_shift, 12);
    EXPECT_EQ(dh2.xen_major, 4);
    EXPECT_EQ(dh2.xen_minor, 13);
    EXPECT_EQ(m.remaining(), 0u);
  }
}

TEST(StreamTest, RecordsRoundTripWithPadding) {
  MemoryStream m;
  StreamWriter w(&m);
  std::vector<Record> records;
  for (uint32_t len = 0; len <= 17; ++len) {
    std::vector<uint8_t> body(len);
    for (uint32_t i = 0; i < len; ++i) body[i] = static_cast<uint8_t>(0xA0 + i);
    records.push_back(MakeRecord(0x100 + len, body));
  }
  size_t expected_size = 0;
  for (const auto& r : records) {
    w.WriteRecord(r);
    expected_size += 8 + (r.body.size() + 7) / 8 * 8;
    EXPECT_EQ(m.data().size(), expected_size);  // header + body + padding
  }
  // Padding bytes are zero: the 1-byte record, after the 8 bytes of the
  // empty one, is {hdr, A0, 0 x 7}.
  const size_t one = 8;
  EXPECT_EQ(m.data()[one + 8], 0xA0);
  for (size_t i = 1; i < 8; ++i) EXPECT_EQ(m.data()[one + 8 + i], 0) << i;

  StreamReader r(&m);
  for (const auto& want : records) {
    Record got;
    r.ReadRecord(&got);
    EXPECT_EQ(got.type, want.type);
    EXPECT_EQ(got.body, want.body);
  }
  EXPECT_EQ(r.records_read(), records.size());
  EXPECT_EQ(m.remaining(), 0u);
}

TEST(StreamTest, RejectsBadImageHeaders) {
  auto expect_bad = [](std::function<void(std::vector<uint8_t>*)> corrupt, const char* needle) {
    auto b = Headers();
    corrupt(&b);
    MemoryStream m(b);
    StreamReader r(&m);
    ImageHeader ih;
    DomainHeader dh;
    ExpectError([&] { r.ReadHeaders(&ih, &dh); }, ErrorKind::kMalformedStream, needle);
  };
  expect_bad([](auto* b) { (*b)[3] = 0xFE; }, "marker");
  expect_bad([](auto* b) { (*b)[8] = 'Y'; }, "image id");
  expect_bad([](auto* b) { (*b)[15] = 1; }, "version 1");
  expect_bad([](auto* b) { (*b)[15] = 4; }, "version 4");
  expect_bad([](auto* b) { (*b)[12] = 1; }, "version");
  expect_bad([](auto* b) { (*b)[17] = 1; }, "big-endian");
  expect_bad([](auto* b) { (*b)[17] = 2; }, "options");
  expect_bad([](auto* b) { (*b)[16] = 0x80; }, "options");
  expect_bad([](auto* b) { (*b)[19] = 1; }, "reserved");
  expect_bad([](auto* b) { (*b)[23] = 1; }, "reserved");
  // Domain header.
  expect_bad([](auto* b) { (*b)[24] = 3; }, "domain type");
  expect_bad([](auto* b) { (*b)[24] = 0; }, "domain type");
  expect_bad([](auto* b) { (*b)[28] = 13; }, "page shift");
  expect_bad([](auto* b) { (*b)[30] = 1; }, "reserved");
  expect_bad([](auto* b) { (*b)[34] = 1; }, "Xen version");
}

TEST(StreamTest, AcceptsVersion2) {
  auto b = Headers();
  b[15] = 2;
  MemoryStream m(b);
  StreamReader r(&m);
  ImageHeader ih;
  DomainHeader dh;
  r.ReadHeaders(&ih, &dh);
  EXPECT_EQ(ih.version, 2u);
}

TEST(StreamTest, RejectsNonZeroPadding) {
  MemoryStream m;
  StreamWriter(&m).WriteRecord(MakeRecord(rec::kHvmContext, {1, 2, 3}));
  m.data()[8 + 5] = 1;  // the third padding byte
  StreamReader r(&m);
  Record rec;
  ExpectError([&] { r.ReadRecord(&rec); }, ErrorKind::kMalformedStream, "padding");
}

TEST(StreamTest, RejectsOversizeRecord) {
  StreamLimits limits;
  limits.max_record_length = 1024;
  MemoryStream m;
  StreamWriter w(&m);
  w.WriteRecord(MakeRecord(rec::kHvmContext, std::vector<uint8_t>(1024, 1)));  // at the limit
  w.WriteRecord(MakeRecord(rec::kHvmContext, std::vector<uint8_t>(1025, 1)));
  StreamReader r(&m, limits);
  Record rec;
  r.ReadRecord(&rec);
  EXPECT_EQ(rec.body.size(), 1024u);
  ExpectError([&] { r.ReadRecord(&rec); }, ErrorKind::kMalformedStream, "exceeds the limit");

  // A length field near 4 GiB is refused before any allocation.
  std::vector<uint8_t> huge(8);
  Put<uint32_t>(&huge, 0, rec::kPageData);
  Put<uint32_t>(&huge, 4, 0xFFFFFFF0u);
  MemoryStream m2(huge);
  StreamReader r2(&m2);
  ExpectError([&] { r2.ReadRecord(&rec); }, ErrorKind::kMalformedStream, "exceeds the limit");
}

TEST(StreamTest, TruncatedStreamsThrow) {
  MemoryStream full;
  StreamWriter w(&full);
  w.WriteHeaders({}, {});
  w.WriteRecord(MakeRecord(rec::kHvmContext, {1, 2, 3, 4, 5}));
  w.WriteRecord(MakeRecord(rec::kEnd, {}));
  const auto bytes = full.data();
  // Every proper prefix fails somewhere; none passes as a whole stream.
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    MemoryStream m(std::vector<uint8_t>(bytes.begin(), bytes.begin() + cut));
    StreamReader r(&m);
    MemoryStream sink;
    StreamWriter out(&sink);
    EXPECT_THROW(Pump(&r, &out), Error) << "cut at " << cut;
  }
}

TEST(StreamTest, PumpStopsRightAfterEnd) {
  MemoryStream m;
  StreamWriter w(&m);
  w.WriteHeaders({}, {});
  w.WriteRecord(MakeRecord(rec::kHvmContext, {9}));
  w.WriteRecord(MakeRecord(rec::kEnd, {}));
  const std::vector<uint8_t> trailer = {'l', 'i', 'b', 'x', 'l'};
  m.data().insert(m.data().end(), trailer.begin(), trailer.end());

  StreamReader r(&m);
  MemoryStream copy;
  StreamWriter cw(&copy);
  EXPECT_EQ(Pump(&r, &cw), 2u);
  EXPECT_EQ(m.remaining(), trailer.size());  // what follows END is untouched
  EXPECT_EQ(copy.data(), std::vector<uint8_t>(m.data().begin(), m.data().end() - 5));
}

TEST(StreamTest, RecordTypeNames) {
  EXPECT_EQ(RecordTypeName(rec::kEnd), "END");
  EXPECT_EQ(RecordTypeName(rec::kPageData), "PAGE_DATA");
  EXPECT_EQ(RecordTypeName(rec::kX86TscInfo), "X86_TSC_INFO");
  EXPECT_EQ(RecordTypeName(rec::kX86MsrPolicy), "X86_MSR_POLICY");
  EXPECT_EQ(RecordTypeName(rec::kP2bDisks), "P2B_DISKS");
  EXPECT_EQ(RecordTypeName(rec::kP2bPageMappings), "P2B_PAGE_MAPPINGS");
  EXPECT_EQ(RecordTypeName(rec::kP2bZeroPages), "P2B_ZERO_PAGES");
  EXPECT_EQ(RecordTypeName(0x12345), "UNKNOWN_0x00012345");
  for (uint32_t t = 0; t <= rec::kX86MsrPolicy; ++t) {
    EXPECT_EQ(RecordTypeName(t).find("UNKNOWN"), std::string::npos) << t;
  }
}

// --- PAGE_DATA --------------------------------------------------------------

TEST(StreamTest, PageTypesFollowXen) {
  for (uint32_t t : {0x0u, 0x1u, 0x2u, 0x3u, 0x4u, 0x9u, 0xAu, 0xBu, 0xCu}) {
    EXPECT_TRUE(PageTypeHasData(t)) << t;
  }
  for (uint32_t t : {0x5u, 0x6u, 0x7u, 0x8u, 0xDu, 0xEu, 0xFu, 0x10u}) {
    EXPECT_FALSE(PageTypeHasData(t)) << t;
  }
}

TEST(StreamTest, PageDataRoundTrip) {
  PageDataBuilder b;
  const auto p1 = Page(0x11), p2 = Page(0x22), p3 = Page(0x33);
  b.Add(5, page_type::kNotab, p1.data());
  b.Add(6, page_type::kXtab, nullptr);
  b.Add(kPfnMask, 0x9, p2.data());  // pinned L1, largest pfn
  b.Add(8, page_type::kBroken, nullptr);
  b.Add(9, page_type::kL4tab, p3.data());
  EXPECT_EQ(b.count(), 5u);
  const Record r = b.Finish();
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(r.type, rec::kPageData);
  EXPECT_EQ(r.body.size(), 8 + 5 * 8 + 3 * kPageSize);
  const PageDataView v = ParsePageData(r);
  ASSERT_EQ(v.pages.size(), 5u);
  EXPECT_EQ(v.pages[0].pfn, 5u);
  EXPECT_EQ(v.pages[1].type, page_type::kXtab);
  EXPECT_EQ(v.pages[2].pfn, kPfnMask);
  EXPECT_EQ(v.pages[2].type, 0x9u);
  EXPECT_EQ(v.PageData(1), nullptr);
  EXPECT_EQ(v.PageData(3), nullptr);
  ASSERT_NE(v.PageData(0), nullptr);
  EXPECT_EQ(std::memcmp(v.PageData(0), p1.data(), kPageSize), 0);
  EXPECT_EQ(std::memcmp(v.PageData(2), p2.data(), kPageSize), 0);
  EXPECT_EQ(std::memcmp(v.PageData(4), p3.data(), kPageSize), 0);
  // The builder starts afresh.
  b.Add(1, page_type::kXtab, nullptr);
  EXPECT_EQ(ParsePageData(b.Finish()).pages.size(), 1u);
}

TEST(StreamTest, PageDataRejections) {
  PageDataBuilder b;
  const auto p = Page(1);
  b.Add(1, page_type::kNotab, p.data());
  b.Add(2, page_type::kXtab, nullptr);
  const Record good = b.Finish();
  ASSERT_NO_THROW(ParsePageData(good));
  auto bad = [&](std::function<void(Record*)> corrupt, const char* needle,
                 StreamLimits limits = {}) {
    Record r = good;
    corrupt(&r);
    ExpectError([&] { ParsePageData(r, limits); }, ErrorKind::kMalformedStream, needle);
  };
  bad([](Record* r) { r->body.resize(4); }, "at least 8");
  bad(
      [](Record* r) {
        r->body.resize(8);
        Put<uint32_t>(&r->body, 0, 0);
      },
      "count is 0");
  bad([](Record* r) { Put<uint32_t>(&r->body, 4, 1); }, "reserved");
  // Count 3: the page's data is read as a third pfn.
  bad([](Record* r) { Put<uint32_t>(&r->body, 0, 3); }, "reserved bits set in pfn[2]");
  bad([](Record* r) { Put<uint32_t>(&r->body, 0, 1); }, "length");
  bad([](Record* r) { Put<uint32_t>(&r->body, 0, 1000); }, "too short");
  bad([](Record* r) { r->body.push_back(0); }, "length");
  bad([](Record* r) { r->body.resize(r->body.size() - 1); }, "length");
  bad([](Record* r) { Put<uint64_t>(&r->body, 8, 1 | (uint64_t{1} << 52)); }, "reserved bits");
  bad([](Record* r) { Put<uint64_t>(&r->body, 8, 1 | (uint64_t{1} << 59)); }, "reserved bits");
  for (uint32_t t : {5u, 6u, 7u, 8u}) {
    bad([t](Record* r) { Put<uint64_t>(&r->body, 8, PfnWord(1, t)); }, "invalid page type");
  }
  // XTAB where a data page was: the data no longer fits the count.
  bad([](Record* r) { Put<uint64_t>(&r->body, 8, PfnWord(1, page_type::kXtab)); }, "length");
  StreamLimits tight;
  tight.max_batch_pages = 1;
  bad([](Record*) {}, "exceeds the limit 1", tight);
  bad([](Record* r) { r->type = rec::kP2bZeroPages; }, "wrong record type");
}

// --- p2bmig extension records ------------------------------------------------

TEST(StreamTest, P2bDisksRoundTripAndLayout) {
  const std::vector<uint64_t> sizes = {uint64_t{10} << 30, 4096, 0};
  const Record r = MakeP2bDisks(sizes);
  EXPECT_EQ(r.type, rec::kP2bDisks);
  ASSERT_EQ(r.body.size(), 8u + 3 * 8);
  uint32_t n;
  std::memcpy(&n, r.body.data(), 4);
  EXPECT_EQ(n, 3u);
  uint64_t s0;
  std::memcpy(&s0, r.body.data() + 8, 8);
  EXPECT_EQ(s0, uint64_t{10} << 30);
  EXPECT_EQ(ParseP2bDisks(r), sizes);
}

TEST(StreamTest, P2bDisksRejections) {
  const Record good = MakeP2bDisks(std::vector<uint64_t>{1, 2});
  auto bad = [&](std::function<void(Record*)> corrupt, const char* needle) {
    Record r = good;
    corrupt(&r);
    ExpectError([&] { ParseP2bDisks(r); }, ErrorKind::kMalformedStream, needle);
  };
  bad([](Record* r) { r->body.resize(7); }, "at least 8");
  bad(
      [](Record* r) {
        r->body.resize(8);
        Put<uint32_t>(&r->body, 0, 0);
      },
      "count is 0");
  bad([](Record* r) { Put<uint32_t>(&r->body, 4, 9); }, "reserved");
  bad([](Record* r) { Put<uint32_t>(&r->body, 0, 3); }, "length");
  bad([](Record* r) { r->body.push_back(0); }, "length");
  bad([](Record* r) { Put<uint32_t>(&r->body, 0, 257); }, "limit");
  bad([](Record* r) { r->type = rec::kPageData; }, "wrong record type");
  EXPECT_NO_THROW(ParseP2bDisks(MakeP2bDisks(std::vector<uint64_t>(256, 1))));
}

TEST(StreamTest, PageMappingsRoundTripAndLayout) {
  std::vector<PageMapping> ms(3);
  ms[0] = {7, page_type::kNotab, {2, 123456789}, 0xDEADBEEFCAFEF00Dull};
  ms[1] = {kPfnMask, 0x9, {255, (uint64_t{1} << 40) - 1}, 1};
  ms[2] = {0, page_type::kL1tab, {0, 0}, 0};
  const Record r = MakePageMappings(ms);
  EXPECT_EQ(r.type, rec::kP2bPageMappings);
  ASSERT_EQ(r.body.size(), 8 + 3 * kPageMappingSize);
  // Entry 0 field by field: pfn|type<<60, block, hash, disk, reserved.
  const uint8_t* e = r.body.data() + 8;
  uint64_t w;
  uint32_t d;
  std::memcpy(&w, e, 8);
  EXPECT_EQ(w, 7u);
  std::memcpy(&w, e + 8, 8);
  EXPECT_EQ(w, 123456789u);
  std::memcpy(&w, e + 16, 8);
  EXPECT_EQ(w, 0xDEADBEEFCAFEF00Dull);
  std::memcpy(&d, e + 24, 4);
  EXPECT_EQ(d, 2u);
  std::memcpy(&d, e + 28, 4);
  EXPECT_EQ(d, 0u);
  std::memcpy(&w, e + 32, 8);
  EXPECT_EQ(w, PfnWord(kPfnMask, 0x9));

  const auto back = ParsePageMappings(r);
  ASSERT_EQ(back.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back[i].pfn, ms[i].pfn);
    EXPECT_EQ(back[i].type, ms[i].type);
    EXPECT_EQ(back[i].addr, ms[i].addr);
    EXPECT_EQ(back[i].hash, ms[i].hash);
  }
}

TEST(StreamTest, PageMappingsRejections) {
  std::vector<PageMapping> ms(2);
  ms[0] = {1, page_type::kNotab, {0, 5}, 42};
  ms[1] = {2, page_type::kNotab, {1, 6}, 43};
  const Record good = MakePageMappings(ms);
  auto bad = [&](std::function<void(Record*)> corrupt, const char* needle,
                 StreamLimits limits = {}) {
    Record r = good;
    corrupt(&r);
    ExpectError([&] { ParsePageMappings(r, limits); }, ErrorKind::kMalformedStream, needle);
  };
  bad([](Record* r) { r->body.resize(3); }, "at least 8");
  bad(
      [](Record* r) {
        r->body.resize(8);
        Put<uint32_t>(&r->body, 0, 0);
      },
      "count is 0");
  bad([](Record* r) { Put<uint32_t>(&r->body, 4, 1); }, "reserved field is");
  bad([](Record* r) { Put<uint32_t>(&r->body, 0, 3); }, "length");
  bad([](Record* r) { r->body.resize(r->body.size() - 8); }, "length");
  bad([](Record* r) { Put<uint32_t>(&r->body, 8 + 32 + 28, 1); }, "reserved field of entry 1");
  bad([](Record* r) { Put<uint64_t>(&r->body, 8 + 32, 2 | (uint64_t{1} << 55)); }, "reserved bits");
  bad([](Record* r) { Put<uint64_t>(&r->body, 8, PfnWord(1, 6)); }, "invalid page type");
  bad([](Record* r) { Put<uint64_t>(&r->body, 8, PfnWord(1, page_type::kXtab)); }, "no data");
  StreamLimits tight;
  tight.max_batch_pages = 1;
  bad([](Record*) {}, "limit", tight);
}

TEST(StreamTest, ZeroPagesRoundTripAndRejections) {
  const std::vector<PageRef> pages = {{3, page_type::kNotab}, {kPfnMask, page_type::kL1tab}};
  const Record good = MakeZeroPages(pages);
  EXPECT_EQ(good.type, rec::kP2bZeroPages);
  ASSERT_EQ(good.body.size(), 8u + 2 * 8);
  const auto back = ParseZeroPages(good);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[1].pfn, kPfnMask);
  EXPECT_EQ(back[1].type, page_type::kL1tab);

  auto bad = [&](std::function<void(Record*)> corrupt, const char* needle,
                 StreamLimits limits = {}) {
    Record r = good;
    corrupt(&r);
    ExpectError([&] { ParseZeroPages(r, limits); }, ErrorKind::kMalformedStream, needle);
  };
  bad([](Record* r) { r->body.resize(0); }, "at least 8");
  bad(
      [](Record* r) {
        r->body.resize(8);
        Put<uint32_t>(&r->body, 0, 0);
      },
      "count is 0");
  bad([](Record* r) { Put<uint32_t>(&r->body, 4, 1); }, "reserved");
  bad([](Record* r) { r->body.push_back(0); }, "length");
  bad([](Record* r) { Put<uint64_t>(&r->body, 8, 3 | (uint64_t{1} << 52)); }, "reserved bits");
  bad([](Record* r) { Put<uint64_t>(&r->body, 8, PfnWord(3, 8)); }, "invalid page type");
  bad([](Record* r) { Put<uint64_t>(&r->body, 8, PfnWord(3, page_type::kXalloc)); }, "no data");
  StreamLimits tight;
  tight.max_batch_pages = 1;
  bad([](Record*) {}, "limit", tight);
}

// --- A realistic stream, InspectStream and verify-stream-v2 -------------------

// A plain HVM stream as Xen 4.17's xc_domain_save writes it (v3), optionally
// with p2bmig records.
std::vector<uint8_t> HvmStream(bool with_p2b) {
  MemoryStream m;
  StreamWriter w(&m);
  DomainHeader dh;
  dh.type = DomainType::kX86Hvm;
  dh.xen_major = 4;
  dh.xen_minor = 17;
  w.WriteHeaders({}, dh);
  w.WriteRecord(MakeRecord(rec::kX86CpuidPolicy, std::vector<uint8_t>(24, 0)));  // one leaf
  w.WriteRecord(MakeRecord(rec::kX86MsrPolicy, std::vector<uint8_t>(16, 0)));    // one entry
  w.WriteRecord(MakeRecord(rec::kStaticDataEnd, {}));
  if (with_p2b) w.WriteRecord(MakeP2bDisks(std::vector<uint64_t>{uint64_t{1} << 30}));
  for (Pfn base = 0; base < 3 * 8; base += 8) {
    PageDataBuilder b;
    for (Pfn p = base; p < base + 8; ++p) {
      if (p % 5 == 3) {
        b.Add(p, page_type::kXtab, nullptr);
      } else {
        const auto page = Page(static_cast<uint8_t>(p));
        b.Add(p, page_type::kNotab, page.data());
      }
    }
    w.WriteRecord(b.Finish());
  }
  if (with_p2b) {
    std::vector<PageMapping> ms = {{100, page_type::kNotab, {0, 7}, 0x1234},
                                   {101, page_type::kNotab, {0, 9}, 0x5678}};
    w.WriteRecord(MakePageMappings(ms));
    w.WriteRecord(MakeZeroPages(std::vector<PageRef>{{102, page_type::kNotab}}));
  }
  std::vector<uint8_t> tsc(24, 0);
  Put<uint32_t>(&tsc, 4, 2'000'000);  // khz
  w.WriteRecord(MakeRecord(rec::kX86TscInfo, tsc));
  w.WriteRecord(MakeRecord(rec::kHvmContext, std::vector<uint8_t>(1000, 0x5A)));
  std::vector<uint8_t> params(8 + 16, 0);
  Put<uint32_t>(&params, 0, 1);      // count
  Put<uint64_t>(&params, 8, 2);      // index (HVM_PARAM_STORE_PFN)
  Put<uint64_t>(&params, 16, 0xFE);  // value
  w.WriteRecord(MakeRecord(rec::kHvmParams, params));
  w.WriteRecord(MakeRecord(rec::kEnd, {}));
  return m.data();
}

TEST(StreamTest, InspectSummarizesText) {
  MemoryStream m(HvmStream(/*with_p2b=*/true));
  std::ostringstream out;
  InspectStream(&m, out, /*json=*/false);
  const std::string s = out.str();
  EXPECT_NE(s.find("version 3"), std::string::npos) << s;
  EXPECT_NE(s.find("x86 HVM"), std::string::npos) << s;
  EXPECT_NE(s.find("Xen 4.17"), std::string::npos) << s;
  EXPECT_NE(s.find("PAGE_DATA"), std::string::npos) << s;
  EXPECT_NE(s.find("P2B_PAGE_MAPPINGS"), std::string::npos) << s;
  // 24 PAGE_DATA entries, 5 of them XTAB (3, 8, 13, 18, 23).
  EXPECT_NE(s.find("pages: 19 data, 2 mapped, 1 zero, 5 without data"), std::string::npos) << s;
  EXPECT_NE(s.find("distinct pfns: 27"), std::string::npos) << s;
  EXPECT_NE(s.find("stream OK"), std::string::npos) << s;
}

TEST(StreamTest, InspectSummarizesJson) {
  const auto bytes = HvmStream(/*with_p2b=*/false);
  MemoryStream m(bytes);
  std::ostringstream out;
  InspectStream(&m, out, /*json=*/true);
  const auto j = nlohmann::json::parse(out.str());
  EXPECT_EQ(j["image"]["version"], 3);
  EXPECT_EQ(j["domain"]["xen_minor"], 17);
  EXPECT_EQ(j["records"]["PAGE_DATA"]["count"], 3);
  // Record header, count/reserved, 8 pfns each; 7 + 6 + 6 pages with data.
  EXPECT_EQ(j["records"]["PAGE_DATA"]["bytes"], 3 * (8 + 8 + 8 * 8) + 19 * 4096);
  EXPECT_EQ(j["pages"]["mapped"], 0);
  EXPECT_EQ(j["total_bytes"], bytes.size());
  EXPECT_EQ(j["distinct_pfns"], 24);
  EXPECT_EQ(j["ok"], true);
}

TEST(StreamTest, InspectNamesRecordAndOffsetOfError) {
  auto bytes = HvmStream(/*with_p2b=*/false);
  // Corrupt the reserved field of the first PAGE_DATA record: record 3, at
  // byte 40 + 32 + 24 + 8 = 104.
  const size_t offset = 40 + (8 + 24) + (8 + 16) + 8;
  uint32_t type;
  std::memcpy(&type, bytes.data() + offset, 4);
  ASSERT_EQ(type, rec::kPageData);
  bytes[offset + 8 + 4] = 1;
  MemoryStream m(bytes);
  std::ostringstream out;
  ExpectError([&] { InspectStream(&m, out, false); }, ErrorKind::kMalformedStream,
              "record 3 at byte offset " + std::to_string(offset));

  // Truncation is reported with its position too.
  MemoryStream cut(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 50));
  ExpectError([&] { InspectStream(&cut, out, false); }, ErrorKind::kMalformedStream,
              "record 0 at byte offset 40");
}

class StreamVerifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    if (test::VerifyStreamV2Path(&error).empty()) GTEST_SKIP() << error;
  }

  test::CommandResult Verify(const std::vector<uint8_t>& bytes, const std::string& name) {
    const std::string path = ::testing::TempDir() + "/p2bmig_" + name + ".stream";
    {
      auto f = OpenFileForWrite(path);
      f->WriteAll(bytes.data(), bytes.size());
    }
    auto result = test::RunVerifyStreamV2(path);
    std::remove(path.c_str());
    return result;
  }
};

TEST_F(StreamVerifyTest, VerifyStreamV2AcceptsOurStreams) {
  const auto r = Verify(HvmStream(/*with_p2b=*/false), "plain");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(StreamVerifyTest, VerifyStreamV2AcceptsStreamCopiedByPump) {
  MemoryStream in(HvmStream(false));
  StreamReader reader(&in);
  MemoryStream out;
  StreamWriter writer(&out);
  Pump(&reader, &writer);
  const auto r = Verify(out.data(), "pumped");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(StreamVerifyTest, VerifyStreamV2RejectsP2bRecords) {
  // Our records are mandatory: a stock restore must refuse the stream.
  const auto r = Verify(HvmStream(/*with_p2b=*/true), "p2b");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Unrecognised record type 0x7fff0000"), std::string::npos) << r.output;
}

TEST_F(StreamVerifyTest, VerifyStreamV2RejectsBadPageData) {
  // A control: the checker does look inside PAGE_DATA.
  auto bytes = HvmStream(false);
  const size_t offset = 40 + (8 + 24) + (8 + 16) + 8;
  bytes[offset + 8 + 8 + 7] = 0x50;  // type 5 in pfn[0]
  const auto r = Verify(bytes, "badpage");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Invalid type"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace p2bmig
