// SocketStream: the part every connection-backed ByteStream shares. Reads on
// a socket return whatever has arrived, so ReadExact and ReadSome are both
// made of one primitive, ReadOnce.
//
// Thread safety: as the implementation's ReadOnce.

#ifndef P2BMIG_TRANSPORT_SOCKET_STREAM_H_
#define P2BMIG_TRANSPORT_SOCKET_STREAM_H_

#include <cstddef>
#include <cstdint>

#include <p2bmig/byte_stream.h>

namespace p2bmig {

class SocketStream : public ByteStream {
 public:
  void ReadExact(void* buf, size_t len) final {
    auto* p = static_cast<uint8_t*>(buf);
    size_t done = 0;
    while (done < len) done += ReadOnce(p + done, len - done, /*eof_is_error=*/true);
  }

  size_t ReadSome(void* buf, size_t len) final {
    return len == 0 ? 0 : ReadOnce(buf, len, /*eof_is_error=*/false);
  }

 protected:
  // Reads between 1 and `len` bytes, waiting for the first. At the end of
  // the stream returns 0, or throws Error(kNetwork) if `eof_is_error`.
  // REQUIRES: len > 0.
  virtual size_t ReadOnce(void* buf, size_t len, bool eof_is_error) = 0;
};

}  // namespace p2bmig

#endif  // P2BMIG_TRANSPORT_SOCKET_STREAM_H_
