// `p2bmig demo`: the main job. Migrates a simulated guest from a source host
// process to a target host process over TCP on this machine, once with stock
// pre-copy (baseline) and once with p2bmig, on the same workload, link and
// disk image, checks that the target's memory equals the source's at pause
// time byte for byte, and prints the two side by side.

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p2bmig/transport.h>
#include <p2bmig/types.h>

#include "commands.h"
#include "sim/content.h"
#include "sim/resumed_guest.h"
#include "units.h"

extern char** environ;

namespace p2bmig::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct DemoArgs {
  std::string memory = "512M";
  std::string disk_size = "1G";
  std::string workload = "fileserver";
  std::string link = "1gbit";
  std::string dir = "/tmp/p2bmig-demo";
  std::string nfs;
  std::string modes = "baseline,p2bmig";
  uint64_t seed = 1;
  int runs = 1;
  std::string lazy_max_unfetched;  // empty: send's default
  bool json = false;
  bool keep = false;
};

struct Child {
  pid_t pid = -1;
  int out_fd = -1;
};

Child Spawn(const std::vector<std::string>& args) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw Error(ErrorKind::kIo, "pipe failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid;
  int rc = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw Error(ErrorKind::kInternal, fmt::format("cannot start {}: {}", args[1], strerror(rc)));
  }
  return {pid, fds[0]};
}

// Waits for the child and returns its standard output; throws if it failed.
std::string Finish(Child c, const std::string& what) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(c.out_fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(c.out_fd);
  int status = 0;
  while (::waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw Error(ErrorKind::kInternal, fmt::format("the {} failed (see its message above)", what));
  }
  return out;
}

json LastJsonLine(const std::string& out, const std::string& what) {
  std::istringstream in(out);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '{') last = line;
  }
  try {
    return json::parse(last);
  } catch (const std::exception&) {
    throw Error(ErrorKind::kInternal, fmt::format("the {} printed no statistics", what));
  }
}

// Compares two memory files page by page; returns the number of pages that
// differ (or all of them if the sizes differ). `writes` (the guest's own
// writes on the target after a lazy restore) are replayed onto a's pages
// first.
uint64_t DifferingPages(const std::string& a, const std::string& b,
                        const std::vector<sim::MemoryAccess>& writes = {}) {
  auto map = [](const std::string& path, size_t* size) -> const uint8_t* {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(ErrorKind::kIo, fmt::format("cannot open {}", path));
    struct stat st {};
    ::fstat(fd, &st);
    *size = static_cast<size_t>(st.st_size);
    void* p = ::mmap(nullptr, *size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) throw Error(ErrorKind::kIo, fmt::format("cannot map {}", path));
    return static_cast<const uint8_t*>(p);
  };
  size_t sa = 0, sb = 0;
  const uint8_t* pa = map(a, &sa);
  const uint8_t* pb = map(b, &sb);
  uint64_t diff = 0;
  if (sa != sb) {
    diff = std::max(sa, sb) / kPageSize;
  } else {
    std::map<Pfn, std::vector<sim::MemoryAccess>> by_pfn;
    for (const sim::MemoryAccess& w : writes) by_pfn[w.pfn].push_back(w);
    std::vector<uint8_t> page(kPageSize);
    for (size_t off = 0; off < sa; off += kPageSize) {
      const uint8_t* expected = pa + off;
      auto it = by_pfn.find(off / kPageSize);
      if (it != by_pfn.end()) {
        std::memcpy(page.data(), expected, kPageSize);
        for (sim::MemoryAccess w : it->second) {
          w.pfn = 0;
          sim::ApplyGuestWrites(page.data(), 1, {w});
        }
        expected = page.data();
      }
      diff += std::memcmp(expected, pb + off, kPageSize) != 0 ? 1 : 0;
    }
  }
  ::munmap(const_cast<uint8_t*>(pa), sa);
  ::munmap(const_cast<uint8_t*>(pb), sb);
  return diff;
}

uint16_t FreePort() {
  TcpListener l("127.0.0.1", 0);
  return l.port();
}

// Where the target reads `image` from: the NFS URL with the file's name, or
// the path itself for a shared directory.
std::string TargetLocation(const DemoArgs& a, const std::string& image) {
  if (a.nfs.empty()) return image;
  std::string name = fs::path(image).filename();
  size_t q = a.nfs.find('?');
  std::string base = a.nfs.substr(0, q);
  std::string query = q == std::string::npos ? "" : a.nfs.substr(q);
  if (!base.ends_with('/')) base += '/';
  return base + name + query;
}

// A fresh pre-shared key for the demo's two hosts (TLS on the link, as
// between two real hosts), readable by us only.
std::string MakeDemoKey(const std::string& dir) {
  const std::string path = dir + "/.demo-link.psk";
  uint8_t key[32];
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::read(fd, key, sizeof(key)) != static_cast<ssize_t>(sizeof(key))) {
    if (fd >= 0) ::close(fd);
    throw Error(ErrorKind::kIo, "cannot read /dev/urandom");
  }
  ::close(fd);
  std::string hex;
  for (uint8_t b : key) hex += fmt::format("{:02x}", b);
  fs::remove(path);
  fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 || ::write(fd, hex.data(), hex.size()) != static_cast<ssize_t>(hex.size())) {
    if (fd >= 0) ::close(fd);
    throw Error(ErrorKind::kIo, fmt::format("cannot write {}", path));
  }
  ::close(fd);
  return path;
}

json RunMode(const DemoArgs& a, const std::string& mode, const std::string& image,
             const std::string& pristine) {
  fs::copy_file(pristine, image, fs::copy_options::overwrite_existing);
  const std::string src_mem = a.dir + "/source-" + mode + ".mem";
  const std::string dst_mem = a.dir + "/target-" + mode + ".mem";
  const std::string addr = fmt::format("127.0.0.1:{}", FreePort());
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  const std::string key = MakeDemoKey(a.dir);
  if (!a.json) std::cerr << fmt::format("{}: migrating...\n", mode);

  // With two or more CPUs, each host gets its own, as two machines would.
  const bool split = std::thread::hardware_concurrency() >= 2;
  std::vector<std::string> receive = {
      "p2bmig",        "receive",    "--listen", addr,
      "--memory",      a.memory,     "--disk",   TargetLocation(a, image),
      "--memory-file", dst_mem,      "--mode",   mode,
      "--workload",    a.workload,   "--seed",   std::to_string(a.seed),
      "--json",        "--psk-file", key};
  if (split) receive.insert(receive.end(), {"--cpus", "1"});
  Child target = Spawn(receive);
  std::vector<std::string> send = {"p2bmig",        "send",
                                   "--to",          addr,
                                   "--memory",      a.memory,
                                   "--disk",        image,
                                   "--memory-file", src_mem,
                                   "--workload",    a.workload,
                                   "--seed",        std::to_string(a.seed),
                                   "--mode",        mode,
                                   "--rate",        a.link,
                                   "--psk-file",    key,
                                   "--json"};
  if (tty && !a.json) send.push_back("--progress");
  if (mode == "lazy" && !a.lazy_max_unfetched.empty()) {
    send.insert(send.end(), {"--max-unfetched", a.lazy_max_unfetched});
  }
  if (split) send.insert(send.end(), {"--cpus", "0"});
  Child source = Spawn(send);
  std::string src_out, dst_out;
  std::exception_ptr failure;
  try {
    src_out = Finish(source, mode + " source");
  } catch (...) {
    failure = std::current_exception();
  }
  try {
    dst_out = Finish(target, mode + " target");
  } catch (...) {
    if (!failure) failure = std::current_exception();
  }
  fs::remove(key);
  if (failure) std::rethrow_exception(failure);
  json s = LastJsonLine(src_out, mode + " source");
  json t = LastJsonLine(dst_out, mode + " target");

  const bool lazy = t.value("lazy", false);
  const std::string writes_file = dst_mem + ".guest-writes";
  std::vector<sim::MemoryAccess> writes;
  if (lazy) writes = sim::LoadGuestWrites(writes_file);
  uint64_t differing = DifferingPages(src_mem, dst_mem, writes);
  if (!a.keep) {
    fs::remove(src_mem);
    fs::remove(dst_mem);
    fs::remove(writes_file);
  }
  int64_t start = s["start_ns"], pause = s["pause_ns"], resume = t["resume_ns"];
  // Total time runs until every page is present: at the resume, except in
  // lazy mode.
  int64_t complete = lazy ? t["all_present_ns"].get<int64_t>() : resume;
  json run = {
      {"mode", mode},
      {"total_time_s", static_cast<double>(complete - start) / 1e9},
      {"downtime_s", static_cast<double>(resume - pause) / 1e9},
      {"time_to_all_present_s", static_cast<double>(complete - resume) / 1e9},
      {"memory_ops_per_s_before", s["memory_ops_per_s"]},
      {"link_bytes", s["link_bytes"]},
      {"nas_bytes", t["nas_bytes"]},
      {"nas_reads", t["nas_reads"]},
      {"pages_data", s["pages_data"]},
      {"pages_mapped", s["pages_mapped"]},
      {"pages_zero", s["pages_zero"]},
      {"pages_resent", s["pages_resent"]},
      {"rounds", s["rounds"]},
      {"round_pages", s["round_pages"]},
      {"fetch_wait_s", t["fetch_wait_s"]},
      {"memory_identical", differing == 0},
      {"differing_pages", differing},
      {"guest_pages", s["guest_pages"]},
      {"p2b_map_bytes", s["p2b_map_bytes"]},
      {"p2b_entries", s["p2b_entries"]},
  };
  if (lazy) {
    for (const char* k : {"faults", "fault_latency_ms_p50", "fault_latency_ms_p99",
                          "missing_at_resume", "pages_fetched_after_resume", "pages_from_source",
                          "memory_ops_per_s_during", "memory_ops_per_s_after", "guest_writes"}) {
      run[k] = t[k];
    }
    run["pages_served_by_source"] = s["pages_served"];
  }
  return run;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Per mode, the median of every numeric field over the repetitions.
json Medians(const json& runs, const std::vector<std::string>& modes) {
  json out = json::array();
  for (const std::string& m : modes) {
    json med = {{"mode", m}};
    std::map<std::string, std::vector<double>> values;
    bool identical = true;
    int n = 0;
    for (const json& r : runs) {
      if (r["mode"] != m) continue;
      ++n;
      identical = identical && r["memory_identical"].get<bool>();
      for (auto it = r.begin(); it != r.end(); ++it) {
        if (it.value().is_number()) values[it.key()].push_back(it.value().get<double>());
      }
    }
    for (auto& [k, v] : values) med[k] = Median(v);
    med["memory_identical"] = identical;
    med["repetitions"] = n;
    out.push_back(med);
  }
  return out;
}

std::string Ratio(double a, double b) { return a > 0 ? fmt::format("{:.2f}", b / a) : "-"; }

void PrintTable(const json& result) {
  const json& runs = result["medians"];
  std::cout << fmt::format("\np2bmig demo: {} guest, workload '{}', link {}, shared storage {}\n\n",
                           FormatBytes(result["guest_memory_bytes"].get<double>()),
                           result["workload"].get<std::string>(),
                           FormatRate(result["link_bits_per_s"].get<uint64_t>()),
                           result["store"].get<std::string>());
  std::string header = fmt::format("{:<26}", "");
  for (const json& r : runs) header += fmt::format("{:>14}", r["mode"].get<std::string>());
  if (runs.size() == 2) header += fmt::format("{:>10}", "ratio");
  std::cout << header << "\n";
  auto row = [&](const std::string& name, auto value_of, auto format, bool ratio) {
    std::string line = fmt::format("{:<26}", name);
    std::vector<double> v;
    for (const json& r : runs) {
      v.push_back(value_of(r));
      line += fmt::format("{:>14}", format(v.back()));
    }
    if (runs.size() == 2 && ratio) line += fmt::format("{:>10}", Ratio(v[0], v[1]));
    std::cout << line << "\n";
  };
  auto num = [](const char* key) { return [key](const json& r) { return r[key].get<double>(); }; };
  auto secs = [](double s) {
    return s < 1 ? fmt::format("{:.1f} ms", s * 1e3) : fmt::format("{:.2f} s", s);
  };
  auto bytes = [](double b) { return FormatBytes(b); };
  auto count = [](double c) { return fmt::format("{:.0f}", c); };
  row("total migration time", num("total_time_s"), secs, true);
  row("downtime", num("downtime_s"), secs, true);
  row("bytes on the link", num("link_bytes"), bytes, true);
  row("bytes read from storage", num("nas_bytes"), bytes, false);
  row("pages sent as data", num("pages_data"), count, true);
  row("pages sent as mappings", num("pages_mapped"), count, false);
  row("pages sent as zero", num("pages_zero"), count, false);
  row("rounds", num("rounds"), count, false);
  bool any_lazy = false;
  for (const json& r : runs) any_lazy = any_lazy || r["mode"] == "lazy";
  if (any_lazy) {
    auto opt = [](const char* key) {
      return [key](const json& r) { return r.contains(key) ? r[key].get<double>() : 0.0; };
    };
    auto ms = [](double v) { return fmt::format("{:.2f} ms", v); };
    auto rate = [](double v) { return v > 0 ? fmt::format("{:.0f}", v) : std::string("-"); };
    row("time to all present", num("time_to_all_present_s"), secs, false);
    row("faults (lazy)", opt("faults"), count, false);
    row("fault latency p50", opt("fault_latency_ms_p50"), ms, false);
    row("fault latency p99", opt("fault_latency_ms_p99"), ms, false);
    row("guest mem ops/s before", num("memory_ops_per_s_before"), rate, false);
    row("  during (lazy)", opt("memory_ops_per_s_during"), rate, false);
    row("  after (lazy)", opt("memory_ops_per_s_after"), rate, false);
  }
  std::string line = fmt::format("{:<26}", "target memory identical");
  for (const json& r : runs)
    line += fmt::format("{:>14}", r["memory_identical"].get<bool>() ? "yes" : "NO");
  std::cout << line << "\n\n";
  if (result["repetitions"].get<int>() > 1) {
    std::cout << fmt::format("Medians of {} runs per mode, interleaved.\n",
                             result["repetitions"].get<int>());
  }
  std::cout << "ratio = p2bmig / baseline. Memory is compared byte for byte with the source's at\n"
               "the moment it was paused (in lazy mode with the resumed guest's own writes\n"
               "replayed on top). Lazy mode: total time runs until every page is present.\n";
}

void RunDemo(const DemoArgs& a) {
  uint64_t memory = ParseSize(a.memory);
  uint64_t disk = ParseSize(a.disk_size) / kPageSize * kPageSize;
  uint64_t rate = ParseRate(a.link);
  if (memory < (64u << 20))
    throw Error(ErrorKind::kInvalidArgument, "--memory must be at least 64M");
  if (disk < (64u << 20))
    throw Error(ErrorKind::kInvalidArgument, "--disk-size must be at least 64M");
  std::vector<std::string> modes;
  std::stringstream ms(a.modes);
  for (std::string m; std::getline(ms, m, ',');) {
    if (m != "baseline" && m != "p2bmig" && m != "lazy") {
      throw Error(ErrorKind::kInvalidArgument, fmt::format("unknown mode '{}'", m));
    }
    modes.push_back(m);
  }
  fs::create_directories(a.dir);
  const std::string image = a.dir + "/disk0.img";
  const std::string pristine = a.dir + fmt::format("/.disk0-{}-{}.pristine", disk, a.seed);
  if (!fs::exists(pristine)) {
    if (!a.json)
      std::cerr << fmt::format("creating a {} disk image in {}...\n", FormatBytes(double(disk)),
                               a.dir);
    sim::CreateDiskImage(pristine, disk, a.seed);
  }
  json result = {
      {"store", a.nfs.empty() ? a.dir : TargetLocation(a, image)},
      {"workload", a.workload},
      {"guest_memory_bytes", memory},
      {"link_bits_per_s", rate},
      {"seed", a.seed},
      {"runs", json::array()},
  };
  if (a.runs < 1) throw Error(ErrorKind::kInvalidArgument, "--runs must be at least 1");
  result["repetitions"] = a.runs;
  bool identical = true;
  for (int rep = 0; rep < a.runs; ++rep) {
    for (const std::string& m : modes) {
      json run = RunMode(a, m, image, pristine);
      run["repetition"] = rep;
      identical = identical && run["memory_identical"].get<bool>();
      result["runs"].push_back(run);
    }
  }
  result["medians"] = Medians(result["runs"], modes);
  if (a.json) {
    std::cout << result.dump(2) << std::endl;
  } else {
    PrintTable(result);
  }
  if (!identical) {
    throw Error(ErrorKind::kVerification, "target memory differs from the source's");
  }
}

}  // namespace

void AddDemoCommand(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  CLI::App* cmd = app.add_subcommand(
      "demo",
      "Migrate a simulated guest between two host processes, stock pre-copy vs p2bmig, "
      "and compare");
  cmd->add_option("--memory", a->memory, "Guest memory size")->capture_default_str();
  cmd->add_option("--disk-size", a->disk_size, "Size of the guest's disk image")
      ->capture_default_str();
  cmd->add_option("--workload", a->workload, "What the guest does")->capture_default_str();
  cmd->add_option("--link", a->link, "Migration link speed (e.g. 1gbit, 10gbit, off)")
      ->capture_default_str();
  cmd->add_option("--dir", a->dir,
                  "Shared directory holding the disk image (and memory files while running)")
      ->capture_default_str();
  cmd->add_option("--nfs", a->nfs,
                  "The target reads the shared directory through this NFS export URL "
                  "(e.g. nfs://127.0.0.1/export?version=3&nfsport=2049&mountport=20048)");
  cmd->add_option("--modes", a->modes, "Modes to run, comma separated (baseline, p2bmig, lazy)")
      ->capture_default_str();
  cmd->add_option("--runs", a->runs, "Runs per mode (interleaved); the table shows medians")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the guest, its disk and its workload")
      ->capture_default_str();
  cmd->add_option("--lazy-max-unfetched", a->lazy_max_unfetched,
                  "Lazy mode: the source's flow control limit (p2bmig send --max-unfetched)");
  cmd->add_flag("--json", a->json, "Print the results as JSON");
  cmd->add_flag("--keep", a->keep, "Keep the memory files of source and target");
  cmd->callback([a] { RunDemo(*a); });
}

}  // namespace p2bmig::cli
