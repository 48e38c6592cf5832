// SIGTERM and SIGINT cancel a running `send` or `receive` the way any other
// failure does: the link is aborted, the migration fails through its normal
// error path (the source resumes its guest, the target removes its memory
// file), and the process exits non-zero naming the signal and the phase.
// Before a link exists there is nothing to undo, and the process exits at once.
//
// Thread safety: StartSignalHandling once, from the main thread, before any
// other thread exists; the rest from any thread.

#ifndef P2BMIG_TOOLS_CANCEL_H_
#define P2BMIG_TOOLS_CANCEL_H_

#include <string>

#include <p2bmig/byte_stream.h>

namespace p2bmig::cli {

// Blocks SIGTERM and SIGINT in every thread and waits for them on a thread
// of its own. `what` names the command in messages ("source", "target").
void StartSignalHandling(const std::string& what);

// What the command is doing, for messages ("pre-copy round 2").
void SetPhase(const std::string& phase);
std::string Phase();

// While an AbortOnSignal lives, a signal aborts `link` instead of exiting.
class AbortOnSignal {
 public:
  explicit AbortOnSignal(ByteStream* link);
  ~AbortOnSignal();
  AbortOnSignal(const AbortOnSignal&) = delete;
  AbortOnSignal& operator=(const AbortOnSignal&) = delete;
};

// The name of the signal that cancelled the command ("SIGTERM"), or empty.
std::string CancelSignal();
// The phase the command was in when the signal came.
std::string CancelPhase();

}  // namespace p2bmig::cli

#endif  // P2BMIG_TOOLS_CANCEL_H_
