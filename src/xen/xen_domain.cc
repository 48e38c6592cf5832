// XenDomain on libxenctrl, libxenforeignmemory and libxendevicemodel.

#include "xen/xen_domain.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xen/p2m.h"
#include "xen/xen_headers.h"

namespace p2bmig {

namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

[[noreturn]] void ThrowXen(ErrorKind kind, const std::string& what, int err) {
  throw Error(kind, fmt::format("{}: {}", what, ErrnoText(err)));
}

// Copies `frames` of domain `domid` into `out`: guest pfns of an HVM/PVH
// guest, machine frames of a PV guest (that is what the foreign mapping
// interface takes for each). A frame that cannot be mapped is an error,
// never a page of zeros.
void MapAndCopy(xenforeignmemory_handle* fmem, uint32_t domid, std::span<const uint64_t> frames,
                uint8_t* out, const char* kind) {
  std::vector<xen_pfn_t> arr;
  std::vector<int> err;
  for (auto [begin, end] : SplitBatches(frames.size(), XenDomain::kMapBatchPages)) {
    const size_t n = end - begin;
    arr.assign(frames.begin() + begin, frames.begin() + end);
    err.assign(n, 0);
    void* map = xenforeignmemory_map(fmem, domid, PROT_READ, n, arr.data(), err.data());
    if (map == nullptr) {
      ThrowXen(ErrorKind::kIo,
               fmt::format("xenforeignmemory_map of {} page(s) of domain {} from {} {:#x}", n,
                           domid, kind, arr[0]),
               errno);
    }
    for (size_t i = 0; i < n; ++i) {
      if (err[i] != 0) {
        const int e = err[i] < 0 ? -err[i] : err[i];
        xenforeignmemory_unmap(fmem, map, n);
        ThrowXen(ErrorKind::kIo,
                 fmt::format("{} {:#x} of domain {} cannot be mapped", kind, arr[i], domid), e);
      }
    }
    std::memcpy(out + begin * kPageSize, map, n * kPageSize);
    xenforeignmemory_unmap(fmem, map, n);
  }
}

// A PV guest's machine frames, for its p2m walk.
class ForeignMachineFrames : public MachineFrames {
 public:
  ForeignMachineFrames(xenforeignmemory_handle* fmem, uint32_t domid)
      : fmem_(fmem), domid_(domid) {}
  void Read(std::span<const uint64_t> mfns, uint8_t* out) override {
    MapAndCopy(fmem_, domid_, mfns, out, "machine frame");
  }

 private:
  xenforeignmemory_handle* fmem_;
  uint32_t domid_;
};

}  // namespace

// --- Pure helpers ----------------------------------------------------------

void CheckXenControlInterface(std::span<const std::string> nodes) {
  std::string tried;
  for (const std::string& node : nodes) {
    struct stat st;
    if (stat(node.c_str(), &st) == 0) return;
    tried += fmt::format("{}{}: {}", tried.empty() ? "" : ", ", node, ErrnoText(errno));
  }
  throw Error(ErrorKind::kIo,
              fmt::format("cannot open the Xen control interface: is this a Xen dom0? ({})",
                          tried.empty() ? "no control node to look for" : tried));
}

void CheckPfnRange(std::span<const Pfn> pfns, uint64_t nr_pfns, const std::string& what) {
  for (Pfn pfn : pfns) {
    if (pfn >= nr_pfns) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("{}: pfn {:#x} is outside the domain ({} pfns)", what, pfn, nr_pfns));
    }
  }
}

std::vector<PfnRun> CoalescePfns(std::span<const Pfn> pfns, uint32_t max_count) {
  std::vector<Pfn> sorted(pfns.begin(), pfns.end());
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::vector<PfnRun> runs;
  for (Pfn pfn : sorted) {
    if (!runs.empty() && runs.back().first + runs.back().count == pfn &&
        runs.back().count < max_count) {
      ++runs.back().count;
    } else {
      runs.push_back({pfn, 1});
    }
  }
  return runs;
}

std::vector<std::pair<size_t, size_t>> SplitBatches(size_t n, size_t batch) {
  if (batch == 0) throw Error(ErrorKind::kInternal, "SplitBatches: batch size 0");
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t begin = 0; begin < n; begin += batch)
    out.emplace_back(begin, std::min(n, begin + batch));
  return out;
}

std::vector<Pfn> DirtyBitmapToPfns(std::span<const uint64_t> bitmap, uint64_t nr_pfns) {
  std::vector<Pfn> pfns;
  const uint64_t words = std::min<uint64_t>(bitmap.size(), (nr_pfns + 63) / 64);
  for (uint64_t w = 0; w < words; ++w) {
    uint64_t bits = bitmap[w];
    while (bits != 0) {
      const Pfn pfn = w * 64 + static_cast<uint64_t>(__builtin_ctzll(bits));
      if (pfn >= nr_pfns) break;
      pfns.push_back(pfn);
      bits &= bits - 1;
    }
  }
  return pfns;
}

uint64_t RestorePfnBound(uint64_t max_pages) { return max_pages + kPfnsBelow4GiB; }

uint64_t XenRestorePfnBound(uint32_t domid) {
  CheckXenControlInterface(XenOpenOptions{}.control_nodes);
  xentoollog_logger_stdiostream* logger = xtl_createlogger_stdiostream(stderr, XTL_ERROR, 0);
  xentoollog_logger* lg = reinterpret_cast<xentoollog_logger*>(logger);
  xc_interface* xch = xc_interface_open(lg, lg, 0);
  if (xch == nullptr) {
    const int e = errno;
    xtl_logger_destroy(lg);
    ThrowXen(ErrorKind::kIo, "cannot open the Xen control interface (xc_interface_open)", e);
  }
  xc_domaininfo_t info;
  std::memset(&info, 0, sizeof(info));
  const int n = xc_domain_getinfolist(xch, domid, 1, &info);
  const int e = errno;
  xc_interface_close(xch);
  xtl_logger_destroy(lg);
  if (n < 0) ThrowXen(ErrorKind::kIo, fmt::format("xc_domain_getinfolist of domain {}", domid), e);
  if (n != 1 || info.domain != domid) {
    throw Error(ErrorKind::kInvalidArgument, fmt::format("there is no domain with id {}", domid));
  }
  if (info.max_pages == 0) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("domain {} has no memory limit yet; cannot bound its pfns", domid));
  }
  return RestorePfnBound(info.max_pages);
}

// --- XenDomain -------------------------------------------------------------

struct XenDomain::Impl {
  uint32_t domid = 0;
  std::string name;
  DomainType type = DomainType::kX86Hvm;
  uint64_t nr_pfns = 0;
  std::vector<std::string> disk_paths;
  std::vector<int> disk_fds;

  xentoollog_logger_stdiostream* logger = nullptr;
  xc_interface* xch = nullptr;
  xenforeignmemory_handle* fmem = nullptr;
  xendevicemodel_handle* dmod = nullptr;

  std::mutex mu;           // guards pv_dirty
  std::set<Pfn> pv_dirty;  // PV: pfns given to MarkDirty

  // PV: the guest's p2m, walked afresh by every ReadPages.
  std::unique_ptr<ForeignMachineFrames> pv_frames;
  std::unique_ptr<PvP2m> pv_p2m;

  ~Impl() {
    pv_p2m.reset();
    pv_frames.reset();
    for (int fd : disk_fds) close(fd);
    if (dmod != nullptr) xendevicemodel_close(dmod);
    if (fmem != nullptr) xenforeignmemory_close(fmem);
    if (xch != nullptr) xc_interface_close(xch);
    if (logger != nullptr) xtl_logger_destroy(reinterpret_cast<xentoollog_logger*>(logger));
  }

  std::string What(const char* call) const { return fmt::format("{} of domain {}", call, domid); }

  bool is_pv() const { return type == DomainType::kX86Pv; }
};

XenDomain::XenDomain(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
XenDomain::~XenDomain() = default;

std::unique_ptr<XenDomain> XenDomain::Open(uint32_t domid, std::vector<std::string> disk_paths,
                                           const XenOpenOptions& options) {
  // Look for the device first: without it libxenctrl only says "No such file
  // or directory" after logging its own error, which tells an operator little.
  CheckXenControlInterface(options.control_nodes);

  auto impl = std::make_unique<Impl>();
  impl->domid = domid;
  impl->name = options.name.empty() ? fmt::format("domain {}", domid) : options.name;

  // Xen's libraries log their own errors; keep only those, on stderr.
  impl->logger = xtl_createlogger_stdiostream(stderr, XTL_ERROR, 0);
  xentoollog_logger* lg = reinterpret_cast<xentoollog_logger*>(impl->logger);

  impl->xch = xc_interface_open(lg, lg, 0);
  if (impl->xch == nullptr) {
    throw Error(ErrorKind::kIo,
                fmt::format("cannot open the Xen control interface: is this a Xen dom0? "
                            "(xc_interface_open: {})",
                            ErrnoText(errno)));
  }
  xc_domaininfo_t info;
  std::memset(&info, 0, sizeof(info));
  const int n = xc_domain_getinfolist(impl->xch, domid, 1, &info);
  if (n < 0) ThrowXen(ErrorKind::kIo, impl->What("xc_domain_getinfolist"), errno);
  if (n != 1 || info.domain != domid) {
    throw Error(ErrorKind::kInvalidArgument, fmt::format("there is no domain with id {}", domid));
  }
  impl->type = (info.flags & XEN_DOMINF_hvm_guest) ? DomainType::kX86Hvm : DomainType::kX86Pv;

  xen_pfn_t max_gpfn = 0;
  if (xc_domain_maximum_gpfn(impl->xch, domid, &max_gpfn) < 0) {
    ThrowXen(ErrorKind::kIo, impl->What("xc_domain_maximum_gpfn"), errno);
  }
  impl->nr_pfns = static_cast<uint64_t>(max_gpfn) + 1;

  impl->fmem = xenforeignmemory_open(lg, 0);
  if (impl->fmem == nullptr) ThrowXen(ErrorKind::kIo, "xenforeignmemory_open", errno);
  impl->dmod = xendevicemodel_open(lg, 0);
  if (impl->dmod == nullptr) ThrowXen(ErrorKind::kIo, "xendevicemodel_open", errno);

  if (impl->is_pv()) {
    // As libxc's PV save: the guest's width first (32-bit PV guests are
    // refused here, before anything has happened to the guest), then its
    // p2m through the shared info frame.
    unsigned int width = 0;
    if (xc_domain_get_guest_width(impl->xch, domid, &width) < 0) {
      ThrowXen(ErrorKind::kIo, impl->What("xc_domain_get_guest_width"), errno);
    }
    CheckPvGuestWidth(width, domid);
    unsigned long max_mfn = 0;
    if (xc_maximum_ram_page(impl->xch, &max_mfn) < 0) {
      ThrowXen(ErrorKind::kIo, "xc_maximum_ram_page", errno);
    }
    impl->pv_frames = std::make_unique<ForeignMachineFrames>(impl->fmem, domid);
    impl->pv_p2m =
        std::make_unique<PvP2m>(impl->pv_frames.get(), info.shared_info_frame, max_mfn, domid);
  }

  for (const std::string& path : disk_paths) {
    // Read-only is enough: fsync() on any descriptor of a file flushes it.
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) ThrowXen(ErrorKind::kIo, fmt::format("cannot open disk image {}", path), errno);
    impl->disk_fds.push_back(fd);
  }
  impl->disk_paths = std::move(disk_paths);
  return std::unique_ptr<XenDomain>(new XenDomain(std::move(impl)));
}

uint32_t XenDomain::domid() const { return impl_->domid; }
std::string XenDomain::name() const { return impl_->name; }
DomainType XenDomain::type() const { return impl_->type; }
uint64_t XenDomain::nr_pfns() const { return impl_->nr_pfns; }

std::vector<uint64_t> XenDomain::DiskSizes() const {
  std::vector<uint64_t> sizes;
  for (size_t i = 0; i < impl_->disk_fds.size(); ++i) {
    // lseek gives the size of block devices as well as of regular files.
    const off_t end = lseek(impl_->disk_fds[i], 0, SEEK_END);
    if (end < 0) ThrowXen(ErrorKind::kIo, fmt::format("size of {}", impl_->disk_paths[i]), errno);
    sizes.push_back(static_cast<uint64_t>(end));
  }
  return sizes;
}

void XenDomain::ReadPages(std::span<const Pfn> pfns, uint8_t* out) {
  Impl& s = *impl_;
  CheckPfnRange(pfns, s.nr_pfns, s.What("ReadPages"));
  if (s.is_pv()) {
    // Mapped by machine frame: translated through the guest's p2m, read
    // again if a frame changed meanwhile (PvP2m::ReadPages).
    s.pv_p2m->ReadPages(pfns, out);
    return;
  }
  MapAndCopy(s.fmem, s.domid, pfns, out, "pfn");
}

void XenDomain::EnableLogDirty() {
  Impl& s = *impl_;
  if (xc_shadow_control(s.xch, s.domid, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, nullptr, 0) < 0) {
    ThrowXen(ErrorKind::kIo, s.What("enabling log-dirty mode (xc_shadow_control)"), errno);
  }
}

void XenDomain::DisableLogDirty() {
  Impl& s = *impl_;
  if (xc_shadow_control(s.xch, s.domid, XEN_DOMCTL_SHADOW_OP_OFF, nullptr, 0) < 0) {
    ThrowXen(ErrorKind::kIo, s.What("disabling log-dirty mode (xc_shadow_control)"), errno);
  }
}

void XenDomain::PeekAndCleanDirty(std::vector<Pfn>* dirty) {
  Impl& s = *impl_;
  const uint64_t words = (s.nr_pfns + 63) / 64;
  const int pages = static_cast<int>((words * sizeof(uint64_t) + kPageSize - 1) / kPageSize);
  // The bitmap must be hypercall-safe memory; fill the buffer descriptor by
  // hand (the DECLARE_HYPERCALL_BUFFER macros are C).
  xc_hypercall_buffer_t buf;
  std::memset(&buf, 0, sizeof(buf));
  buf.ubuf = reinterpret_cast<void*>(-1);
  auto* bits = static_cast<uint64_t*>(xc__hypercall_buffer_alloc_pages(s.xch, &buf, pages));
  if (bits == nullptr) ThrowXen(ErrorKind::kIo, s.What("allocating the dirty bitmap"), errno);
  const long long r =
      xc_logdirty_control(s.xch, s.domid, XEN_DOMCTL_SHADOW_OP_CLEAN, &buf, s.nr_pfns, 0, nullptr);
  const int e = errno;
  if (r >= 0) *dirty = DirtyBitmapToPfns({bits, words}, s.nr_pfns);
  xc__hypercall_buffer_free_pages(s.xch, &buf, pages);
  if (r < 0) ThrowXen(ErrorKind::kIo, s.What("reading the dirty bitmap (xc_logdirty_control)"), e);
}

void XenDomain::MarkDirty(std::span<const Pfn> pfns) {
  Impl& s = *impl_;
  CheckPfnRange(pfns, s.nr_pfns, s.What("MarkDirty"));
  if (s.is_pv()) {
    std::lock_guard lock(s.mu);
    s.pv_dirty.insert(pfns.begin(), pfns.end());
    return;
  }
  for (const PfnRun& run : CoalescePfns(pfns)) {
    if (xendevicemodel_modified_memory(s.dmod, static_cast<domid_t>(s.domid), run.first,
                                       run.count) < 0) {
      ThrowXen(ErrorKind::kIo,
               fmt::format("xendevicemodel_modified_memory of domain {} pfns {:#x}+{}", s.domid,
                           run.first, run.count),
               errno);
    }
  }
}

std::vector<Pfn> XenDomain::TakeMarkedDirty() {
  std::lock_guard lock(impl_->mu);
  std::vector<Pfn> out(impl_->pv_dirty.begin(), impl_->pv_dirty.end());
  impl_->pv_dirty.clear();
  return out;
}

void XenDomain::Pause() {
  if (xc_domain_pause(impl_->xch, impl_->domid) < 0) {
    ThrowXen(ErrorKind::kIo, impl_->What("xc_domain_pause"), errno);
  }
}

void XenDomain::Resume() {
  if (xc_domain_unpause(impl_->xch, impl_->domid) < 0) {
    ThrowXen(ErrorKind::kIo, impl_->What("xc_domain_unpause"), errno);
  }
}

void XenDomain::FlushDisks() {
  for (size_t i = 0; i < impl_->disk_fds.size(); ++i) {
    if (fsync(impl_->disk_fds[i]) < 0) {
      ThrowXen(ErrorKind::kIo, fmt::format("fsync of disk image {}", impl_->disk_paths[i]), errno);
    }
  }
}

}  // namespace p2bmig
