// Flow control between the resolver and the filter on the simulated host:
// the target reports, on the otherwise unused reverse direction of the
// migration connection, how many mappings it has fetched (8-byte
// little-endian counters, see docs/stream-format.md), and the source's filter
// waits on them so that the fetch work left when the guest pauses stays small.
//
// In lazy restore the same reverse direction then carries the target's page
// requests and its "all present" report, and the forward direction, after
// END, the source's answers (docs/stream-format.md, section 4).
//
// Thread safety: CreditReceiver runs its own reader thread and may be waited
// on from the filter's thread. ReceiveWithCredits runs on the caller's thread
// plus one reader thread of its own. SourceLink runs a reader thread; its
// PageSource calls come from one thread.

#ifndef P2BMIG_SIM_FETCH_CREDITS_H_
#define P2BMIG_SIM_FETCH_CREDITS_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <p2bmig/byte_stream.h>
#include <p2bmig/domain.h>
#include <p2bmig/filter.h>
#include <p2bmig/lazy.h>
#include <p2bmig/resolver.h>

namespace p2bmig::sim {

// The reverse direction in lazy restore: after its last credit the target
// sends kLazyMarker, then messages of an 8-byte header {uint32 type, uint32
// count} and `count` pfns of 8 bytes each.
inline constexpr uint64_t kLazyMarker = ~uint64_t{0};
inline constexpr uint32_t kMsgPageRequest = 1;  // count pfns follow
inline constexpr uint32_t kMsgAllPresent = 2;   // count 0
inline constexpr uint32_t kMaxRequestPfns = 4096;

struct ServeStats {
  uint64_t pages_served = 0;  // pages re-sent to the target after END
  uint64_t requests = 0;
  int64_t all_present_ns = 0;  // CLOCK_REALTIME when the target reported it
};

// Source side: reads credits from `link` until the target closes it.
class CreditReceiver : public FetchCredits {
 public:
  explicit CreditReceiver(ByteStream* link);
  ~CreditReceiver() override;  // REQUIRES: WaitForEnd() or Abandon() called
  CreditReceiver(const CreditReceiver&) = delete;
  CreditReceiver& operator=(const CreditReceiver&) = delete;

  void WaitForFetched(uint64_t n) override;
  // Waits until the target has closed the link.
  void WaitForEnd();
  // Lazy restore, after END: answers the target's page requests with the
  // paused `domain`'s pages (PAGE_DATA on `out`, the forward direction)
  // until it reports every page present; then sends END. Throws
  // Error(kNetwork) if the link ends first: the target has run the guest
  // since, so the caller must keep it paused, not resume it.
  ServeStats ServeLazy(Domain* domain, RecordSink* out);
  // The migration failed: shut our sending side so that the target gives up
  // and closes, then wait for the reader.
  void Abandon();

 private:
  ByteStream* link_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t fetched_ = 0;
  bool ended_ = false;
  bool lazy_ = false;  // the marker has come: messages follow
  std::deque<std::vector<Pfn>> requests_;
  bool all_present_ = false;
  std::thread reader_;
};

// Target side: reads one stream from `link` into `resolver`, stopping right
// after END. Records are read on a thread of their own, so that fetches go on
// being passed on, and credits sent back (if `send_credits`), while the
// source is waiting for credits and sends nothing.
void ReceiveWithCredits(ByteStream* link, const StreamLimits& limits, Resolver* resolver,
                        bool send_credits);

// Target side of lazy restore: the source as a PageSource. Sends the marker
// at construction; reads the source's answers on its own thread.
class SourceLink : public PageSource {
 public:
  SourceLink(ByteStream* link, const StreamLimits& limits);
  ~SourceLink() override;  // waits for the source to end its answers (or die)
  SourceLink(const SourceLink&) = delete;
  SourceLink& operator=(const SourceLink&) = delete;

  bool Request(std::span<const Pfn> pfns) override;
  int ready_fd() const override { return event_fd_; }
  void TakePages(const PageFn& fn) override;
  bool alive() const override;
  void AllPresent() override;
  // Gives up on the source: closes our side and stops reading.
  void Abandon();

 private:
  bool Send(uint32_t type, std::span<const Pfn> pfns);
  void Signal();

  ByteStream* link_;
  StreamLimits limits_;
  int event_fd_ = -1;
  bool write_failed_ = false;
  bool all_present_sent_ = false;
  mutable std::mutex mu_;
  std::deque<Record> pages_;  // PAGE_DATA answers not taken yet
  bool ended_ = false;
  std::thread reader_;
};

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_FETCH_CREDITS_H_
