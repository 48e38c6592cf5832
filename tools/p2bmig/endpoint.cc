#include "endpoint.h"

#include <chrono>
#include <thread>

#include <fmt/format.h>

#include <p2bmig/transport.h>
#include <p2bmig/types.h>

namespace p2bmig::cli {

Endpoint ParseEndpoint(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("'{}' is not HOST:PORT (e.g. 127.0.0.1:7000)", text));
  }
  Endpoint ep;
  ep.host = text.substr(0, colon);
  if (ep.host.front() == '[' && ep.host.back() == ']')
    ep.host = ep.host.substr(1, ep.host.size() - 2);
  unsigned long port = 0;
  try {
    size_t pos = 0;
    port = std::stoul(text.substr(colon + 1), &pos);
    if (pos != text.size() - colon - 1) port = 70000;
  } catch (const std::exception&) {
    port = 70000;
  }
  if (port > 65535) {
    throw Error(ErrorKind::kInvalidArgument, fmt::format("bad port in '{}'", text));
  }
  ep.port = static_cast<uint16_t>(port);
  return ep;
}

std::unique_ptr<ByteStream> ConnectWithRetry(const Endpoint& ep, double wait_s,
                                             const TcpOptions& options) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_s);
  for (;;) {
    try {
      return TcpConnect(ep.host, ep.port, options);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kAuthentication) throw;
      if (std::chrono::steady_clock::now() >= deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

}  // namespace p2bmig::cli
