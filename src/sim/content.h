// Page contents for the simulated guest and its disk image: text, code-like
// binary, random (compressed or encrypted data) and zero pages, generated fast
// and reproducibly from a seed.
//
// Thread safety: Rng is per thread; the functions are pure.

#ifndef P2BMIG_SIM_CONTENT_H_
#define P2BMIG_SIM_CONTENT_H_

#include <cstdint>
#include <string>

namespace p2bmig::sim {

// splitmix64: small, fast and good enough to make varied page contents.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n). REQUIRES: n > 0.
  uint64_t Below(uint64_t n) { return Next() % n; }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  bool Chance(double p) { return Uniform() < p; }

 private:
  uint64_t state_;
};

enum class ContentKind { kZero, kText, kBinary, kRandom };

// Fills one 4 KiB page.
void FillPage(uint8_t* page, ContentKind kind, Rng& rng);

// A content kind drawn with the proportions of a typical file system image
// (mostly text and binaries, some compressed data, a few zero blocks).
ContentKind DrawFileContent(Rng& rng);
// A content kind for anonymous memory (heap data, some zero pages).
ContentKind DrawAnonContent(Rng& rng);

// Creates (or replaces) a disk image of `bytes` bytes at `path` whose blocks
// are drawn with DrawFileContent. Throws Error(kIo).
void CreateDiskImage(const std::string& path, uint64_t bytes, uint64_t seed);

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_CONTENT_H_
