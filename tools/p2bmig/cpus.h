// Pinning a host process to CPUs, so that the simulated source and target
// hosts on one machine do not take each other's cores, as two hosts would not.

#ifndef P2BMIG_TOOLS_CPUS_H_
#define P2BMIG_TOOLS_CPUS_H_

#include <string>

namespace p2bmig::cli {

// Pins the calling process (and the threads it starts later) to the CPUs in
// `list` ("0", "1,3", "0-2"). An empty list changes nothing. Throws
// Error(kInvalidArgument) for a malformed list or CPUs that do not exist.
void PinToCpus(const std::string& list);

}  // namespace p2bmig::cli

#endif  // P2BMIG_TOOLS_CPUS_H_
