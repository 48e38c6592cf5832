// The save helper's hint-free map source (P2BMIG_TRACKING=index): no tap;
// p2b entries come from a content index of the domain's disk images
// (BlockIndex, built here, before the real helper starts), and the guest's
// writes are traced at the block devices xen-blkback serves its disks from
// (BlockWriteTrace): for a file-backed disk the loop device over the image.
//
// Thread safety: OpenHintFreeTracking may be called from any thread.

#ifndef P2BMIG_XEN_HINT_FREE_TRACKING_H_
#define P2BMIG_XEN_HINT_FREE_TRACKING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "xen/tracking.h"

namespace p2bmig {

// The block device that carries writes to `image`: the image itself if it is
// a block device, else the loop device whose backing file it is (looked up
// in `sys_block`/loop*/loop/backing_file). Throws Error(kIo) if there is
// none (e.g. a disk served by QEMU, whose writes no block device sees).
std::string BlockDeviceOf(const std::string& image, const std::string& sys_block = "/sys/block");

// Starts the write trace on the disks' block devices, then builds the index
// (so that writes during the build are seen), and returns the map, the trace
// as its tap, and the wrapper that puts the hint-free sink in front of the
// filter. Throws Error with what is missing.
Tracking OpenHintFreeTracking(uint64_t nr_pfns, const std::vector<std::string>& disks);

}  // namespace p2bmig

#endif  // P2BMIG_XEN_HINT_FREE_TRACKING_H_
