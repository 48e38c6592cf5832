// What the fuzzers and the seed generator agree on: the limits the readers
// enforce, the target domain's size, and the disk image the resolver fuzzer
// fetches from (its content must match the hashes in the seeds' mappings).

#ifndef P2BMIG_TESTS_FUZZ_FUZZ_CONFIG_H_
#define P2BMIG_TESTS_FUZZ_FUZZ_CONFIG_H_

#include <cstdint>
#include <string>

#include <p2bmig/records.h>

namespace p2bmig::fuzz {

// The seeds come from `p2bmig send --memory 64M`: 16384 pfns.
inline constexpr uint64_t kNrPfns = 16384;

// The disk image the generator creates: 1 MiB, 256 blocks.
inline constexpr uint64_t kDiskBytes = 1u << 20;

// The stream's own defaults (16 MiB records, 4096-page batches).
inline StreamLimits FuzzLimits() { return StreamLimits{}; }

// Writes the deterministic disk image to `path` (replacing it). Throws Error.
void WriteDiskImage(const std::string& path);

// The disk image the resolver fuzzer reads: $P2BMIG_FUZZ_DISK if set (the
// image `p2bmig send` left behind when the seeds were made), else a fresh copy
// of the deterministic image in a temporary file that is unlinked once open.
// `cleanup` is set to true in the second case.
std::string FuzzDiskPath(bool* cleanup);

}  // namespace p2bmig::fuzz

#endif  // P2BMIG_TESTS_FUZZ_FUZZ_CONFIG_H_
