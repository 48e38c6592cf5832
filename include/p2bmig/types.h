// Basic vocabulary shared by every part of p2bmig: page and block sizes,
// guest frame numbers, block addresses and the error type.
//
// Thread safety: everything here is a value type.

#ifndef P2BMIG_TYPES_H_
#define P2BMIG_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace p2bmig {

// Guest page frame number (Xen's pfn / gfn as it appears in the stream).
using Pfn = uint64_t;

inline constexpr size_t kPageShift = 12;
inline constexpr size_t kPageSize = size_t{1} << kPageShift;  // 4 KiB
inline constexpr size_t kSectorSize = 512;
inline constexpr size_t kSectorsPerPage = kPageSize / kSectorSize;

// A 4 KiB block of one of the domain's disks. `disk` is an index into the
// domain's own disk configuration (never a path: invariant I5), `block` is the
// byte offset in the image divided by 4096.
struct BlockAddr {
  uint32_t disk = 0;
  uint64_t block = 0;

  friend bool operator==(const BlockAddr&, const BlockAddr&) = default;
  friend auto operator<=>(const BlockAddr&, const BlockAddr&) = default;
};

// Why an operation failed. The CLI maps these to messages and exit codes.
enum class ErrorKind {
  kInvalidArgument,  // bad user input or configuration
  kMalformedStream,  // the migration stream violates docs/stream-format.md
  kIo,               // local or shared storage failed
  kNetwork,          // the migration link failed or the peer went away
  kAuthentication,   // the peer failed TLS authentication
  kVerification,     // content did not match its hash (NAS block, memory)
  kAborted,          // cancelled by a signal or by the peer
  kInternal,         // a bug
};

const char* ErrorKindName(ErrorKind kind);

// The one exception type p2bmig throws. Callers that must keep a guest safe
// (the save and restore drivers) catch it at one place and clean up.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace p2bmig

#endif  // P2BMIG_TYPES_H_
