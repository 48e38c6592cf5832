// The command line libxl gives its save/restore helper (the program named by
// LIBXL_SAVE_HELPER), as Xen 4.17's libxl_save_callout.c builds it and
// libxl_save_helper.c reads it:
//
//   <helper> --save-domain    <io_fd> <recv_fd> <domid> <xcflags> <cbflags>
//                             <stream_type>
//   <helper> --restore-domain <io_fd> <send_back_fd> <domid> <store_evtchn>
//                             <store_domid> <console_evtchn> <console_domid>
//                             <cbflags> <stream_type>
//
// io_fd carries the libxc migration v2 stream; recv_fd / send_back_fd are the
// COLO back channel (-1 otherwise); stream_type is libxl's checkpointed_stream
// (0 none, 1 Remus, 2 COLO). The helper's callback protocol runs on its
// stdin/stdout, which the wrapper leaves to the real helper.
//
// Thread safety: value types and pure functions.

#ifndef P2BMIG_XEN_HELPER_ARGS_H_
#define P2BMIG_XEN_HELPER_ARGS_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace p2bmig {

enum class HelperOp { kSave, kRestore };

struct HelperArgs {
  HelperOp op = HelperOp::kSave;
  int io_fd = -1;
  int back_fd = -1;  // recv_fd (save) or send_back_fd (restore)
  uint32_t domid = 0;
  uint32_t stream_type = 0;       // 0: a plain stream; 1, 2: checkpointed (Remus, COLO)
  std::vector<std::string> argv;  // the whole command line, argv[0] included

  bool checkpointed() const { return stream_type != 0; }
};

// Number of arguments after the mode argument, Xen 4.17.
inline constexpr size_t kSaveArgCount = 6;
inline constexpr size_t kRestoreArgCount = 9;

// Parses and checks a helper command line. Throws Error(kInvalidArgument)
// naming what does not fit (unknown mode, wrong number of arguments, a
// number that is not one).
HelperArgs ParseHelperArgs(std::span<const std::string> argv);

// "save" or "restore".
const char* HelperOpName(HelperOp op);

}  // namespace p2bmig

#endif  // P2BMIG_XEN_HELPER_ARGS_H_
