// A link of a given speed in front of a fast connection. Writes go into a
// bounded buffer (the socket buffer and NIC queue of a real link) that a
// sender thread drains at the link rate, so that the writer's own work
// overlaps with transmission as it does on a real network.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include <p2bmig/transport.h>
#include <p2bmig/types.h>

namespace p2bmig {
namespace {

constexpr size_t kBurstBytes = 64 << 10;
constexpr size_t kBufferBytes = 4 << 20;

class RateLimitedStream : public ByteStreamWrapper {
 public:
  RateLimitedStream(ByteStream* target, uint64_t bits_per_second)
      : ByteStreamWrapper(target),
        bytes_per_second_(static_cast<double>(bits_per_second) / 8),
        ring_(kBufferBytes) {
    sender_ = std::thread([this] { SendLoop(); });
  }

  ~RateLimitedStream() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    sender_.join();
  }

  void WriteAll(const void* buf, size_t len) override {
    const auto* p = static_cast<const uint8_t*>(buf);
    std::unique_lock lock(mu_);
    while (len > 0) {
      cv_.wait(lock, [&] { return used_ < ring_.size() || error_ || stop_; });
      Rethrow();
      size_t tail = (head_ + used_) % ring_.size();
      size_t n = std::min({len, ring_.size() - used_, ring_.size() - tail});
      std::memcpy(ring_.data() + tail, p, n);
      used_ += n;
      p += n;
      len -= n;
      bytes_written_ += n;
      cv_.notify_all();
    }
  }

  // Returns once every byte written so far has gone out on the link.
  void Flush() override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return (used_ == 0 && !sending_) || error_; });
    Rethrow();
    lock.unlock();
    target()->Flush();
  }

  void CloseWrite() override {
    Flush();
    target()->CloseWrite();
  }

 private:
  using Clock = std::chrono::steady_clock;

  void Rethrow() {
    if (error_) std::rethrow_exception(error_);
    if (stop_) throw Error(ErrorKind::kAborted, "link closed");
  }

  void SendLoop() {
    double tokens = kBurstBytes;
    Clock::time_point last = Clock::now();
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return used_ > 0 || stop_; });
      if (stop_) return;
      size_t n = std::min({used_, kBurstBytes, ring_.size() - head_});
      const uint8_t* p = ring_.data() + head_;
      sending_ = true;
      lock.unlock();
      // Token bucket: pay for the chunk, sleeping off any debt. Oversleeping
      // is credited back by the next refill, so the average rate is exact.
      Clock::time_point now = Clock::now();
      tokens =
          std::min<double>(kBurstBytes, tokens + std::chrono::duration<double>(now - last).count() *
                                                     bytes_per_second_);
      last = now;
      tokens -= static_cast<double>(n);
      if (tokens < 0) {
        std::this_thread::sleep_for(std::chrono::duration<double>(-tokens / bytes_per_second_));
      }
      std::exception_ptr failure;
      try {
        target()->WriteAll(p, n);
      } catch (...) {
        failure = std::current_exception();
      }
      lock.lock();
      sending_ = false;
      if (failure) {
        error_ = failure;
        cv_.notify_all();
        return;
      }
      head_ = (head_ + n) % ring_.size();
      used_ -= n;
      cv_.notify_all();
    }
  }

  const double bytes_per_second_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint8_t> ring_;
  size_t head_ = 0;  // first unsent byte
  size_t used_ = 0;  // bytes waiting to be sent
  bool sending_ = false;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread sender_;
};

}  // namespace

std::unique_ptr<ByteStream> NewRateLimitedStream(ByteStream* target, uint64_t bits_per_second) {
  if (bits_per_second == 0) return std::make_unique<ByteStreamWrapper>(target);
  return std::make_unique<RateLimitedStream>(target, bits_per_second);
}

}  // namespace p2bmig
