// TCP migration link over Boost.Asio. Data moves with synchronous socket
// calls; only connect and accept run asynchronously, so that they can time
// out (io_context::run_for).

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>  // before Boost 1.74 asio, whose awaitable.hpp needs it

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <p2bmig/tls.h>
#include <p2bmig/transport.h>
#include <p2bmig/types.h>

#include "transport/socket_stream.h"

namespace p2bmig {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

// Large socket buffers keep a fast link full while the other side is busy
// (the kernel caps them at net.core.{r,w}mem_max).
constexpr int kSocketBufferBytes = 4 << 20;

std::string HostPort(const std::string& host, uint16_t port) {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                             : fmt::format("{}:{}", host, port);
}

std::string EndpointName(const tcp::endpoint& ep) {
  return HostPort(ep.address().to_string(), ep.port());
}

std::chrono::steady_clock::duration Seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

void TuneSocket(tcp::socket& socket) {
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  socket.set_option(asio::socket_base::send_buffer_size(kSocketBufferBytes), ignored);
  socket.set_option(asio::socket_base::receive_buffer_size(kSocketBufferBytes), ignored);
}

// Makes a connection whose peer stops acknowledging fail after about
// `seconds`: keepalive probes while we only read, TCP_USER_TIMEOUT while sent
// data goes unacknowledged.
void SetLinkTimeout(int fd, double seconds) {
  if (seconds <= 0) return;
  const int on = 1;
  const int idle = std::max(1, static_cast<int>(seconds / 3));
  const int interval = std::max(1, static_cast<int>(seconds / 6));
  const int count = 3;
  const unsigned int user_timeout_ms = static_cast<unsigned int>(seconds * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
}

class TcpStream : public SocketStream {
 public:
  TcpStream(std::unique_ptr<asio::io_context> io, tcp::socket socket, std::string peer)
      : io_(std::move(io)), socket_(std::move(socket)), name_("tcp " + std::move(peer)) {}

  void WriteAll(const void* buf, size_t len) override {
    error_code ec;
    const size_t n = asio::write(socket_, asio::buffer(buf, len), ec);
    bytes_written_ += n;
    if (ec) {
      throw Error(ErrorKind::kNetwork, fmt::format("{}: send failed after {} bytes: {}", name_,
                                                   bytes_written_, ec.message()));
    }
  }

  void CloseWrite() override {
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
  }

  std::string Describe() const override { return name_; }

  // The plain system call: safe against a read or write in another thread.
  void Abort() override { ::shutdown(socket_.native_handle(), SHUT_RDWR); }

 private:
  size_t ReadOnce(void* buf, size_t len, bool eof_is_error) override {
    error_code ec;
    const size_t n = socket_.read_some(asio::buffer(buf, len), ec);
    bytes_read_ += n;
    if (ec == asio::error::eof) {
      if (!eof_is_error) return 0;
      throw Error(ErrorKind::kNetwork,
                  fmt::format("{}: peer closed the connection after {} bytes", name_, bytes_read_));
    }
    if (ec) {
      throw Error(ErrorKind::kNetwork, fmt::format("{}: receive failed after {} bytes: {}", name_,
                                                   bytes_read_, ec.message()));
    }
    return n;
  }

  std::unique_ptr<asio::io_context> io_;  // outlives socket_
  tcp::socket socket_;
  const std::string name_;
};

// The connection as a plain or a TLS stream.
std::unique_ptr<ByteStream> MakeStream(std::unique_ptr<asio::io_context> io, tcp::socket socket,
                                       const std::string& peer, const std::string& host,
                                       const TcpOptions& options) {
  TuneSocket(socket);
  SetLinkTimeout(socket.native_handle(), options.link_timeout_s);
  if (options.tls == nullptr) {
    return std::make_unique<TcpStream>(std::move(io), std::move(socket), peer);
  }
  error_code ec;
  socket.non_blocking(false, ec);
  return options.tls->Secure(socket.release(), peer, host);
}

}  // namespace

std::unique_ptr<ByteStream> TcpConnect(const std::string& host, uint16_t port, TcpOptions options) {
  const std::string where = HostPort(host, port);
  auto io = std::make_unique<asio::io_context>();
  tcp::resolver resolver(*io);
  error_code ec;
  const auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) {
    throw Error(ErrorKind::kNetwork, fmt::format("cannot connect to {}: {}", where, ec.message()));
  }
  tcp::socket socket(*io);
  std::optional<error_code> result;
  tcp::endpoint connected;
  asio::async_connect(socket, endpoints, [&](const error_code& e, const tcp::endpoint& ep) {
    result = e;
    connected = ep;
  });
  io->run_for(Seconds(options.connect_timeout_s));
  if (!result) {
    // Timed out: cancel and let the handler run before the locals go away.
    socket.close(ec);
    io->restart();
    io->run();
    throw Error(ErrorKind::kNetwork, fmt::format("cannot connect to {}: timed out after {} s",
                                                 where, options.connect_timeout_s));
  }
  if (*result) {
    throw Error(ErrorKind::kNetwork,
                fmt::format("cannot connect to {}: {}", where, result->message()));
  }
  return MakeStream(std::move(io), std::move(socket), EndpointName(connected), host, options);
}

struct TcpListener::Impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::string where;
};

TcpListener::TcpListener(const std::string& host, uint16_t port) : impl_(std::make_unique<Impl>()) {
  impl_->where = HostPort(host, port);
  error_code ec;
  tcp::resolver resolver(impl_->io);
  const auto endpoints = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
  if (ec || endpoints.empty()) {
    throw Error(ErrorKind::kNetwork, fmt::format("cannot listen on {}: {}", impl_->where,
                                                 ec ? ec.message() : "no address"));
  }
  const tcp::endpoint ep = endpoints.begin()->endpoint();
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw Error(ErrorKind::kNetwork,
                fmt::format("cannot listen on {}: {}", impl_->where, ec.message()));
  }
  impl_->where = EndpointName(a.local_endpoint(ec));
}

TcpListener::~TcpListener() = default;

uint16_t TcpListener::port() const {
  error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

std::unique_ptr<ByteStream> TcpListener::Accept(double timeout_s, const TcpOptions& options) {
  auto io = std::make_unique<asio::io_context>();
  tcp::socket socket(*io);
  error_code ec;
  if (timeout_s <= 0) {
    impl_->acceptor.accept(socket, ec);
  } else {
    std::optional<error_code> result;
    impl_->acceptor.async_accept(socket, [&](const error_code& e) { result = e; });
    impl_->io.restart();
    impl_->io.run_for(Seconds(timeout_s));
    if (!result) {
      impl_->acceptor.cancel(ec);
      impl_->io.restart();
      impl_->io.run();  // runs the handler, aborted or (just in time) not
    }
    if (!result || *result == asio::error::operation_aborted) {
      throw Error(ErrorKind::kNetwork,
                  fmt::format("no connection on {} within {} s", impl_->where, timeout_s));
    }
    ec = *result;
  }
  if (ec) {
    throw Error(ErrorKind::kNetwork,
                fmt::format("accept on {} failed: {}", impl_->where, ec.message()));
  }
  const tcp::endpoint peer = socket.remote_endpoint(ec);
  const std::string name = ec ? impl_->where : EndpointName(peer);
  return MakeStream(std::move(io), std::move(socket), name, "", options);
}

}  // namespace p2bmig
