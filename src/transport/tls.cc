// TLS over a connected TCP socket, with OpenSSL called directly on the
// socket (non-blocking, waits in poll). Asio's ssl::stream would require
// every operation of a connection to run on one strand, i.e. an I/O thread
// per connection and a hand-off per call, because the migration link reads
// and writes at the same time on two threads (the stream one way, fetch
// credits the other). Here a lock serializes the calls into OpenSSL and
// neither direction holds it while it waits for the socket.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p2bmig/tls.h>
#include <p2bmig/types.h>

#include "transport/socket_stream.h"

namespace p2bmig {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kAck[8] = {'P', '2', 'B', 'M', 'T', 'L', 'S', '1'};
constexpr char kPskIdentity[] = "p2bmig";

// Everything on this thread's OpenSSL error queue, oldest first.
std::string TakeOpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    const char* reason = ERR_reason_error_string(e);
    if (!out.empty()) out += "; ";
    out += reason ? reason : buf;
  }
  return out;
}

std::vector<uint8_t> ReadPskFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw Error(
        ErrorKind::kInvalidArgument,
        fmt::format("cannot read the pre-shared key file {}: {}", path, std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string hex;
  for (char c : text.str()) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("{}: the pre-shared key must be hex digits", path));
    }
    hex += c;
  }
  if (hex.size() % 2 != 0 || hex.size() < 32 || hex.size() > 128) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{}: the pre-shared key must be 16 to 64 bytes (32 to 128 hex "
                            "digits, e.g. `openssl rand -hex 32`), not {} digits",
                            path, hex.size()));
  }
  std::vector<uint8_t> key(hex.size() / 2);
  for (size_t i = 0; i < key.size(); ++i) {
    key[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    spdlog::warn("the pre-shared key file {} is readable by other users (chmod 600 it)", path);
  }
  return key;
}

const std::vector<uint8_t>* KeyOf(SSL* ssl) {
  return static_cast<const std::vector<uint8_t>*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

unsigned int PskServerCallback(SSL* ssl, const char* identity, unsigned char* psk,
                               unsigned int max_psk_len) {
  const std::vector<uint8_t>* key = KeyOf(ssl);
  if (key == nullptr || identity == nullptr || std::strcmp(identity, kPskIdentity) != 0 ||
      key->size() > max_psk_len) {
    return 0;
  }
  std::memcpy(psk, key->data(), key->size());
  return static_cast<unsigned int>(key->size());
}

unsigned int PskClientCallback(SSL* ssl, const char* /*hint*/, char* identity,
                               unsigned int max_identity_len, unsigned char* psk,
                               unsigned int max_psk_len) {
  const std::vector<uint8_t>* key = KeyOf(ssl);
  if (key == nullptr || sizeof(kPskIdentity) > max_identity_len || key->size() > max_psk_len) {
    return 0;
  }
  std::memcpy(identity, kPskIdentity, sizeof(kPskIdentity));
  std::memcpy(psk, key->data(), key->size());
  return static_cast<unsigned int>(key->size());
}

// Waits until `fd` is ready for `events`, at most until `deadline` (none if
// max()). Returns false on timeout.
bool WaitFd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    int timeout_ms = -1;
    if (deadline != Clock::time_point::max()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      timeout_ms = static_cast<int>(std::min<int64_t>(left.count() + 1, INT_MAX));
    }
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, timeout_ms);
    if (rc > 0) return true;  // ready, or an error the next call reports
    if (rc == 0) return false;
    if (errno != EINTR) return true;
  }
}

// What one call into OpenSSL did.
struct SslResult {
  int rc = 0;
  int error = SSL_ERROR_NONE;
  int sys_errno = 0;
  std::string reason;  // OpenSSL's error queue
};

class TlsStream : public SocketStream {
 public:
  TlsStream(SSL* ssl, int fd, std::string name) : ssl_(ssl), fd_(fd), name_(std::move(name)) {}
  ~TlsStream() override {
    SSL_free(ssl_);
    ::close(fd_);
  }

  void WriteAll(const void* buf, size_t len) override {
    const auto* p = static_cast<const uint8_t*>(buf);
    while (len > 0) {
      const int chunk = static_cast<int>(std::min<size_t>(len, 1 << 30));
      const SslResult r = Call([&] { return SSL_write(ssl_, p, chunk); });
      if (r.rc > 0) {
        p += r.rc;
        len -= static_cast<size_t>(r.rc);
        bytes_written_ += static_cast<uint64_t>(r.rc);
        continue;
      }
      if (Wait(r)) continue;
      throw Error(ErrorKind::kNetwork, fmt::format("{}: send failed after {} bytes: {}", name_,
                                                   bytes_written_, Reason(r)));
    }
  }

  // Sends TLS close_notify (an authenticated end of our direction: TLS 1.3
  // allows the other direction to go on), then shuts the socket's send side.
  void CloseWrite() override {
    for (;;) {
      const SslResult r = Call([&] { return SSL_shutdown(ssl_); });
      if (r.rc >= 0 || !Wait(r)) break;
    }
    ::shutdown(fd_, SHUT_WR);
  }

  std::string Describe() const override { return name_; }

  // Wakes any poll on the socket; OpenSSL then fails the call.
  void Abort() override { ::shutdown(fd_, SHUT_RDWR); }

 private:
  template <typename F>
  SslResult Call(F&& f) {
    std::lock_guard lock(mu_);
    ERR_clear_error();
    errno = 0;
    SslResult r;
    r.rc = f();
    if (r.rc <= 0) {
      r.error = SSL_get_error(ssl_, r.rc);
      r.sys_errno = errno;
      r.reason = TakeOpenSslErrors();
    }
    return r;
  }

  // For WANT_READ / WANT_WRITE: waits for the socket and returns true.
  bool Wait(const SslResult& r) {
    if (r.error == SSL_ERROR_WANT_READ) return WaitFd(fd_, POLLIN, Clock::time_point::max());
    if (r.error == SSL_ERROR_WANT_WRITE) return WaitFd(fd_, POLLOUT, Clock::time_point::max());
    return false;
  }

  static std::string Reason(const SslResult& r) {
    if (!r.reason.empty()) return r.reason;
    if (r.sys_errno != 0) return std::strerror(r.sys_errno);
    return "connection closed";
  }

  size_t ReadOnce(void* buf, size_t len, bool eof_is_error) override {
    const int want = static_cast<int>(std::min<size_t>(len, 1 << 30));
    for (;;) {
      const SslResult r = Call([&] { return SSL_read(ssl_, buf, want); });
      if (r.rc > 0) {
        bytes_read_ += static_cast<uint64_t>(r.rc);
        return static_cast<size_t>(r.rc);
      }
      if (Wait(r)) continue;
      if (r.error == SSL_ERROR_ZERO_RETURN) {  // close_notify: a clean end
        if (!eof_is_error) return 0;
        throw Error(
            ErrorKind::kNetwork,
            fmt::format("{}: peer closed the connection after {} bytes", name_, bytes_read_));
      }
      // No close_notify: the peer died or the connection was cut.
      throw Error(ErrorKind::kNetwork,
                  fmt::format("{}: receive failed after {} bytes: {}", name_, bytes_read_,
                              r.reason.find("unexpected eof") != std::string::npos
                                  ? "peer closed the connection without ending TLS"
                                  : Reason(r)));
    }
  }

  SSL* ssl_;
  const int fd_;
  const std::string name_;
  std::mutex mu_;  // every call into ssl_
};

bool IsIpAddress(const std::string& s) {
  in6_addr a6;
  in_addr a4;
  return ::inet_pton(AF_INET, s.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, s.c_str(), &a6) == 1;
}

}  // namespace

struct TlsContext::Impl {
  TlsRole role = TlsRole::kClient;
  bool psk = false;
  std::vector<uint8_t> key;
  std::string server_name;
  double timeout_s = 10;
  SSL_CTX* ctx = nullptr;
  ~Impl() { SSL_CTX_free(ctx); }
};

TlsContext::TlsContext(const TlsOptions& options, TlsRole role) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.role = role;
  m.psk = !options.psk_file.empty();
  m.server_name = options.server_name;
  m.timeout_s = options.handshake_timeout_s;
  const bool any_cert =
      !options.cert_file.empty() || !options.key_file.empty() || !options.ca_file.empty();
  if (m.psk && any_cert) {
    throw Error(ErrorKind::kInvalidArgument,
                "give either a pre-shared key or certificates, not both");
  }
  if (!m.psk &&
      (options.cert_file.empty() || options.key_file.empty() || options.ca_file.empty())) {
    throw Error(ErrorKind::kInvalidArgument,
                "TLS with certificates needs a certificate, its key and the CA (all three)");
  }
  m.ctx = SSL_CTX_new(role == TlsRole::kClient ? TLS_client_method() : TLS_server_method());
  if (m.ctx == nullptr) throw Error(ErrorKind::kInternal, "OpenSSL: " + TakeOpenSslErrors());
  SSL_CTX_set_min_proto_version(m.ctx, TLS1_3_VERSION);
  // AES-GCM first: with AES-NI it costs about nothing at link speeds.
  SSL_CTX_set_ciphersuites(m.ctx,
                           "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                           "TLS_CHACHA20_POLY1305_SHA256");
  SSL_CTX_set_options(m.ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(m.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (role == TlsRole::kServer) {
    // One connection per migration: no resumption, no tickets to send.
    SSL_CTX_set_num_tickets(m.ctx, 0);
    SSL_CTX_set_session_cache_mode(m.ctx, SSL_SESS_CACHE_OFF);
  }
  if (m.psk) {
    m.key = ReadPskFile(options.psk_file);
    SSL_CTX_set_app_data(m.ctx, &m.key);
    if (role == TlsRole::kServer) {
      SSL_CTX_set_psk_server_callback(m.ctx, PskServerCallback);
    } else {
      SSL_CTX_set_psk_client_callback(m.ctx, PskClientCallback);
    }
    SSL_CTX_set_verify(m.ctx, SSL_VERIFY_NONE, nullptr);
    return;
  }
  auto fail = [](const std::string& what, const std::string& path) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("cannot use {} {}: {}", what, path, TakeOpenSslErrors()));
  };
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(m.ctx, options.cert_file.c_str()) != 1)
    fail("the certificate", options.cert_file);
  if (SSL_CTX_use_PrivateKey_file(m.ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    fail("the key", options.key_file);
  if (SSL_CTX_check_private_key(m.ctx) != 1) fail("the key", options.key_file);
  if (SSL_CTX_load_verify_locations(m.ctx, options.ca_file.c_str(), nullptr) != 1)
    fail("the CA", options.ca_file);
  SSL_CTX_set_verify(m.ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
}

TlsContext::~TlsContext() = default;

TlsRole TlsContext::role() const { return impl_->role; }
bool TlsContext::psk() const { return impl_->psk; }
std::string TlsContext::Describe() const {
  return impl_->psk ? "TLS (pre-shared key)" : "TLS (certificates)";
}

std::unique_ptr<ByteStream> TlsContext::Secure(int fd, const std::string& peer,
                                               const std::string& host) const {
  const Impl& m = *impl_;
  const bool client = m.role == TlsRole::kClient;
  SSL* ssl = SSL_new(m.ctx);
  if (ssl == nullptr) {
    ::close(fd);
    throw Error(ErrorKind::kInternal, "OpenSSL: " + TakeOpenSslErrors());
  }
  // Until the stream owns them, a failure frees both.
  struct Owner {
    SSL* ssl;
    int fd;
    ~Owner() {
      if (ssl != nullptr) SSL_free(ssl);
      if (fd >= 0) ::close(fd);
    }
  } owner{ssl, fd};
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  SSL_set_fd(ssl, fd);
  if (client && !m.psk) {
    const std::string name = m.server_name.empty() ? host : m.server_name;
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    if (IsIpAddress(name)) {
      X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
    } else {
      SSL_set1_host(ssl, name.c_str());
      SSL_set_tlsext_host_name(ssl, name.c_str());
    }
  }

  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(m.timeout_s));
  // Runs `op` to completion on the non-blocking socket, or throws.
  auto run = [&](const char* what, auto op) {
    for (;;) {
      ERR_clear_error();
      errno = 0;
      const int rc = op();
      if (rc > 0) return rc;
      const int err = SSL_get_error(ssl, rc);
      const int sys_errno = errno;
      std::string reason = TakeOpenSslErrors();
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        if (WaitFd(fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) continue;
        throw Error(ErrorKind::kAuthentication,
                    fmt::format("{} with {}: timed out after {} s", what, peer, m.timeout_s));
      }
      const long verify = SSL_get_verify_result(ssl);
      if (verify != X509_V_OK) {
        reason = fmt::format("certificate verification failed: {}",
                             X509_verify_cert_error_string(verify));
      }
      if (err == SSL_ERROR_SSL || verify != X509_V_OK) {
        throw Error(ErrorKind::kAuthentication,
                    fmt::format("{} with {} failed: {}", what, peer,
                                reason.empty() ? "protocol error" : reason));
      }
      // A peer that hangs up mid-handshake has not authenticated either.
      throw Error(ErrorKind::kAuthentication,
                  fmt::format("{} with {} failed: {}", what, peer,
                              sys_errno != 0 ? std::strerror(sys_errno)
                                             : "the peer closed the connection"));
    }
  };
  run("TLS handshake", [&] { return client ? SSL_connect(ssl) : SSL_accept(ssl); });
  if (client) {
    char ack[sizeof(kAck)];
    size_t got = 0;
    while (got < sizeof(ack)) {
      got += static_cast<size_t>(run("TLS handshake (waiting for the listener to accept us)", [&] {
        return SSL_read(ssl, ack + got, static_cast<int>(sizeof(ack) - got));
      }));
    }
    if (std::memcmp(ack, kAck, sizeof(ack)) != 0) {
      throw Error(ErrorKind::kAuthentication,
                  fmt::format("{} is not a p2bmig receiver (bad acknowledgement)", peer));
    }
  } else {
    size_t sent = 0;
    while (sent < sizeof(kAck)) {
      sent += static_cast<size_t>(run("TLS handshake (acknowledgement)", [&] {
        return SSL_write(ssl, kAck + sent, static_cast<int>(sizeof(kAck) - sent));
      }));
    }
  }
  owner.ssl = nullptr;
  owner.fd = -1;
  spdlog::info("{} with {}: {} {}", Describe(), peer, SSL_get_version(ssl),
               SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
  return std::make_unique<TlsStream>(ssl, fd, "tls " + peer);
}

}  // namespace p2bmig
