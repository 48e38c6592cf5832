// The libnfs BlockStore: disk images read over NFS (v3 or v4) by a userspace
// client, no kernel mount needed. Locations are URLs in libnfs's syntax:
//
//   nfs://server/export/path/to/image[?version=3|4&nfsport=N&mountport=N]
//
// Thread safety: as BlockStore.

#ifndef P2BMIG_STORAGE_NFS_BLOCK_STORE_H_
#define P2BMIG_STORAGE_NFS_BLOCK_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include <p2bmig/block_store.h>

namespace p2bmig {

struct NfsStoreOptions {
  // NFS connections per image; all are driven by one event-loop thread.
  int connections = 1;
  // Reads issued on one connection and not yet answered, at most.
  int max_inflight_per_connection = 64;
  // An RPC without an answer for this long counts as a dead connection.
  int rpc_timeout_ms = 5000;
  // After a connection dies, attempts to mount and open the image again
  // (with a growing pause between them) before its reads are failed. The
  // default rides out a server restart of ~10 s.
  int reconnect_attempts = 10;
  // A read is issued at most this many times (a dead connection or an error
  // answer each use one) before it fails.
  int max_read_attempts = 4;
};

// Mounts each export and opens each image. Throws Error(kIo) if one cannot be
// reached, Error(kInvalidArgument) for a malformed URL.
std::unique_ptr<BlockStore> OpenNfsBlockStore(const std::vector<std::string>& urls,
                                              NfsStoreOptions options = {});

}  // namespace p2bmig

#endif  // P2BMIG_STORAGE_NFS_BLOCK_STORE_H_
