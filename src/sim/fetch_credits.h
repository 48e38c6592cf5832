// Flow control between the resolver and the filter on the simulated host:
// the target reports, on the otherwise unused reverse direction of the
// migration connection, how many mappings it has fetched (8-byte
// little-endian counters, see docs/stream-format.md), and the source's filter
// waits on them so that the fetch work left when the guest pauses stays small.
//
// The same reverse direction ends with the target's commit. In lazy restore
// it carries, between the credits and the commit, the target's lazy marker,
// page requests and "all present" report, and the forward direction, after
// END, the source's acknowledgement and answers (docs/stream-format.md,
// section 4).
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
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <p2bmig/byte_stream.h>
#include <p2bmig/domain.h>
#include <p2bmig/filter.h>
#include <p2bmig/lazy.h>
#include <p2bmig/resolver.h>

namespace p2bmig::sim {

// The reverse direction is a sequence of 8-byte words. First fetch credits
// (counters, never reaching the two values below), then, in lazy restore,
// kLazyMarker followed by messages of an 8-byte header {uint32 type, uint32
// count} and `count` pfns of 8 bytes each. In either phase the 8 bytes
// kCommitWord (as a message header: type and count 0xFFFFFFFF) are the last
// the target sends.
//
// The commit: the target holds the whole guest (END processed, every page
// present and verified, memory stored). A source that does not receive it
// before the connection ends must assume the target failed and keep its
// guest.
inline constexpr uint64_t kCommitWord = ~uint64_t{0};
// Lazy restore: "I take up your offer and will resume the guest once you
// acknowledge" (the source answers with a P2B_LAZY_RESUME record after END).
inline constexpr uint64_t kLazyMarker = ~uint64_t{1};
inline constexpr uint32_t kMsgPageRequest = 1;  // count pfns follow
inline constexpr uint32_t kMsgAllPresent = 2;   // count 0
inline constexpr uint32_t kMaxRequestPfns = 4096;

// Target side: sends the commit word. Throws like WriteAll.
void SendCommit(ByteStream* link);

struct ServeStats {
  bool lazy = false;          // the target took lazy restore up
  uint64_t pages_served = 0;  // pages re-sent to the target after END
  uint64_t requests = 0;
  int64_t all_present_ns = 0;  // CLOCK_REALTIME when the target reported it
};

// Source side: reads credits, the target's lazy-restore messages and its
// commit from `link` until the target closes it.
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
  // The source offered lazy restore and sent END. Waits for the target's
  // choice. If it commits without the marker (it restored in paper mode),
  // returns with `lazy` false. If the marker comes, acknowledges it with a
  // P2B_LAZY_RESUME record on `out` -- from then on the target may run the
  // guest, and the caller must never resume its copy on its own -- then
  // answers the target's page requests with the paused `domain`'s pages
  // (PAGE_DATA on `out`, the forward direction) until it reports every page
  // present, and sends END; the commit is still to come (WaitForEnd,
  // committed). Throws Error(kNetwork) if the link ends before that; then
  // `acknowledged()` says whether the target may have resumed the guest.
  ServeStats ServeLazy(Domain* domain, RecordSink* out);
  // Whether ServeLazy acknowledged the target's marker.
  bool acknowledged() const { return acknowledged_; }
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
  bool lazy_ = false;  // the marker has come: messages follow
  std::deque<std::vector<Pfn>> requests_;
  bool all_present_ = false;
  bool acknowledged_ = false;  // only ServeLazy's thread
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

// Target side of lazy restore: the source as a PageSource. Sends the marker
// at construction; reads the source's acknowledgement and answers on its own
// thread.
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
  // Waits until the source has acknowledged the marker (true: it keeps its
  // guest paused from now on) or the link ended first (false: the guest must
  // not be resumed here).
  bool WaitForAcknowledgement();
  // After AllPresent: waits until the source has ended its answers (true:
  // with its END) or the connection (false: the source is gone).
  bool WaitForEnd();
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
  std::condition_variable cv_;
  std::deque<Record> pages_;  // PAGE_DATA answers not taken yet
  bool acknowledged_ = false;
  bool end_seen_ = false;  // the source's END after its answers
  bool ended_ = false;
  std::thread reader_;
};

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_FETCH_CREDITS_H_
