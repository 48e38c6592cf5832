// `p2bmig inspect`: checks a stream file against docs/stream-format.md and
// summarises what it holds.

#include <iostream>

#include "commands.h"
#include "stream/inspect.h"

namespace p2bmig::cli {

void AddInspectCommand(CLI::App& app) {
  auto file = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd =
      app.add_subcommand("inspect", "Check a migration stream file and summarise its records");
  cmd->add_option("file", *file, "Stream file (as written by send --output)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_flag("--json", *json, "Print the summary as JSON");
  cmd->callback([file, json] {
    std::unique_ptr<ByteStream> in = OpenFileForRead(*file);
    InspectStream(in.get(), std::cout, *json);
  });
}

}  // namespace p2bmig::cli
