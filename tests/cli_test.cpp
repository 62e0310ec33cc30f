// The kiln command line: each bad flag, model or path is one clear message and a non-zero exit.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

struct Result {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

Result RunKiln(const std::string& arguments) {
  Result result;
  const std::string command = std::string(KILN_BINARY) + " " + arguments + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t read;
  while ((read = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), read);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

TEST(Summary, PrintsParameterCount) {
  Result r = RunKiln("summary --model lenet5");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, AllOf(HasSubstr("Total parameters: 61,706"), HasSubstr("conv1"),
                              HasSubstr("[6, 28, 28]")));
}

TEST(Cli, UnknownModelIsAnError) {
  Result r = RunKiln("summary --model lenet7");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, AllOf(HasSubstr("unknown model 'lenet7'"), HasSubstr("lenet5")));
}

TEST(Cli, MissingCommandIsAnError) {
  Result r = RunKiln("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("missing command"));
}

TEST(Cli, UnknownCommandIsAnError) {
  Result r = RunKiln("fit");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("unknown command 'fit'"));
}

TEST(Cli, BadValuesAreErrors) {
  struct Case {
    const char* arguments;
    const char* expected;
  };
  for (const Case& c : {Case{"train --lr=-1", "--lr -1 must be positive"},
                        Case{"train --momentum 1.5", "--momentum 1.5 must be in [0, 1)"},
                        Case{"train --epochs 0", "--epochs 0 must be at least 1"},
                        Case{"train --threads=-3", "--threads -3 must not be negative"},
                        Case{"train --weight-decay=-0.1", "--weight-decay -0.1"},
                        Case{"train --resume", "--resume needs --checkpoint"}}) {
    Result r = RunKiln(c.arguments);
    EXPECT_EQ(r.exit_code, 2) << c.arguments << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr(c.expected)) << c.arguments;
  }
}

TEST(Cli, UnparsableValueIsAnError) {
  Result r = RunKiln("train --lr=fast");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("lr"), HasSubstr("fast")));
}

TEST(Cli, MissingDataDirectoryNamesThePath) {
  Result r = RunKiln("train --data /nonexistent/fashion --epochs 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("/nonexistent/fashion"));
}

TEST(Cli, EvalOfMissingCheckpointNamesThePath) {
  Result r = RunKiln("eval --checkpoint /nonexistent/lenet5.safetensors");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("/nonexistent/lenet5.safetensors"));
}

TEST(Cli, HelpStatesDefaults) {
  Result r = RunKiln("--help");
  EXPECT_THAT(r.output, AllOf(HasSubstr("learning rate"), HasSubstr("default: 0.01"),
                              HasSubstr("kiln train")));
}

}  // namespace
