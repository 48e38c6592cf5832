// Lazy restore: what the resolver needs from the target host to let the
// guest run before its memory is complete. Pages that were sent as mappings
// and are not fetched yet are *missing*: the guest blocks on its first access
// to one until the page is installed. The resolver fetches them in the
// background, a faulted page first, and falls back to asking the source for
// pages it cannot fetch (the source keeps the paused guest until the target
// reports every page present).
//
// MissingPageMemory: userfaultfd on the simulated host; Xen's mem_paging
// ring would be the equivalent for HVM guests (docs/lazy-restore.md).
// PageSource: the back channel to the source on the migration connection.
//
// Thread safety: both are used by the one thread that runs
// Resolver::FinishLazily; their fds may be waited on with poll().

#ifndef P2BMIG_LAZY_H_
#define P2BMIG_LAZY_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <p2bmig/types.h>

namespace p2bmig {

class MissingPageMemory {
 public:
  MissingPageMemory() = default;
  MissingPageMemory(const MissingPageMemory&) = delete;
  MissingPageMemory& operator=(const MissingPageMemory&) = delete;
  virtual ~MissingPageMemory() = default;

  // Fills `pfn` with `data` and wakes whoever waits for it, unless the page
  // is present already: returns false then, and the page is left as it is
  // (a present page may hold the guest's own writes).
  virtual bool Install(Pfn pfn, const uint8_t* data) = 0;

  // Readable when the guest waits for pages.
  virtual int fault_fd() const = 0;
  // Appends the pfns of the guest's waiting accesses; does not block. A pfn
  // may be reported again, or after it was installed.
  virtual void TakeFaults(std::vector<Pfn>* pfns) = 0;
  // Wakes accesses waiting on `pfn` (after it was installed by other means).
  virtual void Wake(Pfn pfn) = 0;
};

class PageSource {
 public:
  using PageFn = std::function<void(Pfn pfn, const uint8_t* data)>;

  PageSource() = default;
  PageSource(const PageSource&) = delete;
  PageSource& operator=(const PageSource&) = delete;
  virtual ~PageSource() = default;

  // Asks the source for the content of `pfns` at its pause. Returns false
  // if the source cannot be reached any more.
  virtual bool Request(std::span<const Pfn> pfns) = 0;
  // Readable when pages have arrived or the source went away.
  virtual int ready_fd() const = 0;
  // Passes every page received so far to `fn`; does not block.
  virtual void TakePages(const PageFn& fn) = 0;
  // False once the connection to the source is lost.
  virtual bool alive() const = 0;
  // Tells the source that every page is present: it may destroy its guest.
  virtual void AllPresent() = 0;
};

struct LazyStats {
  uint64_t missing_at_resume = 0;    // pages not present when the guest resumed
  uint64_t faults = 0;               // distinct pages the guest waited for
  uint64_t fetched = 0;              // pages installed from shared storage
  uint64_t from_source = 0;          // pages installed from the source's copy
  uint64_t already_present = 0;      // installs refused: the page was present
  uint64_t storage_failures = 0;     // 1 if shared storage failed for good
  std::string storage_error;         // why, then
  std::vector<double> fault_wait_s;  // per fault: from its report to its install
  int64_t all_present_ns = 0;        // CLOCK_REALTIME when the last page was installed
};

}  // namespace p2bmig

#endif  // P2BMIG_LAZY_H_
