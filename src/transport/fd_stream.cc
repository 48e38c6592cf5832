// ByteStream over a file descriptor: pipes (the libxl save helper's fd),
// sockets and regular files (saved images).

#include <atomic>
#include <cstring>

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p2bmig/byte_stream.h>
#include <p2bmig/types.h>

namespace p2bmig {

namespace {

class FdByteStream : public ByteStream {
 public:
  FdByteStream(int fd, bool owns, std::string name) : fd_(fd), owns_(owns), name_(std::move(name)) {
    struct stat st;
    if (fstat(fd_, &st) == 0) {
      regular_ = S_ISREG(st.st_mode);
      socket_ = S_ISSOCK(st.st_mode);
    }
  }
  ~FdByteStream() override {
    if (owns_ && fd_ >= 0) close(fd_);
  }

  void ReadExact(void* buf, size_t len) override {
    auto* p = static_cast<uint8_t*>(buf);
    size_t done = 0;
    while (done < len) {
      const size_t n = ReadOnce(p + done, len - done);
      if (n == 0) {
        // A file that ends early is a bad image; a pipe or socket that ends
        // early is a peer that went away.
        if (regular_) {
          throw Error(ErrorKind::kMalformedStream,
                      fmt::format("{}: stream truncated at byte {} ({} more bytes expected)", name_,
                                  bytes_read_, len - done));
        }
        throw Error(
            ErrorKind::kNetwork,
            fmt::format("{}: peer closed the connection after {} bytes", name_, bytes_read_));
      }
      done += n;
    }
  }

  size_t ReadSome(void* buf, size_t len) override { return len == 0 ? 0 : ReadOnce(buf, len); }

  void WriteAll(const void* buf, size_t len) override {
    const auto* p = static_cast<const uint8_t*>(buf);
    while (len > 0) {
      if (aborted_) throw Error(ErrorKind::kAborted, fmt::format("{}: aborted", name_));
      // MSG_NOSIGNAL: a closed socket must become an error, not a SIGPIPE.
      const ssize_t n = socket_ ? send(fd_, p, len, MSG_NOSIGNAL) : write(fd_, p, len);
      if (n < 0) {
        if (errno == EINTR) continue;
        Fail("write", errno);
      }
      p += n;
      len -= static_cast<size_t>(n);
      bytes_written_ += static_cast<uint64_t>(n);
    }
  }

  void CloseWrite() override {
    if (socket_) {
      shutdown(fd_, SHUT_WR);
    } else if (!regular_ && owns_ && fd_ >= 0) {
      // A pipe has one direction: closing it is how its reader sees the end.
      close(fd_);
      fd_ = -1;
    }
  }

  std::string Describe() const override { return name_; }

  void Abort() override {
    aborted_ = true;  // files and pipes: the next call fails
    if (socket_) ::shutdown(fd_, SHUT_RDWR);
  }

 private:
  size_t ReadOnce(void* buf, size_t len) {
    for (;;) {
      if (aborted_) throw Error(ErrorKind::kAborted, fmt::format("{}: aborted", name_));
      const ssize_t n = read(fd_, buf, len);
      if (n >= 0) {
        bytes_read_ += static_cast<uint64_t>(n);
        return static_cast<size_t>(n);
      }
      if (errno != EINTR) Fail("read", errno);
    }
  }

  [[noreturn]] void Fail(const char* op, int err) const {
    const ErrorKind kind = regular_ ? ErrorKind::kIo : ErrorKind::kNetwork;
    throw Error(kind, fmt::format("{}: {} failed: {}", name_, op, std::strerror(err)));
  }

  int fd_;
  const bool owns_;
  const std::string name_;
  bool regular_ = false;
  bool socket_ = false;
  std::atomic<bool> aborted_{false};
};

std::unique_ptr<ByteStream> OpenFile(const std::string& path, int flags, const char* what) {
  int fd;
  do {
    fd = open(path.c_str(), flags | O_CLOEXEC, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    throw Error(ErrorKind::kIo,
                fmt::format("cannot open {} for {}: {}", path, what, std::strerror(errno)));
  }
  return NewFdByteStream(fd, true, path);
}

}  // namespace

std::unique_ptr<ByteStream> NewFdByteStream(int fd, bool owns, std::string name) {
  return std::make_unique<FdByteStream>(fd, owns, std::move(name));
}

std::unique_ptr<ByteStream> OpenFileForRead(const std::string& path) {
  return OpenFile(path, O_RDONLY, "reading");
}

std::unique_ptr<ByteStream> OpenFileForWrite(const std::string& path) {
  return OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, "writing");
}

}  // namespace p2bmig
