// TrackdHost: what p2bmig-trackd asks of the machine it runs on, in the
// spirit of LevelDB's Env: whether a domain exists and how many pfns it has,
// its virtual block devices (from xenstore), and the machine-to-guest frame
// table (M2P). The Xen implementation uses libxenctrl, libxenguest's
// xc_map_m2p and libxenstore; the test implementation reads a text file, so
// that the daemon runs, as a process, on a machine without Xen.
//
// Thread safety: implementations are used from the daemon's one thread.

#ifndef P2BMIG_XEN_TRACKD_HOST_H_
#define P2BMIG_XEN_TRACKD_HOST_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <p2bmig/types.h>

namespace p2bmig {

// One virtual block device of a domain, as its backend's xenstore directory
// (/local/domain/0/backend/vbd/<domid>/<devid>/) describes it.
struct VbdInfo {
  uint32_t devid = 0;
  std::string params;           // the image or device the guest sees ("params")
  std::string physical_device;  // "major:minor" in hex, as the hotplug script wrote it
  // Both ends offered persistent grants ("feature-persistent" of backend and
  // frontend): blkfront then copies through bounce pages.
  bool persistent = false;
};

class TrackdHost {
 public:
  TrackdHost() = default;
  TrackdHost(const TrackdHost&) = delete;
  TrackdHost& operator=(const TrackdHost&) = delete;
  virtual ~TrackdHost() = default;

  // The size of the domain's pfn space (maximum gpfn + 1), or nothing if
  // there is no such domain or it is dying.
  virtual std::optional<uint64_t> DomainPfns(uint32_t domid) = 0;

  // The domain's block devices, in any order.
  virtual std::vector<VbdInfo> ListVbds(uint32_t domid) = 0;

  // The guest pfn the M2P table gives for machine frame `mfn`, or nothing
  // (no such frame, or not a guest's).
  virtual std::optional<Pfn> MfnToPfn(uint64_t mfn) = 0;

  // Requests of the device that blkback submitted and has not answered yet
  // (the patched module's statistics/inflight), or nothing if unknown.
  virtual std::optional<uint64_t> DeviceInflight(uint32_t domid, uint32_t devid) = 0;
};

// Opens libxenctrl, maps the M2P table read-only and connects to xenstore.
// Throws Error(kIo) with "is this a Xen dom0?" when that is impossible.
std::unique_ptr<TrackdHost> OpenXenTrackdHost();

// A host described by a text file, re-read on every call (tests rewrite it
// to make domains appear and die). One item per line, '#' starts a comment:
//   domain <domid> <nr_pfns> <mfn_base>   frames mfn_base + pfn belong to it
//   vbd <domid> <devid> <params> [persistent]
//   inflight <domid> <devid> <count>     (absent: unknown)
// Not for production: the daemon takes it only with --test-host.
std::unique_ptr<TrackdHost> OpenFileTrackdHost(const std::string& path);

}  // namespace p2bmig

#endif  // P2BMIG_XEN_TRACKD_HOST_H_
