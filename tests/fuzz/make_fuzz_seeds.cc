// Seed generator for the fuzzers (run by make_corpus.sh):
//   make_fuzz_seeds disk IMAGE          writes the deterministic disk image
//   make_fuzz_seeds seeds IMAGE DIR     writes small hand-made streams whose
//                                       mappings match IMAGE's blocks
//   make_fuzz_seeds trim IN OUT BYTES   copies the headers and the first
//                                       records of stream IN, up to about
//                                       BYTES, and ends it with END

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <p2bmig/hash.h>
#include <p2bmig/records.h>
#include <p2bmig/stream.h>

#include "fuzz_config.h"
#include "memory_byte_stream.h"

namespace p2bmig::fuzz {
namespace {

void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) {
    throw Error(ErrorKind::kIo, "cannot write " + path);
  }
  std::fclose(f);
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw Error(ErrorKind::kIo, "cannot open " + path);
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  std::fclose(f);
  return bytes;
}

// Builds one stream: headers, the records, and END unless told otherwise.
class Seed {
 public:
  explicit Seed(DomainHeader domain = {}, ImageHeader image = {}) {
    writer_.WriteHeaders(image, domain);
  }
  Seed& Add(const Record& r) {
    writer_.WriteRecord(r);
    return *this;
  }
  Seed& Raw(uint32_t type, std::vector<uint8_t> body) { return Add(Record{type, std::move(body)}); }
  std::vector<uint8_t> End() {
    writer_.WriteRecord(Record{rec::kEnd, {}});
    return out_.written();
  }
  std::vector<uint8_t> NoEnd() const { return out_.written(); }

 private:
  MemoryByteStream out_;
  StreamWriter writer_{&out_};
};

class SeedMaker {
 public:
  SeedMaker(const std::string& image, std::string dir) : dir_(std::move(dir)) {
    std::vector<uint8_t> disk = ReadFile(image);
    disk_size_ = disk.size();
    for (size_t off = 0; off + kPageSize <= disk.size(); off += kPageSize) {
      block_hash_.push_back(PageHash(disk.data() + off));
    }
  }

  void Write(const std::string& name, const std::vector<uint8_t>& bytes) {
    WriteFile(dir_ + "/hand-" + name, bytes);
  }

  Record Disks() const { return MakeP2bDisks(std::vector<uint64_t>{disk_size_}); }
  PageMapping Map(Pfn pfn, uint64_t block) const {
    return {pfn, page_type::kNotab, {0, block}, block_hash_.at(block)};
  }
  static Record Data(std::vector<std::pair<Pfn, uint32_t>> pages, uint8_t fill) {
    std::vector<uint8_t> page(kPageSize, fill);
    PageDataBuilder b;
    for (auto [pfn, type] : pages) b.Add(pfn, type, PageTypeHasData(type) ? page.data() : nullptr);
    return b.Finish();
  }
  static Record Zero(std::vector<Pfn> pfns) {
    std::vector<PageRef> refs;
    for (Pfn p : pfns) refs.push_back({p, page_type::kNotab});
    return MakeZeroPages(refs);
  }
  static std::vector<uint8_t> Body(size_t n, uint8_t fill) { return std::vector<uint8_t>(n, fill); }

  void MakeAll() {
    const uint32_t kL1 = page_type::kL1tab;
    Write("empty", Seed().End());
    Write("pv-v2", Seed(DomainHeader{DomainType::kX86Pv, kPageShift, 4, 14}, ImageHeader{2, 0})
                       .Add(Data({{0, 0}, {1, kL1}}, 0x11))
                       .Raw(rec::kX86PvInfo, Body(8, 0))
                       .End());
    Write("page-data", Seed().Add(Data({{0, 0}, {7, page_type::kXtab}, {8, 9}}, 0xAB)).End());
    Write("zero", Seed().Add(Zero({1, 2, 3, 100})).End());
    Write("disks", Seed().Add(Disks()).End());
    Write("mappings", Seed()
                          .Add(Disks())
                          .Add(MakePageMappings(std::vector<PageMapping>{
                              Map(10, 0), Map(11, 1), Map(12, 7), Map(13, 15), Map(14, 0)}))
                          .End());
    // Every record kind, and each completeness point.
    Write("all", Seed()
                     .Add(Disks())
                     .Raw(rec::kHvmContext, Body(20, 0x5A))
                     .Raw(rec::kHvmParams, Body(16, 0))
                     .Raw(rec::kStaticDataEnd, {})
                     .Raw(rec::kX86CpuidPolicy, Body(24, 1))
                     .Raw(rec::kX86MsrPolicy, Body(16, 2))
                     .Add(MakePageMappings(std::vector<PageMapping>{Map(1, 2), Map(2, 3)}))
                     .Add(Zero({3, 4}))
                     .Add(Data({{5, 0}, {6, page_type::kBroken}}, 0x77))
                     .Raw(rec::kVerify, {})
                     .Add(MakePageMappings(std::vector<PageMapping>{Map(3, 4)}))
                     .Raw(rec::kCheckpoint, {})
                     .Raw(rec::kOptionalBit | 0x42, Body(5, 0))
                     .Raw(rec::kX86TscInfo, Body(24, 0))
                     .End());
    // A mapping superseded by newer data and by a zero page (I3).
    Write("superseded", Seed()
                            .Add(Disks())
                            .Add(MakePageMappings(std::vector<PageMapping>{Map(5, 1), Map(6, 2)}))
                            .Add(Data({{5, 0}}, 0x01))
                            .Add(Zero({6}))
                            .Add(MakePageMappings(std::vector<PageMapping>{Map(5, 3)}))
                            .End());
    // A mapping whose hash does not match: fails, unless a newer record wins.
    PageMapping bad = Map(20, 5);
    bad.hash ^= 1;
    Write("bad-hash", Seed()
                          .Add(Disks())
                          .Add(MakePageMappings(std::vector<PageMapping>{bad}))
                          .Raw(rec::kX86TscInfo, Body(24, 0))
                          .End());
    Write("bad-hash-replaced", Seed()
                                   .Add(Disks())
                                   .Add(MakePageMappings(std::vector<PageMapping>{bad}))
                                   .Add(Data({{20, 0}}, 0x02))
                                   .End());
    // Mappings enough to fill several fetch batches, spread over the disk.
    std::vector<PageMapping> many;
    for (Pfn p = 0; p < 1100; ++p) many.push_back(Map(p, (p * 7) % block_hash_.size()));
    Write("many-mappings", Seed().Add(Disks()).Add(MakePageMappings(many)).End());
    // Zero-page records of one output batch exactly and of a full batch.
    std::vector<Pfn> pfns;
    for (Pfn p = 0; p < 4096; ++p) pfns.push_back(p * 3 % kNrPfns);
    Write("zero-1024", Seed().Add(Zero({pfns.begin(), pfns.begin() + 1024})).End());
    Write("zero-4096", Seed().Add(Zero(pfns)).End());
    Write("truncated", Seed().Add(Disks()).Add(Zero({1})).NoEnd());
  }

 private:
  std::string dir_;
  uint64_t disk_size_ = 0;
  std::vector<uint64_t> block_hash_;
};

// Copies headers and records of `in` to `out` while they fit in `budget`
// bytes, then adds END. PAGE_DATA records keep their first few pages only, so
// that many records fit.
void Trim(const std::string& in_path, const std::string& out_path, size_t budget) {
  constexpr size_t kMaxDataPages = 8;
  std::vector<uint8_t> bytes = ReadFile(in_path);
  MemoryByteStream in(bytes.data(), bytes.size());
  MemoryByteStream out;
  StreamReader reader(&in);
  StreamWriter writer(&out);
  ImageHeader image;
  DomainHeader domain;
  reader.ReadHeaders(&image, &domain);
  writer.WriteHeaders(image, domain);
  Record record;
  for (;;) {
    reader.ReadRecord(&record);
    if (record.type == rec::kEnd) break;
    if (record.type == rec::kPageData) {
      PageDataView view = ParsePageData(record);
      PageDataBuilder builder;
      size_t with_data = 0;
      for (size_t i = 0; i < view.pages.size() && with_data < kMaxDataPages; ++i) {
        builder.Add(view.pages[i].pfn, view.pages[i].type, view.PageData(i));
        if (view.PageData(i) != nullptr) ++with_data;
      }
      record = builder.Finish();
    }
    if (out.written().size() + 8 + record.body.size() + 8 > budget) continue;
    writer.WriteRecord(record);
  }
  writer.WriteRecord(Record{rec::kEnd, {}});
  WriteFile(out_path, out.written());
}

int Main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "disk" && argc == 3) {
    WriteDiskImage(argv[2]);
  } else if (cmd == "seeds" && argc == 4) {
    SeedMaker(argv[2], argv[3]).MakeAll();
  } else if (cmd == "trim" && argc == 5) {
    Trim(argv[2], argv[3], std::strtoull(argv[4], nullptr, 0));
  } else {
    std::fprintf(stderr, "usage: %s disk IMAGE | seeds IMAGE DIR | trim IN OUT BYTES\n", argv[0]);
    return 2;
  }
  return 0;
}

}  // namespace
}  // namespace p2bmig::fuzz

int main(int argc, char** argv) {
  try {
    return p2bmig::fuzz::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_fuzz_seeds: %s\n", e.what());
    return 1;
  }
}
