// TrackdHost read from a text file (see trackd_host.h), for tests.

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "xen/trackd_host.h"

namespace p2bmig {

namespace {

class FileTrackdHost : public TrackdHost {
 public:
  explicit FileTrackdHost(std::string path) : path_(std::move(path)) { Load(); }

  std::optional<uint64_t> DomainPfns(uint32_t domid) override {
    Load();
    for (const Dom& d : doms_) {
      if (d.domid == domid) return d.nr_pfns;
    }
    return std::nullopt;
  }

  std::vector<VbdInfo> ListVbds(uint32_t domid) override {
    Load();
    std::vector<VbdInfo> out;
    for (const auto& [dom, vbd] : vbds_) {
      if (dom == domid) out.push_back(vbd);
    }
    return out;
  }

  std::optional<uint64_t> DeviceInflight(uint32_t domid, uint32_t devid) override {
    Load();
    for (const auto& [key, n] : inflight_) {
      if (key.first == domid && key.second == devid) return n;
    }
    return std::nullopt;
  }

  std::optional<Pfn> MfnToPfn(uint64_t mfn) override {
    for (const Dom& d : doms_) {
      if (mfn >= d.mfn_base && mfn - d.mfn_base < d.nr_pfns) return mfn - d.mfn_base;
    }
    return std::nullopt;
  }

 private:
  struct Dom {
    uint32_t domid;
    uint64_t nr_pfns;
    uint64_t mfn_base;
  };

  void Load() {
    std::ifstream in(path_);
    if (!in) throw Error(ErrorKind::kIo, fmt::format("cannot read test host file {}", path_));
    std::vector<Dom> doms;
    std::vector<std::pair<uint32_t, VbdInfo>> vbds;
    std::vector<std::pair<std::pair<uint32_t, uint32_t>, uint64_t>> inflight;
    std::string line;
    while (std::getline(in, line)) {
      if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
      std::istringstream ls(line);
      std::string kind;
      if (!(ls >> kind)) continue;
      if (kind == "domain") {
        Dom d{};
        if (!(ls >> d.domid >> d.nr_pfns >> d.mfn_base)) Malformed(line);
        doms.push_back(d);
      } else if (kind == "vbd") {
        uint32_t domid = 0;
        VbdInfo v;
        std::string flag;
        if (!(ls >> domid >> v.devid >> v.params)) Malformed(line);
        v.persistent = (ls >> flag) && flag == "persistent";
        vbds.emplace_back(domid, v);
      } else if (kind == "inflight") {
        uint32_t domid = 0, devid = 0;
        uint64_t n = 0;
        if (!(ls >> domid >> devid >> n)) Malformed(line);
        inflight.push_back({{domid, devid}, n});
      } else {
        Malformed(line);
      }
    }
    doms_ = std::move(doms);
    vbds_ = std::move(vbds);
    inflight_ = std::move(inflight);
  }

  [[noreturn]] void Malformed(const std::string& line) {
    throw Error(ErrorKind::kInvalidArgument, fmt::format("{}: bad line \"{}\"", path_, line));
  }

  const std::string path_;
  std::vector<Dom> doms_;
  std::vector<std::pair<uint32_t, VbdInfo>> vbds_;
  std::vector<std::pair<std::pair<uint32_t, uint32_t>, uint64_t>> inflight_;
};

}  // namespace

std::unique_ptr<TrackdHost> OpenFileTrackdHost(const std::string& path) {
  return std::make_unique<FileTrackdHost>(path);
}

}  // namespace p2bmig
