// The deterministic disk image shared by the resolver fuzzer and the seed
// generator: a mix of zero, repeated-pattern and pseudo-random blocks.

#include "fuzz_config.h"

#include <cstdlib>
#include <cstring>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <p2bmig/types.h>

namespace p2bmig::fuzz {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void FillBlock(uint64_t block, uint8_t* out) {
  if (block % 16 == 15) {
    std::memset(out, 0, kPageSize);  // zero blocks
  } else if (block % 16 == 7) {
    std::memset(out, static_cast<int>(block & 0xFF), kPageSize);  // fill pattern
  } else {
    uint64_t state = block;
    for (size_t i = 0; i < kPageSize; i += 8) {
      const uint64_t v = SplitMix64(&state);
      std::memcpy(out + i, &v, sizeof(v));
    }
  }
}

}  // namespace

void WriteDiskImage(const std::string& path) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(ErrorKind::kIo, "cannot create " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> block(kPageSize);
  for (uint64_t b = 0; b < kDiskBytes / kPageSize; ++b) {
    FillBlock(b, block.data());
    if (write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) {
      close(fd);
      throw Error(ErrorKind::kIo, "cannot write " + path);
    }
  }
  close(fd);
}

std::string FuzzDiskPath(bool* cleanup) {
  const char* env = std::getenv("P2BMIG_FUZZ_DISK");
  if (env != nullptr && *env != '\0') {
    *cleanup = false;
    return env;
  }
  char tmpl[] = "/tmp/p2bmig-fuzz-disk-XXXXXX";
  const int fd = mkstemp(tmpl);
  if (fd < 0) throw Error(ErrorKind::kIo, "mkstemp failed");
  close(fd);
  WriteDiskImage(tmpl);
  *cleanup = true;
  return tmpl;
}

}  // namespace p2bmig::fuzz
