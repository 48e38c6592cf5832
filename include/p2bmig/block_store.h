// BlockStore: read access to the disk images of one domain on shared storage,
// as the target sees them. Disks are addressed by their index in the target's
// own configuration of the domain (invariant I5): a store is opened from the
// target's list of image locations and never from anything in the stream.
//
// Implementations: POSIX files (a local path or a kernel NFS mount) and libnfs
// (nfs://server/export/path, no kernel mount needed).
//
// Thread safety: ReadAsync may be called from any thread; completion
// callbacks run on a thread of the store's own and must not block for long.

#ifndef P2BMIG_BLOCK_STORE_H_
#define P2BMIG_BLOCK_STORE_H_

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace p2bmig {

class BlockStore {
 public:
  // `error` is null on success, else an Error(kIo) describing the failure.
  using ReadDone = std::function<void(std::exception_ptr error)>;

  BlockStore() = default;
  BlockStore(const BlockStore&) = delete;
  BlockStore& operator=(const BlockStore&) = delete;
  // Waits for reads in flight to complete (their callbacks run) first.
  virtual ~BlockStore() = default;

  virtual uint32_t nr_disks() const = 0;
  // REQUIRES: disk < nr_disks().
  virtual uint64_t DiskSize(uint32_t disk) const = 0;

  // Reads `len` bytes at byte `offset` of `disk` into `buf` and calls `done`
  // exactly once. A read past the end of the image is an error.
  // REQUIRES: buf stays valid until done is called; disk < nr_disks().
  virtual void ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf,
                         ReadDone done) = 0;

  // Where the disks live, for messages and statistics ("nfs://..." or a path).
  virtual std::string Describe() const = 0;
};

// Forwards everything; override one call to inject faults in tests.
class BlockStoreWrapper : public BlockStore {
 public:
  explicit BlockStoreWrapper(BlockStore* target) : target_(target) {}
  uint32_t nr_disks() const override { return target_->nr_disks(); }
  uint64_t DiskSize(uint32_t disk) const override { return target_->DiskSize(disk); }
  void ReadAsync(uint32_t disk, uint64_t offset, size_t len, uint8_t* buf, ReadDone done) override {
    target_->ReadAsync(disk, offset, len, buf, std::move(done));
  }
  std::string Describe() const override { return target_->Describe(); }
  BlockStore* target() const { return target_; }

 private:
  BlockStore* target_;
};

struct PosixStoreOptions {
  int threads = 4;  // reader threads
};

// Opens image files for reading. Throws Error(kIo) if one cannot be opened.
std::unique_ptr<BlockStore> OpenPosixBlockStore(const std::vector<std::string>& paths,
                                                PosixStoreOptions options = {});

// Opens each location with the store that fits it: "nfs://" URLs with libnfs,
// anything else as a POSIX path. All locations must be of one kind.
std::unique_ptr<BlockStore> OpenBlockStore(const std::vector<std::string>& locations);

}  // namespace p2bmig

#endif  // P2BMIG_BLOCK_STORE_H_
