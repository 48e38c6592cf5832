// The wrapper save/restore helper: what `p2bmig-save-helper` runs when libxl
// starts it through LIBXL_SAVE_HELPER (docs/xen-integration.md).
//
// It starts Debian's real libxl-save-helper with the same command line, except
// that the real helper's io_fd (the same fd number) is one end of a pipe, and
// copies the libxc stream between that pipe and the real io_fd:
//
//   save:    real helper -> pipe -> [Filter] -> io_fd (file, ssh, socket)
//   restore: io_fd -> [Resolver] -> pipe -> real helper
//
// The real helper inherits stdin, stdout and stderr, so libxl's callback
// protocol passes through untouched. SIGTERM and SIGINT are forwarded to it,
// and, as the real helper does on save, the wrapper then makes io_fd
// unusable (dup2 of /dev/null) so that a copy blocked on a stalled peer ends.
// On restore the wrapper reads exactly up to and including the libxc END
// record and then closes the pipe: the bytes after END belong to libxl. The
// wrapper returns only once the copy is complete and the real helper exited.
//
// Modes, from the environment (ConfigFromEnvironment):
//   P2BMIG_MODE unset, "" or "off": pass-through, a byte-identical copy;
//               "exec":   replace the wrapper by the real helper (no copy);
//               "p2bmig": the Filter on save, the Resolver on restore.
//   P2BMIG_REAL_SAVE_HELPER: the real helper (default
//               /usr/lib/xen-4.17/bin/libxl-save-helper).
//   P2BMIG_DISKS: the domain's disk images in configuration order, separated
//               by commas (paths, or nfs:// URLs on restore). Needed by
//               "p2bmig": on save for the disk sizes and the final flush, on
//               restore to fetch mapped pages.
//   P2BMIG_TRACKING, P2BMIG_TRACKD: where the map comes from on save
//               (xen/tracking.h): p2bmig-trackd by default, which must then
//               be running, or "none" for an explicitly empty map.
// Checkpointed streams (Remus, COLO: stream_type != 0) are always handed to
// the real helper unchanged (exec): libxl reads its own records from io_fd
// between checkpoints, so nothing may sit in between.
//
// Thread safety: RunSaveHelper installs process-wide signal handlers while it
// runs (restored on return); run one at a time.

#ifndef P2BMIG_XEN_SAVE_HELPER_H_
#define P2BMIG_XEN_SAVE_HELPER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <p2bmig/domain.h>

#include "xen/helper_args.h"
#include "xen/tracking.h"

namespace p2bmig {

inline constexpr char kDefaultRealSaveHelper[] = "/usr/lib/xen-4.17/bin/libxl-save-helper";

enum class WrapMode { kOff, kExec, kP2bmig };

struct SaveHelperConfig {
  WrapMode mode = WrapMode::kOff;
  std::string real_helper = kDefaultRealSaveHelper;
  std::vector<std::string> disks;
  // Where the map comes from on save (xen/tracking.h).
  TrackingConfig tracking;
};

// Reads P2BMIG_MODE, P2BMIG_REAL_SAVE_HELPER, P2BMIG_DISKS and the tracking
// variables. Throws
// Error(kInvalidArgument) for an unknown mode.
SaveHelperConfig ConfigFromEnvironment();

// Splits "a,b,,c" into {"a", "b", "c"}.
std::vector<std::string> SplitDiskList(const std::string& list);

struct SaveHelperHooks {
  // Opens the domain being saved in "p2bmig" mode. Unset: XenDomain::Open.
  std::function<std::unique_ptr<Domain>(uint32_t domid, const std::vector<std::string>& disks)>
      open_domain;
  // The pfn bound of the domain being restored in "p2bmig" mode (the
  // resolver refuses pages beyond it). Unset: XenRestorePfnBound.
  std::function<uint64_t(uint32_t domid)> restore_pfn_bound;
};

struct HelperOutcome {
  int exit_code = 0;  // what the wrapper exits with, if signal == 0
  int signal = 0;     // the real helper died of this signal: the wrapper re-raises it
  std::string error;  // the wrapper's own failure (already printed on stderr)
};

// Runs the real helper under the wrapper as described above and returns once
// it has exited. The exit code is the real helper's, or 1 if it exited with 0
// but the wrapper failed (libxl then fails the operation).
// REQUIRES: config.mode != kExec and !args.checkpointed().
HelperOutcome RunSaveHelper(const HelperArgs& args, const SaveHelperConfig& config,
                            const SaveHelperHooks& hooks = {});

// Replaces the process by the real helper with the same command line.
// Returns only if execve failed (with a message on stderr).
void ExecRealHelper(const HelperArgs& args, const SaveHelperConfig& config);

}  // namespace p2bmig

#endif  // P2BMIG_XEN_SAVE_HELPER_H_
