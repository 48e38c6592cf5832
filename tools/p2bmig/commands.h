// The subcommands of the `p2bmig` program. Each Add* function registers one
// subcommand with its options on the CLI11 app and arranges for it to run
// when chosen; every command reports failure by throwing p2bmig::Error.

#ifndef P2BMIG_TOOLS_COMMANDS_H_
#define P2BMIG_TOOLS_COMMANDS_H_

#include <CLI/CLI.hpp>

namespace p2bmig::cli {

void AddSendCommand(CLI::App& app);
void AddReceiveCommand(CLI::App& app);
void AddDemoCommand(CLI::App& app);
void AddInspectCommand(CLI::App& app);
void AddMakeDiskCommand(CLI::App& app);
void AddAnalyzeCommand(CLI::App& app);

}  // namespace p2bmig::cli

#endif  // P2BMIG_TOOLS_COMMANDS_H_
