// TLS for the migration link (OpenSSL, TLS 1.3 only). Two ways to
// authenticate, both mutual:
//   * certificates: each end presents a certificate signed by the CA the
//     other trusts (a dedicated migration CA), and the connecting end checks
//     that the listener's certificate names the host it connected to;
//   * a pre-shared key (TLS 1.3 external PSK with (EC)DHE key exchange, so
//     that a later leak of the key does not expose recorded migrations).
// A peer that fails the handshake is refused before a single byte of the
// migration stream is read from it or written to it. After the handshake the
// listening end sends an 8-byte acknowledgement ("P2BMTLS1") that the
// connecting end waits for, so that a client whose certificate the listener
// rejected fails at connect time instead of at its first write (in TLS 1.3 the
// client's handshake completes before the server has checked its certificate).
//
// Thread safety: a TlsContext is immutable after construction and may secure
// connections from any thread. The streams it makes allow one reader thread
// and one writer thread at a time, like every ByteStream (calls into OpenSSL
// are serialized by a lock; neither direction holds it while it waits).

#ifndef P2BMIG_TLS_H_
#define P2BMIG_TLS_H_

#include <memory>
#include <string>

#include <p2bmig/byte_stream.h>

namespace p2bmig {

struct TlsOptions {
  // Certificate mode: PEM files. All three are required.
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
  // PSK mode: a file holding the key as hex (16 to 64 bytes, i.e. 32 to 128
  // hex digits; whitespace ignored). Exclusive with the certificate files.
  std::string psk_file;
  // Connecting end, certificate mode: the name (DNS name or IP address) the
  // listener's certificate must carry; empty: the host connected to.
  std::string server_name;
  // The handshake (and the acknowledgement) must finish within this time.
  double handshake_timeout_s = 10;
};

enum class TlsRole { kClient, kServer };

class TlsContext {
 public:
  // Loads the keys and the CA. Throws Error(kInvalidArgument) naming the
  // file that is missing or unusable.
  TlsContext(const TlsOptions& options, TlsRole role);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  TlsRole role() const;
  bool psk() const;
  // "TLS (certificates)" or "TLS (pre-shared key)", for messages.
  std::string Describe() const;

  // Runs the handshake on the connected socket `fd` (taken over: closed on
  // failure, owned by the returned stream otherwise). `peer` names the peer
  // in messages; `host` is what the client connected to (certificate check).
  // Throws Error(kAuthentication) if the handshake fails for any reason
  // (bad credentials, not TLS, the peer hung up or timed out): a peer that
  // does not complete it has not authenticated.
  std::unique_ptr<ByteStream> Secure(int fd, const std::string& peer,
                                     const std::string& host) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace p2bmig

#endif  // P2BMIG_TLS_H_
