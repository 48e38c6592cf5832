#include "link_security.h"

#include <cstdio>

#include <p2bmig/types.h>

namespace p2bmig::cli {

void AddLinkSecurityOptions(CLI::App* cmd, LinkSecurityArgs* a, TlsRole role) {
  cmd->add_option("--tls-cert", a->cert_file,
                  "TLS: this host's certificate (PEM), signed by the CA the peer trusts")
      ->check(CLI::ExistingFile);
  cmd->add_option("--tls-key", a->key_file, "TLS: the certificate's private key (PEM)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--tls-ca", a->ca_file,
                  "TLS: the CA that must have signed the peer's certificate (PEM)")
      ->check(CLI::ExistingFile);
  if (role == TlsRole::kClient) {
    cmd->add_option("--tls-server-name", a->server_name,
                    "TLS: name the receiver's certificate must carry (default: the host of --to)");
  }
  cmd->add_option("--psk-file", a->psk_file,
                  "TLS with a pre-shared key: a file holding 16-64 bytes as hex "
                  "(e.g. `openssl rand -hex 32`)")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--insecure", a->insecure,
                "Plain TCP: no authentication, no encryption (trusted, isolated networks only)");
  cmd->add_option("--link-timeout", a->link_timeout_s,
                  "Seconds after which a link whose peer stopped answering fails (0: the "
                  "kernel's default)")
      ->capture_default_str();
}

std::unique_ptr<TlsContext> MakeTlsContext(const LinkSecurityArgs& a, TlsRole role) {
  const bool cert = !a.cert_file.empty() || !a.key_file.empty() || !a.ca_file.empty();
  const bool psk = !a.psk_file.empty();
  if (a.insecure && (cert || psk)) {
    throw Error(ErrorKind::kInvalidArgument, "--insecure contradicts --tls-*/--psk-file");
  }
  if (a.insecure) {
    std::fprintf(stderr,
                 "p2bmig: warning: --insecure: the migration link is plain TCP; anyone who can "
                 "reach it can read the guest's memory%s\n",
                 role == TlsRole::kServer ? " or send a guest of their own" : " or change it");
    return nullptr;
  }
  if (!cert && !psk) {
    throw Error(ErrorKind::kInvalidArgument,
                "the migration link must be secured: give --tls-cert, --tls-key and --tls-ca "
                "(mutual TLS), or --psk-file (TLS with a pre-shared key), or --insecure for "
                "plain TCP");
  }
  TlsOptions o;
  o.cert_file = a.cert_file;
  o.key_file = a.key_file;
  o.ca_file = a.ca_file;
  o.psk_file = a.psk_file;
  o.server_name = a.server_name;
  return std::make_unique<TlsContext>(o, role);
}

TcpOptions LinkOptions(const LinkSecurityArgs& a, const TlsContext* tls) {
  TcpOptions o;
  o.link_timeout_s = a.link_timeout_s;
  o.tls = tls;
  return o;
}

}  // namespace p2bmig::cli
