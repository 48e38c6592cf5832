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

namespace p2bmig::sim {

// kLazy: p2bmig, and the target resumes the guest as soon as the pages sent
// as data are in place; the mapped pages still being fetched are faulted in
// on demand and fetched in the background (docs/lazy-restore.md).
enum class Mode { kBaseline, kP2bmig, kLazy };
const char* ModeName(Mode mode);
// "baseline", "p2bmig" or "lazy"; throws Error(kInvalidArgument) otherwise.
Mode ParseMode(const std::string& name);

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
  // Optional: wraps the guest before the migration sees it (fault injection).
  std::function<std::unique_ptr<Domain>(Domain*)> wrap_domain;
};

struct SourceReport {
  Mode mode = Mode::kP2bmig;
  SaveStats save;
  FilterStats filter;  // zero in baseline mode
  uint64_t link_bytes = 0;
  uint64_t p2b_entries_at_start = 0;
  uint64_t p2b_map_bytes = 0;
  GuestMemoryUse memory_use;
  uint64_t workload_ops = 0;
  double memory_ops_per_s = 0;  // the guest's memory accesses during pre-copy
  // Lazy mode: what the source did for the target after END.
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
  // except in lazy mode once END is sent: the target runs the guest from
  // then on, so a failure after that leaves it paused here.
  SourceReport Migrate(ByteStream* link, std::function<void(const SaveProgress&)> progress = {});

  SimGuest& guest() { return *guest_; }
  P2bMap& map() { return *map_; }

 private:
  SourceOptions options_;
  std::unique_ptr<SimGuest> guest_;
  std::unique_ptr<P2bMap> map_;
  std::unique_ptr<WorkloadRunner> workload_;
};

struct TargetOptions {
  uint64_t memory_pages = 0;
  std::string memory_path;         // empty: anonymous
  std::vector<std::string> disks;  // the target's own image locations
  ResolverOptions resolver;        // nr_pfns is filled in from memory_pages
  // Report fetch progress to the source on the link (a connection only).
  bool send_credits = true;
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
};

class TargetHost {
 public:
  explicit TargetHost(TargetOptions options);
  ~TargetHost();
  TargetHost(const TargetHost&) = delete;
  TargetHost& operator=(const TargetHost&) = delete;

  // Receives one migration. Throws on any failure; the caller then discards
  // the target guest (no half-restored guest is ever reported as running).
  TargetReport Receive(ByteStream* link);

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
