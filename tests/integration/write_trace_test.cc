// BlockWriteTrace: parsing of the tracepoint's lines, and, where this
// machine allows (root, tracefs, loop devices), a real loop device over an
// image file: writes through it arrive as pfn-less events with the right
// sectors, Drain waits for all of them, and the hint-free index drops the
// blocks they overwrote.

#include "xen/write_trace.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p2bmig/hash.h>
#include <p2bmig/p2b_map.h>

#include "source/block_index.h"
#include "source/hint_free.h"
#include "test_util/sim_fixture.h"

namespace p2bmig {
namespace {

TEST(WriteTraceTest, ParsesBlockRqCompleteLines) {
  TracedRequest r;
  ASSERT_TRUE(ParseRqCompleteLine(
      "     ksoftirqd/0-14      [000] ..s.. 12063.896182: block_rq_complete: 7,0 WS () 24 + 8 "
      "be,0,4 [0]",
      &r));
  EXPECT_EQ(r.major, 7u);
  EXPECT_EQ(r.minor, 0u);
  EXPECT_TRUE(r.write);
  EXPECT_FALSE(r.discard);
  EXPECT_EQ(r.sector, 24u);
  EXPECT_EQ(r.nr_sectors, 8u);
  ASSERT_TRUE(ParseRqCompleteLine(
      "cc1plus-30052 [001] ..s.. 1.3: block_rq_complete: 254,16 RA () 13103416 + 8 be,0,4 [0]",
      &r));
  EXPECT_FALSE(r.write);
  EXPECT_EQ(r.minor, 16u);
  ASSERT_TRUE(ParseRqCompleteLine("x: block_rq_complete: 7,1 D (some cmd) 2048 + 4096 [0]", &r));
  EXPECT_TRUE(r.discard);
  EXPECT_EQ(r.sector, 2048u);
  EXPECT_EQ(r.nr_sectors, 4096u);
  EXPECT_FALSE(ParseRqCompleteLine("x: block_rq_issue: 7,0 WS 4096 () 24 + 8 [dd]", &r));
  EXPECT_FALSE(ParseRqCompleteLine("# tracer: nop", &r));
  EXPECT_FALSE(ParseRqCompleteLine("x: block_rq_complete: 7,0 WS () garbage", &r));
}

std::string Shell(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[256];
  while (fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// A loop device over an image file, detached at the end.
class LoopDevice {
 public:
  explicit LoopDevice(const std::string& image) {
    device_ = Shell("losetup -f --show " + image + " 2>/dev/null");
  }
  ~LoopDevice() {
    if (!device_.empty()) Shell("losetup -d " + device_ + " 2>/dev/null");
  }
  const std::string& device() const { return device_; }

 private:
  std::string device_;
};

void DirectWrite(const std::string& device, uint64_t sector, uint32_t nr_sectors, uint8_t fill) {
  const int fd = open(device.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(fd, 0) << device << ": " << std::strerror(errno);
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, nr_sectors * 512), 0);
  std::memset(buf, fill, nr_sectors * 512);
  EXPECT_EQ(pwrite(fd, buf, nr_sectors * 512, static_cast<off_t>(sector * 512)),
            static_cast<ssize_t>(nr_sectors * 512));
  free(buf);
  close(fd);
}

TEST(WriteTraceTest, LoopDeviceWritesInvalidateTheIndex) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (tracefs, loop devices)";
  test::TempDir dir;
  const std::string image = dir.File("disk.img");
  {
    std::vector<uint8_t> content(8u << 20);
    for (size_t i = 0; i < content.size(); i += 8) {
      const uint64_t v = i * 2654435761u + 1;
      std::memcpy(&content[i], &v, 8);
    }
    std::ofstream(image, std::ios::binary)
        .write(reinterpret_cast<const char*>(content.data()),
               static_cast<std::streamsize>(content.size()));
  }
  LoopDevice loop(image);
  if (loop.device().empty()) GTEST_SKIP() << "no loop device available";
  std::unique_ptr<BlockWriteTrace> trace;
  try {
    trace = BlockWriteTrace::Open({loop.device()});
  } catch (const Error& e) {
    GTEST_SKIP() << "no block tracing here: " << e.what();
  }
  BlockIndex index;
  P2bMap map(1024);
  HintFreeMapper mapper(&index, &map);
  std::mutex mu;
  std::vector<IoEvent> events;
  trace->SetListener([&](const IoEvent& ev) {
    {
      std::lock_guard lock(mu);
      events.push_back(ev);
    }
    mapper.OnEvent(ev);
  });
  index.Build({image});
  std::vector<uint8_t> block(kPageSize);
  auto hash_of_block = [&](uint64_t b) {
    std::ifstream in(image, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(b * kPageSize));
    in.read(reinterpret_cast<char*>(block.data()), kPageSize);
    return PageHash(block.data());
  };
  const uint64_t h3 = hash_of_block(3), h4 = hash_of_block(4), h12 = hash_of_block(12),
                 h13 = hash_of_block(13), h20 = hash_of_block(20);
  ASSERT_TRUE(index.Lookup(h3) && index.Lookup(h12) && index.Lookup(h20));
  mapper.Propose(7, h20);  // pfn 7 holds block 20's content
  ASSERT_TRUE(map.Lookup(7));

  DirectWrite(loop.device(), 3 * 8, 8, 0xA1);       // block 3, whole
  DirectWrite(loop.device(), 12 * 8 + 7, 2, 0xB2);  // last sector of 12, first of 13
  DirectWrite(loop.device(), 20 * 8 + 2, 1, 0xC3);  // one sector of block 20
  trace->Drain();

  EXPECT_GE(trace->writes_seen(), 3u);
  EXPECT_FALSE(index.Lookup(h3));
  EXPECT_FALSE(index.Lookup(h12));
  EXPECT_FALSE(index.Lookup(h13));
  EXPECT_FALSE(index.Lookup(h20));
  EXPECT_TRUE(index.Lookup(h4));
  EXPECT_FALSE(map.Lookup(7)) << "the entry of an overwritten block survived";
  std::lock_guard lock(mu);
  bool saw_block3 = false;
  for (const IoEvent& ev : events) {
    EXPECT_EQ(ev.op, IoOp::kWrite);
    for (const IoSegment& seg : ev.segments) EXPECT_EQ(seg.pfn, kNoPfn);
    if (ev.sector == 24) saw_block3 = true;
  }
  EXPECT_TRUE(saw_block3);
}

}  // namespace
}  // namespace p2bmig
