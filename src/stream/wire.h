// Byte-level helpers shared by the stream code: loads and stores of
// little-endian (records) and big-endian (image header) integers at any
// alignment, and the error every malformed input raises.
//
// Thread safety: pure functions.

#ifndef P2BMIG_STREAM_WIRE_H_
#define P2BMIG_STREAM_WIRE_H_

#include <cstdint>
#include <cstring>
#include <string>

#include <p2bmig/types.h>

namespace p2bmig::wire {

[[noreturn]] inline void Malformed(const std::string& what) {
  throw Error(ErrorKind::kMalformedStream, what);
}

// std::byteswap is C++23.
template <typename T>
T ByteSwap(T v) {
  if constexpr (sizeof(T) == 2) {
    return __builtin_bswap16(v);
  } else if constexpr (sizeof(T) == 4) {
    return __builtin_bswap32(v);
  } else {
    static_assert(sizeof(T) == 8);
    return __builtin_bswap64(v);
  }
}

template <typename T>
T LoadLe(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
T LoadBe(const uint8_t* p) {
  return ByteSwap(LoadLe<T>(p));
}

template <typename T>
void StoreLe(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename T>
void StoreBe(uint8_t* p, T v) {
  StoreLe(p, ByteSwap(v));
}

}  // namespace p2bmig::wire

#endif  // P2BMIG_STREAM_WIRE_H_
