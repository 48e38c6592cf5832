// Parsing of sizes ("512M", "4GiB") and link rates ("1gbit", "10G", "off")
// for the command line.

#ifndef P2BMIG_TOOLS_UNITS_H_
#define P2BMIG_TOOLS_UNITS_H_

#include <cstdint>
#include <string>

namespace p2bmig::cli {

// Bytes; suffixes K, M, G, T (powers of 1024), optional "iB"/"B".
uint64_t ParseSize(const std::string& text);
// Bits per second; suffixes k, m, g (powers of 1000) with optional "bit"/"bps";
// "0", "off" and "unlimited" mean no limit (returns 0).
uint64_t ParseRate(const std::string& text);
std::string FormatBytes(double bytes);
std::string FormatRate(uint64_t bits_per_second);

}  // namespace p2bmig::cli

#endif  // P2BMIG_TOOLS_UNITS_H_
