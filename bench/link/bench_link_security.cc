// What securing the migration link costs: the same transfer over loopback
// TCP in plain, TLS-with-certificates and TLS-with-pre-shared-key mode, side
// by side in one run, on an unlimited link and behind the 1 Gbit/s link model
// the demo uses. Writes come in 4 MiB pieces, as PAGE_DATA batches do, while
// the receiver sends an 8-byte counter back every few milliseconds, as fetch
// credits do.
//
// Usage: bench_link_security [--json] [--mib N] [--repeat R]
// Prints a table, or with --json one object with a `runs` array.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <p2bmig/tls.h>
#include <p2bmig/transport.h>
#include <p2bmig/types.h>

namespace p2bmig {
namespace {

using Clock = std::chrono::steady_clock;

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct Result {
  double seconds = 0;
  double cpu_seconds = 0;
};

Result Transfer(const TlsContext* server, const TlsContext* client, uint64_t bytes,
                uint64_t rate_bps) {
  TcpListener listener("127.0.0.1", 0);
  TcpOptions so, co;
  so.tls = server;
  co.tls = client;
  std::unique_ptr<ByteStream> accepted;
  std::thread acceptor([&] { accepted = listener.Accept(10, so); });
  auto conn = TcpConnect("127.0.0.1", listener.port(), co);
  acceptor.join();
  std::atomic<bool> done{false};
  std::atomic<uint64_t> received{0};
  std::thread receiver([&] {
    std::vector<uint8_t> buf(1 << 20);
    for (;;) {
      const size_t n = accepted->ReadSome(buf.data(), buf.size());
      if (n == 0) break;
      received += n;
    }
    done = true;
  });
  std::thread credits([&] {  // the reverse direction, as fetch credits use it
    for (uint64_t v = 0; !done; ++v) {
      accepted->WriteAll(&v, sizeof(v));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    accepted->CloseWrite();
  });
  std::thread credit_reader([&] {
    uint64_t v;
    try {
      for (;;) conn->ReadExact(&v, sizeof(v));
    } catch (const Error&) {
    }
  });
  auto link = NewRateLimitedStream(conn.get(), rate_bps);
  std::vector<uint8_t> chunk(4 << 20);
  for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
  const double cpu0 = CpuSeconds();
  const auto t0 = Clock::now();
  for (uint64_t sent = 0; sent < bytes; sent += chunk.size()) {
    link->WriteAll(chunk.data(), std::min<uint64_t>(chunk.size(), bytes - sent));
  }
  link->CloseWrite();
  receiver.join();
  Result r;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.cpu_seconds = CpuSeconds() - cpu0;
  credits.join();
  credit_reader.join();
  if (received != bytes) throw Error(ErrorKind::kInternal, "bytes lost");
  return r;
}

int Main(int argc, char** argv) {
  bool json_out = false;
  uint64_t mib = 1024;
  int repeat = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json")
      json_out = true;
    else if (a == "--mib" && i + 1 < argc)
      mib = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--repeat" && i + 1 < argc)
      repeat = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--json] [--mib N] [--repeat R]\n", argv[0]);
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::warn);
  const std::string dir =
      (std::filesystem::temp_directory_path() / fmt::format("p2bmig-bench-tls-{}", getpid()))
          .string();
  const std::string cmd =
      fmt::format("bash {}/scripts/make-certs.sh {} localhost", P2BMIG_SOURCE_DIR, dir);
  if (std::system(cmd.c_str()) != 0) throw Error(ErrorKind::kInternal, "make-certs.sh failed");
  {
    std::ofstream(dir + "/link.psk")
        << "8c1f0e3a5b7d9264f1e0c3b5a7d9e2f4061b3d5c7e9a0b2d4f6e8c1a3b5d7f90\n";
    std::filesystem::permissions(dir + "/link.psk", std::filesystem::perms::owner_read |
                                                        std::filesystem::perms::owner_write);
  }
  TlsOptions certs;
  certs.cert_file = dir + "/localhost.pem";
  certs.key_file = dir + "/localhost.key";
  certs.ca_file = dir + "/ca.pem";
  TlsOptions psk;
  psk.psk_file = dir + "/link.psk";
  TlsContext cert_server(certs, TlsRole::kServer), cert_client(certs, TlsRole::kClient);
  TlsContext psk_server(psk, TlsRole::kServer), psk_client(psk, TlsRole::kClient);

  struct Mode {
    const char* name;
    const TlsContext* server;
    const TlsContext* client;
  };
  const Mode modes[] = {{"plain", nullptr, nullptr},
                        {"tls-certificates", &cert_server, &cert_client},
                        {"tls-psk", &psk_server, &psk_client}};
  struct Link {
    const char* name;
    uint64_t bps;
    uint64_t bytes;
  };
  // The 1 Gbit/s runs move less, to take seconds rather than minutes.
  const Link links[] = {{"unlimited", 0, mib << 20}, {"1gbit", 1'000'000'000, (mib / 4) << 20}};

  nlohmann::json runs = nlohmann::json::array();
  for (const Link& l : links) {
    double plain_mbs = 0;
    for (const Mode& m : modes) {
      std::vector<Result> rs;
      for (int i = 0; i < repeat; ++i) rs.push_back(Transfer(m.server, m.client, l.bytes, l.bps));
      std::sort(rs.begin(), rs.end(),
                [](const Result& a, const Result& b) { return a.seconds < b.seconds; });
      const Result& med = rs[rs.size() / 2];
      const double mbs = static_cast<double>(l.bytes) / 1e6 / med.seconds;
      if (m.server == nullptr) plain_mbs = mbs;
      runs.push_back({{"link", l.name},
                      {"mode", m.name},
                      {"bytes", l.bytes},
                      {"seconds", med.seconds},
                      {"mb_per_s", mbs},
                      {"cpu_seconds", med.cpu_seconds},
                      {"ratio_to_plain", plain_mbs > 0 ? mbs / plain_mbs : 1.0}});
    }
  }
  std::filesystem::remove_all(dir);
  nlohmann::json out = {{"benchmark", "link_security"},
                        {"repeat", repeat},
                        {"cpus", std::thread::hardware_concurrency()},
                        {"runs", runs}};
  if (json_out) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("%-10s %-18s %10s %10s %12s %8s\n", "link", "mode", "MiB", "MB/s", "CPU s", "ratio");
  for (const auto& r : runs) {
    std::printf("%-10s %-18s %10.0f %10.1f %12.2f %8.3f\n", r["link"].get<std::string>().c_str(),
                r["mode"].get<std::string>().c_str(), r["bytes"].get<double>() / (1 << 20),
                r["mb_per_s"].get<double>(), r["cpu_seconds"].get<double>(),
                r["ratio_to_plain"].get<double>());
  }
  std::printf("\nratio = MB/s of the mode / MB/s of plain TCP on the same link (median of %d)\n",
              repeat);
  return 0;
}

}  // namespace
}  // namespace p2bmig

int main(int argc, char** argv) {
  try {
    return p2bmig::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_link_security: %s\n", e.what());
    return 1;
  }
}
