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

enum class Mode { kBaseline, kP2bmig };
const char* ModeName(Mode mode);

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
  // large enough to keep the shared storage busy.
  uint64_t max_unfetched_at_pause = 0;
  // With flow control and FilterOptions::data_when_window_full: the window
  // (filter.max_unfetched_mappings) once the rounds converge (a round
  // shorter than the window, or the last live round), when the source also
  // lets the target catch up at each round's end, so that the wait before
  // the pause is short (0: no change, no waits between rounds).
  uint64_t max_unfetched_last_round = 1024;
  // The migration is complete only once the target has sent its commit on
  // the link (a connection: see fetch_credits.h). Without it, the source
  // resumes its guest and fails, however far the stream got.
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
  // guest is resumed, unchanged, and the error rethrown (invariant I6).
  SourceReport Migrate(ByteStream* link, std::function<void(const SaveProgress&)> progress = {});

  // After a failed Migrate: lets the resumed guest run its workload for
  // `seconds` and returns how many operations it did.
  uint64_t RunOn(double seconds);

  SimGuest& guest() { return *guest_; }
  P2bMap& map() { return *map_; }

 private:
  SourceOptions options_;
  std::unique_ptr<SimGuest> guest_;
  std::unique_ptr<P2bMap> map_;
  std::unique_ptr<BlockIndex> index_;       // hint-free mode
  std::unique_ptr<HintFreeMapper> mapper_;  // hint-free mode
  std::unique_ptr<WorkloadRunner> workload_;
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
};

struct TargetReport {
  ResolverStats resolver;
  uint64_t pages_written = 0;
  uint64_t verify_mismatches = 0;
  uint64_t link_bytes = 0;
  int64_t resume_ns = 0;  // CLOCK_REALTIME when the guest could run
  std::string store;      // where the disks were read from
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
  TargetOptions options_;
  std::unique_ptr<GuestMemory> memory_;
  std::unique_ptr<BlockStore> store_;
  std::unique_ptr<BlockStore> wrapped_store_;
};

}  // namespace p2bmig::sim

#endif  // P2BMIG_SIM_SIM_HOST_H_
