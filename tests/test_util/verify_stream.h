// Runs Xen's own migration stream checker, verify-stream-v2 from Debian's
// xen-utils-4.17 (fetched by scripts/get-verify-stream.sh), on a file.
//
// Thread safety: may be called from any thread (it runs child processes).

#ifndef P2BMIG_TESTS_TEST_UTIL_VERIFY_STREAM_H_
#define P2BMIG_TESTS_TEST_UTIL_VERIFY_STREAM_H_

#include <string>

namespace p2bmig::test {

struct CommandResult {
  int exit_code = -1;  // -1: could not run, or killed by a signal
  std::string output;  // stdout and stderr together
};

// Runs `command` with /bin/sh and collects its exit code and output.
CommandResult RunCommand(const std::string& command);

// Path of the verify-stream-v2 wrapper, or "" (with the reason in `*error`)
// if it cannot be made available (no apt source, no network).
std::string VerifyStreamV2Path(std::string* error);

// Runs `verify-stream-v2 -i path`. exit_code is 0 if Xen accepts the stream.
// Throws std::runtime_error if the checker is not available.
CommandResult RunVerifyStreamV2(const std::string& path);

}  // namespace p2bmig::test

#endif  // P2BMIG_TESTS_TEST_UTIL_VERIFY_STREAM_H_
