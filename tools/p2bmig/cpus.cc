#include "cpus.h"

#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <sched.h>

#include <p2bmig/types.h>

namespace p2bmig::cli {

void PinToCpus(const std::string& list) {
  if (list.empty()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  std::stringstream in(list);
  auto bad = [&] {
    return Error(ErrorKind::kInvalidArgument, fmt::format("bad CPU list '{}'", list));
  };
  for (std::string item; std::getline(in, item, ',');) {
    size_t dash = item.find('-');
    int lo = 0, hi = 0;
    try {
      size_t used = 0;
      lo = std::stoi(item.substr(0, dash), &used);
      if (used != item.substr(0, dash).size()) throw bad();
      hi = lo;
      if (dash != std::string::npos) {
        hi = std::stoi(item.substr(dash + 1), &used);
        if (used != item.size() - dash - 1) throw bad();
      }
    } catch (const std::logic_error&) {
      throw bad();
    }
    if (lo < 0 || hi < lo || hi >= CPU_SETSIZE) throw bad();
    for (int c = lo; c <= hi; ++c) CPU_SET(c, &set);
  }
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("cannot run on CPUs {}: {}", list, std::strerror(errno)));
  }
}

}  // namespace p2bmig::cli
