// TrackdIoTap: the IoTap of a domain whose map p2bmig-trackd keeps. It
// connects to the daemon's socket, loads the snapshot into a P2bMap, and
// then delivers the daemon's events for that domain to the listener from a
// reader thread, started by the first SetListener (or Drain): events that
// come earlier wait in the socket, none is lost.
//
// Drain() sends a drain request and returns when the daemon has answered:
// by then every record the blkback tap held when the daemon received the
// request has been delivered (see xen/trackd.h for what that covers). If the
// connection failed, or the daemon reported an error (the domain is gone, or
// uses persistent grants), Drain() throws Error(kIo): the map may have
// missed invalidations, and the save must not go on. A kReset from the
// daemon (records were lost) forgets every entry of the map, which the
// filter sees as removals and answers by sending those pages again.
//
// Thread safety: Drain from one thread at a time. The listener runs on
// the reader thread.

#ifndef P2BMIG_XEN_TRACKD_CLIENT_H_
#define P2BMIG_XEN_TRACKD_CLIENT_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <p2bmig/io_event.h>
#include <p2bmig/p2b_map.h>

#include "xen/trackd_protocol.h"

namespace p2bmig {

class TrackdIoTap : public IoTap {
 public:
  // Connects, asks for `domid` and loads the snapshot into `map` (entries
  // with pfns beyond the map are skipped). The daemon numbers a domain's
  // disks by devid; the stream must number them as the helper's `disks`
  // (P2BMIG_DISKS, configuration order). Snapshot and events are renumbered
  // accordingly (TrackdDiskRemap); a device the helper does not name gets
  // disk P2bMap::kMaxDisks and never creates entries. Empty `disks`: the
  // daemon's numbering is kept. Throws Error(kIo) if the daemon
  // does not answer ("is p2bmig-trackd running?"), Error(kInvalidArgument)
  // if it refuses the domain (with its reason). The reader thread starts
  // only once a listener is set, so the first events follow the snapshot.
  // REQUIRES: `map` outlives the tap.
  static std::unique_ptr<TrackdIoTap> Connect(const std::string& socket_path, uint32_t domid,
                                              P2bMap* map,
                                              const std::vector<std::string>& disks = {});
  ~TrackdIoTap() override;

  void SetListener(Listener listener) override;
  void Drain() override;

  const std::vector<TrackdDevice>& devices() const { return devices_; }
  // For each of the daemon's disk indexes, the helper's (or kMaxDisks).
  const std::vector<uint32_t>& disk_remap() const { return remap_; }
  // Indexes of the helper's disks the daemon does not track.
  const std::vector<size_t>& untracked_disks() const { return untracked_; }
  uint64_t snapshot_entries() const { return snapshot_entries_; }
  uint64_t events_received() const;
  uint64_t resets_received() const;

 private:
  TrackdIoTap(int fd, P2bMap* map);
  void StartReader();
  void ReadLoop();
  void Fail(const std::string& why);

  const int fd_;
  P2bMap* const map_;
  std::vector<TrackdDevice> devices_;
  std::vector<uint32_t> remap_;
  std::vector<size_t> untracked_;
  uint32_t Remap(uint32_t daemon_disk) const;
  uint64_t snapshot_entries_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Listener listener_;
  std::string error_;
  uint64_t drained_token_ = 0;
  uint64_t next_token_ = 1;
  uint64_t events_ = 0;
  uint64_t resets_ = 0;
  std::once_flag reader_started_;
  std::thread reader_;
};

// For each of the daemon's devices (in its disk order), the index in `disks`
// of the same image (compared by device and inode, or by path if either
// cannot be stat'ed), or P2bMap::kMaxDisks if the helper does not name it.
// Indexes of `disks` that are no blkback device of the domain (a QEMU-backed
// disk, say) go to `untracked`: they get no mappings. Throws
// Error(kInvalidArgument) if none of `disks` is one of the domain's devices:
// the helper was configured for another guest.
std::vector<uint32_t> TrackdDiskRemap(const std::vector<TrackdDevice>& devices,
                                      const std::vector<std::string>& disks,
                                      std::vector<size_t>* untracked = nullptr);

}  // namespace p2bmig

#endif  // P2BMIG_XEN_TRACKD_CLIENT_H_
