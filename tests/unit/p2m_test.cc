// PvP2m without Xen: a 64-bit PV guest's p2m, as a Linux guest lays it out
// (a linear list mapped through 4-level page tables, and the 3-level tree),
// built in an in-memory machine whose frames are scattered at random. Checked:
// translation through either table, that the linear list wins as in libxc,
// bounds, malformed tables, pfns without memory, pages re-read when the guest
// exchanges a frame while it is read, and the refusal of 32-bit guests.

#include "xen/p2m.h"

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <p2bmig/types.h>

namespace p2bmig {
namespace {

// The machine: frames by mfn. Reading a frame that is not there fails like
// a foreign mapping of a frame the domain does not own.
class MemoryMachine : public MachineFrames {
 public:
  std::vector<uint8_t>& Frame(uint64_t mfn) {
    auto& f = frames_[mfn];
    f.resize(kPageSize);
    return f;
  }
  void Put64(uint64_t mfn, uint64_t index, uint64_t value) {
    std::memcpy(Frame(mfn).data() + index * 8, &value, 8);
  }
  void Drop(uint64_t mfn) { frames_.erase(mfn); }
  void Read(std::span<const uint64_t> mfns, uint8_t* out) override {
    ++reads;
    if (before_read) before_read();
    for (size_t i = 0; i < mfns.size(); ++i) {
      auto it = frames_.find(mfns[i]);
      if (it == frames_.end()) {
        throw Error(ErrorKind::kIo, "machine frame " + std::to_string(mfns[i]) + " not owned");
      }
      std::memcpy(out + i * kPageSize, it->second.data(), kPageSize);
    }
  }
  int reads = 0;
  std::function<void()> before_read;

 private:
  std::map<uint64_t, std::vector<uint8_t>> frames_;
};

constexpr uint64_t kMaxMfn = 1u << 24;
constexpr uint64_t kSharedInfoMfn = 0x1234;
// In Linux's vmalloc area, 20 pages below a 512 GiB boundary: the list then
// spans two entries at every level of the page tables.
constexpr uint64_t kP2mVaddr = 0xFFFFC98000000000ull - 20 * kPageSize;

std::vector<Pfn> SomePfns(uint64_t nr_pfns) {
  std::vector<Pfn> pfns = {0, 1, 511, 512, 513, nr_pfns - 1, 700, 5, 700};
  for (Pfn p = 1000; p < nr_pfns; p += 977) pfns.push_back(p);
  return pfns;
}

// A guest of `nr_pfns` pages whose data frames, p2m pages and tables sit at
// distinct random mfns; page p holds the 8-byte value p * 7919 + 1 at 0.
struct Guest {
  MemoryMachine machine;
  uint64_t next_mfn = 0;
  std::vector<uint64_t> data_mfn, leaf_mfn;
  PvP2mRoot root;
  uint64_t fll_mfn = 0;

  // Distinct frames scattered over the machine: multiplying by an odd
  // constant is a bijection modulo 2^24.
  uint64_t NewMfn() {
    for (;;) {
      const uint64_t m = 1 + ((++next_mfn * 0x9E3779B1ull) & (kMaxMfn - 1));
      if (m != kSharedInfoMfn) return m;
    }
  }

  Guest(uint64_t nr_pfns, bool list, bool tree) {
    root.max_pfn = nr_pfns;
    const uint64_t nr_leaves = (nr_pfns + 511) / 512;
    // Large guests get content only in the pfns the tests read (memory).
    std::set<Pfn> read;
    for (Pfn p : SomePfns(nr_pfns)) read.insert(p);
    for (uint64_t p = 0; p < nr_pfns; ++p) {
      data_mfn.push_back(NewMfn());
      if (nr_pfns > 4096 && read.count(p) == 0) continue;
      const uint64_t v = p * 7919 + 1;
      std::memcpy(machine.Frame(data_mfn.back()).data(), &v, 8);
    }
    for (uint64_t l = 0; l < nr_leaves; ++l) {
      leaf_mfn.push_back(NewMfn());
      for (uint64_t i = 0; i < 512; ++i) {
        const uint64_t p = l * 512 + i;
        machine.Put64(leaf_mfn[l], i, p < nr_pfns ? data_mfn[p] : kInvalidP2mEntry);
      }
    }
    if (list) BuildList(nr_leaves);
    root.frame_list_list = kInvalidP2mEntry;  // Linux's "use the list"
    if (tree) BuildTree(nr_leaves);
    WriteRoot();
  }

  void WriteRoot() { EncodeSharedInfoP2m(root, machine.Frame(kSharedInfoMfn).data()); }

  // Page tables mapping leaf l at kP2mVaddr + l * 4 KiB (present, writable).
  void BuildList(uint64_t nr_leaves) {
    const uint64_t l4 = NewMfn();
    root.p2m_cr3 = l4 << 12;
    root.p2m_vaddr = kP2mVaddr;
    std::map<uint64_t, uint64_t> tables;  // (level, va prefix) -> mfn
    for (uint64_t l = 0; l < nr_leaves; ++l) {
      const uint64_t va = kP2mVaddr + l * kPageSize;
      uint64_t table = l4;
      for (int level = 4; level >= 1; --level) {
        const int shift = 12 + 9 * (level - 1);
        const uint64_t index = (va >> shift) & 511;
        uint64_t next;
        if (level == 1) {
          next = leaf_mfn[l];
        } else {
          const uint64_t key = (uint64_t(level) << 60) | ((va >> shift) & ((1ull << 36) - 1));
          auto [it, fresh] = tables.emplace(key, 0);
          if (fresh) it->second = NewMfn();
          next = it->second;
          machine.Frame(next);
        }
        machine.Put64(table, index, (next << 12) | 0x63);  // present, rw, accessed, dirty
        table = next;
      }
    }
  }

  void BuildTree(uint64_t nr_leaves) {
    fll_mfn = NewMfn();
    root.frame_list_list = fll_mfn;
    const uint64_t nr_mid = (nr_leaves + 511) / 512;
    for (uint64_t m = 0; m < nr_mid; ++m) {
      const uint64_t mid = NewMfn();
      machine.Put64(fll_mfn, m, mid);
      for (uint64_t i = 0; i < 512; ++i) {
        const uint64_t l = m * 512 + i;
        // Linux points missing parts at one shared page; any valid frame.
        machine.Put64(mid, i, l < nr_leaves ? leaf_mfn[l] : leaf_mfn[0]);
      }
    }
  }

  // Moves pfn p to a new frame (a page exchange), content unchanged.
  void Exchange(uint64_t p, uint64_t new_value) {
    const uint64_t old = data_mfn[p];
    data_mfn[p] = NewMfn();
    std::memcpy(machine.Frame(data_mfn[p]).data(), &new_value, 8);
    machine.Drop(old);
    machine.Put64(leaf_mfn[p / 512], p % 512, data_mfn[p]);
  }
};

uint64_t ValueAt(const std::vector<uint8_t>& buf, size_t page) {
  uint64_t v;
  std::memcpy(&v, buf.data() + page * kPageSize, 8);
  return v;
}

void ExpectTranslates(Guest& g, PvP2m& p2m) {
  const std::vector<Pfn> pfns = SomePfns(g.root.max_pfn);
  const std::vector<uint64_t> mfns = p2m.Translate(pfns);
  ASSERT_EQ(mfns.size(), pfns.size());
  for (size_t i = 0; i < pfns.size(); ++i) EXPECT_EQ(mfns[i], g.data_mfn[pfns[i]]) << pfns[i];
  std::vector<uint8_t> buf(pfns.size() * kPageSize);
  p2m.ReadPages(pfns, buf.data());
  for (size_t i = 0; i < pfns.size(); ++i) EXPECT_EQ(ValueAt(buf, i), pfns[i] * 7919 + 1);
}

TEST(PvP2mTest, LinearListThroughFourLevelPageTables) {
  // 30,000 pfns: 59 p2m pages across an L4 boundary.
  Guest g(30000, /*list=*/true, /*tree=*/false);
  PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
  ExpectTranslates(g, p2m);
}

TEST(PvP2mTest, TreeWhenThereIsNoList) {
  // 300,000 pfns: 586 p2m pages, two frame list pages.
  Guest g(300000, /*list=*/false, /*tree=*/true);
  PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
  ExpectTranslates(g, p2m);
}

TEST(PvP2mTest, ListIsPreferredLikeLibxc) {
  Guest g(4096, /*list=*/true, /*tree=*/true);
  // Break the tree: the list alone must be used.
  g.machine.Put64(g.fll_mfn, 0, 0);
  PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
  ExpectTranslates(g, p2m);
  // And with no list the broken tree is refused.
  g.root.p2m_cr3 = 0;
  g.WriteRoot();
  EXPECT_THROW(p2m.Translate(std::vector<Pfn>{1}), Error);
}

TEST(PvP2mTest, PfnBeyondMaxPfnIsInvalidArgument) {
  Guest g(2000, true, false);
  PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
  try {
    p2m.Translate(std::vector<Pfn>{3, 2000});
    FAIL() << "pfn 2000 of a 2000-page guest translated";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("0x7d0"), std::string::npos) << e.what();
  }
}

TEST(PvP2mTest, MalformedTablesAreIoErrors) {
  {
    Guest g(2000, true, false);
    // An L4 entry that is not present.
    const uint64_t l4 = g.root.p2m_cr3 >> 12;
    g.machine.Put64(l4, (kP2mVaddr >> 39) & 511, 0);
    PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
    try {
      p2m.Translate(std::vector<Pfn>{1});
      FAIL();
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kIo);
      EXPECT_NE(std::string(e.what()).find("not mapped"), std::string::npos) << e.what();
    }
  }
  {
    Guest g(2000, true, false);
    g.root.p2m_vaddr = 0xFFFF800000001000ull;  // Xen's own range
    g.WriteRoot();
    PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
    EXPECT_THROW(p2m.Translate(std::vector<Pfn>{1}), Error);
  }
  {
    Guest g(2000, false, true);
    g.machine.Put64(g.fll_mfn, 0, kMaxMfn + 5);  // beyond the host's frames
    PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
    try {
      p2m.Translate(std::vector<Pfn>{1});
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad machine frame"), std::string::npos) << e.what();
    }
  }
  {
    Guest g(2000, false, false);  // neither list nor tree
    PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
    EXPECT_THROW(p2m.Translate(std::vector<Pfn>{1}), Error);
  }
}

TEST(PvP2mTest, PfnWithoutMemoryIsRefused) {
  Guest g(2000, true, false);
  g.machine.Put64(g.leaf_mfn[1], 10, kInvalidP2mEntry);  // pfn 522 ballooned out
  PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
  EXPECT_EQ(p2m.Translate(std::vector<Pfn>{521})[0], g.data_mfn[521]);
  try {
    p2m.Translate(std::vector<Pfn>{521, 522});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no memory of its own"), std::string::npos) << e.what();
  }
}

TEST(PvP2mTest, PageExchangedWhileReadIsReadAgain) {
  Guest g(2000, true, false);
  PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
  const std::vector<Pfn> pfns = {10, 11, 12};
  // Once the translation is done and the data frames are about to be read,
  // the guest moves pfn 11 to another frame with new content. Reads: shared
  // info, 4 table levels, leaf = 6 per translation; the 7th is the data.
  int n = 0;
  g.machine.before_read = [&] {
    if (++n == 7) g.Exchange(11, 0xABCDEF);
  };
  std::vector<uint8_t> buf(pfns.size() * kPageSize);
  p2m.ReadPages(pfns, buf.data());
  EXPECT_EQ(ValueAt(buf, 0), 10 * 7919 + 1);
  EXPECT_EQ(ValueAt(buf, 1), 0xABCDEFu);  // the new frame, not a failure
  EXPECT_EQ(ValueAt(buf, 2), 12 * 7919 + 1);
}

TEST(PvP2mTest, FrameSwappedWithinTheGuestIsNotReadStale) {
  // The old frame stays readable (it went to another pfn of the guest): only
  // the second translation shows that pfn 11's content moved.
  Guest g(2000, true, false);
  PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
  const std::vector<Pfn> pfns = {11};
  int n = 0;
  g.machine.before_read = [&] {
    if (++n == 7) {
      std::swap(g.data_mfn[11], g.data_mfn[12]);
      g.machine.Put64(g.leaf_mfn[0], 11, g.data_mfn[11]);
      g.machine.Put64(g.leaf_mfn[0], 12, g.data_mfn[12]);
    }
  };
  std::vector<uint8_t> buf(kPageSize);
  p2m.ReadPages(pfns, buf.data());
  EXPECT_EQ(ValueAt(buf, 0), 12 * 7919 + 1);  // pfn 11 now holds what 12 held
}

TEST(PvP2mTest, P2mThatNeverSettlesFails) {
  Guest g(2000, true, false);
  PvP2m p2m(&g.machine, kSharedInfoMfn, kMaxMfn, 5);
  uint64_t v = 1;
  int n = 0;
  g.machine.before_read = [&] {
    if (++n % 7 == 0) g.Exchange(11, ++v);
  };
  std::vector<uint8_t> buf(kPageSize);
  try {
    p2m.ReadPages(std::vector<Pfn>{11}, buf.data());
    FAIL() << "read a page whose frame changes on every read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kept changing"), std::string::npos) << e.what();
  }
}

TEST(PvP2mTest, ThirtyTwoBitGuestsAreRefused) {
  EXPECT_NO_THROW(CheckPvGuestWidth(8, 3));
  try {
    CheckPvGuestWidth(4, 3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("32-bit PV guest"), std::string::npos) << e.what();
  }
  EXPECT_THROW(CheckPvGuestWidth(2, 3), Error);
}

}  // namespace
}  // namespace p2bmig
