// Tests of the byte transports: fd streams (pipes, sockets, files), TCP over
// loopback, and the rate limiter.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <p2bmig/byte_stream.h>
#include <p2bmig/transport.h>
#include <p2bmig/types.h>

namespace p2bmig {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Deterministic content: byte i of the stream.
uint8_t PatternByte(uint64_t i) { return static_cast<uint8_t>((i * 2654435761u) >> 13); }

void FillPattern(uint8_t* p, size_t len, uint64_t start) {
  for (size_t i = 0; i < len; ++i) p[i] = PatternByte(start + i);
}

// Expects `fn` to throw Error of `kind` whose message contains `needle`.
void ExpectError(const std::function<void()>& fn, ErrorKind kind, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error, expected one containing \"" << needle << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/p2bmig_transport_" + name;
}

// --- fd streams ---------------------------------------------------------------

TEST(TransportTest, PipeRoundTripAndPeerClose) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  auto reader = NewFdByteStream(fds[0], true, "pipe-in");
  auto writer = NewFdByteStream(fds[1], true, "pipe-out");
  constexpr size_t kLen = 1 << 20;  // larger than the pipe buffer
  std::thread t([&] {
    std::vector<uint8_t> buf(kLen);
    FillPattern(buf.data(), kLen, 0);
    writer->WriteAll(buf.data(), kLen);
    writer->CloseWrite();  // closes the pipe: the reader sees its end
  });
  std::vector<uint8_t> got(kLen);
  reader->ReadExact(got.data(), kLen);
  t.join();
  for (size_t i = 0; i < kLen; ++i) ASSERT_EQ(got[i], PatternByte(i)) << i;
  EXPECT_EQ(reader->bytes_read(), kLen);
  EXPECT_EQ(writer->bytes_written(), kLen);
  EXPECT_EQ(reader->Describe(), "pipe-in");
  uint8_t b;
  EXPECT_EQ(reader->ReadSome(&b, 1), 0u);  // end of stream
  ExpectError([&] { reader->ReadExact(&b, 1); }, ErrorKind::kNetwork,
              "pipe-in: peer closed the connection after 1048576 bytes");
}

TEST(TransportTest, PipeShortReadsAreLooped) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  auto reader = NewFdByteStream(fds[0], true, "pipe-in");
  auto writer = NewFdByteStream(fds[1], true, "pipe-out");
  std::thread t([&] {
    for (uint8_t i = 0; i < 10; ++i) {
      writer->WriteAll(&i, 1);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  uint8_t got[10];
  reader->ReadExact(got, sizeof(got));
  t.join();
  for (uint8_t i = 0; i < 10; ++i) EXPECT_EQ(got[i], i);
}

void NoopHandler(int) {}

TEST(TransportTest, ReadsSurviveSignals) {
  // A handler without SA_RESTART makes a blocked read fail with EINTR.
  struct sigaction sa = {}, old = {};
  sa.sa_handler = NoopHandler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  auto reader = NewFdByteStream(fds[0], true, "pipe-in");
  auto writer = NewFdByteStream(fds[1], true, "pipe-out");
  std::atomic<bool> done{false};
  uint64_t value = 0;
  std::thread t([&] {
    reader->ReadExact(&value, sizeof(value));
    done = true;
  });
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    pthread_kill(t.native_handle(), SIGUSR1);
  }
  EXPECT_FALSE(done);
  const uint64_t sent = 0x0123456789ABCDEFull;
  writer->WriteAll(&sent, sizeof(sent));
  t.join();
  EXPECT_EQ(value, sent);
  sigaction(SIGUSR1, &old, nullptr);
}

TEST(TransportTest, SocketWriteToClosedPeerIsNetworkError) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  auto a = NewFdByteStream(sv[0], true, "sock-a");
  close(sv[1]);
  std::vector<uint8_t> buf(1 << 16, 1);
  // No SIGPIPE: the test would die if the write raised it.
  ExpectError([&] { a->WriteAll(buf.data(), buf.size()); }, ErrorKind::kNetwork, "sock-a");
}

TEST(TransportTest, SocketCloseWriteSignalsEnd) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  auto a = NewFdByteStream(sv[0], true, "sock-a");
  auto b = NewFdByteStream(sv[1], true, "sock-b");
  a->WriteAll("hi", 2);
  a->CloseWrite();
  char buf[4];
  b->ReadExact(buf, 2);
  EXPECT_EQ(std::string(buf, 2), "hi");
  EXPECT_EQ(b->ReadSome(buf, 4), 0u);
  b->WriteAll("ok", 2);  // the other direction still works
  a->ReadExact(buf, 2);
  EXPECT_EQ(std::string(buf, 2), "ok");
}

TEST(TransportTest, FileRoundTrip) {
  const std::string path = TempPath("file");
  constexpr size_t kLen = 3 * 1000 * 1000 + 7;
  {
    auto w = OpenFileForWrite(path);
    std::vector<uint8_t> buf(kLen);
    FillPattern(buf.data(), kLen, 0);
    w->WriteAll(buf.data(), kLen / 2);
    w->WriteAll(buf.data() + kLen / 2, kLen - kLen / 2);
    EXPECT_EQ(w->bytes_written(), kLen);
    EXPECT_EQ(w->Describe(), path);
  }
  auto r = OpenFileForRead(path);
  std::vector<uint8_t> got(kLen);
  r->ReadExact(got.data(), kLen);
  for (size_t i = 0; i < kLen; ++i) ASSERT_EQ(got[i], PatternByte(i)) << i;
  EXPECT_EQ(r->bytes_read(), kLen);
  uint8_t b;
  EXPECT_EQ(r->ReadSome(&b, 1), 0u);
  std::remove(path.c_str());
}

TEST(TransportTest, TruncatedFileIsMalformedStream) {
  const std::string path = TempPath("truncated");
  {
    auto w = OpenFileForWrite(path);
    w->WriteAll("0123456789", 10);
  }
  auto r = OpenFileForRead(path);
  char buf[16];
  r->ReadExact(buf, 4);
  ExpectError([&] { r->ReadExact(buf, 16); }, ErrorKind::kMalformedStream, "truncated");
  std::remove(path.c_str());
}

TEST(TransportTest, OpenErrorsNameThePath) {
  ExpectError([] { OpenFileForRead("/nonexistent/p2bmig/x"); }, ErrorKind::kIo,
              "/nonexistent/p2bmig/x");
  ExpectError([] { OpenFileForWrite("/nonexistent/p2bmig/y"); }, ErrorKind::kIo,
              "/nonexistent/p2bmig/y");
}

// --- TCP ------------------------------------------------------------------------

TEST(TransportTest, TcpLoopbackRoundTrip64MiB) {
  TcpListener listener("127.0.0.1", 0);
  ASSERT_NE(listener.port(), 0);
  constexpr size_t kTotal = 64 << 20;
  constexpr size_t kChunk = 1 << 20;
  std::exception_ptr client_error;
  std::string reply;
  std::thread client([&] {
    try {
      auto s = TcpConnect("127.0.0.1", listener.port());
      std::vector<uint8_t> buf(kChunk);
      for (size_t off = 0; off < kTotal; off += kChunk) {
        FillPattern(buf.data(), kChunk, off);
        s->WriteAll(buf.data(), kChunk);
      }
      s->CloseWrite();
      char r[2];
      s->ReadExact(r, 2);
      reply.assign(r, 2);
      EXPECT_EQ(s->bytes_written(), kTotal);
    } catch (...) {
      client_error = std::current_exception();
    }
  });
  auto s = listener.Accept(10);
  EXPECT_EQ(s->Describe().rfind("tcp 127.0.0.1:", 0), 0u) << s->Describe();
  std::vector<uint8_t> buf(kChunk / 2 + 3);  // reads not aligned to writes
  size_t off = 0;
  while (off < kTotal) {
    const size_t n = std::min(buf.size(), kTotal - off);
    s->ReadExact(buf.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(buf[i], PatternByte(off + i)) << off + i;
    off += n;
  }
  uint8_t b;
  EXPECT_EQ(s->ReadSome(&b, 1), 0u);  // the client shut down its side
  s->WriteAll("ok", 2);
  client.join();
  if (client_error) std::rethrow_exception(client_error);
  EXPECT_EQ(reply, "ok");
  EXPECT_EQ(s->bytes_read(), kTotal);
}

TEST(TransportTest, TcpConnectRefusedNamesThePeer) {
  uint16_t port;
  {
    TcpListener l("127.0.0.1", 0);
    port = l.port();
  }  // closed: nobody listens there now
  ExpectError([&] { TcpConnect("127.0.0.1", port); }, ErrorKind::kNetwork,
              "cannot connect to 127.0.0.1:" + std::to_string(port) + ": Connection refused");
}

TEST(TransportTest, TcpConnectUnknownHost) {
  ExpectError([] { TcpConnect("no-such-host.invalid", 7000); }, ErrorKind::kNetwork,
              "cannot connect to no-such-host.invalid:7000");
}

TEST(TransportTest, TcpAcceptTimesOutThenStillWorks) {
  TcpListener listener("127.0.0.1", 0);
  const auto start = Clock::now();
  ExpectError([&] { listener.Accept(0.2); }, ErrorKind::kNetwork, "within 0.2 s");
  const double took = SecondsSince(start);
  EXPECT_GE(took, 0.19);
  EXPECT_LT(took, 2.0);
  // The listener is still usable after a timeout.
  std::thread client([&] {
    auto c = TcpConnect("127.0.0.1", listener.port());
    c->WriteAll("x", 1);
  });
  auto s = listener.Accept(10);
  char x;
  s->ReadExact(&x, 1);
  EXPECT_EQ(x, 'x');
  client.join();
}

TEST(TransportTest, TcpPeerCloseMidReadIsNetworkError) {
  TcpListener listener("127.0.0.1", 0);
  std::thread client([&] {
    auto c = TcpConnect("127.0.0.1", listener.port());
    c->WriteAll("0123456789", 10);
  });  // the client's stream is destroyed: the connection closes
  auto s = listener.Accept(10);
  client.join();
  char buf[100];
  ExpectError([&] { s->ReadExact(buf, sizeof(buf)); }, ErrorKind::kNetwork,
              "peer closed the connection after 10 bytes");
  EXPECT_NE(s->Describe().find("127.0.0.1"), std::string::npos);
}

TEST(TransportTest, TcpListenOnBusyPortFails) {
  TcpListener a("127.0.0.1", 0);
  ExpectError([&] { TcpListener b("127.0.0.1", a.port()); }, ErrorKind::kNetwork,
              "cannot listen on 127.0.0.1:" + std::to_string(a.port()));
}

// --- Rate limiter ---------------------------------------------------------------

// Swallows writes, counting them.
class NullSink : public ByteStream {
 public:
  void ReadExact(void*, size_t) override {}
  size_t ReadSome(void*, size_t) override { return 0; }
  void WriteAll(const void*, size_t len) override {
    bytes_written_ += len;
    ++writes_;
    max_write_ = std::max(max_write_, len);
  }
  std::string Describe() const override { return "null"; }
  uint64_t writes_ = 0;
  size_t max_write_ = 0;
};

TEST(TransportTest, RateLimiterAccuracy) {
  constexpr uint64_t kBitsPerSecond = 200'000'000;
  constexpr double kBytesPerSecond = kBitsPerSecond / 8.0;
  NullSink sink;
  auto limited = NewRateLimitedStream(&sink, kBitsPerSecond);
  // Half a second at the rate, plus the burst the bucket starts with.
  const size_t total = static_cast<size_t>(kBytesPerSecond / 2) + (64 << 10);
  std::vector<uint8_t> buf(1 << 20);
  const auto start = Clock::now();
  for (size_t done = 0; done < total;) {
    const size_t n = std::min(buf.size(), total - done);
    limited->WriteAll(buf.data(), n);
    done += n;
  }
  limited->Flush();
  const double took = SecondsSince(start);
  EXPECT_EQ(sink.bytes_written(), total);
  EXPECT_EQ(limited->bytes_written(), total);
  EXPECT_LE(sink.max_write_, size_t{64} << 10);
  // Never faster than the link; slower only by what a loaded machine adds.
  EXPECT_GE(took, 0.5 * 0.97) << "achieved " << (total - (64 << 10)) / took * 8 / 1e6 << " Mbit/s";
  EXPECT_LE(took, 0.5 * 3);
}

TEST(TransportTest, RateLimiterSmallWrites) {
  constexpr uint64_t kBitsPerSecond = 80'000'000;  // 10 MB/s
  NullSink sink;
  auto limited = NewRateLimitedStream(&sink, kBitsPerSecond);
  const size_t total = 2'000'000 + (64 << 10);  // 0.2 s after the burst
  std::vector<uint8_t> buf(1000);
  const auto start = Clock::now();
  for (size_t done = 0; done < total; done += buf.size()) limited->WriteAll(buf.data(), buf.size());
  limited->Flush();
  EXPECT_GE(SecondsSince(start), 0.2 * 0.97);
  EXPECT_LE(SecondsSince(start), 0.2 * 3);
}

TEST(TransportTest, RateLimiterZeroMeansUnlimited) {
  NullSink sink;
  auto s = NewRateLimitedStream(&sink, 0);
  std::vector<uint8_t> buf(64 << 20);
  const auto start = Clock::now();
  s->WriteAll(buf.data(), buf.size());
  EXPECT_LT(SecondsSince(start), 0.5);
  EXPECT_EQ(sink.bytes_written(), buf.size());
  EXPECT_EQ(s->Describe(), "null");
}

}  // namespace
}  // namespace p2bmig
