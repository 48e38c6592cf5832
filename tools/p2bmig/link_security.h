// The options that secure the migration link of `send` and `receive`:
// mutual TLS with certificates, TLS with a pre-shared key, or (only when asked
// for) plain TCP, and how long a silent link may stay up.

#ifndef P2BMIG_TOOLS_LINK_SECURITY_H_
#define P2BMIG_TOOLS_LINK_SECURITY_H_

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include <p2bmig/tls.h>
#include <p2bmig/transport.h>

namespace p2bmig::cli {

struct LinkSecurityArgs {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
  std::string psk_file;
  std::string server_name;
  bool insecure = false;
  double link_timeout_s = 30;
};

// Registers --tls-cert, --tls-key, --tls-ca, --psk-file, --insecure,
// --link-timeout (and, for the connecting end, --tls-server-name).
void AddLinkSecurityOptions(CLI::App* cmd, LinkSecurityArgs* args, TlsRole role);

// The TLS context the options ask for, or null for --insecure (with a
// warning on stderr). Throws Error(kInvalidArgument) if the link would be
// neither secured nor explicitly insecure, or if a key file is unusable.
std::unique_ptr<TlsContext> MakeTlsContext(const LinkSecurityArgs& args, TlsRole role);

// TcpOptions for these options and `tls` (which must outlive the link).
TcpOptions LinkOptions(const LinkSecurityArgs& args, const TlsContext* tls);

}  // namespace p2bmig::cli

#endif  // P2BMIG_TOOLS_LINK_SECURITY_H_
