// Domain: what the migration code needs from the hypervisor about one guest,
// in the spirit of LevelDB's Env. The simulated host (src/sim/) and Xen
// (src/xen/) implement it; the save loop, the filter and the tests use only
// this interface, and DomainWrapper lets a test override one call to inject a
// fault.
//
// Thread safety: implementations must allow ReadPages, MarkDirty and
// FlushDisks from any thread; the log-dirty and pause calls come from the one
// thread that drives the migration.

#ifndef P2BMIG_DOMAIN_H_
#define P2BMIG_DOMAIN_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <p2bmig/records.h>
#include <p2bmig/types.h>

namespace p2bmig {

class Domain {
 public:
  Domain() = default;
  Domain(const Domain&) = delete;
  Domain& operator=(const Domain&) = delete;
  virtual ~Domain() = default;

  virtual std::string name() const = 0;
  virtual DomainType type() const = 0;
  // Size of the guest's pfn space (highest pfn + 1).
  virtual uint64_t nr_pfns() const = 0;
  // Size in bytes of each disk, in configuration order.
  virtual std::vector<uint64_t> DiskSizes() const = 0;

  // Copies the content of `pfns` into `out`, kPageSize bytes each.
  // REQUIRES: every pfn < nr_pfns(); `out` has room for pfns.size() pages.
  virtual void ReadPages(std::span<const Pfn> pfns, uint8_t* out) = 0;

  // Log-dirty mode: from EnableLogDirty on, every write to guest memory sets
  // the page's bit; PeekAndCleanDirty returns the set pfns and clears them.
  virtual void EnableLogDirty() = 0;
  virtual void DisableLogDirty() = 0;
  virtual void PeekAndCleanDirty(std::vector<Pfn>* dirty) = 0;
  // Sets the dirty bit of `pfns` so that the next pass sends them again
  // (xendevicemodel_modified_memory on Xen).
  virtual void MarkDirty(std::span<const Pfn> pfns) = 0;

  // Stops the guest's vCPUs. Resume undoes it (the source keeps the guest
  // when a migration fails).
  virtual void Pause() = 0;
  virtual void Resume() = 0;

  // Makes every completed disk write durable on the shared storage, so that
  // another host reads it (invariant I4).
  virtual void FlushDisks() = 0;
};

class DomainWrapper : public Domain {
 public:
  explicit DomainWrapper(Domain* target) : target_(target) {}
  std::string name() const override { return target_->name(); }
  DomainType type() const override { return target_->type(); }
  uint64_t nr_pfns() const override { return target_->nr_pfns(); }
  std::vector<uint64_t> DiskSizes() const override { return target_->DiskSizes(); }
  void ReadPages(std::span<const Pfn> pfns, uint8_t* out) override {
    target_->ReadPages(pfns, out);
  }
  void EnableLogDirty() override { target_->EnableLogDirty(); }
  void DisableLogDirty() override { target_->DisableLogDirty(); }
  void PeekAndCleanDirty(std::vector<Pfn>* dirty) override { target_->PeekAndCleanDirty(dirty); }
  void MarkDirty(std::span<const Pfn> pfns) override { target_->MarkDirty(pfns); }
  void Pause() override { target_->Pause(); }
  void Resume() override { target_->Resume(); }
  void FlushDisks() override { target_->FlushDisks(); }
  Domain* target() const { return target_; }

 private:
  Domain* target_;
};

}  // namespace p2bmig

#endif  // P2BMIG_DOMAIN_H_
