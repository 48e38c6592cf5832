// `p2bmig analyze`: how much of a guest's memory the target could read from
// its disk image. Given a memory capture (guest RAM as a file) and the disk
// image, counts the 4 KiB pages that are all zero and the non-zero pages that
// are byte-identical to some 4 KiB block of the image — the most p2bmig could
// send as mappings if Dom0 saw every block request, whatever the page's
// offset. Each match found by hash is confirmed with memcmp.

#include <cstring>
#include <iostream>
#include <unordered_map>

#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p2bmig/hash.h>
#include <p2bmig/types.h>

#include "commands.h"
#include "units.h"

namespace p2bmig::cli {
namespace {

// A read-only mapping of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) {
      int err = errno;
      if (fd >= 0) ::close(fd);
      throw Error(ErrorKind::kIo, fmt::format("cannot open {}: {}", path, std::strerror(err)));
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        int err = errno;
        ::close(fd);
        throw Error(ErrorKind::kIo, fmt::format("cannot map {}: {}", path, std::strerror(err)));
      }
      data_ = static_cast<const uint8_t*>(p);
      ::madvise(const_cast<uint8_t*>(data_), size_, MADV_SEQUENTIAL);
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t pages() const { return size_ / kPageSize; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

void RunAnalyze(const std::string& memory_path, const std::string& image_path, bool json) {
  MappedFile image(image_path);
  MappedFile memory(memory_path);
  // Non-zero blocks of the image by content hash (one block per hash).
  std::unordered_map<uint64_t, uint64_t> blocks;
  blocks.reserve(image.pages());
  uint64_t image_zero = 0;
  for (uint64_t b = 0; b < image.pages(); ++b) {
    const uint8_t* block = image.data() + b * kPageSize;
    if (IsZeroPage(block)) {
      ++image_zero;
      continue;
    }
    blocks.emplace(PageHash(block), b);
  }
  uint64_t zero = 0, on_disk = 0;
  for (uint64_t p = 0; p < memory.pages(); ++p) {
    const uint8_t* page = memory.data() + p * kPageSize;
    if (IsZeroPage(page)) {
      ++zero;
      continue;
    }
    auto it = blocks.find(PageHash(page));
    if (it != blocks.end() &&
        std::memcmp(page, image.data() + it->second * kPageSize, kPageSize) == 0) {
      ++on_disk;
    }
  }
  const uint64_t total = memory.pages();
  auto share = [&](uint64_t n) { return total > 0 ? static_cast<double>(n) / total : 0.0; };
  if (json) {
    nlohmann::json j = {
        {"memory_pages", total},
        {"zero_pages", zero},
        {"disk_pages", on_disk},
        {"other_pages", total - zero - on_disk},
        {"zero_fraction", share(zero)},
        {"disk_fraction", share(on_disk)},
        {"image_blocks", image.pages()},
        {"image_zero_blocks", image_zero},
        {"image_distinct_blocks", blocks.size()},
    };
    std::cout << j.dump(2) << std::endl;
  } else {
    std::cout << fmt::format(
        "{} pages of memory: {} zero ({:.1f}%), {} equal to a block of the image ({:.1f}%), "
        "{} other ({:.1f}%)\n",
        total, zero, 100 * share(zero), on_disk, 100 * share(on_disk), total - zero - on_disk,
        100 * share(total - zero - on_disk));
  }
}

}  // namespace

void AddAnalyzeCommand(CLI::App& app) {
  struct Args {
    std::string memory;
    std::string image;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "analyze", "Count a memory capture's zero pages and pages equal to blocks of a disk image");
  cmd->add_option("memory", a->memory, "Guest memory as a file (e.g. QEMU's memory backend)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("image", a->image, "The guest's raw disk image")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_flag("--json", a->json, "Print the counts as JSON");
  cmd->callback([a] { RunAnalyze(a->memory, a->image, a->json); });
}

}  // namespace p2bmig::cli
