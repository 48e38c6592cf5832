// Trackd: the dom0 daemon behind p2bmig-trackd. It reads the blkback
// completion tap, keeps one P2bMap per guest domain, and serves them on a
// Unix socket to the save helper (protocol in xen/trackd_protocol.h).
//
// For each record of the tap it
//   * learns the domain (size from TrackdHost::DomainPfns) and its devices
//     (TrackdHost::ListVbds; disk index = rank of the devid, which is the
//     configuration order for xl's xvda, xvdb, ...; the image is "params"),
//   * turns each segment's machine frame into a guest pfn (M2P),
//   * for a successful read or write, reads the request's range from the
//     image and records the hash of each whole, 4 KiB-aligned block: the
//     hash of what the target will fetch, so that the send-time check
//     (P2bMap::Verify) compares the page with the block, not with itself,
//   * applies the event to the domain's map and forwards it to the clients
//     watching that domain.
// A failed request or a discard only removes entries. A lost-records report
// drops the maps of the domains it names (kReset to their clients). A device
// with persistent grants makes its domain refused: no map, kError to
// clients. A domain that no longer exists is forgotten (kGone).
//
// Drain (I4): a kDrain is answered once every device of the domain reports
// no request in flight (TrackdHost::DeviceInflight, the patched module's
// statistics/inflight; polled, at most drain_timeout_ms), and then after the
// tap has been read until it had nothing more (read() returned EAGAIN) and
// every record read was applied and forwarded. The kernel queues a
// request's record when its last bio completes, before blkback answers the
// guest, and the in-flight count drops after the answer: at zero, the tap
// holds every finished request. Without the counter (or after the
// timeout, which is logged) requests still inside blkback are not covered.
//
// Thread safety: single-threaded; Run() owns the object.

#ifndef P2BMIG_XEN_TRACKD_H_
#define P2BMIG_XEN_TRACKD_H_

#include <cstdint>
#include <memory>
#include <string>

#include "xen/trackd_host.h"
#include "xen/trackd_protocol.h"

namespace p2bmig {

struct TrackdOptions {
  std::string tap_path = "/dev/xen-blkback-tap";
  std::string socket_path = kDefaultTrackdSocket;
  // How often domains are checked for death.
  int housekeeping_ms = 1000;
  // A discard (or failed write) longer than this drops the domain's map
  // rather than removing entries block by block (1 GiB).
  uint64_t max_invalidate_sectors = uint64_t{1} << 21;
  // Longest wait of a drain for in-flight requests to finish.
  int drain_timeout_ms = 10000;
  // A client that lets this much output pile up is disconnected.
  size_t max_client_backlog = size_t{256} << 20;
};

struct TrackdStats {
  uint64_t records = 0;
  uint64_t lost_reports = 0;
  uint64_t events = 0;
  uint64_t malformed = 0;
  uint64_t drains = 0;
  uint64_t drain_timeouts = 0;
};

class Trackd {
 public:
  // Opens the tap and binds the socket (mode 0600, its directory created
  // 0700 if missing). Throws Error(kIo) with the path and the reason, and
  // Error(kInvalidArgument) if another daemon answers on the socket.
  Trackd(const TrackdOptions& options, TrackdHost* host);
  ~Trackd();
  Trackd(const Trackd&) = delete;
  Trackd& operator=(const Trackd&) = delete;

  // Serves until `stop_fd` becomes readable (or hangs up).
  void Run(int stop_fd);

  TrackdStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace p2bmig

#endif  // P2BMIG_XEN_TRACKD_H_
