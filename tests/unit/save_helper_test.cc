// Tests of the wrapper save/restore helper (p2bmig-save-helper) that run
// without Xen. Xen's real libxl-save-helper is replaced by a fake: a shell
// script that plays the real helper's side of the libxc stream (writes a
// known stream to its io_fd on save, records what it reads on restore),
// talks on stdin/stdout like the callback protocol, and can be told to trap
// SIGTERM, block, exit with a status or die of a signal. Those are the
// situations a test needs and cannot produce without Xen.

#include "xen/save_helper.h"

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p2bmig/byte_stream.h>
#include <p2bmig/domain.h>
#include <p2bmig/hash.h>
#include <p2bmig/records.h>
#include <p2bmig/stream.h>
#include <p2bmig/types.h>

#include "test_util/memory_stream.h"
#include "test_util/sim_fixture.h"
#include "xen/helper_args.h"
#include "xen/hint_free_tracking.h"
#include "xen/stream_copy.h"

extern char** environ;

namespace p2bmig {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

#ifdef P2BMIG_SAVE_HELPER_BINARY
constexpr char kWrapper[] = P2BMIG_SAVE_HELPER_BINARY;
#else
constexpr char kWrapper[] = "p2bmig-save-helper";
#endif

// The fake real helper. $1 is the mode, $2 the io_fd (see helper_args.h).
constexpr char kFakeHelper[] = R"(#!/bin/bash
# Fake of Xen's libxl-save-helper, for tests without Xen.
out=$FAKE_OUT
mode=$1
io_fd=$2
echo "$*" > "$out/argv"
if [ -p "/proc/self/fd/$io_fd" ]; then echo pipe > "$out/io_kind"; else echo other > "$out/io_kind"; fi
if [ -z "$FAKE_SKIP_STDIO" ]; then
  echo "callback-from-fake"
  IFS= read -r reply || true
  echo "$reply" > "$out/stdin"
fi
case "$FAKE_ACTION" in
  trap-term)
    trap 'kill $sleeper; echo TERM > "$out/signal"; exit 0' TERM
    sleep 60 &
    sleeper=$!
    touch "$out/ready"
    wait $sleeper
    exit 9 ;;
  block)
    touch "$out/ready"
    cat <&"$io_fd" > "$out/received"
    exit 0 ;;
  die)
    kill -KILL $$ ;;
esac
if [ "$mode" = --save-domain ]; then
  cat "$FAKE_STREAM" >&"$io_fd"
else
  cat <&"$io_fd" > "$out/received"
fi
exit "${FAKE_EXIT:-0}"
)";

Bytes ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string ReadText(const fs::path& path) {
  Bytes b = ReadFile(path);
  return std::string(b.begin(), b.end());
}

void WriteFile(const fs::path& path, const Bytes& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

Bytes PatternPage(uint8_t seed) {
  Bytes page(kPageSize);
  for (size_t i = 0; i < page.size(); ++i) page[i] = static_cast<uint8_t>(seed + i * 7);
  return page;
}

// A small HVM stream: PAGE_DATA (three pages, one of them zero), a record
// whose body needs padding, X86_TSC_INFO and END.
Bytes MakeStream(std::vector<Record> extra_before_memory = {}) {
  test::MemoryStream mem;
  StreamWriter w(&mem);
  w.WriteHeaders(ImageHeader{}, DomainHeader{});
  for (const Record& r : extra_before_memory) w.WriteRecord(r);
  PageDataBuilder b;
  Bytes p1 = PatternPage(1), p2 = PatternPage(2), zero(kPageSize, 0);
  b.Add(1, page_type::kNotab, p1.data());
  b.Add(2, page_type::kNotab, p2.data());
  b.Add(3, page_type::kNotab, zero.data());
  w.WriteRecord(b.Finish());
  w.WriteRecord(Record{rec::kHvmParams, Bytes(12, 0xAB)});
  w.WriteRecord(Record{rec::kX86TscInfo, Bytes(24, 0)});
  w.WriteRecord(Record{rec::kEnd, {}});
  return mem.data();
}

const Bytes kTrailer = {'L', 'I', 'B', 'X', 'L', '-', 'R', 'E', 'C', 'O', 'R', 'D', 'S', 0, 0, 0};

Bytes Concat(const Bytes& a, const Bytes& b) {
  Bytes out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

std::vector<Record> ParseRecords(const Bytes& data) {
  test::MemoryStream mem(data);
  StreamReader reader(&mem);
  ImageHeader ih;
  DomainHeader dh;
  reader.ReadHeaders(&ih, &dh);
  std::vector<Record> records;
  do {
    records.emplace_back();
    reader.ReadRecord(&records.back());
  } while (records.back().type != rec::kEnd);
  EXPECT_EQ(mem.remaining(), 0u);
  return records;
}

// Guest memory as a restore would see it: the last PAGE_DATA for each pfn.
std::map<Pfn, Bytes> PagesOf(const std::vector<Record>& records) {
  std::map<Pfn, Bytes> pages;
  for (const Record& r : records) {
    if (r.type != rec::kPageData) continue;
    PageDataView v = ParsePageData(r);
    for (size_t i = 0; i < v.pages.size(); ++i) {
      const uint8_t* d = v.PageData(i);
      if (d != nullptr) pages[v.pages[i].pfn] = Bytes(d, d + kPageSize);
    }
  }
  return pages;
}

std::vector<std::string> SaveArgv(int io_fd, uint32_t stream_type = 0) {
  return {kWrapper,
          "--save-domain",
          std::to_string(io_fd),
          "-1",
          "7",
          "5",
          "3",
          std::to_string(stream_type)};
}

std::vector<std::string> RestoreArgv(int io_fd, uint32_t stream_type = 0) {
  return {
      kWrapper, "--restore-domain",         std::to_string(io_fd), "-1", "7", "1", "0", "2", "0",
      "15",     std::to_string(stream_type)};
}

class SaveHelperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/p2bmig-save-helper-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    out_ = dir_ / "out";
    fs::create_directories(out_);
    fake_ = dir_ / "fake-libxl-save-helper";
    {
      std::ofstream f(fake_);
      f << kFakeHelper;
    }
    fs::permissions(fake_, fs::perms::owner_all);
    ASSERT_TRUE(fs::exists(kWrapper)) << kWrapper << " is not built";
    env_ = {{"FAKE_OUT", out_.string()},
            {"P2BMIG_REAL_SAVE_HELPER", fake_.string()},
            {"PATH", std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin"}};
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Starts the wrapper with `argv`, the test's environment, stdin from
  // `stdin_path`, stdout into `stdout_path`, stderr into `stderr_path` (if
  // given) and fd `io_fd` a dup of `io_src`. Returns its pid.
  pid_t Spawn(const std::vector<std::string>& argv, int io_fd, int io_src,
              const fs::path& stdin_path, const fs::path& stdout_path,
              const fs::path& stderr_path = {}) {
    std::vector<std::string> env_s;
    for (const auto& [k, v] : env_) env_s.push_back(k + "=" + v);
    std::vector<char*> args, envp;
    std::vector<std::string> argv_copy = argv;
    for (auto& s : argv_copy) args.push_back(s.data());
    args.push_back(nullptr);
    for (auto& s : env_s) envp.push_back(s.data());
    envp.push_back(nullptr);
    const int in = open(stdin_path.c_str(), O_RDONLY | O_CLOEXEC);
    const int out = open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int err = stderr_path.empty()
                        ? dup(2)
                        : open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    EXPECT_GE(in, 0);
    EXPECT_GE(out, 0);
    EXPECT_GE(err, 0);
    const pid_t pid = fork();
    if (pid == 0) {
      // Move the sources out of the way of the target numbers first.
      const int src = fcntl(io_src, F_DUPFD, 100);
      const int i = fcntl(in, F_DUPFD, 100);
      const int o = fcntl(out, F_DUPFD, 100);
      const int e = fcntl(err, F_DUPFD, 100);
      dup2(i, 0);
      dup2(o, 1);
      dup2(e, 2);
      dup2(src, io_fd);
      execve(args[0], args.data(), envp.data());
      _exit(126);
    }
    close(in);
    close(out);
    close(err);
    return pid;
  }

  static int Wait(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
  }

  // Runs the wrapper to the end; io_fd 5 is `io_src`.
  int Run(const std::vector<std::string>& argv, int io_src) {
    WriteFile(dir_ / "stdin", {'r', 'e', 'p', 'l', 'y', '\n'});
    return Wait(Spawn(argv, 5, io_src, dir_ / "stdin", dir_ / "stdout"));
  }

  void WaitForFile(const fs::path& path) {
    for (int i = 0; i < 1000 && !fs::exists(path); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(fs::exists(path)) << path;
  }

  fs::path dir_, out_, fake_;
  std::map<std::string, std::string> env_;
};

// --- Command line and copy logic --------------------------------------------

TEST(SaveHelperArgsTest, ParsesXen417CommandLines) {
  const std::vector<std::string> save = {"w", "--save-domain", "17", "-1", "42", "5", "3", "0"};
  HelperArgs a = ParseHelperArgs(save);
  EXPECT_EQ(a.op, HelperOp::kSave);
  EXPECT_EQ(a.io_fd, 17);
  EXPECT_EQ(a.back_fd, -1);
  EXPECT_EQ(a.domid, 42u);
  EXPECT_FALSE(a.checkpointed());
  EXPECT_EQ(a.argv, save);

  const std::vector<std::string> restore = {
      "w", "--restore-domain", "9", "11", "43", "1", "0", "2", "0", "15", "2"};
  HelperArgs r = ParseHelperArgs(restore);
  EXPECT_EQ(r.op, HelperOp::kRestore);
  EXPECT_EQ(r.io_fd, 9);
  EXPECT_EQ(r.back_fd, 11);
  EXPECT_EQ(r.domid, 43u);
  EXPECT_EQ(r.stream_type, 2u);
  EXPECT_TRUE(r.checkpointed());
}

TEST(SaveHelperArgsTest, RejectsOtherCommandLines) {
  auto expect_bad = [](std::vector<std::string> argv, const std::string& needle) {
    try {
      ParseHelperArgs(argv);
      ADD_FAILURE() << "accepted " << argv.size() << " args";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_bad({"w"}, "no mode");
  expect_bad({"w", "--frobnicate", "1"}, "unknown mode");
  // Xen 4.13 and older passed max_iters and max_factor as well.
  expect_bad({"w", "--save-domain", "3", "-1", "1", "30", "3", "0", "0", "0"}, "takes 6");
  expect_bad({"w", "--save-domain", "x3", "-1", "1", "0", "0", "0"}, "io_fd");
  expect_bad({"w", "--save-domain", "-3", "-1", "1", "0", "0", "0"}, "negative");
}

TEST(SaveHelperArgsTest, SplitDiskList) {
  EXPECT_EQ(SplitDiskList("/a.img,nfs://h/e/b.img,,/c"),
            (std::vector<std::string>{"/a.img", "nfs://h/e/b.img", "/c"}));
  EXPECT_TRUE(SplitDiskList("").empty());
}

TEST(SaveHelperCopyTest, StopsAfterEndLeavingTrailingBytes) {
  const Bytes stream = MakeStream();
  test::MemoryStream in(Concat(stream, kTrailer));
  test::MemoryStream out;
  CopyStats st = CopyLibxcStream(&in, &out);
  EXPECT_EQ(out.data(), stream);
  EXPECT_EQ(st.bytes, stream.size());
  EXPECT_EQ(st.records, 4u);
  EXPECT_EQ(in.remaining(), kTrailer.size());
}

TEST(SaveHelperCopyTest, TruncatedStreamIsAnError) {
  Bytes stream = MakeStream();
  stream.resize(stream.size() - 8);  // END's header is missing
  test::MemoryStream in(stream);
  test::MemoryStream out;
  EXPECT_THROW(CopyLibxcStream(&in, &out), Error);
}

// --- The wrapper program with a fake real helper ---------------------------

TEST_F(SaveHelperTest, SavePassThroughIsByteIdentical) {
  const Bytes stream = MakeStream();
  WriteFile(dir_ / "stream", stream);
  env_["FAKE_STREAM"] = (dir_ / "stream").string();
  const int io = open((dir_ / "saved").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(io, 0);
  const int status = Run(SaveArgv(5), io);
  close(io);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(ReadFile(dir_ / "saved"), stream);
  // Same command line, io_fd now a pipe; stdin and stdout are the caller's.
  EXPECT_EQ(ReadText(out_ / "argv"), "--save-domain 5 -1 7 5 3 0\n");
  EXPECT_EQ(ReadText(out_ / "io_kind"), "pipe\n");
  EXPECT_EQ(ReadText(dir_ / "stdout"), "callback-from-fake\n");
  EXPECT_EQ(ReadText(out_ / "stdin"), "reply\n");
}

TEST_F(SaveHelperTest, RestorePassThroughStopsAtEnd) {
  const Bytes stream = MakeStream();
  WriteFile(dir_ / "incoming", Concat(stream, kTrailer));
  const int io = open((dir_ / "incoming").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(io, 0);
  const int status = Run(RestoreArgv(5), io);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(ReadFile(out_ / "received"), stream);
  EXPECT_EQ(ReadText(out_ / "argv"), "--restore-domain 5 -1 7 1 0 2 0 15 0\n");
  // The file offset is shared with the caller: what follows END is unread.
  Bytes rest(64);
  const ssize_t n = read(io, rest.data(), rest.size());
  close(io);
  ASSERT_EQ(n, static_cast<ssize_t>(kTrailer.size()));
  rest.resize(static_cast<size_t>(n));
  EXPECT_EQ(rest, kTrailer);
}

TEST_F(SaveHelperTest, RestoreOverAPipeLeavesTrailingBytesInThePipe) {
  const Bytes stream = MakeStream();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  const Bytes all = Concat(stream, kTrailer);
  ASSERT_EQ(write(p[1], all.data(), all.size()), static_cast<ssize_t>(all.size()));
  const int status = Run(RestoreArgv(5), p[0]);
  close(p[1]);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(ReadFile(out_ / "received"), stream);
  Bytes rest(64);
  const ssize_t n = read(p[0], rest.data(), rest.size());
  close(p[0]);
  ASSERT_EQ(n, static_cast<ssize_t>(kTrailer.size()));
}

TEST_F(SaveHelperTest, ExitStatusPropagates) {
  WriteFile(dir_ / "stream", MakeStream());
  env_["FAKE_STREAM"] = (dir_ / "stream").string();
  env_["FAKE_EXIT"] = "3";
  const int io = open("/dev/null", O_WRONLY | O_CLOEXEC);
  int status = Run(SaveArgv(5), io);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 3);

  env_.erase("FAKE_EXIT");
  env_["FAKE_ACTION"] = "die";
  status = Run(SaveArgv(5), io);
  close(io);
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
}

TEST_F(SaveHelperTest, SigtermReachesTheRealHelper) {
  env_["FAKE_ACTION"] = "trap-term";
  WriteFile(dir_ / "stdin", {});
  const int io = open("/dev/null", O_WRONLY | O_CLOEXEC);
  const pid_t pid = Spawn(SaveArgv(5), 5, io, dir_ / "stdin", dir_ / "stdout");
  close(io);
  WaitForFile(out_ / "ready");
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  const int status = Wait(pid);
  EXPECT_EQ(ReadText(out_ / "signal"), "TERM\n");
  // The real helper exits 0 after reporting the failure to libxl; the
  // wrapper was stopped, so it does not claim success.
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
}

TEST_F(SaveHelperTest, SigtermStopsARestoreBlockedOnItsPeer) {
  env_["FAKE_ACTION"] = "block";
  WriteFile(dir_ / "stdin", {});
  int p[2];  // the peer: connected, silent
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  const pid_t pid = Spawn(RestoreArgv(5), 5, p[0], dir_ / "stdin", dir_ / "stdout");
  WaitForFile(out_ / "ready");
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  const int status = Wait(pid);
  close(p[0]);
  close(p[1]);
  // The real restore helper dies of SIGTERM; so does the wrapper.
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

TEST_F(SaveHelperTest, CheckpointedStreamsAndExecModeGoStraightToTheRealHelper) {
  WriteFile(dir_ / "stream", MakeStream());
  env_["FAKE_STREAM"] = (dir_ / "stream").string();
  const int io = open((dir_ / "saved").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int status = Run(SaveArgv(5, /*stream_type=*/1), io);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(ReadText(out_ / "io_kind"), "other\n");

  env_["P2BMIG_MODE"] = "exec";
  status = Run(SaveArgv(5), io);
  close(io);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(ReadText(out_ / "io_kind"), "other\n");
}

TEST_F(SaveHelperTest, UnknownModeAndMissingHelperFailWithoutStartingIt) {
  const int io = open("/dev/null", O_WRONLY | O_CLOEXEC);
  env_["P2BMIG_MODE"] = "turbo";
  int status = Run(SaveArgv(5), io);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 2);

  env_["P2BMIG_MODE"] = "off";
  env_["P2BMIG_REAL_SAVE_HELPER"] = (dir_ / "no-such-helper").string();
  status = Run(SaveArgv(5), io);
  close(io);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_FALSE(fs::exists(out_ / "argv"));
}

TEST_F(SaveHelperTest, P2bmigSaveWithoutXenFailsBeforeStartingTheHelper) {
  struct stat st;
  if (stat("/dev/xen/privcmd", &st) == 0) GTEST_SKIP() << "this is a Xen dom0";
  env_["P2BMIG_MODE"] = "p2bmig";
  const int io = open("/dev/null", O_WRONLY | O_CLOEXEC);
  WriteFile(dir_ / "stdin", {});
  const pid_t pid = Spawn(SaveArgv(5), 5, io, dir_ / "stdin", dir_ / "stdout", dir_ / "stderr");
  close(io);
  const int status = Wait(pid);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(ReadText(dir_ / "stderr").find("is this a Xen dom0?"), std::string::npos)
      << ReadText(dir_ / "stderr");
  // The guest was never touched: the real helper did not start.
  EXPECT_FALSE(fs::exists(out_ / "argv"));
}

TEST_F(SaveHelperTest, P2bmigRestoreWithoutXenFailsBeforeStartingTheHelper) {
  // The restore's pfn bound comes from the domain libxl created; without Xen
  // there is none, and nothing may reach the real helper.
  struct stat st;
  if (stat("/dev/xen/privcmd", &st) == 0) GTEST_SKIP() << "this is a Xen dom0";
  WriteFile(dir_ / "disk.img", Bytes(4 * kPageSize, 1));
  WriteFile(dir_ / "stdin", {});
  WriteFile(dir_ / "incoming", MakeStream());
  env_["P2BMIG_MODE"] = "p2bmig";
  env_["P2BMIG_DISKS"] = (dir_ / "disk.img").string();
  const int io = open((dir_ / "incoming").c_str(), O_RDONLY | O_CLOEXEC);
  const pid_t pid = Spawn(RestoreArgv(5), 5, io, dir_ / "stdin", dir_ / "stdout", dir_ / "stderr");
  close(io);
  const int status = Wait(pid);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(ReadText(dir_ / "stderr").find("is this a Xen dom0?"), std::string::npos)
      << ReadText(dir_ / "stderr");
  EXPECT_FALSE(fs::exists(out_ / "argv"));
}

// Restores `stream` in-process in "p2bmig" mode with the pfn bound `bound`
// (what XenRestorePfnBound would give) and the one disk at `disk`.
HelperOutcome RestoreInProcess(const fs::path& fake, const fs::path& out, const fs::path& input,
                               const fs::path& disk, uint64_t bound, uint32_t* bound_domid) {
  setenv("FAKE_OUT", out.c_str(), 1);
  setenv("FAKE_SKIP_STDIO", "1", 1);  // stdin/stdout are the test runner's
  const int io = open(input.c_str(), O_RDONLY | O_CLOEXEC);
  SaveHelperConfig config;
  config.mode = WrapMode::kP2bmig;
  config.real_helper = fake.string();
  config.disks = {disk.string()};
  SaveHelperHooks hooks;
  hooks.restore_pfn_bound = [&](uint32_t domid) {
    *bound_domid = domid;
    return bound;
  };
  HelperOutcome outcome = RunSaveHelper(ParseHelperArgs(RestoreArgv(io)), config, hooks);
  close(io);
  unsetenv("FAKE_OUT");
  unsetenv("FAKE_SKIP_STDIO");
  return outcome;
}

TEST_F(SaveHelperTest, P2bmigRestoreResolvesMappingsFromTheDisks) {
  // A 64 KiB image; pfn 5 is mapped to its block 3.
  Bytes disk(16 * kPageSize);
  for (size_t i = 0; i < disk.size(); ++i) disk[i] = static_cast<uint8_t>(i * 13 + 5);
  WriteFile(dir_ / "disk.img", disk);
  const uint8_t* block3 = disk.data() + 3 * kPageSize;
  const uint64_t sizes[] = {disk.size()};
  const PageMapping mapping{5, page_type::kNotab, BlockAddr{0, 3}, PageHash(block3)};
  const Bytes stream = MakeStream(
      {MakeP2bDisks(sizes), MakePageMappings(std::span<const PageMapping>(&mapping, 1))});
  WriteFile(dir_ / "incoming", Concat(stream, kTrailer));
  uint32_t bound_domid = 0;
  const HelperOutcome outcome =
      RestoreInProcess(fake_, out_, dir_ / "incoming", dir_ / "disk.img", 6, &bound_domid);
  EXPECT_EQ(outcome.exit_code, 0) << outcome.error;
  EXPECT_EQ(outcome.signal, 0);
  EXPECT_EQ(bound_domid, 7u);

  const std::vector<Record> records = ParseRecords(ReadFile(out_ / "received"));
  for (const Record& r : records) {
    EXPECT_LT(r.type, rec::kP2bDisks) << "p2bmig record " << RecordTypeName(r.type) << " left";
  }
  std::map<Pfn, Bytes> pages = PagesOf(records);
  ASSERT_EQ(pages.count(5), 1u);
  EXPECT_EQ(pages[5], Bytes(block3, block3 + kPageSize));
  EXPECT_EQ(pages[1], PatternPage(1));
  EXPECT_EQ(records.back().type, rec::kEnd);
}

TEST_F(SaveHelperTest, P2bmigRestoreRefusesPfnsBeyondTheDomain) {
  // The same stream into a domain of 5 pfns: pfn 5 is outside, refused
  // before anything is fetched for it (invariant I5).
  Bytes disk(16 * kPageSize, 7);
  WriteFile(dir_ / "disk.img", disk);
  const uint64_t sizes[] = {disk.size()};
  const PageMapping mapping{5, page_type::kNotab, BlockAddr{0, 3}, PageHash(disk.data())};
  WriteFile(dir_ / "incoming",
            MakeStream({MakeP2bDisks(sizes),
                        MakePageMappings(std::span<const PageMapping>(&mapping, 1))}));
  uint32_t bound_domid = 0;
  const HelperOutcome outcome =
      RestoreInProcess(fake_, out_, dir_ / "incoming", dir_ / "disk.img", 5, &bound_domid);
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_NE(outcome.error.find("pfn"), std::string::npos) << outcome.error;
  // The real helper never saw a page for pfn 5.
  if (fs::exists(out_ / "received")) {
    std::map<Pfn, Bytes> pages;
    try {
      pages = PagesOf(ParseRecords(ReadFile(out_ / "received")));
    } catch (const Error&) {
      // A stream cut short: fine, as long as pfn 5 is not in it.
    }
    EXPECT_EQ(pages.count(5), 0u);
  }
}

TEST_F(SaveHelperTest, P2bmigRestoreRefusesAStreamForOtherDisks) {
  const uint64_t sizes[] = {1u << 20};
  WriteFile(dir_ / "disk.img", Bytes(4 * kPageSize, 1));
  WriteFile(dir_ / "incoming", MakeStream({MakeP2bDisks(sizes)}));
  uint32_t bound_domid = 0;
  const HelperOutcome outcome =
      RestoreInProcess(fake_, out_, dir_ / "incoming", dir_ / "disk.img", 1u << 20, &bound_domid);
  EXPECT_NE(outcome.exit_code, 0);
}

// A domain in memory, for the save side of "p2bmig" mode without Xen.
class FakeDomain : public Domain {
 public:
  std::string name() const override { return "fake"; }
  DomainType type() const override { return DomainType::kX86Hvm; }
  uint64_t nr_pfns() const override { return 16; }
  std::vector<uint64_t> DiskSizes() const override { return {1u << 20}; }
  void ReadPages(std::span<const Pfn> pfns, uint8_t* out) override {
    std::memset(out, 0, pfns.size() * kPageSize);
  }
  void EnableLogDirty() override {}
  void DisableLogDirty() override {}
  void PeekAndCleanDirty(std::vector<Pfn>* dirty) override { dirty->clear(); }
  void MarkDirty(std::span<const Pfn>) override {}
  void Pause() override {}
  void Resume() override {}
  void FlushDisks() override { ++flushes; }
  int flushes = 0;
};

TEST_F(SaveHelperTest, P2bmigSaveFiltersTheStream) {
  const Bytes stream = MakeStream();
  WriteFile(dir_ / "stream", stream);
  // In-process: the fake helper reads its settings from our environment.
  setenv("FAKE_OUT", out_.c_str(), 1);
  setenv("FAKE_STREAM", (dir_ / "stream").c_str(), 1);
  setenv("FAKE_SKIP_STDIO", "1", 1);  // stdin/stdout are the test runner's
  const int io = open((dir_ / "saved").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(io, 0);
  SaveHelperConfig config;
  config.mode = WrapMode::kP2bmig;
  config.real_helper = fake_.string();
  config.tracking.source = TrackingSource::kNone;  // an explicitly empty map
  FakeDomain* opened = nullptr;
  SaveHelperHooks hooks;
  hooks.open_domain = [&](uint32_t domid, const std::vector<std::string>&) {
    EXPECT_EQ(domid, 7u);
    auto d = std::make_unique<FakeDomain>();
    opened = d.get();
    return std::unique_ptr<Domain>(std::move(d));
  };
  HelperOutcome outcome = RunSaveHelper(ParseHelperArgs(SaveArgv(io)), config, hooks);
  close(io);
  unsetenv("FAKE_OUT");
  unsetenv("FAKE_STREAM");
  unsetenv("FAKE_SKIP_STDIO");
  EXPECT_EQ(outcome.exit_code, 0) << outcome.error;
  EXPECT_EQ(outcome.signal, 0);
  ASSERT_NE(opened, nullptr);

  const std::vector<Record> records = ParseRecords(ReadFile(dir_ / "saved"));
  ASSERT_GE(records.size(), 5u);
  EXPECT_EQ(records[0].type, rec::kP2bDisks);
  bool zero_record = false;
  for (const Record& r : records) {
    if (r.type == rec::kP2bZeroPages) {
      zero_record = true;
      std::vector<PageRef> zeros = ParseZeroPages(r);
      ASSERT_EQ(zeros.size(), 1u);
      EXPECT_EQ(zeros[0].pfn, 3u);
    }
  }
  EXPECT_TRUE(zero_record);
  std::map<Pfn, Bytes> pages = PagesOf(records);
  EXPECT_EQ(pages.size(), 2u);
  EXPECT_EQ(pages[2], PatternPage(2));
}

TEST_F(SaveHelperTest, P2bmigSaveOfABadStreamFails) {
  Bytes bad = MakeStream();
  bad[0] = 0;  // not a libxc image header
  WriteFile(dir_ / "stream", bad);
  setenv("FAKE_OUT", out_.c_str(), 1);
  setenv("FAKE_STREAM", (dir_ / "stream").c_str(), 1);
  setenv("FAKE_SKIP_STDIO", "1", 1);
  const int io = open("/dev/null", O_WRONLY | O_CLOEXEC);
  SaveHelperConfig config;
  config.mode = WrapMode::kP2bmig;
  config.real_helper = fake_.string();
  config.tracking.source = TrackingSource::kNone;
  SaveHelperHooks hooks;
  hooks.open_domain = [](uint32_t, const std::vector<std::string>&) {
    return std::unique_ptr<Domain>(std::make_unique<FakeDomain>());
  };
  HelperOutcome outcome = RunSaveHelper(ParseHelperArgs(SaveArgv(io)), config, hooks);
  close(io);
  unsetenv("FAKE_OUT");
  unsetenv("FAKE_STREAM");
  unsetenv("FAKE_SKIP_STDIO");
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_EQ(outcome.signal, 0);
  EXPECT_NE(outcome.error.find("image marker"), std::string::npos) << outcome.error;
}

// Hint-free mode end to end, where this machine allows it (root, tracefs,
// loop devices): the disk is an image behind a loop device, as xen-blkback
// serves a file disk; page 2 of the stream equals block 5 of the image and
// must leave as a mapping, page 1 (on no block) as data.
TEST_F(SaveHelperTest, P2bmigSaveHintFreeSendsMappingsFromTheIndex) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (tracefs, loop devices)";
  Bytes image(64 * kPageSize, 0x5A);
  const Bytes p2 = PatternPage(2);
  std::copy(p2.begin(), p2.end(), image.begin() + 5 * kPageSize);
  WriteFile(dir_ / "disk.img", image);
  FILE* losetup =
      popen(("losetup -f --show " + (dir_ / "disk.img").string() + " 2>/dev/null").c_str(), "r");
  char dev[64] = {0};
  if (losetup == nullptr || fgets(dev, sizeof(dev), losetup) == nullptr) {
    if (losetup != nullptr) pclose(losetup);
    GTEST_SKIP() << "no loop device";
  }
  pclose(losetup);
  std::string loop = dev;
  while (!loop.empty() && loop.back() == '\n') loop.pop_back();
  struct Detach {
    std::string dev;
    ~Detach() { std::system(("losetup -d " + dev).c_str()); }
  } detach{loop};
  if (!fs::exists("/sys/kernel/tracing/instances") &&
      !fs::exists("/sys/kernel/debug/tracing/instances")) {
    GTEST_SKIP() << "no tracefs";
  }
  EXPECT_EQ(BlockDeviceOf((dir_ / "disk.img").string()), loop);

  WriteFile(dir_ / "stream", MakeStream());
  setenv("FAKE_OUT", out_.c_str(), 1);
  setenv("FAKE_STREAM", (dir_ / "stream").c_str(), 1);
  setenv("FAKE_SKIP_STDIO", "1", 1);
  const int io = open((dir_ / "saved").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  SaveHelperConfig config;
  config.mode = WrapMode::kP2bmig;
  config.real_helper = fake_.string();
  config.disks = {(dir_ / "disk.img").string()};
  config.tracking.source = TrackingSource::kIndex;
  SaveHelperHooks hooks;
  hooks.open_domain = [](uint32_t, const std::vector<std::string>&) {
    return std::unique_ptr<Domain>(std::make_unique<FakeDomain>());
  };
  HelperOutcome outcome = RunSaveHelper(ParseHelperArgs(SaveArgv(io)), config, hooks);
  close(io);
  unsetenv("FAKE_OUT");
  unsetenv("FAKE_STREAM");
  unsetenv("FAKE_SKIP_STDIO");
  ASSERT_EQ(outcome.exit_code, 0) << outcome.error;

  std::vector<PageMapping> mappings;
  for (const Record& r : ParseRecords(ReadFile(dir_ / "saved"))) {
    if (r.type == rec::kP2bPageMappings) {
      for (const PageMapping& m : ParsePageMappings(r)) mappings.push_back(m);
    }
  }
  ASSERT_EQ(mappings.size(), 1u);
  EXPECT_EQ(mappings[0].pfn, 2u);
  EXPECT_EQ(mappings[0].addr, (BlockAddr{0, 5}));
  std::map<Pfn, Bytes> pages = PagesOf(ParseRecords(ReadFile(dir_ / "saved")));
  EXPECT_EQ(pages.count(2), 0u);
  EXPECT_EQ(pages[1], PatternPage(1));
}

TEST(SaveHelperHintFreeTest, BlockDeviceOfAnImageWithoutLoopIsAClearError) {
  test::TempDir dir;
  const std::string image = dir.File("lonely.img");
  std::ofstream(image) << "x";
  try {
    BlockDeviceOf(image);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no loop device backs"), std::string::npos) << e.what();
  }
  EXPECT_THROW(BlockDeviceOf(dir.File("missing.img")), Error);
}

}  // namespace
}  // namespace p2bmig
