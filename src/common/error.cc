#include <p2bmig/types.h>

namespace p2bmig {

const char* ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return "invalid argument";
    case ErrorKind::kMalformedStream:
      return "malformed stream";
    case ErrorKind::kIo:
      return "storage error";
    case ErrorKind::kNetwork:
      return "network error";
    case ErrorKind::kAuthentication:
      return "authentication failed";
    case ErrorKind::kVerification:
      return "verification failed";
    case ErrorKind::kAborted:
      return "aborted";
    case ErrorKind::kInternal:
      return "internal error";
  }
  return "error";
}

}  // namespace p2bmig
