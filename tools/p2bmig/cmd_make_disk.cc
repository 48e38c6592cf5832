// `p2bmig make-disk`: creates the simulated guest's disk image (seeded file
// system-like content: text, code, compressed data, zero blocks), the same
// image `p2bmig demo` makes, for runs that set up their own hosts.

#include <p2bmig/types.h>

#include "commands.h"
#include "sim/content.h"
#include "units.h"

namespace p2bmig::cli {

void AddMakeDiskCommand(CLI::App& app) {
  struct Args {
    std::string path;
    std::string size = "1G";
    uint64_t seed = 1;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("make-disk", "Create a simulated guest's disk image");
  cmd->add_option("file", a->path, "Image to create (replaced if it exists)")->required();
  cmd->add_option("--size", a->size, "Image size")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the content")->capture_default_str();
  cmd->callback([a] {
    uint64_t bytes = ParseSize(a->size) / kPageSize * kPageSize;
    if (bytes == 0) throw Error(ErrorKind::kInvalidArgument, "--size must be at least 4K");
    sim::CreateDiskImage(a->path, bytes, a->seed);
  });
}

}  // namespace p2bmig::cli
