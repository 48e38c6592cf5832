// Selection of the save helper's map source.

#include "xen/tracking.h"

#include <cstdlib>

#include <fmt/format.h>

#include "xen/hint_free_tracking.h"
#include "xen/trackd_client.h"
#include "xen/trackd_protocol.h"

namespace p2bmig {

namespace {

// The map stays as it was given: nothing invalidates, nothing to wait for.
class NullIoTap : public IoTap {
 public:
  void SetListener(Listener) override {}
  void Drain() override {}
};

}  // namespace

TrackingConfig TrackingConfigFromEnvironment() {
  TrackingConfig c;
  const char* source = std::getenv("P2BMIG_TRACKING");
  const std::string s = source == nullptr ? "" : source;
  if (s.empty() || s == "trackd") {
    c.source = TrackingSource::kTrackd;
  } else if (s == "none") {
    c.source = TrackingSource::kNone;
  } else if (s == "index") {
    c.source = TrackingSource::kIndex;
  } else {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("P2BMIG_TRACKING is \"{}\"; expected trackd, none or index", s));
  }
  if (const char* sock = std::getenv("P2BMIG_TRACKD"); sock != nullptr && *sock) {
    c.trackd_socket = sock;
  }
  return c;
}

Tracking OpenTracking(uint32_t domid, uint64_t nr_pfns, const std::vector<std::string>& disks,
                      const TrackingConfig& config) {
  Tracking t;
  t.map = std::make_unique<P2bMap>(nr_pfns);
  switch (config.source) {
    case TrackingSource::kNone:
      t.tap = std::make_unique<NullIoTap>();
      t.description = "no tracking (P2BMIG_TRACKING=none): empty map";
      return t;
    case TrackingSource::kIndex:
      return OpenHintFreeTracking(nr_pfns, disks);
    case TrackingSource::kTrackd: {
      const std::string socket =
          config.trackd_socket.empty() ? kDefaultTrackdSocket : config.trackd_socket;
      auto tap = TrackdIoTap::Connect(socket, domid, t.map.get(), disks);
      P2bMap* map = t.map.get();
      tap->SetListener([map](const IoEvent& ev) { map->Apply(ev); });
      t.snapshot_pages = map->size();
      t.description = fmt::format("p2bmig-trackd at {}: snapshot of {} mapped page(s)", socket,
                                  t.snapshot_pages);
      for (size_t i : tap->untracked_disks()) {
        t.description +=
            fmt::format("; disk {} ({}) is not a blkback device: no mappings for it", i, disks[i]);
      }
      t.tap = std::move(tap);
      return t;
    }
  }
  throw Error(ErrorKind::kInternal, "unknown tracking source");
}

}  // namespace p2bmig
