/** \file
 * Runs a program for the command-line tests and collects what it prints.
 *
 *   kiln::test::CommandResult r = kiln::test::RunCommand(std::string(KILN_BINARY) + " summary");
 *   EXPECT_EQ(r.exit_code, 0) << r.output;
 */
#ifndef KILN_TESTS_RUN_COMMAND_H_
#define KILN_TESTS_RUN_COMMAND_H_

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace kiln::test {

struct CommandResult {
  int exit_code = -1;  ///< -1 when the command could not start or did not exit normally.
  std::string output;  ///< stdout and stderr together.
};

/// Runs `command` through /bin/sh with stderr joined to stdout, and waits for it.
inline CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t read;
  while ((read = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.output.append(buffer.data(), read);
  }
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace kiln::test

#endif  // KILN_TESTS_RUN_COMMAND_H_
