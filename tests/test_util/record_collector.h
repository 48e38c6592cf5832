// RecordCollector: a RecordSink that keeps what it is given, and can replay
// the PAGE_DATA records into a pfn -> content map (what a restore would hold).

#ifndef P2BMIG_TESTS_TEST_UTIL_RECORD_COLLECTOR_H_
#define P2BMIG_TESTS_TEST_UTIL_RECORD_COLLECTOR_H_

#include <map>
#include <vector>

#include <p2bmig/stream.h>

namespace p2bmig::test {

class RecordCollector : public RecordSink {
 public:
  void WriteHeaders(const ImageHeader& image, const DomainHeader& domain) override {
    headers = true;
    this->domain = domain;
  }
  void WriteRecord(const Record& record) override { records.push_back(record); }

  std::vector<uint32_t> Types() const {
    std::vector<uint32_t> t;
    for (const Record& r : records) t.push_back(r.type);
    return t;
  }
  // Memory as a restore would leave it: later PAGE_DATA wins.
  std::map<Pfn, std::vector<uint8_t>> Memory() const {
    std::map<Pfn, std::vector<uint8_t>> mem;
    for (const Record& r : records) {
      if (r.type != rec::kPageData) continue;
      PageDataView v = ParsePageData(r);
      for (size_t i = 0; i < v.pages.size(); ++i) {
        if (const uint8_t* d = v.PageData(i)) mem[v.pages[i].pfn].assign(d, d + kPageSize);
      }
    }
    return mem;
  }

  bool headers = false;
  DomainHeader domain;
  std::vector<Record> records;
};

}  // namespace p2bmig::test

#endif  // P2BMIG_TESTS_TEST_UTIL_RECORD_COLLECTOR_H_
