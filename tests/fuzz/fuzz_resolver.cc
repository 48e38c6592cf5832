// libFuzzer target for the resolver. The input is read as a stream and fed,
// record by record, to a Resolver over a real image file (POSIX store); its
// output goes to a sink that checks it. p2bmig::Error from the reader or the
// resolver is an expected outcome. Besides crashes, leaks, UB and hangs,
// these are findings (abort):
//   * the resolver passing on a PAGE_DATA that does not parse, a record
//     longer than a StreamReader with the same limits accepts, a pfn beyond
//     the domain, a p2bmig record, or anything before the headers;
//   * at a completeness point (VERIFY, X86_TSC_INFO, CHECKPOINT, END) the
//     memory the sink has seen differing from a reference model of
//     docs/stream-format.md section 3 (newest record per pfn wins; a mapping
//     that is still newest holds its block's content, verified by hash);
//   * the resolver accepting a completeness point while a newest mapping's
//     block does not match its hash, or failing with kVerification when no
//     newest mapping mismatches.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <unistd.h>

#include <p2bmig/block_store.h>
#include <p2bmig/hash.h>
#include <p2bmig/records.h>
#include <p2bmig/resolver.h>
#include <p2bmig/stream.h>

#include "fuzz_config.h"
#include "memory_byte_stream.h"

namespace p2bmig::fuzz {
namespace {

[[noreturn]] void Finding(const std::string& what) {
  std::fprintf(stderr, "FINDING: %s\n", what.c_str());
  std::abort();
}

// What a pfn holds: its page type and, for types with data, the hash of its
// 4 KiB.
struct PageState {
  uint32_t type = 0;
  uint64_t hash = 0;
  friend bool operator==(const PageState&, const PageState&) = default;
};
using Memory = std::unordered_map<Pfn, PageState>;

uint64_t ZeroHash() {
  static const std::vector<uint8_t> zero(kPageSize, 0);
  static const uint64_t hash = PageHash(zero.data());
  return hash;
}

// The store and each block's hash, set up once per process.
struct Disk {
  std::unique_ptr<BlockStore> store;
  std::vector<uint64_t> block_hash;
};

const Disk& GetDisk() {
  static Disk* disk = [] {
    auto* d = new Disk;
    bool cleanup = false;
    const std::string path = FuzzDiskPath(&cleanup);
    PosixStoreOptions options;
    options.threads = 2;
    d->store = OpenPosixBlockStore({path}, options);
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) Finding("cannot open the disk image " + path);
    std::vector<uint8_t> block(kPageSize);
    while (std::fread(block.data(), 1, kPageSize, f) == kPageSize) {
      d->block_hash.push_back(PageHash(block.data()));
    }
    std::fclose(f);
    if (cleanup) unlink(path.c_str());
    return d;
  }();
  return *disk;
}

// The resolver's output: checked, and applied to a memory image.
class CheckingSink : public RecordSink {
 public:
  void WriteHeaders(const ImageHeader& image, const DomainHeader& domain) override {
    if (headers_) Finding("headers passed on twice");
    headers_ = true;
  }

  void WriteRecord(const Record& record) override {
    if (!headers_) Finding("record passed on before the headers");
    if (ended_) Finding("record passed on after END");
    if (record.type >= rec::kP2bDisks && (record.type & rec::kOptionalBit) == 0) {
      Finding("p2bmig record passed on: " + RecordTypeName(record.type));
    }
    if (record.body.size() > FuzzLimits().max_record_length) {
      Finding("record of " + std::to_string(record.body.size()) +
              " bytes passed on, beyond what a StreamReader accepts");
    }
    if (record.type == rec::kEnd) ended_ = true;
    if (record.type != rec::kPageData) return;
    PageDataView view;
    try {
      view = ParsePageData(record, FuzzLimits());
    } catch (const Error& e) {
      Finding(std::string("resolver passed on a PAGE_DATA that does not parse: ") + e.what());
    }
    for (size_t i = 0; i < view.pages.size(); ++i) {
      const PageRef& p = view.pages[i];
      if (p.pfn >= kNrPfns) Finding("PAGE_DATA beyond the domain passed on");
      const uint8_t* data = view.PageData(i);
      memory_[p.pfn] = PageState{p.type, data != nullptr ? PageHash(data) : 0};
    }
  }

  const Memory& memory() const { return memory_; }

 private:
  bool headers_ = false;
  bool ended_ = false;
  Memory memory_;
};

// Reference model of the target's memory, fed only with records the
// resolver accepted.
class Model {
 public:
  explicit Model(const Disk& disk) : disk_(disk) {}

  void Apply(const Record& record) {
    switch (record.type) {
      case rec::kPageData: {
        PageDataView view = ParsePageData(record, FuzzLimits());
        for (size_t i = 0; i < view.pages.size(); ++i) {
          const uint8_t* data = view.PageData(i);
          Set(view.pages[i].pfn, {view.pages[i].type, data != nullptr ? PageHash(data) : 0});
        }
        break;
      }
      case rec::kP2bZeroPages:
        for (const PageRef& p : ParseZeroPages(record, FuzzLimits())) {
          Set(p.pfn, {p.type, ZeroHash()});
        }
        break;
      case rec::kP2bPageMappings:
        for (const PageMapping& m : ParsePageMappings(record, FuzzLimits())) {
          pending_[m.pfn] = m;
        }
        break;
      default:
        break;
    }
  }

  // True if a newest mapping names a block whose content does not match.
  bool HasMismatch() const {
    for (const auto& [pfn, m] : pending_) {
      if (disk_.block_hash.at(m.addr.block) != m.hash) return true;
    }
    return false;
  }

  // Memory is complete: every newest mapping holds its block.
  void Complete() {
    for (const auto& [pfn, m] : pending_) memory_[pfn] = PageState{m.type, m.hash};
    pending_.clear();
  }

  const Memory& memory() const { return memory_; }

 private:
  void Set(Pfn pfn, PageState state) {
    pending_.erase(pfn);
    memory_[pfn] = state;
  }

  const Disk& disk_;
  Memory memory_;
  std::unordered_map<Pfn, PageMapping> pending_;
};

bool IsCompletenessPoint(uint32_t type) {
  return type == rec::kVerify || type == rec::kX86TscInfo || type == rec::kCheckpoint ||
         type == rec::kEnd;
}

void CompareMemory(const Memory& got, const Memory& want) {
  if (got == want) return;
  for (const auto& [pfn, w] : want) {
    auto it = got.find(pfn);
    if (it == got.end()) Finding("pfn " + std::to_string(pfn) + " missing from the output");
    if (!(it->second == w)) {
      Finding("pfn " + std::to_string(pfn) + " differs: type " + std::to_string(it->second.type) +
              " hash " + std::to_string(it->second.hash) + ", expected type " +
              std::to_string(w.type) + " hash " + std::to_string(w.hash));
    }
  }
  Finding("the output names pfns that no record defined");
}

// With P2BMIG_FUZZ_VERBOSE set, says how each input ended (to triage).
void Outcome(const std::string& what) {
  static const bool verbose = std::getenv("P2BMIG_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "outcome: %s\n", what.c_str());
}

void RunOne(const uint8_t* data, size_t size) {
  const Disk& disk = GetDisk();
  MemoryByteStream in(data, size);
  StreamReader reader(&in, FuzzLimits());
  CheckingSink sink;
  Model model(disk);
  ResolverOptions options;
  options.nr_pfns = kNrPfns;
  options.limits = FuzzLimits();
  Resolver resolver(disk.store.get(), &sink, options);

  ImageHeader image;
  DomainHeader domain;
  try {
    reader.ReadHeaders(&image, &domain);
  } catch (const Error& e) {
    Outcome(std::string("reader: ") + e.what());
    return;
  }
  resolver.WriteHeaders(image, domain);
  Record record;
  do {
    try {
      reader.ReadRecord(&record);
    } catch (const Error& e) {
      Outcome(std::string("reader: ") + e.what());
      return;
    }
    try {
      resolver.WriteRecord(record);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kVerification && !model.HasMismatch()) {
        Finding(std::string("verification failed with no mismatching mapping: ") + e.what());
      }
      Outcome(std::string("resolver: ") + ErrorKindName(e.kind()) + ": " + e.what());
      return;
    }
    model.Apply(record);
    if (IsCompletenessPoint(record.type)) {
      if (model.HasMismatch()) Finding("a mismatching mapping passed a completeness point");
      model.Complete();
      CompareMemory(sink.memory(), model.memory());
    }
  } while (record.type != rec::kEnd);
  Outcome("END after " + std::to_string(reader.records_read()) + " records, " +
          std::to_string(model.memory().size()) + " pfns");
}

}  // namespace
}  // namespace p2bmig::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  p2bmig::fuzz::RunOne(data, size);
  return 0;
}
