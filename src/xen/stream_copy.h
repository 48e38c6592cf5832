// Byte-exact copies of a libxc stream for the wrapper helper's pass-through
// mode. CopyLibxcStream follows the v2 framing (image header, domain header,
// then records of 8-byte header + body + padding) only to find the end: it
// reads exactly up to and including the END record and nothing after it,
// because on restore the bytes that follow belong to libxl. It does not judge
// the content; the real helper does.
//
// Thread safety: the streams are used by the calling thread only.

#ifndef P2BMIG_XEN_STREAM_COPY_H_
#define P2BMIG_XEN_STREAM_COPY_H_

#include <cstdint>

#include <p2bmig/byte_stream.h>

namespace p2bmig {

struct CopyStats {
  uint64_t bytes = 0;
  uint64_t records = 0;  // END included
};

// Copies headers and records from `in` to `out` up to and including END.
// Throws Error from the streams (an `in` that ends before END included).
CopyStats CopyLibxcStream(ByteStream* in, ByteStream* out);

// Copies everything until `in` ends. Returns the number of bytes.
uint64_t CopyToEnd(ByteStream* in, ByteStream* out);

}  // namespace p2bmig

#endif  // P2BMIG_XEN_STREAM_COPY_H_
