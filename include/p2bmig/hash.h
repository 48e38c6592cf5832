// Content hash of a 4 KiB page or block (XXH3, 64 bits). The same function is
// used for the p2b map, for mappings in the stream and for the target's
// verification of fetched blocks, so that they agree by construction.
//
// Thread safety: pure function.

#ifndef P2BMIG_HASH_H_
#define P2BMIG_HASH_H_

#include <cstdint>

namespace p2bmig {

// REQUIRES: `page` points to kPageSize readable bytes.
uint64_t PageHash(const void* page);

// True if the kPageSize bytes at `page` are all zero.
bool IsZeroPage(const void* page);

}  // namespace p2bmig

#endif  // P2BMIG_HASH_H_
