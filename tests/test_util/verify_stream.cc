#include "test_util/verify_stream.h"

#include <array>
#include <mutex>
#include <stdexcept>

#include <stdio.h>
#include <sys/wait.h>

namespace p2bmig::test {

namespace {

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string TrimNewlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace

CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return result;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) result.output.append(buf.data(), n);
  const int status = pclose(p);
  if (status != -1 && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

std::string VerifyStreamV2Path(std::string* error) {
  // The script is idempotent; run it once per process all the same.
  static std::once_flag once;
  static CommandResult fetched;
  std::call_once(once, [] {
    fetched = RunCommand(
        "bash " + ShellQuote(std::string(P2BMIG_SOURCE_DIR) + "/scripts/get-verify-stream.sh"));
  });
  if (fetched.exit_code != 0) {
    if (error != nullptr) *error = "get-verify-stream.sh failed: " + fetched.output;
    return "";
  }
  // The path is the last line printed.
  const std::string out = TrimNewlines(fetched.output);
  const size_t nl = out.rfind('\n');
  return nl == std::string::npos ? out : out.substr(nl + 1);
}

CommandResult RunVerifyStreamV2(const std::string& path) {
  std::string error;
  const std::string tool = VerifyStreamV2Path(&error);
  if (tool.empty()) throw std::runtime_error(error);
  return RunCommand(ShellQuote(tool) + " -i " + ShellQuote(path));
}

}  // namespace p2bmig::test
