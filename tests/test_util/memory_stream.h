// MemoryStream: a ByteStream over a byte vector, for tests. Reads consume the
// vector from the front; writes append to it. Reading past the end throws
// Error(kMalformedStream), as a file that ends early does.
//
// Thread safety: one thread at a time.

#ifndef P2BMIG_TESTS_TEST_UTIL_MEMORY_STREAM_H_
#define P2BMIG_TESTS_TEST_UTIL_MEMORY_STREAM_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <p2bmig/byte_stream.h>
#include <p2bmig/types.h>

namespace p2bmig::test {

class MemoryStream : public ByteStream {
 public:
  MemoryStream() = default;
  explicit MemoryStream(std::vector<uint8_t> data) : data_(std::move(data)) {}

  void ReadExact(void* buf, size_t len) override {
    if (data_.size() - pos_ < len) {
      throw Error(ErrorKind::kMalformedStream,
                  "memory: stream truncated at byte " + std::to_string(data_.size()));
    }
    std::memcpy(buf, data_.data() + pos_, len);
    pos_ += len;
    bytes_read_ += len;
  }
  size_t ReadSome(void* buf, size_t len) override {
    const size_t n = std::min(len, data_.size() - pos_);
    std::memcpy(buf, data_.data() + pos_, n);
    pos_ += n;
    bytes_read_ += n;
    return n;
  }
  void WriteAll(const void* buf, size_t len) override {
    const auto* p = static_cast<const uint8_t*>(buf);
    data_.insert(data_.end(), p, p + len);
    bytes_written_ += len;
  }
  std::string Describe() const override { return "memory"; }

  std::vector<uint8_t>& data() { return data_; }
  size_t remaining() const { return data_.size() - pos_; }

 private:
  std::vector<uint8_t> data_;
  size_t pos_ = 0;
};

}  // namespace p2bmig::test

#endif  // P2BMIG_TESTS_TEST_UTIL_MEMORY_STREAM_H_
