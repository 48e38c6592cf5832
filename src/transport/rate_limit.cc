// Rate limiter for modelling a link of a given speed on one machine: a token
// bucket refilled at the configured rate, with a 64 KiB burst.

#include <algorithm>
#include <chrono>
#include <thread>

#include <p2bmig/transport.h>

namespace p2bmig {

namespace {

constexpr size_t kBurstBytes = 64 << 10;

class RateLimitedStream : public ByteStreamWrapper {
 public:
  RateLimitedStream(ByteStream* target, uint64_t bits_per_second)
      : ByteStreamWrapper(target),
        bytes_per_second_(static_cast<double>(bits_per_second) / 8),
        tokens_(kBurstBytes),
        last_(Clock::now()) {}

  void ReadExact(void* buf, size_t len) override {
    target()->ReadExact(buf, len);
    bytes_read_ += len;
  }

  size_t ReadSome(void* buf, size_t len) override {
    const size_t n = target()->ReadSome(buf, len);
    bytes_read_ += n;
    return n;
  }

  void WriteAll(const void* buf, size_t len) override {
    const auto* p = static_cast<const uint8_t*>(buf);
    while (len > 0) {
      // Chunks no larger than the burst, so that the bucket can always fill
      // up enough to pay for one.
      const size_t chunk = std::min(len, kBurstBytes);
      Take(chunk);
      target()->WriteAll(p, chunk);
      bytes_written_ += chunk;
      p += chunk;
      len -= chunk;
    }
  }

 private:
  using Clock = std::chrono::steady_clock;

  void Refill() {
    const Clock::time_point now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    tokens_ = std::min<double>(kBurstBytes, tokens_ + elapsed * bytes_per_second_);
  }

  // Takes `n` tokens, then sleeps off any debt. Oversleeping is credited
  // back by the next Refill (the debt is below the burst cap), so the average
  // rate stays exact however coarse the sleeps are.
  void Take(size_t n) {
    Refill();
    tokens_ -= static_cast<double>(n);
    if (tokens_ < 0) {
      std::this_thread::sleep_for(std::chrono::duration<double>(-tokens_ / bytes_per_second_));
    }
  }

  const double bytes_per_second_;
  double tokens_;
  Clock::time_point last_;
};

}  // namespace

// A rate of 0 means "unlimited": the stream is passed through unchanged.
std::unique_ptr<ByteStream> NewRateLimitedStream(ByteStream* target, uint64_t bits_per_second) {
  if (bits_per_second == 0) return std::make_unique<ByteStreamWrapper>(target);
  return std::make_unique<RateLimitedStream>(target, bits_per_second);
}

}  // namespace p2bmig
