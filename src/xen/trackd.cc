// The p2bmig-trackd daemon: tap reader, per-domain maps, socket server.

#include "xen/trackd.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <p2bmig/hash.h>
#include <p2bmig/p2b_map.h>

#include "xen/blkback_tap.h"

namespace p2bmig {

namespace {

std::string Errno() { return std::strerror(errno); }

struct Device {
  VbdInfo vbd;
  uint32_t disk = 0;
  int fd = -1;  // the image, read-only; -1: not mappable
  std::string why_unmappable;
};

struct DomainState {
  uint32_t domid = 0;
  uint64_t nr_pfns = 0;
  std::unique_ptr<P2bMap> map;
  std::vector<Device> devices;  // by devid, i.e. disk index
  std::string refused;          // non-empty: no map is kept, why
};

struct Client {
  int fd = -1;
  FrameReader in;
  std::vector<uint8_t> out;
  size_t out_pos = 0;
  bool watching = false;
  uint32_t domid = 0;
  bool closing = false;  // close once `out` is flushed
  bool dead = false;
};

}  // namespace

struct PendingDrain {
  Client* client;
  uint64_t token;
  std::chrono::steady_clock::time_point deadline;
};

struct Trackd::Impl {
  TrackdOptions opt;
  TrackdHost* host;
  int tap_fd = -1;
  int listen_fd = -1;
  TapDecoder decoder;
  std::map<uint32_t, DomainState> domains;
  std::vector<std::unique_ptr<Client>> clients;
  std::vector<PendingDrain> drains;
  TrackdStats stats;
  std::vector<uint8_t> read_buf = std::vector<uint8_t>(1 << 16);

  // --- Setup ---------------------------------------------------------------

  void OpenTap() {
    struct stat st;
    if (stat(opt.tap_path.c_str(), &st) != 0) {
      throw Error(ErrorKind::kIo,
                  fmt::format("cannot open the blkback tap {}: {} (is the patched xen-blkback "
                              "module loaded? scripts/build-blkback-tap.sh)",
                              opt.tap_path, Errno()));
    }
    // A FIFO standing in for the device is opened read-write, so that the
    // test's writer closing it is not an end of file.
    const int mode = S_ISFIFO(st.st_mode) ? O_RDWR : O_RDONLY;
    tap_fd = open(opt.tap_path.c_str(), mode | O_NONBLOCK | O_CLOEXEC);
    if (tap_fd < 0) {
      throw Error(ErrorKind::kIo,
                  fmt::format("cannot open the blkback tap {}: {}{}", opt.tap_path, Errno(),
                              errno == EBUSY ? " (another reader has it open)" : ""));
    }
  }

  void OpenSocket() {
    const std::filesystem::path path(opt.socket_path);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (opt.socket_path.size() >= sizeof(addr.sun_path)) {
      throw Error(ErrorKind::kInvalidArgument, "socket path too long: " + opt.socket_path);
    }
    std::memcpy(addr.sun_path, opt.socket_path.c_str(), opt.socket_path.size() + 1);
    if (path.has_parent_path() && !std::filesystem::exists(path.parent_path())) {
      std::filesystem::create_directories(path.parent_path());
      chmod(path.parent_path().c_str(), 0700);
    }
    // A socket left by a daemon that died is removed; a live one is not.
    const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
      const bool live = connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
      close(probe);
      if (live) {
        throw Error(ErrorKind::kInvalidArgument,
                    fmt::format("another p2bmig-trackd is serving {}", opt.socket_path));
      }
    }
    unlink(opt.socket_path.c_str());
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd < 0) throw Error(ErrorKind::kIo, "socket: " + Errno());
    // Root only: the maps say what is in the guests' memory.
    const mode_t old = umask(0177);
    const int rc = bind(listen_fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    umask(old);
    if (rc != 0 || chmod(opt.socket_path.c_str(), 0600) != 0 || listen(listen_fd, 16) != 0) {
      throw Error(ErrorKind::kIo, fmt::format("cannot serve {}: {}", opt.socket_path, Errno()));
    }
  }

  // --- Domains -------------------------------------------------------------

  std::vector<Device> LearnDevices(uint32_t domid) {
    std::vector<VbdInfo> vbds = host->ListVbds(domid);
    std::sort(vbds.begin(), vbds.end(),
              [](const VbdInfo& a, const VbdInfo& b) { return a.devid < b.devid; });
    std::vector<Device> devs;
    for (VbdInfo& v : vbds) {
      Device d;
      d.disk = static_cast<uint32_t>(devs.size());
      d.vbd = std::move(v);
      if (d.disk >= P2bMap::kMaxDisks) {
        d.why_unmappable = "too many disks";
      } else if (d.vbd.params.empty() || d.vbd.params[0] != '/') {
        d.why_unmappable = fmt::format("params \"{}\" is not a path", d.vbd.params);
      } else {
        d.fd = open(d.vbd.params.c_str(), O_RDONLY | O_CLOEXEC);
        if (d.fd < 0) d.why_unmappable = fmt::format("cannot open {}: {}", d.vbd.params, Errno());
      }
      devs.push_back(std::move(d));
    }
    return devs;
  }

  static void CloseDevices(DomainState& d) {
    for (Device& dev : d.devices) {
      if (dev.fd >= 0) close(dev.fd);
      dev.fd = -1;
    }
  }

  static std::string PersistentMessage(uint32_t domid, const Device& dev) {
    return fmt::format(
        "domain {} device {} ({}) uses persistent grants: its granted frames are bounce "
        "pages, not the guest's page cache, so no map is kept for this domain. Load "
        "xen-blkback with feature_persistent=0 (echo 0 > "
        "/sys/module/xen_blkback/parameters/feature_persistent) and re-attach the disk or "
        "restart the guest",
        domid, dev.vbd.devid, dev.vbd.params);
  }

  void Refuse(DomainState& d, const std::string& why) {
    if (!d.refused.empty()) return;
    d.refused = why;
    d.map.reset();
    spdlog::error("{}", why);
    for (auto& c : clients) {
      if (c->watching && c->domid == d.domid) Send(*c, EncodeText(TrackdMsg::kError, why), true);
    }
  }

  // The domain's state, learnt on first sight; nullptr if it does not exist.
  DomainState* Domain(uint32_t domid) {
    if (auto it = domains.find(domid); it != domains.end()) return &it->second;
    std::optional<uint64_t> pfns = host->DomainPfns(domid);
    if (!pfns) return nullptr;
    DomainState& d = domains[domid];
    d.domid = domid;
    d.nr_pfns = *pfns;
    d.devices = LearnDevices(domid);
    try {
      d.map = std::make_unique<P2bMap>(d.nr_pfns);
    } catch (const Error& e) {
      d.refused = fmt::format("domain {}: {}", domid, e.what());
    }
    spdlog::info("domain {}: {} pfns, {} disk(s)", domid, d.nr_pfns, d.devices.size());
    for (const Device& dev : d.devices) {
      spdlog::info("domain {}: disk {} = device {} {}{}", domid, dev.disk, dev.vbd.devid,
                   dev.vbd.params,
                   dev.fd < 0 ? fmt::format(" (not mapped: {})", dev.why_unmappable) : "");
      if (dev.vbd.persistent) Refuse(d, PersistentMessage(domid, dev));
    }
    return &d;
  }

  Device* FindDevice(DomainState& d, uint32_t handle) {
    for (Device& dev : d.devices) {
      if ((dev.vbd.devid & 0xffff) == (handle & 0xffff)) return &dev;
    }
    return nullptr;
  }

  // A device not seen at first sight (hot-plugged): learn the table again.
  Device* DeviceOf(DomainState& d, uint32_t handle) {
    if (Device* dev = FindDevice(d, handle)) return dev;
    std::vector<Device> fresh = LearnDevices(d.domid);
    bool moved = false;
    for (const Device& old : d.devices) {
      auto it = std::find_if(fresh.begin(), fresh.end(),
                             [&](const Device& n) { return n.vbd.devid == old.vbd.devid; });
      if (it == fresh.end() || it->disk != old.disk) moved = true;
    }
    CloseDevices(d);
    d.devices = std::move(fresh);
    if (moved) ResetDomain(d, "its disk indexes changed");
    return FindDevice(d, handle);
  }

  void ResetDomain(DomainState& d, const std::string& why) {
    if (!d.refused.empty()) return;
    const std::string msg = fmt::format("domain {}: map dropped: {}", d.domid, why);
    spdlog::warn("{}", msg);
    d.map = std::make_unique<P2bMap>(d.nr_pfns);
    for (auto& c : clients) {
      if (c->watching && c->domid == d.domid) Send(*c, EncodeText(TrackdMsg::kReset, msg));
    }
  }

  void ForgetDeadDomains() {
    for (auto it = domains.begin(); it != domains.end();) {
      if (host->DomainPfns(it->first)) {
        ++it;
        continue;
      }
      spdlog::info("domain {} is gone: map forgotten", it->first);
      for (auto& c : clients) {
        if (c->watching && c->domid == it->first) {
          Send(*c, EncodeText(TrackdMsg::kGone, fmt::format("domain {} is gone", it->first)), true);
        }
      }
      CloseDevices(it->second);
      it = domains.erase(it);
    }
  }

  // --- Records -------------------------------------------------------------

  void Broadcast(const DomainState& d, const IoEvent& ev) {
    std::vector<uint8_t> frame;
    for (auto& c : clients) {
      if (!c->watching || c->domid != d.domid || c->closing) continue;
      if (frame.empty()) frame = EncodeEvent(ev);
      Send(*c, frame);
    }
  }

  void ApplyEvent(DomainState& d, const IoEvent& ev) {
    d.map->Apply(ev);
    ++stats.events;
    Broadcast(d, ev);
  }

  // Fills the hash of every whole, aligned block of `ev` from the image.
  bool HashFromImage(const Device& dev, IoEvent& ev, uint64_t nr_sectors) {
    const uint64_t bytes = nr_sectors * kSectorSize;
    std::vector<uint8_t> buf(bytes);
    uint64_t done = 0;
    while (done < bytes) {
      const ssize_t n = pread(dev.fd, buf.data() + done, bytes - done,
                              static_cast<off_t>(ev.sector * kSectorSize + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<uint64_t>(n);
    }
    uint64_t off = 0;
    for (IoSegment& s : ev.segments) {
      if (s.full_page() && (ev.sector * kSectorSize + off) % kPageSize == 0) {
        s.hash = PageHash(buf.data() + off);
      }
      off += uint64_t{s.nr_sectors()} * kSectorSize;
    }
    return true;
  }

  void Invalidate(DomainState& d, const TapRecord& r, uint32_t disk) {
    auto m2p = [this](uint64_t mfn) { return host->MfnToPfn(mfn); };
    std::optional<std::vector<IoEvent>> evs =
        InvalidationEvents(r, disk, m2p, opt.max_invalidate_sectors);
    if (!evs) {
      ResetDomain(
          d, fmt::format("{} is too large to invalidate block by block", DescribeTapRecord(r)));
      return;
    }
    for (const IoEvent& ev : *evs) ApplyEvent(d, ev);
  }

  void Process(const TapRecord& r) {
    ++stats.records;
    if (r.type == TapRecordType::kLost) {
      ++stats.lost_reports;
      spdlog::warn("blkback tap: {}", DescribeTapRecord(r));
      for (auto& [domid, d] : domains) {
        if (r.domid == kTapAllDomains || r.domid == domid) {
          ResetDomain(d, fmt::format("the tap lost {} record(s)", r.lost()));
        }
      }
      return;
    }
    DomainState* d = Domain(r.domid);
    if (d == nullptr) {
      spdlog::debug("record of unknown domain {} ignored", r.domid);
      return;
    }
    if (!d->refused.empty()) return;
    Device* dev = DeviceOf(*d, r.handle);
    if (dev == nullptr) {
      // No disk index: it can neither create entries nor hit another disk's
      // blocks, but a read still changed the guest's pages.
      spdlog::warn("domain {}: device {} is not in xenstore; its requests only drop entries",
                   r.domid, r.handle);
      if (r.op == BlkifOp::kRead) Invalidate(*d, r, P2bMap::kMaxDisks);
      return;
    }
    if (r.persistent() || dev->vbd.persistent) {
      dev->vbd.persistent = true;
      Refuse(*d, PersistentMessage(d->domid, *dev));
      return;
    }
    if (TapRecordCarriesData(r) && dev->fd >= 0) {
      IoEvent ev =
          TapRecordToIoEvent(r, dev->disk, [this](uint64_t mfn) { return host->MfnToPfn(mfn); });
      if (HashFromImage(*dev, ev, r.nr_sectors)) {
        ApplyEvent(*d, ev);
        return;
      }
      spdlog::warn("domain {}: cannot read {} for {}: {}", d->domid, dev->vbd.params,
                   DescribeTapRecord(r), Errno());
    }
    Invalidate(*d, r, dev->disk);
  }

  // Reads the tap until it has nothing more and applies every record.
  void ReadTap() {
    for (;;) {
      const ssize_t n = read(tap_fd, read_buf.data(), read_buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n < 0) throw Error(ErrorKind::kIo, fmt::format("read {}: {}", opt.tap_path, Errno()));
      if (n == 0) return;
      decoder.Feed(read_buf.data(), static_cast<size_t>(n));
      for (;;) {
        std::optional<TapRecord> r;
        try {
          r = decoder.Next();
        } catch (const Error& e) {
          ++stats.malformed;
          spdlog::error("{}: dropping every map", e.what());
          decoder.Reset();
          for (auto& [domid, d] : domains) ResetDomain(d, "malformed record from the tap");
          break;
        }
        if (!r) break;
        Process(*r);
      }
    }
  }

  // --- Clients -------------------------------------------------------------

  void Send(Client& c, const std::vector<uint8_t>& frame, bool then_close = false) {
    if (c.dead || c.closing) return;
    if (c.out.size() - c.out_pos + frame.size() > opt.max_client_backlog) {
      spdlog::warn("client of domain {} does not keep up: disconnected", c.domid);
      c.dead = true;
      return;
    }
    c.out.insert(c.out.end(), frame.begin(), frame.end());
    if (then_close) c.closing = true;
  }

  void Flush(Client& c) {
    while (!c.dead && c.out_pos < c.out.size()) {
      const ssize_t n = send(c.fd, c.out.data() + c.out_pos, c.out.size() - c.out_pos,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) {
        c.dead = true;
        break;
      }
      c.out_pos += static_cast<size_t>(n);
    }
    if (c.out_pos == c.out.size()) {
      c.out.clear();
      c.out_pos = 0;
      if (c.closing) c.dead = true;
    } else if (c.out_pos > (size_t{1} << 20)) {
      c.out.erase(c.out.begin(), c.out.begin() + static_cast<ptrdiff_t>(c.out_pos));
      c.out_pos = 0;
    }
  }

  void Watch(Client& c, uint32_t domid) {
    c.domid = domid;
    DomainState* d = domid < kFirstReservedDomid ? Domain(domid) : nullptr;
    if (d == nullptr) {
      Send(c, EncodeText(TrackdMsg::kError, fmt::format("there is no domain {}", domid)), true);
      return;
    }
    if (!d->refused.empty()) {
      Send(c, EncodeText(TrackdMsg::kError, d->refused), true);
      return;
    }
    std::vector<TrackdDevice> devs;
    for (const Device& dev : d->devices) {
      devs.push_back(TrackdDevice{
          dev.vbd.devid, dev.disk,
          (dev.fd >= 0 ? kDeviceMappable : 0u) | (dev.vbd.persistent ? kDevicePersistent : 0u),
          dev.vbd.params});
    }
    Send(c, EncodeDevices(devs));
    uint64_t total = 0;
    std::vector<SnapshotEntry> chunk;
    for (Pfn pfn = 0; pfn < d->nr_pfns; ++pfn) {
      if (std::optional<P2bMap::Entry> e = d->map->Lookup(pfn)) {
        chunk.push_back(SnapshotEntry{pfn, e->addr, e->hash48});
        if (chunk.size() == kSnapshotChunk) {
          Send(c, EncodeSnapshot(d->nr_pfns, chunk));
          total += chunk.size();
          chunk.clear();
        }
      }
    }
    Send(c, EncodeSnapshot(d->nr_pfns, chunk));
    total += chunk.size();
    Send(c, EncodeToken(TrackdMsg::kSnapshotEnd, total));
    c.watching = true;
    spdlog::info("client watches domain {}: snapshot of {} entries", domid, total);
  }

  void OnClientInput(Client& c) {
    uint8_t buf[4096];
    const ssize_t n = recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
      c.dead = true;
      return;
    }
    c.in.Feed(buf, static_cast<size_t>(n));
    try {
      while (std::optional<Frame> f = c.in.Next()) {
        if (c.closing || c.dead) return;
        if (f->type == TrackdMsg::kWatch && !c.watching) {
          Watch(c, DecodeWatch(*f));
        } else if (f->type == TrackdMsg::kDrain && c.watching) {
          drains.push_back(PendingDrain{
              &c, DecodeToken(*f),
              std::chrono::steady_clock::now() + std::chrono::milliseconds(opt.drain_timeout_ms)});
        } else {
          throw Error(ErrorKind::kMalformedStream,
                      fmt::format("unexpected message {}", static_cast<uint32_t>(f->type)));
        }
      }
    } catch (const Error& e) {
      spdlog::warn("client: {}", e.what());
      Send(c, EncodeText(TrackdMsg::kError, e.what()), true);
    }
  }

  // True once no device of the domain has a request inside blkback (or the
  // count is unknown).
  bool Quiet(uint32_t domid) {
    auto it = domains.find(domid);
    if (it == domains.end()) return true;
    for (const Device& dev : it->second.devices) {
      std::optional<uint64_t> n = host->DeviceInflight(domid, dev.vbd.devid);
      if (n && *n > 0) return false;
    }
    return true;
  }

  // Answers the drains whose domain is quiet (or whose time is up), after
  // reading everything the tap holds.
  void CompleteDrains() {
    const auto now = std::chrono::steady_clock::now();
    std::vector<PendingDrain> ready;
    std::erase_if(drains, [&](const PendingDrain& d) {
      if (d.client->dead || d.client->closing) return true;
      const bool quiet = Quiet(d.client->domid);
      if (!quiet && now < d.deadline) return false;
      if (!quiet) {
        ++stats.drain_timeouts;
        spdlog::warn("domain {}: requests still in flight after {} ms; drained without them",
                     d.client->domid, opt.drain_timeout_ms);
      }
      ready.push_back(d);
      return true;
    });
    if (ready.empty()) return;
    ReadTap();
    for (const PendingDrain& d : ready) {
      ++stats.drains;
      Send(*d.client, EncodeToken(TrackdMsg::kDrained, d.token));
    }
  }

  void Accept() {
    for (;;) {
      const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) return;
      auto c = std::make_unique<Client>();
      c->fd = fd;
      clients.push_back(std::move(c));
    }
  }

  void Run(int stop_fd) {
    using Clock = std::chrono::steady_clock;
    auto next_check = Clock::now();
    for (;;) {
      std::vector<pollfd> fds;
      fds.push_back({stop_fd, POLLIN, 0});
      fds.push_back({tap_fd, POLLIN, 0});
      fds.push_back({listen_fd, POLLIN, 0});
      for (auto& c : clients) {
        fds.push_back(
            {c->fd, static_cast<short>(POLLIN | (c->out.size() > c->out_pos ? POLLOUT : 0)), 0});
      }
      // While a drain waits for in-flight requests, look again soon.
      const int rc = poll(fds.data(), fds.size(), drains.empty() ? opt.housekeeping_ms : 5);
      if (rc < 0 && errno != EINTR) throw Error(ErrorKind::kIo, "poll: " + Errno());
      if (rc > 0 && fds[0].revents != 0) return;
      if (rc > 0 && fds[1].revents != 0) ReadTap();
      if (rc > 0 && fds[2].revents != 0) Accept();
      for (size_t i = 0; rc > 0 && i + 3 < fds.size() && i < clients.size(); ++i) {
        if (fds[i + 3].revents & (POLLIN | POLLHUP | POLLERR)) OnClientInput(*clients[i]);
      }
      if (Clock::now() >= next_check) {
        ForgetDeadDomains();
        next_check = Clock::now() + std::chrono::milliseconds(opt.housekeeping_ms);
      }
      CompleteDrains();
      for (auto& c : clients) Flush(*c);
      std::erase_if(drains, [](const PendingDrain& d) { return d.client->dead; });
      std::erase_if(clients, [](const std::unique_ptr<Client>& c) {
        if (c->dead) close(c->fd);
        return c->dead;
      });
    }
  }
};

Trackd::Trackd(const TrackdOptions& options, TrackdHost* host) : impl_(std::make_unique<Impl>()) {
  impl_->opt = options;
  impl_->host = host;
  impl_->OpenTap();
  impl_->OpenSocket();
  spdlog::info("reading {}, serving {}", options.tap_path, options.socket_path);
}

Trackd::~Trackd() {
  for (auto& c : impl_->clients) close(c->fd);
  for (auto& [domid, d] : impl_->domains) Impl::CloseDevices(d);
  if (impl_->listen_fd >= 0) {
    close(impl_->listen_fd);
    unlink(impl_->opt.socket_path.c_str());
  }
  if (impl_->tap_fd >= 0) close(impl_->tap_fd);
}

void Trackd::Run(int stop_fd) { impl_->Run(stop_fd); }

TrackdStats Trackd::stats() const { return impl_->stats; }

}  // namespace p2bmig
