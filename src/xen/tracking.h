// Where the save helper's p2b map comes from: the one place that chooses,
// so that another source of mappings is one more case here.
//
//   P2BMIG_TRACKING=trackd (the default): p2bmig-trackd's map of the domain,
//       loaded from its socket (P2BMIG_TRACKD, default
//       /run/p2bmig/trackd.sock) and kept current by its event stream.
//       If the daemon does not answer, OpenTracking fails: the save must
//       stop before the real helper starts. Disks are renumbered from the
//       daemon's devid order to the helper's `disks` (configuration order).
//   P2BMIG_TRACKING=none: an empty map and a tap that never reports; the
//       stream then carries no mappings (zero pages are still elided).
//   P2BMIG_TRACKING=index: hint-free (src/xen/hint_free_tracking.h): a
//       content index of the images, writes traced at their loop devices.
//
// Thread safety: OpenTracking may be called from any thread; see IoTap and
// P2bMap for the objects it returns.

#ifndef P2BMIG_XEN_TRACKING_H_
#define P2BMIG_XEN_TRACKING_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <p2bmig/io_event.h>
#include <p2bmig/p2b_map.h>
#include <p2bmig/stream.h>

namespace p2bmig {

enum class TrackingSource { kTrackd, kNone, kIndex };

struct TrackingConfig {
  TrackingSource source = TrackingSource::kTrackd;
  std::string trackd_socket;  // empty: kDefaultTrackdSocket
};

// Reads P2BMIG_TRACKING and P2BMIG_TRACKD. Throws Error(kInvalidArgument)
// for an unknown source.
TrackingConfig TrackingConfigFromEnvironment();

struct Tracking {
  // Declared before `tap`, which applies events to it: destroyed after.
  std::unique_ptr<P2bMap> map;
  std::unique_ptr<IoTap> tap;
  uint64_t snapshot_pages = 0;  // entries the map started with
  std::string description;      // for the helper's log line
  // If set, what the save loop's stream goes through before the filter
  // (hint-free mode: the sink that proposes entries from the index).
  std::function<std::unique_ptr<RecordSink>(RecordSink* filter)> wrap_filter;
};

// The map of domain `domid` (`nr_pfns` pages, disks `disks` in
// configuration order) and the tap that keeps it current, with the tap's
// listener already applying events to the map. Throws Error with a message
// that says what to do.
Tracking OpenTracking(uint32_t domid, uint64_t nr_pfns, const std::vector<std::string>& disks,
                      const TrackingConfig& config);

}  // namespace p2bmig

#endif  // P2BMIG_XEN_TRACKING_H_
