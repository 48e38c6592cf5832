// XenDomain: the Domain interface on a real Xen 4.17 host, for a guest that
// runs in this dom0. It is built on libxenctrl (domain info, pause, log-dirty),
// libxenforeignmemory (read-only mappings of guest frames) and
// libxendevicemodel (marking frames dirty); no Xen type appears in this
// header, so the rest of p2bmig can include it.
//
// What each call does on Xen:
//   * type(): X86_HVM for HVM and PVH guests (XEN_DOMINF_hvm_guest), X86_PV
//     otherwise, as libxc's stream names them.
//   * nr_pfns(): xc_domain_maximum_gpfn() + 1, read once by Open().
//   * ReadPages(): xenforeignmemory_map(PROT_READ) in batches of
//     kMapBatchPages; a frame that cannot be mapped is an Error(kIo), never
//     a page of zeros. A PV guest's frames are mapped by machine frame:
//     its pfns are translated through the p2m it publishes (PvP2m, walked
//     afresh each call, pages re-read if their frame changed meanwhile).
//     32-bit PV guests are refused by Open().
//   * MarkDirty(): xendevicemodel_modified_memory() on each run of
//     consecutive pfns (HVM/PVH), so that libxc's next pass sends them again.
//     Xen has no such call for PV guests: there the pfns are only recorded
//     (TakeMarkedDirty) and the filter's final pass, which re-sends every
//     page whose mapping was invalidated after it was sent, is what keeps
//     PV migrations exact (invariant I3).
//   * EnableLogDirty/DisableLogDirty/PeekAndCleanDirty(): xc_shadow_control
//     and xc_logdirty_control. With libxl, libxc's save loop owns log-dirty
//     mode and p2bmig must not touch it; these exist for a save loop that
//     p2bmig drives itself (the simulated host's mirror of xg_sr_save.c).
//   * Pause()/Resume(): xc_domain_pause()/xc_domain_unpause().
//   * FlushDisks()/DiskSizes(): fsync() and size of the domain's image files
//     (or block devices), given by the caller in configuration order; Xen
//     does not know where the images live.
//
// Thread safety: as Domain. ReadPages, MarkDirty, FlushDisks and DiskSizes may
// run concurrently (libxenctrl is opened re-entrant; the PV dirty set has its
// own mutex); the other calls come from the one thread driving the migration.

#ifndef P2BMIG_XEN_XEN_DOMAIN_H_
#define P2BMIG_XEN_XEN_DOMAIN_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <p2bmig/domain.h>
#include <p2bmig/types.h>

namespace p2bmig {

struct XenOpenOptions {
  // Device nodes of which at least one exists in a Xen dom0: privcmd through
  // devtmpfs, or through xenfs mounted on /proc/xen.
  std::vector<std::string> control_nodes = {"/dev/xen/privcmd", "/proc/xen/privcmd"};
  // Used in messages; libxenctrl does not know domain names (xenstore does).
  std::string name;
};

class XenDomain : public Domain {
 public:
  // Largest number of frames mapped by one xenforeignmemory_map call (the
  // same batch size as libxc's save loop).
  static constexpr size_t kMapBatchPages = 1024;

  // Opens domain `domid` and its disk images. Throws Error(kIo) when this is
  // not a Xen dom0 ("cannot open the Xen control interface: is this a Xen
  // dom0? (...)") or an image cannot be opened, Error(kInvalidArgument) when
  // there is no such domain or it is a 32-bit PV guest.
  static std::unique_ptr<XenDomain> Open(uint32_t domid, std::vector<std::string> disk_paths,
                                         const XenOpenOptions& options = {});
  ~XenDomain() override;

  uint32_t domid() const;

  std::string name() const override;
  DomainType type() const override;
  uint64_t nr_pfns() const override;
  std::vector<uint64_t> DiskSizes() const override;
  void ReadPages(std::span<const Pfn> pfns, uint8_t* out) override;
  void EnableLogDirty() override;
  void DisableLogDirty() override;
  void PeekAndCleanDirty(std::vector<Pfn>* dirty) override;
  void MarkDirty(std::span<const Pfn> pfns) override;
  void Pause() override;
  void Resume() override;
  void FlushDisks() override;

  // PV guests: the pfns given to MarkDirty since the last call, sorted and
  // without duplicates. Always empty for HVM/PVH guests.
  std::vector<Pfn> TakeMarkedDirty();

 private:
  struct Impl;
  explicit XenDomain(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The bound on pfns when restoring into domain `domid` (what the resolver
// checks every mapping and zero page against): RestorePfnBound of the
// domain's max_pages as libxl set it before the restore started
// (xc_domain_getinfolist). Throws Error(kIo) when this is not a Xen dom0,
// Error(kInvalidArgument) when there is no such domain or it has no memory
// limit yet.
uint64_t XenRestorePfnBound(uint32_t domid);

// --- Pure helpers, exposed for tests --------------------------------------

// Pfns below 4 GiB, which an HVM guest's MMIO hole and special pages may
// take (its RAM is then relocated above 4 GiB), and where a PV guest's
// E820 holes lie.
inline constexpr uint64_t kPfnsBelow4GiB = uint64_t{1} << 20;

// A guest with `max_pages` pages of memory has no RAM pfn at or beyond
// max_pages + kPfnsBelow4GiB: every pfn is either RAM (at most max_pages of
// them) or in a hole, and holes lie below 4 GiB. The pfn numbers themselves
// are what libxc's restore populates, so this bounds them without trusting
// the stream.
uint64_t RestorePfnBound(uint64_t max_pages);

// Throws Error(kIo, "cannot open the Xen control interface: is this a Xen
// dom0? (...)") unless one of `nodes` exists.
void CheckXenControlInterface(std::span<const std::string> nodes);

// Throws Error(kInvalidArgument) naming the first pfn >= nr_pfns.
void CheckPfnRange(std::span<const Pfn> pfns, uint64_t nr_pfns, const std::string& what);

// A run of consecutive pfns [first, first + count).
struct PfnRun {
  Pfn first = 0;
  uint32_t count = 0;
  friend bool operator==(const PfnRun&, const PfnRun&) = default;
};

// Sorts and deduplicates `pfns` and merges them into runs of at most
// `max_count` pfns (xendevicemodel_modified_memory takes a 32-bit count).
std::vector<PfnRun> CoalescePfns(std::span<const Pfn> pfns, uint32_t max_count = UINT32_MAX);

// Splits [0, n) into consecutive [begin, end) ranges of at most `batch`.
std::vector<std::pair<size_t, size_t>> SplitBatches(size_t n, size_t batch);

// The pfns whose bit is set in a log-dirty bitmap of `nr_pfns` bits (Xen's
// layout: bit i of the array of 64-bit words, least significant bit first).
std::vector<Pfn> DirtyBitmapToPfns(std::span<const uint64_t> bitmap, uint64_t nr_pfns);

}  // namespace p2bmig

#endif  // P2BMIG_XEN_XEN_DOMAIN_H_
