#include "units.h"

#include <cctype>

#include <fmt/format.h>

#include <p2bmig/types.h>

namespace p2bmig::cli {
namespace {

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Splits "12.5gbit" into 12.5 and "gbit"; throws on a missing number.
double SplitNumber(const std::string& text, std::string* suffix) {
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    throw Error(ErrorKind::kInvalidArgument, fmt::format("'{}' is not a number", text));
  }
  if (value < 0) throw Error(ErrorKind::kInvalidArgument, fmt::format("'{}' is negative", text));
  *suffix = Lower(text.substr(pos));
  return value;
}

}  // namespace

uint64_t ParseSize(const std::string& text) {
  std::string suffix;
  double v = SplitNumber(text, &suffix);
  for (const char* tail : {"ib", "b"}) {
    if (suffix.size() > 1 && suffix.ends_with(tail)) {
      suffix.resize(suffix.size() - std::string(tail).size());
      break;
    }
  }
  double mult = 1;
  if (suffix.empty() || suffix == "b")
    mult = 1;
  else if (suffix == "k")
    mult = 1024.0;
  else if (suffix == "m")
    mult = 1024.0 * 1024;
  else if (suffix == "g")
    mult = 1024.0 * 1024 * 1024;
  else if (suffix == "t")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else
    throw Error(ErrorKind::kInvalidArgument, fmt::format("unknown size unit in '{}'", text));
  return static_cast<uint64_t>(v * mult);
}

uint64_t ParseRate(const std::string& text) {
  std::string t = Lower(text);
  if (t == "off" || t == "unlimited" || t == "0") return 0;
  std::string suffix;
  double v = SplitNumber(t, &suffix);
  for (const char* tail : {"bit/s", "bps", "bit", "b"}) {
    if (suffix.ends_with(tail)) {
      suffix.resize(suffix.size() - std::string(tail).size());
      break;
    }
  }
  double mult = 1;
  if (suffix.empty())
    mult = 1;
  else if (suffix == "k")
    mult = 1e3;
  else if (suffix == "m")
    mult = 1e6;
  else if (suffix == "g")
    mult = 1e9;
  else
    throw Error(ErrorKind::kInvalidArgument, fmt::format("unknown rate unit in '{}'", text));
  return static_cast<uint64_t>(v * mult);
}

std::string FormatBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, units[u]);
}

std::string FormatRate(uint64_t bps) {
  if (bps == 0) return "unlimited";
  if (bps >= 1'000'000'000) return fmt::format("{:g} Gbit/s", static_cast<double>(bps) / 1e9);
  if (bps >= 1'000'000) return fmt::format("{:g} Mbit/s", static_cast<double>(bps) / 1e6);
  return fmt::format("{:g} kbit/s", static_cast<double>(bps) / 1e3);
}

}  // namespace p2bmig::cli
