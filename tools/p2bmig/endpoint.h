// "HOST:PORT" parsing and opening of the migration link for send/receive.

#ifndef P2BMIG_TOOLS_ENDPOINT_H_
#define P2BMIG_TOOLS_ENDPOINT_H_

#include <cstdint>
#include <memory>
#include <string>

#include <p2bmig/byte_stream.h>
#include <p2bmig/transport.h>

namespace p2bmig::cli {

struct Endpoint {
  std::string host;
  uint16_t port = 0;
};

// Parses "host:port" or "[v6addr]:port". Throws Error(kInvalidArgument).
Endpoint ParseEndpoint(const std::string& text);

// Connects, retrying for up to `wait_s` seconds while the peer is not yet
// listening (the two ends of a migration start at about the same time). A
// peer that fails authentication is not retried.
std::unique_ptr<ByteStream> ConnectWithRetry(const Endpoint& ep, double wait_s,
                                             const TcpOptions& options = {});

}  // namespace p2bmig::cli

#endif  // P2BMIG_TOOLS_ENDPOINT_H_
