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
                                                  P2bMap* map,
                                                  const std::vector<std::string>& disks) {
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
  if (disks.empty()) {
    for (const TrackdDevice& d : tap->devices_) tap->remap_.push_back(d.disk);
  } else {
    tap->remap_ = TrackdDiskRemap(tap->devices_, disks, &tap->untracked_);
  }
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
      const uint32_t disk = tap->Remap(e.addr.disk);
      if (e.pfn >= map->nr_pfns() || disk >= P2bMap::kMaxDisks) continue;
      IoEvent ev;
      ev.op = IoOp::kRead;
      ev.disk = disk;
      ev.sector = e.addr.block * kSectorsPerPage;
      ev.segments.push_back(IoSegment{e.pfn, 0, kSectorsPerPage - 1, e.hash});
      map->Apply(ev);
    }
  }
  return tap;
}

TrackdIoTap::TrackdIoTap(int fd, P2bMap* map) : fd_(fd), map_(map) {}

uint32_t TrackdIoTap::Remap(uint32_t daemon_disk) const {
  return daemon_disk < remap_.size() ? remap_[daemon_disk] : P2bMap::kMaxDisks;
}

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
          IoEvent ev = DecodeEvent(*f);
          ev.disk = Remap(ev.disk);
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

std::vector<uint32_t> TrackdDiskRemap(const std::vector<TrackdDevice>& devices,
                                      const std::vector<std::string>& disks,
                                      std::vector<size_t>* untracked) {
  auto same = [](const std::string& a, const std::string& b) {
    struct stat sa, sb;
    if (stat(a.c_str(), &sa) == 0 && stat(b.c_str(), &sb) == 0) {
      return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    }
    return a == b;
  };
  std::vector<uint32_t> remap(devices.size(), P2bMap::kMaxDisks);
  size_t matched = 0;
  std::string first_missing;
  for (size_t i = 0; i < disks.size(); ++i) {
    bool found = false;
    for (size_t d = 0; d < devices.size(); ++d) {
      if (same(devices[d].path, disks[i])) {
        remap[d] = static_cast<uint32_t>(i);
        found = true;
      }
    }
    if (found) {
      ++matched;
    } else if (untracked != nullptr) {
      untracked->push_back(i);
    }
    if (!found && first_missing.empty()) first_missing = fmt::format("disk {} ({})", i, disks[i]);
  }
  if (matched == 0 && !disks.empty()) {
    std::string known;
    for (const TrackdDevice& d : devices) known += fmt::format(" {}={}", d.devid, d.path);
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("none of P2BMIG_DISKS is a blkback device of this domain according "
                            "to p2bmig-trackd (first: {}; the daemon knows:{})",
                            first_missing, known.empty() ? " nothing" : known));
  }
  return remap;
}

}  // namespace p2bmig
