// BlockWriteTrace: completed writes to block devices, by sector, from the
// kernel's block_rq_complete tracepoint. In dom0, xen-blkback serves a
// file-backed disk through a loop device whose sector s is byte s * 512 of
// the image, so this is a source of the guest's disk writes that needs no
// blkback patch: the write tracking of the hint-free mode (it knows no guest
// pages, so its events carry none: InvalidateOnlyEvent).
//
// It uses a tracefs instance of its own (instances/p2bmig-<pid>-<n>, under
// /sys/kernel/tracing or /sys/kernel/debug/tracing), filtered on the traced
// devices, and reads its trace_pipe on a thread. Drain() is exact: it reads
// each device's count of completed writes (/sys/dev/block/M:m/stat) and
// waits until the trace has delivered at least as many since it started; a
// trace that falls behind for longer than the timeout (lost events) is an
// error, never a silent gap.
//
// Needs root and tracefs. Thread safety: as IoTap; the listener runs on the
// reader thread.

#ifndef P2BMIG_XEN_WRITE_TRACE_H_
#define P2BMIG_XEN_WRITE_TRACE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <p2bmig/io_event.h>

namespace p2bmig {

// One line of the tracepoint's output, e.g.
// "  ksoftirqd/0-14 [000] ..s.. 12063.896: block_rq_complete: 7,0 WS () 24 + 8 be,0,4 [0]".
struct TracedRequest {
  uint32_t major = 0;
  uint32_t minor = 0;
  bool write = false;    // "W" in its flags (writes, also with flush/FUA)
  bool discard = false;  // "D": a discard, which changes content too
  uint64_t sector = 0;
  uint32_t nr_sectors = 0;
};

// Parses such a line; false for anything else (other events, headers).
bool ParseRqCompleteLine(const std::string& line, TracedRequest* out);

class BlockWriteTrace : public IoTap {
 public:
  // Starts tracing `devices` (block device nodes; disk i is devices[i]).
  // Throws Error(kIo) with what is missing (tracefs, permission, a device).
  static std::unique_ptr<BlockWriteTrace> Open(const std::vector<std::string>& devices);
  ~BlockWriteTrace() override;

  void SetListener(Listener listener) override;
  // Throws Error(kIo) if the trace has not caught up after `drain_timeout`.
  void Drain() override;

  std::chrono::milliseconds drain_timeout{10000};
  uint64_t writes_seen() const;

 private:
  struct Impl;
  explicit BlockWriteTrace(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace p2bmig

#endif  // P2BMIG_XEN_WRITE_TRACE_H_
