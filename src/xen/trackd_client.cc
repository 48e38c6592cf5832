// TrackdIoTap: a client of p2bmig-trackd's socket.

#include "xen/trackd_client.h"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace p2bmig {

std::unique_ptr<TrackdIoTap> TrackdIoTap::Connect(const std::string& socket_path, uint32_t domid,
                                                  P2bMap* map) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    throw Error(ErrorKind::kInvalidArgument, "socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(ErrorKind::kIo, fmt::format("socket: {}", std::strerror(errno)));
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int e = errno;
    close(fd);
    throw Error(ErrorKind::kIo, fmt::format("cannot connect to p2bmig-trackd at {}: {} (is "
                                            "p2bmig-trackd running? set P2BMIG_TRACKD to its "
                                            "socket)",
                                            socket_path, std::strerror(e)));
  }
  std::unique_ptr<TrackdIoTap> tap(new TrackdIoTap(fd, map));
  WriteAllFd(fd, EncodeWatch(domid));
  auto next = [&]() {
    std::optional<Frame> f = ReadFrame(fd);
    if (!f) throw Error(ErrorKind::kIo, "p2bmig-trackd closed the connection");
    if (f->type == TrackdMsg::kError || f->type == TrackdMsg::kGone) {
      throw Error(ErrorKind::kInvalidArgument, "p2bmig-trackd: " + DecodeText(*f));
    }
    return *f;
  };
  tap->devices_ = DecodeDevices(next());
  for (;;) {
    Frame f = next();
    if (f.type == TrackdMsg::kSnapshotEnd) {
      if (DecodeToken(f) != tap->snapshot_entries_) {
        throw Error(ErrorKind::kMalformedStream, "p2bmig-trackd: snapshot count mismatch");
      }
      break;
    }
    uint64_t nr_pfns = 0;
    for (const SnapshotEntry& e : DecodeSnapshot(f, &nr_pfns)) {
      ++tap->snapshot_entries_;
      if (e.pfn >= map->nr_pfns()) continue;
      IoEvent ev;
      ev.op = IoOp::kRead;
      ev.disk = e.addr.disk;
      ev.sector = e.addr.block * kSectorsPerPage;
      ev.segments.push_back(IoSegment{e.pfn, 0, kSectorsPerPage - 1, e.hash});
      map->Apply(ev);
    }
  }
  return tap;
}

TrackdIoTap::TrackdIoTap(int fd, P2bMap* map) : fd_(fd), map_(map) {}

TrackdIoTap::~TrackdIoTap() {
  shutdown(fd_, SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
  close(fd_);
}

void TrackdIoTap::SetListener(Listener listener) {
  {
    std::lock_guard lock(mu_);
    listener_ = std::move(listener);
  }
  StartReader();
}

void TrackdIoTap::StartReader() {
  std::call_once(reader_started_, [this] { reader_ = std::thread([this] { ReadLoop(); }); });
}

void TrackdIoTap::Fail(const std::string& why) {
  std::lock_guard lock(mu_);
  if (error_.empty()) error_ = why;
  cv_.notify_all();
}

void TrackdIoTap::ReadLoop() {
  try {
    for (;;) {
      std::optional<Frame> f = ReadFrame(fd_);
      if (!f) return Fail("p2bmig-trackd closed the connection");
      switch (f->type) {
        case TrackdMsg::kEvent: {
          const IoEvent ev = DecodeEvent(*f);
          std::lock_guard lock(mu_);
          ++events_;
          if (listener_) listener_(ev);
          break;
        }
        case TrackdMsg::kReset: {
          for (Pfn pfn = 0; pfn < map_->nr_pfns(); ++pfn) {
            if (map_->Lookup(pfn)) map_->Forget(pfn);
          }
          std::lock_guard lock(mu_);
          ++resets_;
          break;
        }
        case TrackdMsg::kDrained: {
          const uint64_t token = DecodeToken(*f);
          std::lock_guard lock(mu_);
          drained_token_ = std::max(drained_token_, token);
          cv_.notify_all();
          break;
        }
        case TrackdMsg::kError:
        case TrackdMsg::kGone:
          return Fail("p2bmig-trackd: " + DecodeText(*f));
        default:
          return Fail(fmt::format("p2bmig-trackd sent message {} unexpectedly",
                                  static_cast<uint32_t>(f->type)));
      }
    }
  } catch (const std::exception& e) {
    Fail(e.what());
  }
}

void TrackdIoTap::Drain() {
  StartReader();
  uint64_t token;
  {
    std::lock_guard lock(mu_);
    if (!error_.empty()) throw Error(ErrorKind::kIo, error_);
    token = next_token_++;
  }
  try {
    WriteAllFd(fd_, EncodeToken(TrackdMsg::kDrain, token));
  } catch (const Error& e) {
    Fail(e.what());
  }
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return drained_token_ >= token || !error_.empty(); });
  if (drained_token_ < token) throw Error(ErrorKind::kIo, error_);
}

uint64_t TrackdIoTap::events_received() const {
  std::lock_guard lock(mu_);
  return events_;
}

uint64_t TrackdIoTap::resets_received() const {
  std::lock_guard lock(mu_);
  return resets_;
}

void CheckTrackdDisks(const std::vector<TrackdDevice>& devices,
                      const std::vector<std::string>& disks) {
  if (devices.size() != disks.size()) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("p2bmig-trackd knows {} disk(s) of this domain, P2BMIG_DISKS "
                            "names {}",
                            devices.size(), disks.size()));
  }
  for (size_t i = 0; i < disks.size(); ++i) {
    struct stat a, b;
    const bool same = stat(devices[i].path.c_str(), &a) == 0 && stat(disks[i].c_str(), &b) == 0
                          ? a.st_dev == b.st_dev && a.st_ino == b.st_ino
                          : devices[i].path == disks[i];
    if (!same) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("disk {}: p2bmig-trackd has {} (device {}), P2BMIG_DISKS has {}", i,
                              devices[i].path, devices[i].devid, disks[i]));
    }
  }
}

}  // namespace p2bmig
