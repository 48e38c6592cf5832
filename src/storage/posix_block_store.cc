// BlockStore over image files opened with open(2) and read with pread(2):
// a local image or one on a kernel NFS mount. A small pool of threads runs
// the reads so that several are in flight at once (a kernel NFS client
// pipelines them; a local disk queues them).
//
// Thread safety: ReadAsync may be called from any thread; reads complete on
// the pool's threads.

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p2bmig/block_store.h>
#include <p2bmig/types.h>

namespace p2bmig {
namespace {

struct Disk {
  std::string path;
  int fd = -1;
  uint64_t size = 0;
};

struct Job {
  uint32_t disk;
  uint64_t offset;
  size_t len;
  uint8_t* buf;
  BlockStore::ReadDone done;
};

class PosixBlockStore : public BlockStore {
 public:
  PosixBlockStore(std::vector<Disk> disks, int threads) : disks_(std::move(disks)) {
    if (threads < 1) threads = 1;
    for (int i = 0; i < threads; i++) workers_.emplace_back([this] { Work(); });
  }

  ~PosixBlockStore() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    // Workers empty the queue before they exit, so every callback runs.
    for (auto& t : workers_) t.join();
    for (auto& d : disks_) close(d.fd);
  }

  uint32_t nr_disks() const override { return static_cast<uint32_t>(disks_.size()); }
  uint64_t DiskSize(uint32_t disk) const override { return disks_.at(disk).size; }

  void ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf, ReadDone done) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.push_back(Job{disk, offset, len, buf, std::move(done)});
    }
    cv_.notify_one();
  }

  std::string Describe() const override {
    std::string s;
    for (const auto& d : disks_) {
      if (!s.empty()) s += ", ";
      s += d.path;
    }
    return s;
  }

 private:
  void Work() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping and nothing left
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      std::exception_ptr error;
      try {
        Read(job);
      } catch (...) {
        error = std::current_exception();
      }
      job.done(error);
    }
  }

  // Throws Error(kIo) on any failure, including a range outside the image.
  void Read(const Job& job) const {
    if (job.disk >= disks_.size()) {
      throw Error(ErrorKind::kIo, "read of disk " + std::to_string(job.disk) + " failed: only " +
                                      std::to_string(disks_.size()) + " disks");
    }
    const Disk& d = disks_[job.disk];
    if (job.offset > d.size || job.len > d.size - job.offset) {
      throw Error(ErrorKind::kIo, "read of " + d.path + " at offset " + std::to_string(job.offset) +
                                      " failed: " + std::to_string(job.len) +
                                      " bytes past the end of the " + std::to_string(d.size) +
                                      "-byte image");
    }
    size_t done = 0;
    while (done < job.len) {
      ssize_t n = pread(d.fd, job.buf + done, job.len - done, job.offset + done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        // n == 0: the file shrank under us since it was opened.
        std::string why = n < 0 ? std::strerror(errno) : "unexpected end of file";
        throw Error(ErrorKind::kIo, "read of " + d.path + " at offset " +
                                        std::to_string(job.offset + done) + " failed: " + why);
      }
      done += static_cast<size_t>(n);
    }
  }

  const std::vector<Disk> disks_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;  // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace

std::unique_ptr<BlockStore> OpenPosixBlockStore(const std::vector<std::string>& paths,
                                                PosixStoreOptions options) {
  std::vector<Disk> disks;
  auto close_all = [&disks] {
    for (auto& d : disks) close(d.fd);
  };
  for (const auto& path : paths) {
    Disk d;
    d.path = path;
    d.fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (d.fd < 0) {
      int e = errno;
      close_all();
      throw Error(ErrorKind::kIo, "cannot open " + path + ": " + std::strerror(e));
    }
    struct stat st;
    if (fstat(d.fd, &st) != 0) {
      int e = errno;
      close(d.fd);
      close_all();
      throw Error(ErrorKind::kIo, "cannot stat " + path + ": " + std::strerror(e));
    }
    d.size = static_cast<uint64_t>(st.st_size);
    if (S_ISBLK(st.st_mode)) {
      // st_size is 0 for a block device (an LV or a loop device).
      off_t end = lseek(d.fd, 0, SEEK_END);
      d.size = end > 0 ? static_cast<uint64_t>(end) : 0;
    }
    disks.push_back(std::move(d));
  }
  return std::make_unique<PosixBlockStore>(std::move(disks), options.threads);
}

}  // namespace p2bmig
