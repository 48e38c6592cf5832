// TrackdHost on Xen: libxenctrl (domain info), libxenguest (xc_map_m2p) and
// libxenstore (the backend directories of the domain's vbds).

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <sys/mman.h>

#include "xen/trackd_host.h"
#include "xen/xen_domain.h"
#include "xen/xen_headers.h"

// As in xen_headers.h: these need GNU C and lack extern "C" guards.
#ifdef __STRICT_ANSI__
#define P2BMIG_TRACKD_STRICT_ANSI
#undef __STRICT_ANSI__
#endif
// clang-format off
extern "C" {
#include <xenguest.h>
#include <xenstore.h>
}
// clang-format on
#ifdef P2BMIG_TRACKD_STRICT_ANSI
#define __STRICT_ANSI__ 1
#undef P2BMIG_TRACKD_STRICT_ANSI
#endif

namespace p2bmig {

namespace {

// Xen's "no such entry" values in the M2P (INVALID_M2P_ENTRY and
// SHARED_M2P_ENTRY) both have the top bits set; no guest pfn does.
constexpr Pfn kM2pInvalidAbove = ~Pfn{0} - 1024;

class XenTrackdHost : public TrackdHost {
 public:
  XenTrackdHost() {
    static const std::vector<std::string> kNodes = {"/dev/xen/privcmd", "/proc/xen/privcmd"};
    CheckXenControlInterface(kNodes);
    logger_ = xtl_createlogger_stdiostream(stderr, XTL_ERROR, 0);
    auto* lg = reinterpret_cast<xentoollog_logger*>(logger_);
    xch_ = xc_interface_open(lg, lg, 0);
    if (xch_ == nullptr) {
      throw Error(ErrorKind::kIo,
                  fmt::format("cannot open the Xen control interface: is this a Xen dom0? "
                              "(xc_interface_open: {})",
                              std::strerror(errno)));
    }
    if (xc_maximum_ram_page(xch_, &max_mfn_) < 0) Fail("xc_maximum_ram_page");
    m2p_ = xc_map_m2p(xch_, max_mfn_, PROT_READ, nullptr);
    if (m2p_ == nullptr) Fail("xc_map_m2p");
    xs_ = xs_open(0);
    if (xs_ == nullptr) Fail("xs_open (is xenstored running?)");
  }

  ~XenTrackdHost() override {
    if (xs_ != nullptr) xs_close(xs_);
    // xc_map_m2p maps M2P_CHUNKS_FROM_PAGES(max_mfn) chunks of 2 MiB.
    if (m2p_ != nullptr) {
      const size_t chunk = size_t{2} << 20;
      const size_t bytes = (max_mfn_ * sizeof(xen_pfn_t) + chunk - 1) / chunk * chunk;
      munmap(m2p_, bytes);
    }
    if (xch_ != nullptr) xc_interface_close(xch_);
    if (logger_ != nullptr) xtl_logger_destroy(reinterpret_cast<xentoollog_logger*>(logger_));
  }

  std::optional<uint64_t> DomainPfns(uint32_t domid) override {
    xc_domaininfo_t info;
    std::memset(&info, 0, sizeof(info));
    const int n = xc_domain_getinfolist(xch_, domid, 1, &info);
    if (n != 1 || info.domain != domid || (info.flags & XEN_DOMINF_dying) != 0) {
      return std::nullopt;
    }
    xen_pfn_t max_gpfn = 0;
    if (xc_domain_maximum_gpfn(xch_, domid, &max_gpfn) < 0) return std::nullopt;
    return uint64_t{max_gpfn} + 1;
  }

  std::vector<VbdInfo> ListVbds(uint32_t domid) override {
    std::vector<VbdInfo> out;
    const std::string dir = fmt::format("/local/domain/0/backend/vbd/{}", domid);
    unsigned int n = 0;
    char** devs = xs_directory(xs_, XBT_NULL, dir.c_str(), &n);
    if (devs == nullptr) return out;
    for (unsigned int i = 0; i < n; ++i) {
      VbdInfo v;
      char* end = nullptr;
      v.devid = static_cast<uint32_t>(std::strtoul(devs[i], &end, 10));
      if (end == devs[i] || *end != '\0') continue;
      const std::string node = dir + "/" + devs[i];
      v.params = Read(node + "/params");
      v.physical_device = Read(node + "/physical-device");
      const std::string frontend = Read(node + "/frontend");
      v.persistent = Read(node + "/feature-persistent") == "1" && !frontend.empty() &&
                     Read(frontend + "/feature-persistent") == "1";
      out.push_back(std::move(v));
    }
    std::free(devs);
    return out;
  }

  std::optional<uint64_t> DeviceInflight(uint32_t domid, uint32_t devid) override {
    const std::string path =
        fmt::format("/sys/bus/xen-backend/devices/vbd-{}-{}/statistics/inflight", domid, devid);
    FILE* f = std::fopen(path.c_str(), "re");
    if (f == nullptr) return std::nullopt;  // the stock module has no such file
    unsigned long long n = 0;
    const bool ok = std::fscanf(f, "%llu", &n) == 1;
    std::fclose(f);
    if (!ok) return std::nullopt;
    return n;
  }

  std::optional<Pfn> MfnToPfn(uint64_t mfn) override {
    if (mfn >= max_mfn_) return std::nullopt;
    const Pfn pfn = m2p_[mfn];
    if (pfn >= kM2pInvalidAbove) return std::nullopt;
    return pfn;
  }

 private:
  [[noreturn]] void Fail(const char* what) {
    throw Error(ErrorKind::kIo, fmt::format("{}: {}", what, std::strerror(errno)));
  }

  std::string Read(const std::string& path) {
    unsigned int len = 0;
    void* v = xs_read(xs_, XBT_NULL, path.c_str(), &len);
    if (v == nullptr) return {};
    std::string s(static_cast<const char*>(v), len);
    std::free(v);
    return s;
  }

  xentoollog_logger_stdiostream* logger_ = nullptr;
  xc_interface* xch_ = nullptr;
  unsigned long max_mfn_ = 0;
  xen_pfn_t* m2p_ = nullptr;
  struct xs_handle* xs_ = nullptr;
};

}  // namespace

std::unique_ptr<TrackdHost> OpenXenTrackdHost() { return std::make_unique<XenTrackdHost>(); }

}  // namespace p2bmig
