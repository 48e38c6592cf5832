#include <cstring>

#include <xxhash.h>

#include <p2bmig/hash.h>
#include <p2bmig/types.h>

namespace p2bmig {

uint64_t PageHash(const void* page) { return XXH3_64bits(page, kPageSize); }

bool IsZeroPage(const void* page) {
  // Compare the first word, then the page against itself shifted by one word:
  // equal only if every word equals its neighbour, i.e. all are zero.
  const auto* p = static_cast<const uint8_t*>(page);
  uint64_t first;
  std::memcpy(&first, p, sizeof(first));
  return first == 0 && std::memcmp(p, p + sizeof(first), kPageSize - sizeof(first)) == 0;
}

}  // namespace p2bmig
