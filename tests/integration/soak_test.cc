// A bounded soak: back-to-back migrations in one long-lived process, over
// real TCP with TLS (pre-shared key), each one verified byte for byte. After
// the first few, the process must not gain file descriptors or threads, and
// the bytes its heap holds in use must stay flat: that catches memory kept
// reachable but never released (a cache or list that only grows), which
// LeakSanitizer cannot see. Resident size is printed but not checked: it
// follows the allocator's retention and, under ASan, its quarantine of freed
// blocks, not the program. Under sanitizers the heap check is skipped, since
// their allocators replace malloc's accounting; LeakSanitizer checks unreachable
// blocks exactly at exit. P2BMIG_SOAK_SECONDS sets the length (default 60).

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <malloc.h>
#include <unistd.h>

#include <p2bmig/tls.h>
#include <p2bmig/transport.h>

#include "sim/content.h"
#include "sim/fetch_credits.h"
#include "sim/sim_host.h"
#include "test_util/sim_fixture.h"

namespace p2bmig::test {
namespace {

namespace fs = std::filesystem;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kHeapAccountingIsMalloc = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kHeapAccountingIsMalloc = false;
#else
constexpr bool kHeapAccountingIsMalloc = true;
#endif
#else
constexpr bool kHeapAccountingIsMalloc = true;
#endif

struct ProcessUse {
  size_t fds = 0;
  size_t threads = 0;
  uint64_t rss_bytes = 0;
  uint64_t heap_in_use_bytes = 0;  // glibc malloc: all arenas plus mmapped blocks
};

ProcessUse Measure() {
  ::malloc_trim(0);
  ProcessUse u;
  const struct mallinfo2 mi = ::mallinfo2();
  u.heap_in_use_bytes = mi.uordblks + mi.hblkhd;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) (void)e, ++u.fds;
  for (const auto& e : fs::directory_iterator("/proc/self/task")) (void)e, ++u.threads;
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  u.rss_bytes = resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return u;
}

TEST(Soak, BackToBackMigrationsLeakNothing) {
  const char* env = std::getenv("P2BMIG_SOAK_SECONDS");
  const double seconds = env != nullptr ? std::atof(env) : 60;
  TempDir dir;
  const std::string image = dir.File("disk0.img");
  sim::CreateDiskImage(image, 64u << 20, 3);
  {
    std::ofstream(dir.File("link.psk"))
        << "3b9f1c2d4e5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e\n";
    fs::permissions(dir.File("link.psk"), fs::perms::owner_read | fs::perms::owner_write);
  }
  TlsOptions psk;
  psk.psk_file = dir.File("link.psk");
  TlsContext server_tls(psk, TlsRole::kServer), client_tls(psk, TlsRole::kClient);

  auto migrate_once = [&](uint64_t seed) {
    sim::SourceOptions so;
    so.guest.memory_pages = 8192;  // 32 MiB
    so.guest.kernel_pages = 256;
    so.guest.buffer_pages = 64;
    so.guest.disk_paths = {image};
    so.workload = seed % 2 == 0 ? "database" : "fileserver";
    so.seed = seed;
    so.wait_for_commit = true;
    sim::SourceHost source(so);
    source.WarmUp();
    sim::TargetOptions to;
    to.memory_pages = so.guest.memory_pages;
    to.disks = {image};
    sim::TargetHost target(to);
    TcpListener listener("127.0.0.1", 0);
    std::exception_ptr target_error;
    std::thread t([&] {
      try {
        TcpOptions o;
        o.tls = &server_tls;
        auto link = listener.Accept(10, o);
        target.Receive(link.get());
        sim::SendCommit(link.get());
        link->CloseWrite();
      } catch (...) {
        target_error = std::current_exception();
      }
    });
    TcpOptions o;
    o.tls = &client_tls;
    auto link = TcpConnect("127.0.0.1", listener.port(), o);
    source.Migrate(link.get());
    link->CloseWrite();
    t.join();
    if (target_error) std::rethrow_exception(target_error);
    ASSERT_EQ(DifferingPages(source.guest().memory(), target.memory()), 0u) << "seed " << seed;
  };

  uint64_t seed = 1;
  for (; seed <= 3; ++seed) migrate_once(seed);  // allocators and pools settle
  const ProcessUse before = Measure();
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    migrate_once(seed++);
    if (HasFatalFailure()) return;
  }
  const ProcessUse after = Measure();
  std::printf(
      "soak: %llu migrations in %.0f s; fds %zu -> %zu, threads %zu -> %zu, heap in use %.2f "
      "-> %.2f MiB, RSS %.1f -> %.1f MiB\n",
      static_cast<unsigned long long>(seed - 1), seconds, before.fds, after.fds, before.threads,
      after.threads, before.heap_in_use_bytes / 1048576.0, after.heap_in_use_bytes / 1048576.0,
      before.rss_bytes / 1048576.0, after.rss_bytes / 1048576.0);
  EXPECT_EQ(after.fds, before.fds);
  EXPECT_EQ(after.threads, before.threads);
  // Each migration allocates tens of MiB (two 32 MiB guests, maps, buffers) and
  // frees it all; 1 MiB of slack covers libraries' lazily built tables.
  if (kHeapAccountingIsMalloc) {
    EXPECT_LT(after.heap_in_use_bytes, before.heap_in_use_bytes + (1u << 20));
  }
}

}  // namespace
}  // namespace p2bmig::test
