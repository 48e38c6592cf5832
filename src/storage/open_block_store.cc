// OpenBlockStore: picks the BlockStore implementation from the locations.

#include <string>
#include <vector>

#include <p2bmig/block_store.h>
#include <p2bmig/types.h>

#include "storage/nfs_block_store.h"

namespace p2bmig {

std::unique_ptr<BlockStore> OpenBlockStore(const std::vector<std::string>& locations) {
  size_t nfs = 0;
  for (const auto& loc : locations) {
    if (loc.rfind("nfs://", 0) == 0) nfs++;
  }
  if (nfs > 0 && nfs < locations.size()) {
    throw Error(ErrorKind::kInvalidArgument,
                "disk locations mix nfs:// URLs and paths; use one kind for all disks");
  }
  if (nfs > 0) return OpenNfsBlockStore(locations);
  return OpenPosixBlockStore(locations);
}

}  // namespace p2bmig
