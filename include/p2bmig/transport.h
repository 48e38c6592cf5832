// TCP transport for the migration link (Boost.Asio), and a rate limiter that
// caps a stream's send rate so that a link of a given speed can be modelled on
// one machine.
//
// Thread safety: as ByteStream. TcpListener is used by one thread.

#ifndef P2BMIG_TRANSPORT_H_
#define P2BMIG_TRANSPORT_H_

#include <cstdint>
#include <memory>
#include <string>

#include <p2bmig/byte_stream.h>

namespace p2bmig {

class TlsContext;

struct TcpOptions {
  double connect_timeout_s = 10;
  // A connection whose peer stops acknowledging (dead host, cut link) fails
  // after about this long, even while this end only reads (TCP keepalive and
  // TCP_USER_TIMEOUT). 0: the kernel's defaults (many minutes).
  double link_timeout_s = 0;
  // Secure the connection with TLS (a client context for TcpConnect, a
  // server context for Accept); null: plain TCP.
  const TlsContext* tls = nullptr;
};

// Connects to host:port. Throws Error(kNetwork) naming the peer if it cannot,
// Error(kAuthentication) if the TLS handshake fails.
std::unique_ptr<ByteStream> TcpConnect(const std::string& host, uint16_t port,
                                       TcpOptions options = {});

// Listens on host:port (port 0 picks a free one).
class TcpListener {
 public:
  TcpListener(const std::string& host, uint16_t port);
  ~TcpListener();
  TcpListener(const TcpListener&) = delete;
  TcpListener& operator=(const TcpListener&) = delete;

  uint16_t port() const;
  // Waits for one connection; throws Error(kNetwork) after `timeout_s` (<= 0:
  // forever). With options.tls, runs the handshake (within the TLS context's
  // own timeout) and throws Error(kAuthentication) if the peer fails it: the
  // caller may then accept again.
  std::unique_ptr<ByteStream> Accept(double timeout_s = 0, const TcpOptions& options = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Wraps `target` so that writes go out at no more than `bits_per_second`
// (token bucket with a 64 KiB burst), like a link of that speed: WriteAll
// queues into a 4 MiB buffer drained by a sender thread, Flush and CloseWrite
// wait until everything has gone out. A write error of the sender is thrown
// by the next call. Reads are not limited. 0 means no limit.
std::unique_ptr<ByteStream> NewRateLimitedStream(ByteStream* target, uint64_t bits_per_second);

}  // namespace p2bmig

#endif  // P2BMIG_TRANSPORT_H_
