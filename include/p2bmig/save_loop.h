// SaveLoop: pre-copy live migration of a Domain into a RecordSink, mirroring
// Xen 4.17's xg_sr_save.c for an HVM guest so that the simulated host's
// baseline is stock Xen's behaviour:
//   headers, X86_CPUID_POLICY, X86_MSR_POLICY, STATIC_DATA_END;
//   log-dirty on; round 1 sends every page; then, while the precopy policy
//   says continue (fewer than 5 iterations and at least 50 dirty pages), the
//   pages dirtied since the last round; batches of at most 1024 pages;
//   then pause, the pages dirtied since, X86_TSC_INFO, HVM_CONTEXT,
//   HVM_PARAMS and END.
// On Xen, libxc runs this loop itself; the filter is what p2bmig adds.
//
// Thread safety: one thread. On an error the domain is resumed if this loop
// paused it, so that the source guest keeps running (invariant I6).

#ifndef P2BMIG_SAVE_LOOP_H_
#define P2BMIG_SAVE_LOOP_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <p2bmig/domain.h>
#include <p2bmig/stream.h>

namespace p2bmig {

struct SaveOptions {
  int max_iterations = 5;         // SPP_MAX_ITERATIONS
  uint64_t dirty_threshold = 50;  // SPP_TARGET_DIRTY_COUNT
  size_t batch_pages = 1024;      // MAX_BATCH_SIZE
};

struct SaveProgress {
  int round = 0;
  uint64_t round_pages = 0;  // pages to send in this round
  uint64_t round_sent = 0;   // pages sent so far in this round
  bool final_round = false;
};

struct SaveStats {
  int rounds = 0;           // memory passes, the paused one included
  uint64_t pages_sent = 0;  // pages handed to the sink, all rounds
  std::vector<uint64_t> round_pages;
  std::vector<int64_t> round_start_ns;  // CLOCK_REALTIME when each round began
  int64_t start_ns = 0;                 // CLOCK_REALTIME when the stream began
  int64_t pause_ns = 0;                 // CLOCK_REALTIME when the guest was paused
  int64_t end_ns = 0;                   // CLOCK_REALTIME after END was written
};

class SaveLoop {
 public:
  // REQUIRES: domain and out outlive the loop.
  SaveLoop(Domain* domain, RecordSink* out, SaveOptions options = {});

  // Called when a round begins (even an empty one) and after each batch;
  // must be cheap.
  void SetProgressCallback(std::function<void(const SaveProgress&)> fn) {
    progress_ = std::move(fn);
  }

  // Runs the whole migration. Leaves the domain paused on success (the caller
  // destroys or resumes it); resumes it and rethrows on failure.
  SaveStats Run();

 private:
  void SendPages(std::vector<Pfn>& pfns, SaveProgress* progress);
  void WriteStaticData();
  void WriteEndOfCheckpoint();

  Domain* domain_;
  RecordSink* out_;
  SaveOptions options_;
  std::function<void(const SaveProgress&)> progress_;
  SaveStats stats_;
};

int64_t RealtimeNs();

}  // namespace p2bmig

#endif  // P2BMIG_SAVE_LOOP_H_
