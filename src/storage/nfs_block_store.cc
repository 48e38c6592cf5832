// The libnfs BlockStore. libnfs contexts are not thread-safe, so one thread
// of the store's own owns every context: ReadAsync only queues the request and
// wakes that thread (an eventfd), which splits it into reads no larger than
// the server's maximum, keeps many of them in flight with nfs_pread_async(),
// and drives the sockets with poll() + nfs_service().
//
// A connection that fails (socket error, RPC timeout, error answer) is torn
// down, its reads go back to the queue, and the image is mounted and opened
// again after a growing pause, a bounded number of times: a NAS that restarts
// within a few seconds costs a pause, not the migration. libnfs's own
// reconnect is off because it would replay NFSv4 state the restarted server
// no longer knows.
//
// Thread safety: as BlockStore. Completion callbacks run on the loop thread.

#include "storage/nfs_block_store.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <nfsc/libnfs.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <p2bmig/types.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

namespace p2bmig {
namespace {

using Clock = std::chrono::steady_clock;

// Used when the server does not say (libnfs reports 0 for NFSv4).
constexpr uint64_t kDefaultReadMax = 1u << 20;
// Longest pause between reconnect attempts.
constexpr auto kMaxBackoff = std::chrono::milliseconds(2000);
// libnfs checks RPC timeouts only inside nfs_service(); call it this often.
constexpr int kTickMs = 100;

class NfsBlockStore;
struct Image;

// One ReadAsync call.
struct Request {
  uint32_t disk = 0;
  uint64_t offset = 0;
  size_t len = 0;
  uint8_t* buf = nullptr;
  BlockStore::ReadDone done;
  size_t chunks_left = 0;
  std::string error;  // the first chunk failure, if any
};

// A connection: one NFS context with the image mounted and opened.
struct Conn {
  NfsBlockStore* store = nullptr;
  Image* image = nullptr;
  nfs_context* nfs = nullptr;
  nfsfh* fh = nullptr;
  bool up = false;
  bool broken = false;    // set by callbacks, handled after nfs_service()
  bool given_up = false;  // reconnect attempts exhausted
  int inflight = 0;
  int reconnects = 0;  // failed reconnect attempts since it went down
  Clock::time_point retry_at;
  std::string last_error;
};

// A piece of a request no larger than the server's maximum read.
struct Chunk {
  Request* req = nullptr;
  uint64_t offset = 0;
  size_t len = 0;
  uint8_t* dst = nullptr;
  int attempts = 0;
  Conn* conn = nullptr;  // while issued
  std::string last_error;
};

struct Image {
  std::string url;
  uint64_t size = 0;
  uint64_t readmax = kDefaultReadMax;
  std::vector<std::unique_ptr<Conn>> conns;
  std::deque<Chunk*> queue;  // waiting for a connection
};

void IgnoreResult(int, nfs_context*, void*, void*) {}

// libnfs 4.0 leaks its default NFSv4 client name when it is replaced (see
// SetUniqueClientName); keep leak checkers quiet about that one string.
nfs_context* NewContext() {
#if defined(__SANITIZE_ADDRESS__)
  __lsan::ScopedDisabler no_leak_check;
#endif
  return nfs_init_context();
}

std::string Msg(const char* s) { return s != nullptr ? std::string(s) : std::string("unknown"); }

// Gives every context its own NFSv4 client name: libnfs derives the default
// from the pid and the time in seconds, and a server that sees a known name
// with a new verifier drops the older context's open state.
void SetUniqueClientName(nfs_context* nfs) {
  static std::atomic<uint64_t> counter{0};
  auto now = std::chrono::system_clock::now().time_since_epoch();
  std::string name =
      "p2bmig pid:" + std::to_string(getpid()) +
      " t:" + std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(now).count()) +
      " n:" + std::to_string(counter.fetch_add(1));
  nfs4_set_client_name(nfs, name.c_str());
}

// Mounts the export and opens the image of `url` on a new context. On
// success fills *nfs_out, *fh_out, *size and *readmax and returns "";
// otherwise returns why. `*bad_url` tells a malformed URL from an I/O failure.
std::string Connect(const std::string& url, const NfsStoreOptions& options, nfs_context** nfs_out,
                    nfsfh** fh_out, uint64_t* size, uint64_t* readmax, bool* bad_url) {
  *bad_url = false;
  nfs_context* nfs = NewContext();
  if (nfs == nullptr) return "cannot create an NFS context";
  nfs_url* u = nfs_parse_url_full(nfs, url.c_str());
  if (u == nullptr) {
    std::string why = "malformed URL: " + Msg(nfs_get_error(nfs));
    nfs_destroy_context(nfs);
    *bad_url = true;
    return why;
  }
  // After parsing: the URL may carry its own "autoreconnect".
  nfs_set_autoreconnect(nfs, 0);
  nfs_set_timeout(nfs, options.rpc_timeout_ms);
  SetUniqueClientName(nfs);
  std::string why;
  nfsfh* fh = nullptr;
  struct nfs_stat_64 st;
  if (nfs_mount(nfs, u->server, u->path) != 0) {
    why = std::string("mount of ") + u->server + ":" + u->path +
          " failed: " + Msg(nfs_get_error(nfs));
  } else if (nfs_open(nfs, u->file, O_RDONLY, &fh) != 0) {
    why = std::string("open of ") + u->file + " failed: " + Msg(nfs_get_error(nfs));
  } else if (nfs_fstat64(nfs, fh, &st) != 0) {
    why = std::string("stat of ") + u->file + " failed: " + Msg(nfs_get_error(nfs));
  }
  nfs_destroy_url(u);
  if (!why.empty()) {
    if (fh != nullptr) nfs_close(nfs, fh);
    nfs_destroy_context(nfs);
    return why;
  }
  *nfs_out = nfs;
  *fh_out = fh;
  *size = st.nfs_size;
  uint64_t max = nfs_get_readmax(nfs);
  *readmax = max == 0 ? kDefaultReadMax : std::min<uint64_t>(max, kDefaultReadMax);
  return "";
}

class NfsBlockStore : public BlockStore {
 public:
  NfsBlockStore(std::vector<std::unique_ptr<Image>> images, NfsStoreOptions options, int wake_fd)
      : options_(options), images_(std::move(images)), wake_fd_(wake_fd) {
    for (auto& image : images_) {
      for (auto& c : image->conns) c->store = this;
    }
    loop_ = std::thread([this] { Loop(); });
  }

  ~NfsBlockStore() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stopping_ = true;
    }
    Wake();
    loop_.join();  // the loop exits once every request has completed
    close(wake_fd_);
  }

  uint32_t nr_disks() const override { return static_cast<uint32_t>(images_.size()); }
  uint64_t DiskSize(uint32_t disk) const override { return images_.at(disk)->size; }

  void ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf, ReadDone done) override {
    auto* req = new Request;
    req->disk = disk;
    req->offset = offset;
    req->len = len;
    req->buf = buf;
    req->done = std::move(done);
    bool was_empty;
    {
      std::lock_guard<std::mutex> l(mu_);
      was_empty = incoming_.empty();
      incoming_.push_back(req);
    }
    if (std::this_thread::get_id() == loop_.get_id()) {
      // From a completion callback: the loop looks at the list again before
      // it polls, so two system calls per read are saved.
      queued_on_loop_ = true;
      return;
    }
    // The loop takes the whole list at each wakeup, so one wakeup per batch.
    if (was_empty) Wake();
  }

  std::string Describe() const override {
    std::string s;
    for (const auto& image : images_) {
      if (!s.empty()) s += ", ";
      s += image->url;
    }
    return s;
  }

  // libnfs's completion callback for nfs_pread_async().
  static void OnRead(int status, nfs_context* nfs, void* data, void* private_data) {
    auto* ch = static_cast<Chunk*>(private_data);
    ch->conn->store->ReadDone(ch, status, nfs, data);
  }

 private:
  void Wake() {
    uint64_t one = 1;
    ssize_t n = write(wake_fd_, &one, sizeof(one));
    (void)n;  // EAGAIN: the counter is already non-zero, so the loop wakes anyway
  }

  void Loop() {
    std::vector<pollfd> pfds;
    std::vector<Conn*> polled;
    for (;;) {
      queued_on_loop_ = false;
      bool stopping = TakeNew();
      Tend();
      Issue();
      if (stopping && outstanding_ == 0) break;
      // Requests from callbacks that TakeNew or Tend completed.
      if (queued_on_loop_) continue;

      pfds.clear();
      polled.clear();
      pfds.push_back(pollfd{wake_fd_, POLLIN, 0});
      int timeout = kTickMs;
      auto now = Clock::now();
      for (auto& image : images_) {
        for (auto& c : image->conns) {
          if (c->up) {
            pfds.push_back(
                pollfd{nfs_get_fd(c->nfs), static_cast<short>(nfs_which_events(c->nfs)), 0});
            polled.push_back(c.get());
          } else if (!c->given_up) {
            auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(c->retry_at - now);
            timeout = std::clamp<int>(static_cast<int>(ms.count()), 0, timeout);
          }
        }
      }
      if (poll(pfds.data(), pfds.size(), timeout) < 0 && errno != EINTR) {
        // Cannot happen with valid descriptors; do not spin if it does.
        std::this_thread::sleep_for(std::chrono::milliseconds(kTickMs));
        continue;
      }
      if (pfds[0].revents & POLLIN) {
        uint64_t v;
        ssize_t n = read(wake_fd_, &v, sizeof(v));
        (void)n;
      }
      for (size_t i = 0; i < polled.size(); i++) {
        Conn* c = polled[i];
        // Called with no events too: that is when libnfs times RPCs out.
        if (nfs_service(c->nfs, pfds[i + 1].revents) < 0) {
          c->broken = true;
          c->last_error = Msg(nfs_get_error(c->nfs));
        }
      }
    }
    for (auto& image : images_) {
      for (auto& c : image->conns) {
        if (c->up) nfs_close(c->nfs, c->fh);
        if (c->nfs != nullptr) nfs_destroy_context(c->nfs);
        c->nfs = nullptr;
      }
    }
  }

  // Moves new requests into the images' queues; returns whether the store is
  // being destroyed.
  bool TakeNew() {
    std::vector<Request*> reqs;
    bool stopping;
    {
      std::lock_guard<std::mutex> l(mu_);
      reqs.swap(incoming_);
      stopping = stopping_;
    }
    for (Request* req : reqs) {
      outstanding_++;
      if (req->disk >= images_.size()) {
        req->error = "read of disk " + std::to_string(req->disk) + " at offset " +
                     std::to_string(req->offset) + " failed: only " +
                     std::to_string(images_.size()) + " disks";
        Complete(req);
        continue;
      }
      Image* image = images_[req->disk].get();
      if (req->offset > image->size || req->len > image->size - req->offset) {
        req->error = "read of " + image->url + " at offset " + std::to_string(req->offset) +
                     " failed: " + std::to_string(req->len) + " bytes past the end of the " +
                     std::to_string(image->size) + "-byte image";
        Complete(req);
        continue;
      }
      if (req->len == 0) {
        Complete(req);
        continue;
      }
      for (size_t off = 0; off < req->len; off += image->readmax) {
        auto* ch = new Chunk;
        ch->req = req;
        ch->offset = req->offset + off;
        ch->len = std::min<size_t>(image->readmax, req->len - off);
        ch->dst = req->buf + off;
        req->chunks_left++;
        image->queue.push_back(ch);
      }
      // New work after an outage that outlasted the reconnect budget: try
      // again rather than fail every later read at once.
      bool all_given_up = std::all_of(image->conns.begin(), image->conns.end(),
                                      [](const auto& c) { return c->given_up; });
      if (all_given_up) {
        for (auto& c : image->conns) {
          c->given_up = false;
          c->reconnects = 0;
          c->retry_at = Clock::now();
        }
      }
    }
    return stopping;
  }

  // Tears down broken connections and reconnects those that are due.
  void Tend() {
    auto now = Clock::now();
    for (auto& image : images_) {
      for (auto& cp : image->conns) {
        Conn* c = cp.get();
        if (c->broken) TearDown(c);
        if (c->up || c->given_up || now < c->retry_at) continue;
        // Only worth a mount if there is something to read.
        if (image->queue.empty()) continue;
        bool bad_url;
        uint64_t size, readmax;
        std::string why = Connect(image->url, options_, &c->nfs, &c->fh, &size, &readmax, &bad_url);
        if (why.empty()) {
          c->up = true;
          c->reconnects = 0;
          continue;
        }
        c->last_error = why;
        c->reconnects++;
        if (c->reconnects >= options_.reconnect_attempts) {
          c->given_up = true;
        } else {
          auto backoff = std::min<Clock::duration>(
              std::chrono::milliseconds(50) * (1 << std::min(c->reconnects, 10)), kMaxBackoff);
          c->retry_at = Clock::now() + backoff;
        }
      }
      bool all_given_up = std::all_of(image->conns.begin(), image->conns.end(),
                                      [](const auto& c) { return c->given_up; });
      if (all_given_up) {
        std::string why = "server unreachable after " +
                          std::to_string(options_.reconnect_attempts) +
                          " reconnect attempts: " + image->conns.front()->last_error;
        while (!image->queue.empty()) {
          Chunk* ch = image->queue.front();
          image->queue.pop_front();
          FinishChunk(ch, ReadError(image.get(), ch, why));
        }
      }
    }
  }

  void TearDown(Conn* c) {
    nfs_context* nfs = c->nfs;
    c->nfs = nullptr;
    nfsfh* fh = c->fh;
    c->fh = nullptr;
    c->up = false;
    c->broken = false;
    c->retry_at = Clock::now();
    // Cancels the reads still in flight: their callbacks requeue them.
    if (nfs != nullptr) {
      tearing_down_ = true;
      // Frees the handle (NFSv3 at once, NFSv4 when the queued CLOSE is
      // cancelled below); libnfs has no call that only frees it.
      if (fh != nullptr) nfs_close_async(nfs, fh, &IgnoreResult, nullptr);
      nfs_destroy_context(nfs);
      tearing_down_ = false;
    }
  }

  void Issue() {
    for (auto& image : images_) {
      while (!image->queue.empty()) {
        Conn* best = nullptr;
        for (auto& c : image->conns) {
          if (c->up && !c->broken && c->inflight < options_.max_inflight_per_connection &&
              (best == nullptr || c->inflight < best->inflight)) {
            best = c.get();
          }
        }
        if (best == nullptr) break;
        Chunk* ch = image->queue.front();
        if (nfs_pread_async(best->nfs, best->fh, ch->offset, ch->len, &NfsBlockStore::OnRead, ch) !=
            0) {
          best->broken = true;
          best->last_error = Msg(nfs_get_error(best->nfs));
          continue;
        }
        image->queue.pop_front();
        ch->conn = best;
        best->inflight++;
      }
    }
  }

  void ReadDone(Chunk* ch, int status, nfs_context* nfs, void* data) {
    Conn* c = ch->conn;
    Image* image = c->image;
    c->inflight--;
    ch->conn = nullptr;
    if (status > 0) {
      size_t n = std::min<size_t>(static_cast<size_t>(status), ch->len);
      std::memcpy(ch->dst, data, n);
      if (n == ch->len) {
        FinishChunk(ch, "");
      } else {
        // A short read: ask for the rest.
        ch->offset += n;
        ch->dst += n;
        ch->len -= n;
        image->queue.push_front(ch);
      }
      return;
    }
    if (status == 0) {
      // The range was inside the image when it was opened: it shrank.
      FinishChunk(ch, ReadError(image, ch, "unexpected end of file"));
      return;
    }
    if (tearing_down_) {
      // Cancelled with a connection that another read's failure condemned:
      // not this read's fault, so no attempt is used.
      image->queue.push_front(ch);
      return;
    }
    ch->last_error = data != nullptr ? static_cast<const char*>(data) : std::strerror(-status);
    // Any failed RPC makes the connection suspect; a fresh mount is cheap.
    if (c->nfs == nfs) {
      c->broken = true;
      c->last_error = ch->last_error;
    }
    if (++ch->attempts >= options_.max_read_attempts) {
      FinishChunk(
          ch, ReadError(image, ch,
                        ch->last_error + " (after " + std::to_string(ch->attempts) + " attempts)"));
    } else {
      image->queue.push_front(ch);
    }
  }

  static std::string ReadError(const Image* image, const Chunk* ch, const std::string& why) {
    return "read of " + image->url + " at offset " + std::to_string(ch->offset) + " failed: " + why;
  }

  void FinishChunk(Chunk* ch, const std::string& error) {
    Request* req = ch->req;
    if (!error.empty() && req->error.empty()) req->error = error;
    delete ch;
    if (--req->chunks_left == 0) Complete(req);
  }

  void Complete(Request* req) {
    std::exception_ptr error;
    if (!req->error.empty()) error = std::make_exception_ptr(Error(ErrorKind::kIo, req->error));
    // Handed over, not shared: the reader then holds the only reference.
    req->done(std::move(error));
    delete req;
    outstanding_--;
  }

  const NfsStoreOptions options_;
  const std::vector<std::unique_ptr<Image>> images_;
  const int wake_fd_;

  std::mutex mu_;
  std::vector<Request*> incoming_;  // guarded by mu_
  bool stopping_ = false;           // guarded by mu_

  // Loop thread only.
  size_t outstanding_ = 0;       // requests taken and not completed
  bool tearing_down_ = false;    // inside nfs_destroy_context() of a broken connection
  bool queued_on_loop_ = false;  // ReadAsync was called on the loop thread, without a wakeup
  std::thread loop_;
};

}  // namespace

std::unique_ptr<BlockStore> OpenNfsBlockStore(const std::vector<std::string>& urls,
                                              NfsStoreOptions options) {
  options.connections = std::max(options.connections, 1);
  options.max_inflight_per_connection = std::max(options.max_inflight_per_connection, 1);
  options.reconnect_attempts = std::max(options.reconnect_attempts, 1);
  options.max_read_attempts = std::max(options.max_read_attempts, 1);

  std::vector<std::unique_ptr<Image>> images;
  auto close_all = [&images] {
    for (auto& image : images) {
      for (auto& c : image->conns) {
        if (c->nfs != nullptr) {
          nfs_close(c->nfs, c->fh);
          nfs_destroy_context(c->nfs);
        }
      }
    }
  };
  for (const auto& url : urls) {
    images.push_back(std::make_unique<Image>());
    Image* image = images.back().get();
    image->url = url;
    for (int i = 0; i < options.connections; i++) {
      auto c = std::make_unique<Conn>();
      c->image = image;
      bool bad_url;
      uint64_t size, readmax;
      std::string why = Connect(url, options, &c->nfs, &c->fh, &size, &readmax, &bad_url);
      if (!why.empty()) {
        close_all();
        throw Error(bad_url ? ErrorKind::kInvalidArgument : ErrorKind::kIo,
                    "cannot open " + url + ": " + why);
      }
      c->up = true;
      image->size = size;
      image->readmax = readmax;
      image->conns.push_back(std::move(c));
    }
  }
  int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) {
    int e = errno;
    close_all();
    throw Error(ErrorKind::kIo, std::string("eventfd failed: ") + std::strerror(e));
  }
  return std::make_unique<NfsBlockStore>(std::move(images), options, wake_fd);
}

}  // namespace p2bmig
