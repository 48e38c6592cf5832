// PvP2m: the pfn -> machine frame translation of a 64-bit PV guest, read
// from the guest's own p2m as Xen 4.17's libxc reads it to save a PV guest
// (map_p2m() in tools/libs/guest/xg_sr_save_x86_pv.c). A PV guest's frames
// can only be mapped from dom0 by machine frame number (mfn), so reading
// a PV guest's page by pfn needs this translation first.
//
// The guest publishes its p2m in the arch part of its shared info page:
//   * max_pfn: the number of valid p2m entries;
//   * p2m_cr3 / p2m_vaddr: a linear list of 8-byte mfns at virtual address
//     p2m_vaddr in the address space whose 4-level page table root is
//     p2m_cr3. libxc prefers it whenever p2m_cr3 is not 0, and Linux PV
//     guests fill it in (xen_setup_mfn_list_list(), since Linux 4.3);
//   * pfn_to_mfn_frame_list_list: otherwise, the mfn of a 3-level tree (a
//     page of mfns of pages of mfns of p2m pages, 512 entries per page).
// Every call walks the guest's tables afresh: the p2m of a running guest
// changes (ballooning, page exchanges), and the filter's final pass reads
// the paused guest, whose p2m is then what the stream must reflect.
//
// Mapping frames is left to a MachineFrames implementation (xenforeignmemory
// on Xen, an in-memory table in tests), so the walk runs without Xen.
//
// 32-bit PV guests (guest width 4: 4-byte p2m entries, 3-level PAE tables)
// are refused (CheckPvGuestWidth); Xen 4.17 still migrates them but p2bmig
// does not read their memory.
//
// Thread safety: a PvP2m keeps no state between calls; concurrent calls are
// safe if the MachineFrames allows concurrent reads.

#ifndef P2BMIG_XEN_P2M_H_
#define P2BMIG_XEN_P2M_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <p2bmig/types.h>

namespace p2bmig {

// Reads whole machine frames of one domain.
class MachineFrames {
 public:
  MachineFrames() = default;
  MachineFrames(const MachineFrames&) = delete;
  MachineFrames& operator=(const MachineFrames&) = delete;
  virtual ~MachineFrames() = default;

  // Copies frames `mfns` into `out` (kPageSize bytes each). Throws
  // Error(kIo) naming the frame if one cannot be read (e.g. it does not
  // belong to the domain).
  virtual void Read(std::span<const uint64_t> mfns, uint8_t* out) = 0;
};

// The p2m fields of a 64-bit PV guest's shared info page (struct
// arch_shared_info in xen/arch-x86/xen.h).
struct PvP2mRoot {
  uint64_t max_pfn = 0;  // number of valid entries
  uint64_t frame_list_list = 0;
  uint64_t p2m_cr3 = 0;
  uint64_t p2m_vaddr = 0;
  uint64_t p2m_generation = 0;
};

// Decodes / encodes those fields of a shared info page (kPageSize bytes, the
// 64-bit layout). Encode is for tests.
PvP2mRoot DecodeSharedInfoP2m(const uint8_t* page);
void EncodeSharedInfoP2m(const PvP2mRoot& root, uint8_t* page);

// Throws Error(kInvalidArgument) unless `width` (xc_domain_get_guest_width)
// is 8: 32-bit PV guests are not supported.
void CheckPvGuestWidth(unsigned width, uint32_t domid);

// Entries of a p2m page, page table or tree page (8 bytes each).
inline constexpr uint64_t kP2mEntriesPerPage = kPageSize / sizeof(uint64_t);
// What Linux stores for a pfn without memory (INVALID_P2M_ENTRY).
inline constexpr uint64_t kInvalidP2mEntry = ~uint64_t{0};

class PvP2m {
 public:
  // `shared_info_mfn`: the domain's shared info frame (xc_domaininfo_t's
  // shared_info_frame); `max_mfn`: the host's highest machine frame
  // (xc_maximum_ram_page), above which no table entry is believed.
  // REQUIRES: frames outlives the PvP2m.
  PvP2m(MachineFrames* frames, uint64_t shared_info_mfn, uint64_t max_mfn, uint32_t domid);
  PvP2m(const PvP2m&) = delete;
  PvP2m& operator=(const PvP2m&) = delete;

  // The machine frame of each pfn, read from the guest's tables now. Throws
  // Error(kInvalidArgument) for a pfn >= max_pfn, Error(kIo) for a table the
  // guest left malformed or a pfn without memory.
  std::vector<uint64_t> Translate(std::span<const Pfn> pfns);

  // Copies the pages `pfns` into `out`, translating them first and again
  // afterwards: a pfn whose mfn changed in between (the guest exchanged the
  // page while it was read) is read again, up to kMaxRereads times, so that
  // what is returned was the pfn's content at some moment. A paused guest
  // never needs a second pass.
  void ReadPages(std::span<const Pfn> pfns, uint8_t* out);
  static constexpr int kMaxRereads = 8;

 private:
  PvP2mRoot ReadRoot();
  // The mfns of the p2m pages with the given indices (pfn / 512), sorted.
  std::vector<uint64_t> LeafFramesFromList(const PvP2mRoot& root, std::span<const uint64_t> leaves);
  std::vector<uint64_t> LeafFramesFromTree(const PvP2mRoot& root, std::span<const uint64_t> leaves);
  // Reads each distinct frame of `mfns` once: `sorted` gets them in order,
  // `pages` their contents at the same positions.
  void ReadDistinct(std::span<const uint64_t> mfns, std::vector<uint64_t>* sorted,
                    std::vector<uint8_t>* pages);
  void CheckMfn(uint64_t mfn, const std::string& what) const;

  MachineFrames* frames_;
  const uint64_t shared_info_mfn_;
  const uint64_t max_mfn_;
  const uint32_t domid_;
};

}  // namespace p2bmig

#endif  // P2BMIG_XEN_P2M_H_
