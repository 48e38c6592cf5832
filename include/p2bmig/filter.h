// Filter: the source side of p2bmig. Sits between the save loop (libxc's, or
// the simulated host's mirror of it) and the migration link, and rewrites the
// stream as docs/stream-format.md says:
//   * after the domain header it sends P2B_DISKS (the disks' sizes);
//   * in each PAGE_DATA record, a regular page whose content hash equals its
//     p2b entry's (P2bMap::Verify, invariant I2) leaves as a P2B_PAGE_MAPPINGS
//     entry, an all-zero page as a P2B_ZERO_PAGES entry, and the rest as
//     PAGE_DATA;
//   * when a sent mapping's block is written afterwards, the page is marked
//     dirty (Domain::MarkDirty) so that pre-copy sends it again, and before
//     the first record after the last memory pass (X86_TSC_INFO) the filter
//     drains the guest's I/O, flushes the disks and sends as PAGE_DATA, read
//     from the paused guest, every page whose newest record is a mapping
//     invalidated since (invariants I3, I4);
//   * after a VERIFY record everything passes unchanged, so that the stock
//     restore's verify pass compares real memory;
//   * with FetchCredits, it never lets the target have more than
//     max_unfetched_mappings mappings still to fetch (flow control): a page
//     that would exceed that window leaves as PAGE_DATA, so that the link
//     carries data while the shared storage catches up (or, with
//     data_when_window_full off, the filter waits for the target);
//   * a page whose block was rewritten since the stream began (its entry
//     removed by a write of other content to the block) leaves as PAGE_DATA
//     while it holds that block: the block is being rewritten, and a mapping
//     would likely cost a fetch of a stale block and a re-send.
//
// Thread safety: WriteHeaders/WriteRecord from one thread; the p2b map's
// removal listener (installed by the constructor, removed by the destructor)
// may run on any thread.

#ifndef P2BMIG_FILTER_H_
#define P2BMIG_FILTER_H_

#include <cstdint>
#include <memory>

#include <p2bmig/domain.h>
#include <p2bmig/io_event.h>
#include <p2bmig/p2b_map.h>
#include <p2bmig/stream.h>

namespace p2bmig {

struct FilterOptions {
  bool send_mappings = true;  // false: pass-through except zero pages
  bool elide_zero_pages = true;
  // With FetchCredits: at most this many mappings may be sent that the
  // target has not fetched yet (0: no limit). Bounds the fetch work left for
  // the downtime when shared storage is slower than the link.
  uint64_t max_unfetched_mappings = 1024;
  // With FetchCredits and the window above full: true sends the page with
  // its content (the link would otherwise idle), false waits for credits.
  bool data_when_window_full = true;
  // Send a page as data, not as a mapping, while it holds a block that was
  // rewritten since the stream began (P2bMap::RemovalReason::kBlockWritten).
  bool data_after_block_rewrite = true;
  // Offer lazy restore (P2B_LAZY_RESUME): the target may resume the guest
  // before every mapped page is fetched. The caller must then keep the
  // paused guest and serve page requests until the target reports that
  // every page is present. Needs a back channel (`credits`).
  bool lazy_resume = false;
};

// The target's report of how many of the mappings sent so far it has
// fetched (or dropped as superseded), carried back on the migration link.
class FetchCredits {
 public:
  virtual ~FetchCredits() = default;
  // Blocks until the target has fetched at least `n` mappings, or the link
  // has failed (the next write then reports the failure).
  virtual void WaitForFetched(uint64_t n) = 0;
  // How many the target has fetched so far, without waiting.
  virtual uint64_t Fetched() = 0;
};

struct FilterStats {
  uint64_t pages_in = 0;                // pages seen in PAGE_DATA records
  uint64_t pages_data = 0;              // pages sent with their content
  uint64_t pages_mapped = 0;            // pages sent as mappings
  uint64_t pages_zero = 0;              // pages sent as zero pages
  uint64_t pages_resent = 0;            // pages re-sent at the end (I3)
  uint64_t mappings_invalidated = 0;    // sent mappings whose entry was removed later
  uint64_t pages_data_window_full = 0;  // mappable pages sent as data: window full
  uint64_t pages_data_rewritten = 0;    // mappable pages sent as data: block rewritten
  double final_pass_s = 0;   // time of the final pass (drain, flush, re-sends): in the downtime
  double credit_wait_s = 0;  // time spent waiting for the target's fetches (guest running)
};

class Filter : public RecordSink {
 public:
  // REQUIRES: all pointers outlive the filter. `credits` may be null (no
  // back channel, e.g. a stream saved to a file).
  Filter(P2bMap* map, Domain* domain, IoTap* tap, RecordSink* out, FilterOptions options = {},
         FetchCredits* credits = nullptr);
  ~Filter() override;

  void WriteHeaders(const ImageHeader& image, const DomainHeader& domain) override;
  void WriteRecord(const Record& record) override;

  FilterStats stats() const;

  // Changes max_unfetched_mappings from the next PAGE_DATA record on (e.g. a
  // smaller window for the last round before the pause).
  void SetMaxUnfetchedMappings(uint64_t n);
  // Mappings sent so far that the target has not reported fetched; 0
  // without FetchCredits.
  uint64_t UnfetchedMappings() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace p2bmig

#endif  // P2BMIG_FILTER_H_
