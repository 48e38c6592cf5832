// Tests of the TLS transport: mutual certificate authentication and
// pre-shared keys over real loopback TCP, full-duplex use as the migration
// link makes of it, and every way a peer can fail authentication (wrong CA,
// wrong name, wrong key, no TLS at all), each checked on both ends: the
// refused peer gets an error and not a byte of application data crosses.

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <p2bmig/tls.h>
#include <p2bmig/transport.h>
#include <p2bmig/types.h>

namespace p2bmig {
namespace {

namespace fs = std::filesystem;

std::string Dir() { return ::testing::TempDir() + "/p2bmig_tls_test"; }

class TlsTest : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    fs::remove_all(Dir());
    // Two unrelated CAs, each with a certificate for localhost and one for
    // another name.
    for (const char* ca : {"good", "rogue"}) {
      const std::string cmd = std::string("bash ") + P2BMIG_SOURCE_DIR + "/scripts/make-certs.sh " +
                              Dir() + "/" + ca + " localhost other.example";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
    WriteFile(Dir() + "/psk-a",
              "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
    WriteFile(Dir() + "/psk-b",
              "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100\n");
    WriteFile(Dir() + "/psk-short", "0011223344\n");
  }

  static void WriteFile(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
  }

  static TlsOptions Certs(const std::string& ca_dir, const std::string& name,
                          const std::string& trust_dir = "") {
    TlsOptions o;
    o.cert_file = Dir() + "/" + ca_dir + "/" + name + ".pem";
    o.key_file = Dir() + "/" + ca_dir + "/" + name + ".key";
    o.ca_file = Dir() + "/" + (trust_dir.empty() ? ca_dir : trust_dir) + "/ca.pem";
    o.handshake_timeout_s = 5;
    return o;
  }
  static TlsOptions Psk(const std::string& file, double timeout_s = 5) {
    TlsOptions o;
    o.psk_file = Dir() + "/" + file;
    o.handshake_timeout_s = timeout_s;
    return o;
  }

  // Runs one connection attempt. The server's accepted stream (if any) reads
  // everything the client sends until it ends; the client writes `payload`.
  struct Outcome {
    std::string server_error;
    ErrorKind server_kind = ErrorKind::kInternal;
    std::string client_error;
    ErrorKind client_kind = ErrorKind::kInternal;
    size_t server_bytes = 0;  // application bytes the server received
  };
  static Outcome Attempt(const TlsContext* server, const TlsContext* client) {
    Outcome out;
    TcpListener listener("127.0.0.1", 0);
    TcpOptions sopt;
    sopt.tls = server;
    std::thread t([&] {
      try {
        auto s = listener.Accept(10, sopt);
        std::vector<uint8_t> buf(65536);
        for (;;) {
          const size_t n = s->ReadSome(buf.data(), buf.size());
          if (n == 0) break;
          out.server_bytes += n;
        }
        s->CloseWrite();
      } catch (const Error& e) {
        out.server_error = e.what();
        out.server_kind = e.kind();
      }
    });
    TcpOptions copt;
    copt.tls = client;
    try {
      auto c = TcpConnect("127.0.0.1", listener.port(), copt);
      std::vector<uint8_t> payload(1 << 20, 0x5a);
      c->WriteAll(payload.data(), payload.size());
      c->CloseWrite();
      uint8_t b;
      c->ReadSome(&b, 1);
    } catch (const Error& e) {
      out.client_error = e.what();
      out.client_kind = e.kind();
    }
    t.join();
    return out;
  }
};

void ExpectRefused(const TlsTest::Outcome& o, const std::string& server_says) {
  EXPECT_EQ(o.server_kind, ErrorKind::kAuthentication) << o.server_error;
  EXPECT_NE(o.server_error.find(server_says), std::string::npos) << o.server_error;
  EXPECT_EQ(o.client_kind, ErrorKind::kAuthentication) << o.client_error;
  EXPECT_EQ(o.server_bytes, 0u);
}

// Full duplex, as the migration uses it: the client streams 32 MiB while the
// server streams counters back, then each side ends its direction.
void ExpectFullDuplex(const TlsContext& server, const TlsContext& client) {
  TcpListener listener("127.0.0.1", 0);
  constexpr size_t kBytes = 32 << 20;
  auto server_side = std::async(std::launch::async, [&] {
    TcpOptions o;
    o.tls = &server;
    auto s = listener.Accept(10, o);
    EXPECT_EQ(s->Describe().rfind("tls ", 0), 0u) << s->Describe();
    std::atomic<bool> done{false};
    std::thread credits([&] {
      for (uint64_t i = 0; !done; ++i) {
        s->WriteAll(&i, sizeof(i));
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      s->CloseWrite();
    });
    std::vector<uint8_t> buf(1 << 20);
    uint64_t sum = 0, got = 0;
    for (;;) {
      const size_t n = s->ReadSome(buf.data(), buf.size());
      if (n == 0) break;
      for (size_t i = 0; i < n; ++i) sum += buf[i] ^ static_cast<uint8_t>(got + i);
      got += n;
    }
    done = true;
    credits.join();
    return std::pair(got, sum);
  });
  TcpOptions o;
  o.tls = &client;
  auto c = TcpConnect("127.0.0.1", listener.port(), o);
  std::atomic<uint64_t> counters{0};
  std::thread reader([&] {
    uint64_t v;
    try {
      for (;;) {
        c->ReadExact(&v, sizeof(v));
        EXPECT_EQ(v, counters.load());
        ++counters;
      }
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("peer closed"), std::string::npos) << e.what();
    }
  });
  std::vector<uint8_t> chunk(3 << 20);
  for (size_t off = 0; off < kBytes; off += chunk.size()) {
    const size_t n = std::min(chunk.size(), kBytes - off);
    for (size_t i = 0; i < n; ++i) chunk[i] = static_cast<uint8_t>(off + i);
    c->WriteAll(chunk.data(), n);
  }
  c->CloseWrite();
  auto [got, sum] = server_side.get();
  reader.join();
  EXPECT_EQ(got, kBytes);
  EXPECT_EQ(sum, 0u) << "bytes changed on the way";
  EXPECT_GT(counters.load(), 0u);
}

TEST_F(TlsTest, MutualCertificatesCarryBothDirections) {
  TlsContext server(Certs("good", "localhost"), TlsRole::kServer);
  TlsContext client(Certs("good", "other.example"), TlsRole::kClient);
  ExpectFullDuplex(server, client);
}

TEST_F(TlsTest, PreSharedKeyCarriesBothDirections) {
  TlsContext server(Psk("psk-a"), TlsRole::kServer);
  TlsContext client(Psk("psk-a"), TlsRole::kClient);
  EXPECT_TRUE(server.psk());
  ExpectFullDuplex(server, client);
}

TEST_F(TlsTest, ClientCertificateFromAnotherCaIsRefused) {
  TlsContext server(Certs("good", "localhost"), TlsRole::kServer);
  // Trusts the right CA but presents a certificate the server's CA did not sign.
  TlsContext client(Certs("rogue", "localhost", "good"), TlsRole::kClient);
  ExpectRefused(Attempt(&server, &client), "certificate");
}

TEST_F(TlsTest, ServerCertificateFromAnotherCaIsRefused) {
  TlsContext server(Certs("rogue", "localhost", "good"), TlsRole::kServer);
  TlsContext client(Certs("good", "localhost"), TlsRole::kClient);
  Outcome o = Attempt(&server, &client);
  EXPECT_EQ(o.client_kind, ErrorKind::kAuthentication) << o.client_error;
  EXPECT_NE(o.client_error.find("certificate verification failed"), std::string::npos)
      << o.client_error;
  EXPECT_EQ(o.server_kind, ErrorKind::kAuthentication) << o.server_error;
  EXPECT_EQ(o.server_bytes, 0u);
}

TEST_F(TlsTest, ServerCertificateForAnotherNameIsRefused) {
  // Signed by the right CA, but not for the address the client connects to.
  TlsContext server(Certs("good", "other.example"), TlsRole::kServer);
  TlsContext client(Certs("good", "localhost"), TlsRole::kClient);
  Outcome o = Attempt(&server, &client);
  EXPECT_EQ(o.client_kind, ErrorKind::kAuthentication) << o.client_error;
  EXPECT_NE(o.client_error.find("mismatch"), std::string::npos) << o.client_error;
  EXPECT_EQ(o.server_bytes, 0u);

  // Naming it explicitly is how a client reaches a host by another address.
  TlsOptions opt = Certs("good", "localhost");
  opt.server_name = "other.example";
  TlsContext named(opt, TlsRole::kClient);
  Outcome ok = Attempt(&server, &named);
  EXPECT_EQ(ok.client_error, "");
  EXPECT_EQ(ok.server_error, "");
  EXPECT_EQ(ok.server_bytes, 1u << 20);
}

TEST_F(TlsTest, ClientWithoutCertificateIsRefused) {
  TlsContext server(Certs("good", "localhost"), TlsRole::kServer);
  TlsContext client(Psk("psk-a"), TlsRole::kClient);
  ExpectRefused(Attempt(&server, &client), "TLS handshake");
}

TEST_F(TlsTest, WrongPreSharedKeyIsRefused) {
  TlsContext server(Psk("psk-a"), TlsRole::kServer);
  TlsContext client(Psk("psk-b"), TlsRole::kClient);
  ExpectRefused(Attempt(&server, &client), "TLS handshake");
}

TEST_F(TlsTest, PlainClientIsRefusedByTlsServer) {
  TlsContext server(Psk("psk-a"), TlsRole::kServer);
  Outcome o = Attempt(&server, nullptr);
  EXPECT_EQ(o.server_kind, ErrorKind::kAuthentication) << o.server_error;
  EXPECT_EQ(o.server_bytes, 0u);
  EXPECT_NE(o.client_error, "");  // its stream went nowhere
}

TEST_F(TlsTest, TlsClientFailsAgainstPlainServer) {
  TlsContext client(Psk("psk-a", 0.5), TlsRole::kClient);
  Outcome o = Attempt(nullptr, &client);
  EXPECT_EQ(o.client_kind, ErrorKind::kAuthentication) << o.client_error;
}

TEST_F(TlsTest, SilentPeerTimesOutInHandshake) {
  TlsOptions opt = Psk("psk-a");
  opt.handshake_timeout_s = 0.3;
  TlsContext server(opt, TlsRole::kServer);
  TcpListener listener("127.0.0.1", 0);
  auto idle = TcpConnect("127.0.0.1", listener.port());  // connects, says nothing
  TcpOptions o;
  o.tls = &server;
  try {
    listener.Accept(5, o);
    ADD_FAILURE() << "accepted a peer that never spoke TLS";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kAuthentication);
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
}

TEST_F(TlsTest, AbortWakesABlockedReader) {
  TlsContext server(Psk("psk-a"), TlsRole::kServer);
  TlsContext client(Psk("psk-a"), TlsRole::kClient);
  TcpListener listener("127.0.0.1", 0);
  std::unique_ptr<ByteStream> s;
  std::thread t([&] {
    TcpOptions o;
    o.tls = &server;
    s = listener.Accept(10, o);
  });
  TcpOptions o;
  o.tls = &client;
  auto c = TcpConnect("127.0.0.1", listener.port(), o);
  t.join();
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    c->Abort();
  });
  uint8_t b;
  EXPECT_THROW(c->ReadExact(&b, 1), Error);
  aborter.join();
}

TEST_F(TlsTest, BadKeyFilesAreRejectedUpFront) {
  auto expect_invalid = [](const TlsOptions& o, const std::string& needle) {
    try {
      TlsContext ctx(o, TlsRole::kServer);
      ADD_FAILURE() << "accepted " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_invalid(Psk("psk-short"), "16 to 64 bytes");
  expect_invalid(Psk("does-not-exist"), "cannot read");
  TlsOptions mixed = Certs("good", "localhost");
  mixed.key_file = Dir() + "/good/other.example.key";
  expect_invalid(mixed, "mismatch");
  TlsOptions partial;
  partial.cert_file = Dir() + "/good/localhost.pem";
  expect_invalid(partial, "all three");
}

}  // namespace
}  // namespace p2bmig
