// Flow control between the resolver and the filter on the simulated host:
// the target reports, on the otherwise unused reverse direction of the
// migration connection, how many mappings it has fetched (8-byte
// little-endian counters, see docs/stream-format.md), and the source's filter
// waits on them so that the fetch work left when the guest pauses stays small.
//
// Thread safety: CreditReceiver runs its own reader thread and may be waited
// on from the filter's thread. ReceiveWithCredits runs on the caller's thread
// plus one reader thread of its own.

#ifndef P2BMIG_SIM_FETCH_CREDITS_H_
#define P2BMIG_SIM_FETCH_CREDITS_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include <p2bmig/byte_stream.h>
#include <p2bmig/filter.h>
#include <p2bmig/resolver.h>

namespace p2bmig::sim {

// Sent by the target on the reverse direction once it holds the whole guest
// (END processed, every fetch verified, memory written): the commit. A
// source that does not receive it before the connection ends must assume the
// target failed and keep its guest. Credits never reach this value.
inline constexpr uint64_t kCommitWord = ~uint64_t{0};

// Target side: sends the commit word. Throws like WriteAll.
void SendCommit(ByteStream* link);

// Source side: reads credits (and the commit) from `link` until the target
// closes it.
class CreditReceiver : public FetchCredits {
 public:
  explicit CreditReceiver(ByteStream* link);
  ~CreditReceiver() override;  // REQUIRES: WaitForEnd() or Abandon() called
  CreditReceiver(const CreditReceiver&) = delete;
  CreditReceiver& operator=(const CreditReceiver&) = delete;

  void WaitForFetched(uint64_t n) override;
  uint64_t Fetched() override;
  // Waits until the target has closed the link.
  void WaitForEnd();
  // After WaitForEnd: whether the target sent its commit.
  bool committed();
  // The migration failed: shut our sending side so that the target gives up
  // and closes, then wait for the reader.
  void Abandon();

 private:
  ByteStream* link_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t fetched_ = 0;
  bool ended_ = false;
  bool committed_ = false;
  std::thread reader_;
};

// Target side: reads one stream from `link` into `resolver`, stopping right
// after END. Records are read on a thread of their own, so that fetches go on
// being passed on, and credits sent back (if `send_credits`), while the
// source is waiting for credits and sends nothing.
struct ReceiveStats {
  size_t peak_queued_bytes = 0;  // most record bytes read ahead of the resolver
};

// At most 64 records and 32 MiB of record bodies (or one record, if larger)
// wait between the reader thread and the resolver.
// `on_record`, if set, is called with each record's type before (true) and
// after (false) the resolver handles it.
void ReceiveWithCredits(ByteStream* link, const StreamLimits& limits, Resolver* resolver,
                        bool send_credits,
                        const std::function<void(uint32_t, bool)>& on_record = {},
                        ReceiveStats* stats = nullptr);

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_FETCH_CREDITS_H_
