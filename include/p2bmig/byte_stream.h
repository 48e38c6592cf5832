// ByteStream: a reliable, ordered byte pipe (TCP connection, pipe, file).
// Everything that moves a migration stream goes through this interface, so
// tests can put a socketpair, a file or a fault-injecting wrapper in its place.
//
// Thread safety: one reader thread and one writer thread may use a stream at
// the same time; nothing else.

#ifndef P2BMIG_BYTE_STREAM_H_
#define P2BMIG_BYTE_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace p2bmig {

class ByteStream {
 public:
  ByteStream() = default;
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;
  virtual ~ByteStream() = default;

  // Reads exactly `len` bytes. Throws Error (kNetwork for a connection that
  // failed or closed, kMalformedStream for a file that ends early) otherwise.
  virtual void ReadExact(void* buf, size_t len) = 0;

  // Reads up to `len` bytes, at least one; returns 0 only at end of stream.
  virtual size_t ReadSome(void* buf, size_t len) = 0;

  // Writes all `len` bytes or throws Error(kNetwork / kIo).
  virtual void WriteAll(const void* buf, size_t len) = 0;

  // Pushes buffered bytes to the peer (no-op for unbuffered streams).
  virtual void Flush() {}

  // Signals end of stream to the peer (shutdown of the write side).
  virtual void CloseWrite() {}

  // What this stream is connected to, for messages ("tcp 127.0.0.1:7000").
  virtual std::string Describe() const = 0;

  // Cancels the connection: calls blocked in any thread, and all later ones,
  // fail. The one call that may come from any thread at any time (a signal
  // handler's thread cancelling a migration). No-op for files.
  virtual void Abort() {}

  uint64_t bytes_read() const { return bytes_read_; }
  uint64_t bytes_written() const { return bytes_written_; }

 protected:
  uint64_t bytes_read_ = 0;
  uint64_t bytes_written_ = 0;
};

// Forwards every call to another stream, counting the bytes that pass
// through it; subclasses override what they want to change (fault injection
// in tests, rate limiting).
class ByteStreamWrapper : public ByteStream {
 public:
  explicit ByteStreamWrapper(ByteStream* target) : target_(target) {}
  ByteStream* target() const { return target_; }

  void ReadExact(void* buf, size_t len) override {
    target_->ReadExact(buf, len);
    bytes_read_ += len;
  }
  size_t ReadSome(void* buf, size_t len) override {
    size_t n = target_->ReadSome(buf, len);
    bytes_read_ += n;
    return n;
  }
  void WriteAll(const void* buf, size_t len) override {
    target_->WriteAll(buf, len);
    bytes_written_ += len;
  }
  void Flush() override { target_->Flush(); }
  void CloseWrite() override { target_->CloseWrite(); }
  std::string Describe() const override { return target_->Describe(); }
  void Abort() override { target_->Abort(); }

 private:
  ByteStream* target_;
};

// A stream over a file descriptor (pipe, socket, regular file). Takes
// ownership of `fd` if `owns` is true. `name` is used in messages.
std::unique_ptr<ByteStream> NewFdByteStream(int fd, bool owns, std::string name);

// Opens a file for reading or (created/truncated) writing.
std::unique_ptr<ByteStream> OpenFileForRead(const std::string& path);
std::unique_ptr<ByteStream> OpenFileForWrite(const std::string& path);

}  // namespace p2bmig

#endif  // P2BMIG_BYTE_STREAM_H_
