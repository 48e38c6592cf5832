// An in-memory ByteStream for the fuzzers and the seed generator: reads come
// from a fixed buffer (the fuzzer's input), writes append to a vector.

#ifndef P2BMIG_TESTS_FUZZ_MEMORY_BYTE_STREAM_H_
#define P2BMIG_TESTS_FUZZ_MEMORY_BYTE_STREAM_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <p2bmig/byte_stream.h>
#include <p2bmig/types.h>

namespace p2bmig::fuzz {

class MemoryByteStream : public ByteStream {
 public:
  MemoryByteStream() = default;
  MemoryByteStream(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  // Like a file that ends early: a short read is a malformed stream.
  void ReadExact(void* buf, size_t len) override {
    if (len > size_ - pos_) {
      pos_ = size_;
      throw Error(ErrorKind::kMalformedStream, "stream ends early");
    }
    if (len > 0) std::memcpy(buf, data_ + pos_, len);
    pos_ += len;
    bytes_read_ += len;
  }

  size_t ReadSome(void* buf, size_t len) override {
    const size_t n = std::min(len, size_ - pos_);
    if (n > 0) std::memcpy(buf, data_ + pos_, n);
    pos_ += n;
    bytes_read_ += n;
    return n;
  }

  void WriteAll(const void* buf, size_t len) override {
    const auto* p = static_cast<const uint8_t*>(buf);
    written_.insert(written_.end(), p, p + len);
    bytes_written_ += len;
  }

  std::string Describe() const override { return "memory"; }

  size_t position() const { return pos_; }
  const std::vector<uint8_t>& written() const { return written_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t pos_ = 0;
  std::vector<uint8_t> written_;
};

}  // namespace p2bmig::fuzz

#endif  // P2BMIG_TESTS_FUZZ_MEMORY_BYTE_STREAM_H_
