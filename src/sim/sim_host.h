// The simulated host's two ends of a migration, used by the `p2bmig send` and
// `p2bmig receive` commands and by the tests. The source runs a SimGuest with
// a workload, its p2b map fed by the guest's I/O, the save loop and (in
// p2bmig mode) the filter; the target runs the resolver with its fetch queue
// on the shared storage and the restore into its own guest memory.
//
// Thread safety: each host is driven by one thread.

#ifndef P2BMIG_SIM_SIM_HOST_H_
#define P2BMIG_SIM_SIM_HOST_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <p2bmig/byte_stream.h>
#include <p2bmig/filter.h>
#include <p2bmig/p2b_map.h>
#include <p2bmig/resolver.h>
#include <p2bmig/save_loop.h>

#include "sim/guest_memory.h"
#include "sim/sim_guest.h"
#include "sim/workload.h"
#include "source/block_index.h"
#include "source/hint_free.h"

namespace p2bmig::sim {

// kLazy: p2bmig, and the target resumes the guest as soon as the pages sent
// as data are in place; the mapped pages still being fetched are faulted in
// on demand and fetched in the background (docs/lazy-restore.md).
enum class Mode { kBaseline, kP2bmig, kLazy };
const char* ModeName(Mode mode);
// "baseline", "p2bmig" or "lazy"; throws Error(kInvalidArgument) otherwise.
Mode ParseMode(const std::string& name);

// Where p2b entries come from: the I/O tap (which page was read from or
// written to which block), or, hint-free, a content index of the disk
// images built when the migration starts, kept current by the writes'
// sectors alone (the tap's pfns are not used).
enum class HintSource { kTap, kIndex };

struct SourceOptions {
  SimGuestConfig guest;
  std::string workload = "fileserver";
  uint64_t seed = 1;
  Mode mode = Mode::kP2bmig;
  SaveOptions save;
  FilterOptions filter;
  // Read the target's fetch credits from the link (flow control). Only for
  // links that carry them back (a connection, not a file).
  bool flow_control = true;
  // With flow control: before pausing the guest (and at the end of each
  // live round, unless filter.data_when_window_full and the rounds are not
  // converging yet: see max_unfetched_last_round), wait
  // (guest still running) until the target has at most this many mappings
  // left to fetch, so that the downtime holds at most that much fetch work.
  // filter.max_unfetched_mappings, the window during a round, can then be
  // large enough to keep the shared storage busy. Not used in lazy mode,
  // where the fetch work left at the pause is done while the guest runs on
  // the target.
  uint64_t max_unfetched_at_pause = 0;
  // With flow control and FilterOptions::data_when_window_full: the window
  // (filter.max_unfetched_mappings) once the rounds converge (a round
  // shorter than the window, or the last live round), when the source also
  // lets the target catch up at each round's end, so that the wait before
  // the pause is short (0: no change, no waits between rounds).
  uint64_t max_unfetched_last_round = 1024;
  // The migration is complete only once the target has sent its commit on
  // the link (a connection: see fetch_credits.h). Without it, the source
  // resumes its guest and fails, however far the stream got. Lazy mode
  // always waits for it.
  bool wait_for_commit = false;
  // Optional: wraps the guest before the migration sees it (fault injection).
  std::function<std::unique_ptr<Domain>(Domain*)> wrap_domain;
  HintSource hints = HintSource::kTap;
};

struct SourceReport {
  Mode mode = Mode::kP2bmig;
  SaveStats save;
  FilterStats filter;       // zero in baseline mode
  double pause_wait_s = 0;  // waited between rounds for the target's fetches
  uint64_t link_bytes = 0;
  uint64_t p2b_entries_at_start = 0;
  uint64_t p2b_map_bytes = 0;
  GuestMemoryUse memory_use;
  uint64_t workload_ops = 0;
  BlockIndexStats index;    // hint-free mode: the index build
  HintFreeStats hint_free;  // hint-free mode: lookups, entries, writes
  uint64_t index_memory_bytes = 0;
  double memory_ops_per_s = 0;  // the guest's memory accesses during pre-copy
  // Lazy mode: whether the target took it up, what the source did for the
  // target after END.
  bool lazy = false;
  uint64_t pages_served = 0;
  int64_t all_present_ns = 0;  // when the target reported every page present
};

class SourceHost {
 public:
  explicit SourceHost(SourceOptions options);
  ~SourceHost();
  SourceHost(const SourceHost&) = delete;
  SourceHost& operator=(const SourceHost&) = delete;

  // Boots the guest's workload to its steady state (page cache, heap).
  void WarmUp();
  // Migrates over `link` while the workload runs. On success the guest is
  // left paused (its memory is what the target must hold). On failure the
  // guest is resumed, unchanged, and the error rethrown (invariant I6) --
  // except in lazy mode once the source has acknowledged the target's lazy
  // marker: the target may run the guest from then on, so a failure after
  // that leaves it paused here.
  SourceReport Migrate(ByteStream* link, std::function<void(const SaveProgress&)> progress = {});

  // After a failed Migrate: lets the resumed guest run its workload for
  // `seconds` and returns how many operations it did.
  // REQUIRES: !guest_kept_paused().
  uint64_t RunOn(double seconds);

  // After a failed Migrate in lazy mode: the target had taken lazy restore
  // up, so the guest was left paused (it must not run here on its own).
  bool guest_kept_paused() const { return kept_paused_; }

  SimGuest& guest() { return *guest_; }
  P2bMap& map() { return *map_; }

 private:
  SourceOptions options_;
  std::unique_ptr<SimGuest> guest_;
  std::unique_ptr<P2bMap> map_;
  std::unique_ptr<BlockIndex> index_;       // hint-free mode
  std::unique_ptr<HintFreeMapper> mapper_;  // hint-free mode
  std::unique_ptr<WorkloadRunner> workload_;
  bool kept_paused_ = false;
};

struct TargetOptions {
  uint64_t memory_pages = 0;
  std::string memory_path;         // empty: anonymous
  std::vector<std::string> disks;  // the target's own image locations
  ResolverOptions resolver;        // nr_pfns is filled in from memory_pages
  // Report fetch progress to the source on the link (a connection only).
  bool send_credits = true;
  // Optional: called with each record's type before (true) and after
  // (false) the resolver handles it (the CLI names phases with it).
  std::function<void(uint32_t type, bool before)> on_record;
  // Optional: wraps the store (fault injection, delays in tests).
  std::function<std::unique_ptr<BlockStore>(BlockStore*)> wrap_store;
  // Lazy restore: resume early when the source offers it (needs a link that
  // goes both ways). `lazy_required` fails a migration the source does not
  // offer it for.
  bool allow_lazy = false;
  bool lazy_required = false;
  // After resume the guest runs this workload's memory accesses (seeded)
  // and keeps running for `run_after_s` once every page is present.
  std::string workload = "fileserver";
  uint64_t seed = 1;
  double run_after_s = 0.5;
  // Optional, for tests: called right after the guest resumed, before any
  // missing page is installed.
  std::function<void()> on_resume;
};

struct TargetReport {
  ResolverStats resolver;
  uint64_t pages_written = 0;
  uint64_t verify_mismatches = 0;
  uint64_t link_bytes = 0;
  int64_t resume_ns = 0;  // CLOCK_REALTIME when the guest could run
  std::string store;      // where the disks were read from
  // Lazy mode.
  bool lazy = false;
  LazyStats lazy_stats;
  int64_t all_present_ns = 0;
  double memory_ops_per_s_during = 0;      // resume to all present
  double memory_ops_per_s_after = 0;       // the run_after_s that follow
  std::vector<MemoryAccess> guest_writes;  // by the resumed guest
  uint64_t writes_to_missing = 0;          // of those, to pages missing at resume
  // The connection to the source was lost before the end of the lazy phase
  // (every page then came from the shared storage; no commit can be sent).
  bool source_lost = false;
};

class TargetHost {
 public:
  // Opens the disks (the shared storage); no guest memory yet.
  explicit TargetHost(TargetOptions options);
  ~TargetHost();
  TargetHost(const TargetHost&) = delete;
  TargetHost& operator=(const TargetHost&) = delete;

  // Receives one migration; creates the guest's memory first. Throws on any
  // failure; the caller then discards the target guest (no half-restored
  // guest is ever reported as running).
  TargetReport Receive(ByteStream* link);

  // REQUIRES: Receive was called.
  GuestMemory& memory() { return *memory_; }

 private:
  void ReceiveLazily(ByteStream* link, Resolver* resolver, TargetReport* report);

  TargetOptions options_;
  std::unique_ptr<GuestMemory> memory_;
  std::unique_ptr<BlockStore> store_;
  std::unique_ptr<BlockStore> wrapped_store_;
};

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_SIM_HOST_H_
