// Resolver: the target side of p2bmig. Consumes a stream with p2bmig records
// and hands the next stage (the restore) a plain libxc v2 stream:
//   * P2B_DISKS is checked against the target's own disks and dropped;
//   * each P2B_PAGE_MAPPINGS entry is checked (pfn range, disk index, block
//     within the disk: invariant I5) and submitted to the fetch queue at once;
//     when the block arrives its hash is checked and it goes out as PAGE_DATA;
//   * P2B_ZERO_PAGES entries go out as PAGE_DATA of zeros;
//   * a later record for a pfn always wins: a fetch result is dropped if any
//     record for its pfn came after its mapping (invariant I3);
//   * before END it waits for the fetch queue to drain, so the restore sees
//     complete memory before the guest can run. A fetched block whose hash
//     does not match, and that no later record replaced, fails the migration
//     (Error kVerification) after one re-read.
//   * lazy restore, if the target allows it and the source offers it
//     (P2B_LAZY_RESUME): END passes without waiting for the fetch queue; the
//     pages still owed (MissingPfns) are left out, the guest resumes, and
//     FinishLazily installs them while it runs, a page the guest waits for
//     first, from the shared storage or, if that fails, from the source.
//
// Thread safety: one thread.

#ifndef P2BMIG_RESOLVER_H_
#define P2BMIG_RESOLVER_H_

#include <cstdint>
#include <functional>
#include <memory>

#include <p2bmig/block_store.h>
#include <p2bmig/fetch_queue.h>
#include <p2bmig/lazy.h>
#include <p2bmig/stream.h>

namespace p2bmig {

struct ResolverOptions {
  uint64_t nr_pfns = 0;  // the target domain's pfn space; 0 = no bound
  StreamLimits limits;
  // Mappings received and not yet fetched, at most (each costs ~100 bytes of
  // bookkeeping). A source that sends mappings faster than the storage
  // serves them (one that ignores fetch credits) is made to wait: the
  // resolver stops reading until the fetches are done.
  size_t max_pending_fetches = 1u << 18;
  FetchOptions fetch;
  // Resume before memory is complete when the source offers it.
  bool allow_lazy = false;
  // Lazy phase: a page the guest has waited for this long is asked of the
  // source as well (whichever copy comes first is installed), and shared
  // storage that has completed no read for `lazy_storage_stall_s` while
  // pages are missing is given up on (every missing page is then asked of
  // the source), rather than waiting out its own retries with the guest
  // blocked.
  double lazy_fault_source_after_s = 0.5;
  double lazy_storage_stall_s = 5;
  // Optional (tests): called on the resolving thread after each step of the
  // lazy phase with the statistics so far. Must not block.
  std::function<void(const LazyStats&)> on_lazy_progress;
};

struct ResolverStats {
  uint64_t pages_data = 0;            // pages received with their content
  uint64_t pages_mapped = 0;          // mappings received
  uint64_t pages_zero = 0;            // zero pages received
  uint64_t fetches_applied = 0;       // fetched pages passed on
  uint64_t fetches_superseded = 0;    // fetched pages dropped for a newer record
  uint64_t hash_mismatches = 0;       // fetched blocks that did not match (before re-read)
  uint64_t nas_bytes = 0;             // bytes read from shared storage
  uint64_t nas_reads = 0;             // read operations on shared storage
  double drain_wait_s = 0;            // time END waited for the fetch queue
  uint64_t peak_pending_fetches = 0;  // most mappings waiting for their fetch at once
};

class Resolver : public RecordSink {
 public:
  // REQUIRES: store and out outlive the resolver.
  Resolver(BlockStore* store, RecordSink* out, ResolverOptions options = {});
  ~Resolver() override;

  void WriteHeaders(const ImageHeader& image, const DomainHeader& domain) override;
  void WriteRecord(const Record& record) override;

  // Passes on fetches completed so far without waiting for a record; call it
  // while the stream is idle.
  void Progress();

  // Mappings received so far whose fetch is finished (passed on, dropped as
  // superseded, or set aside as mismatched): what the target reports to the
  // source as its fetch credits.
  uint64_t mappings_fetched() const;

  // True once the source has asked for fetch credits (P2B_FETCH_CREDITS):
  // only then may they be sent, since only then are they read.
  bool credits_wanted() const;

  // True once the source has offered lazy restore and the target allows it:
  // END then passes before every mapped page is fetched.
  bool lazy() const;

  // After END in lazy mode: the pfns whose newest record is a mapping that
  // is not installed yet. They must be missing (not present) in the guest's
  // memory before it resumes.
  std::vector<Pfn> MissingPfns() const;

  // After END in lazy mode, with the guest running: installs every missing
  // page into `memory` (the ones the guest waits for first), from the shared
  // storage, or from `source` for blocks that cannot be fetched or do not
  // match their hash; then tells the source that every page is present.
  // Throws (the guest must then be stopped) if a page can be had from
  // neither. REQUIRES: called once, after END, with `lazy()`.
  LazyStats FinishLazily(MissingPageMemory* memory, PageSource* source);

  ResolverStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace p2bmig

#endif  // P2BMIG_RESOLVER_H_
