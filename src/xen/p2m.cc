// PvP2m: walks a 64-bit PV guest's p2m (linear list or 3-level tree) the way
// libxc's map_p2m_list() / map_p2m_tree() do, for the pfns asked only.

#include "xen/p2m.h"

#include <algorithm>
#include <cstring>
#include <iterator>

#include <fmt/format.h>

#include "xen/xen_headers.h"

namespace p2bmig {

namespace {

// The 64-bit layout is the native one of a 64-bit dom0's tools.
static_assert(sizeof(void*) == 8, "PV p2m decoding assumes a 64-bit dom0");
static_assert(sizeof(shared_info_t) <= kPageSize);
constexpr size_t kArchOffset = offsetof(shared_info_t, arch);

constexpr uint64_t kPteFrameMask = 0x000ffffffffff000ull;
constexpr uint64_t kPtePresent = uint64_t{1} << 0;
constexpr uint64_t kPtePse = uint64_t{1} << 7;
constexpr int kLevels = 4;  // 64-bit PV guests use 4-level page tables
// Xen's own part of a 64-bit PV guest's address space.
constexpr uint64_t kHypervisorVirtStart = 0xFFFF800000000000ull;
constexpr uint64_t kHypervisorVirtEnd = 0xFFFF880000000000ull;

bool IsCanonical(uint64_t va) {
  const int64_t sva = static_cast<int64_t>(va);
  return (sva >> 47) == 0 || (sva >> 47) == -1;
}

uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Position of `mfn` in `sorted`. REQUIRES: it is there.
size_t IndexOf(const std::vector<uint64_t>& sorted, uint64_t mfn) {
  return static_cast<size_t>(std::lower_bound(sorted.begin(), sorted.end(), mfn) - sorted.begin());
}

}  // namespace

PvP2mRoot DecodeSharedInfoP2m(const uint8_t* page) {
  arch_shared_info_t arch;
  std::memcpy(&arch, page + kArchOffset, sizeof(arch));
  PvP2mRoot root;
  root.max_pfn = arch.max_pfn;
  root.frame_list_list = arch.pfn_to_mfn_frame_list_list;
  root.p2m_cr3 = arch.p2m_cr3;
  root.p2m_vaddr = arch.p2m_vaddr;
  root.p2m_generation = arch.p2m_generation;
  return root;
}

void EncodeSharedInfoP2m(const PvP2mRoot& root, uint8_t* page) {
  arch_shared_info_t arch;
  std::memcpy(&arch, page + kArchOffset, sizeof(arch));
  arch.max_pfn = root.max_pfn;
  arch.pfn_to_mfn_frame_list_list = root.frame_list_list;
  arch.p2m_cr3 = root.p2m_cr3;
  arch.p2m_vaddr = root.p2m_vaddr;
  arch.p2m_generation = root.p2m_generation;
  std::memcpy(page + kArchOffset, &arch, sizeof(arch));
}

void CheckPvGuestWidth(unsigned width, uint32_t domid) {
  if (width == 8) return;
  if (width == 4) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("domain {} is a 32-bit PV guest: p2bmig reads the memory of 64-bit "
                            "PV, HVM and PVH guests only (migrate it without p2bmig)",
                            domid));
  }
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("domain {}: unexpected PV guest width {} bytes", domid, width));
}

PvP2m::PvP2m(MachineFrames* frames, uint64_t shared_info_mfn, uint64_t max_mfn, uint32_t domid)
    : frames_(frames), shared_info_mfn_(shared_info_mfn), max_mfn_(max_mfn), domid_(domid) {}

void PvP2m::CheckMfn(uint64_t mfn, const std::string& what) const {
  if (mfn == 0 || mfn > max_mfn_) {
    throw Error(ErrorKind::kIo, fmt::format("PV domain {}: bad machine frame {:#x} for {} (the "
                                            "host's frames end at {:#x})",
                                            domid_, mfn, what, max_mfn_));
  }
}

PvP2mRoot PvP2m::ReadRoot() {
  std::vector<uint8_t> page(kPageSize);
  const uint64_t mfn = shared_info_mfn_;
  frames_->Read({&mfn, 1}, page.data());
  return DecodeSharedInfoP2m(page.data());
}

void PvP2m::ReadDistinct(std::span<const uint64_t> mfns, std::vector<uint64_t>* sorted,
                         std::vector<uint8_t>* pages) {
  sorted->assign(mfns.begin(), mfns.end());
  std::sort(sorted->begin(), sorted->end());
  sorted->erase(std::unique(sorted->begin(), sorted->end()), sorted->end());
  pages->resize(sorted->size() * kPageSize);
  frames_->Read(*sorted, pages->data());
}

std::vector<uint64_t> PvP2m::LeafFramesFromList(const PvP2mRoot& root,
                                                std::span<const uint64_t> leaves) {
  const uint64_t nr_leaves = (root.max_pfn + kP2mEntriesPerPage - 1) / kP2mEntriesPerPage;
  const uint64_t start = root.p2m_vaddr;
  const uint64_t end = start + nr_leaves * kPageSize - 1;
  if (start % kPageSize != 0 || !IsCanonical(start) || !IsCanonical(end) || end < start ||
      (start < kHypervisorVirtEnd && end >= kHypervisorVirtStart)) {
    throw Error(ErrorKind::kIo,
                fmt::format("PV domain {}: bad virtual address range {:#x}-{:#x} of the p2m list",
                            domid_, start, end));
  }
  // One walk for all leaves, level by level: `table[i]` is the mfn of the
  // page table that maps leaf i's address at the current level.
  const uint64_t root_mfn = root.p2m_cr3 >> 12;
  CheckMfn(root_mfn, "the p2m list's page table root (p2m_cr3)");
  std::vector<uint64_t> table(leaves.size(), root_mfn);
  std::vector<uint64_t> sorted;
  std::vector<uint8_t> pages;
  for (int level = kLevels; level >= 1; --level) {
    ReadDistinct(table, &sorted, &pages);
    const int shift = 12 + 9 * (level - 1);
    for (size_t i = 0; i < leaves.size(); ++i) {
      const uint64_t va = start + leaves[i] * kPageSize;
      const uint64_t index = (va >> shift) & (kP2mEntriesPerPage - 1);
      const uint64_t pte = Load64(&pages[IndexOf(sorted, table[i]) * kPageSize + index * 8]);
      const std::string what =
          fmt::format("the p2m list at {:#x} (page table level {})", va, level);
      if ((pte & kPtePresent) == 0) {
        throw Error(ErrorKind::kIo, fmt::format("PV domain {}: {} is not mapped", domid_, what));
      }
      if (level > 1 && (pte & kPtePse) != 0) {
        throw Error(ErrorKind::kIo, fmt::format("PV domain {}: {} is a superpage mapping, which "
                                                "libxc does not support either",
                                                domid_, what));
      }
      table[i] = (pte & kPteFrameMask) >> 12;
      CheckMfn(table[i], what);
    }
  }
  return table;
}

std::vector<uint64_t> PvP2m::LeafFramesFromTree(const PvP2mRoot& root,
                                                std::span<const uint64_t> leaves) {
  if (root.frame_list_list == kInvalidP2mEntry) {
    throw Error(ErrorKind::kIo, fmt::format("PV domain {} publishes neither a p2m list "
                                            "(p2m_cr3 is 0) nor a p2m tree",
                                            domid_));
  }
  CheckMfn(root.frame_list_list, "the p2m frame list list");
  for (uint64_t leaf : leaves) {
    if (leaf / kP2mEntriesPerPage >= kP2mEntriesPerPage) {
      throw Error(ErrorKind::kIo, fmt::format("PV domain {}: max_pfn {:#x} is too large for a "
                                              "p2m tree",
                                              domid_, root.max_pfn));
    }
  }
  std::vector<uint8_t> fll(kPageSize);
  const uint64_t fll_mfn = root.frame_list_list;
  frames_->Read({&fll_mfn, 1}, fll.data());
  std::vector<uint64_t> mid(leaves.size());
  for (size_t i = 0; i < leaves.size(); ++i) {
    mid[i] = Load64(&fll[(leaves[i] / kP2mEntriesPerPage) * 8]);
    CheckMfn(mid[i], fmt::format("p2m frame list {}", leaves[i] / kP2mEntriesPerPage));
  }
  std::vector<uint64_t> sorted;
  std::vector<uint8_t> pages;
  ReadDistinct(mid, &sorted, &pages);
  std::vector<uint64_t> out(leaves.size());
  for (size_t i = 0; i < leaves.size(); ++i) {
    const uint64_t index = leaves[i] % kP2mEntriesPerPage;
    out[i] = Load64(&pages[IndexOf(sorted, mid[i]) * kPageSize + index * 8]);
    CheckMfn(out[i], fmt::format("p2m page {}", leaves[i]));
  }
  return out;
}

std::vector<uint64_t> PvP2m::Translate(std::span<const Pfn> pfns) {
  const PvP2mRoot root = ReadRoot();
  for (Pfn pfn : pfns) {
    if (pfn >= root.max_pfn) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("PV domain {}: pfn {:#x} is beyond its p2m ({} entries)", domid_, pfn,
                              root.max_pfn));
    }
  }
  if (pfns.empty()) return {};
  if (root.p2m_cr3 == 0 && root.frame_list_list == 0) {
    throw Error(ErrorKind::kIo, fmt::format("PV domain {} has not set up its p2m yet", domid_));
  }
  // The p2m pages needed, each once.
  std::vector<uint64_t> leaves;
  leaves.reserve(pfns.size());
  for (Pfn pfn : pfns) leaves.push_back(pfn / kP2mEntriesPerPage);
  std::sort(leaves.begin(), leaves.end());
  leaves.erase(std::unique(leaves.begin(), leaves.end()), leaves.end());
  // As libxc: the linear list whenever the guest gives one.
  const std::vector<uint64_t> leaf_mfns =
      root.p2m_cr3 != 0 ? LeafFramesFromList(root, leaves) : LeafFramesFromTree(root, leaves);

  std::vector<uint8_t> pages(leaves.size() * kPageSize);
  frames_->Read(leaf_mfns, pages.data());
  std::vector<uint64_t> mfns(pfns.size());
  for (size_t i = 0; i < pfns.size(); ++i) {
    const size_t leaf = static_cast<size_t>(
        std::lower_bound(leaves.begin(), leaves.end(), pfns[i] / kP2mEntriesPerPage) -
        leaves.begin());
    const uint64_t entry = Load64(&pages[leaf * kPageSize + (pfns[i] % kP2mEntriesPerPage) * 8]);
    // Linux marks pfns without memory of their own with all ones, and
    // foreign or identity frames with the top bits.
    if (entry == kInvalidP2mEntry || (entry >> 62) != 0) {
      throw Error(ErrorKind::kIo,
                  fmt::format("PV domain {}: pfn {:#x} has no memory of its own (p2m entry {:#x})",
                              domid_, pfns[i], entry));
    }
    CheckMfn(entry, fmt::format("pfn {:#x}", pfns[i]));
    mfns[i] = entry;
  }
  return mfns;
}

void PvP2m::ReadPages(std::span<const Pfn> pfns, uint8_t* out) {
  std::vector<uint64_t> mfns = Translate(pfns);
  std::vector<size_t> todo(pfns.size());
  for (size_t i = 0; i < todo.size(); ++i) todo[i] = i;
  std::vector<uint64_t> batch;
  std::vector<uint8_t> buf;
  for (int attempt = 0; !todo.empty(); ++attempt) {
    if (attempt > kMaxRereads) {
      throw Error(ErrorKind::kIo,
                  fmt::format("PV domain {}: its p2m kept changing while {} page(s) were read",
                              domid_, todo.size()));
    }
    batch.clear();
    for (size_t i : todo) batch.push_back(mfns[i]);
    buf.resize(batch.size() * kPageSize);
    bool read_ok = true;
    std::string read_error;
    try {
      frames_->Read(batch, buf.data());
    } catch (const Error& e) {
      // Maybe a frame left the guest after Translate: decided below.
      read_ok = false;
      read_error = e.what();
    }
    if (read_ok) {
      for (size_t k = 0; k < todo.size(); ++k) {
        std::memcpy(out + todo[k] * kPageSize, &buf[k * kPageSize], kPageSize);
      }
    }
    const std::vector<uint64_t> again = Translate(pfns);
    std::vector<size_t> changed;
    for (size_t i = 0; i < pfns.size(); ++i) {
      if (again[i] != mfns[i]) changed.push_back(i);
    }
    if (!read_ok && changed.empty()) throw Error(ErrorKind::kIo, read_error);
    if (!read_ok) {
      // Read all of them again, the changed ones included.
      std::vector<size_t> merged;
      std::set_union(todo.begin(), todo.end(), changed.begin(), changed.end(),
                     std::back_inserter(merged));
      todo = std::move(merged);
    } else {
      todo = std::move(changed);
    }
    mfns = again;
  }
}

}  // namespace p2bmig
