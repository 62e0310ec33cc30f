// kiln bench end to end: the table, CSV, JSON and PNG of a short run of two LeNet-5 schedules,
// and each bad flag as one message, a non-zero exit and no output file.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/run_command.h"

namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

using Result = kiln::test::CommandResult;

Result RunKiln(const std::string& arguments) {
  return kiln::test::RunCommand(std::string(KILN_BINARY) + " " + arguments);
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream out;
  out << file.rdbuf();
  return out.str();
}

class BenchCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kiln_bench_cli_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
};

TEST_F(BenchCli, WritesTableCsvJsonAndPng) {
  const std::string csv = (dir_ / "bench.csv").string(), json = (dir_ / "bench.json").string(),
                    png = (dir_ / "bench.png").string();
  Result r = RunKiln("bench --model lenet5 --batch-size 16 --threads 1 --seconds 0.05 "
                     "--schedules manual,naive --python off --csv " + csv + " --json " + json +
                     " --png " + png);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, AllOf(HasSubstr("lenet5, batch 16, 1 threads"), HasSubstr("FP32 peak"),
                              HasSubstr("kiln manual"), HasSubstr("kiln naive")));

  const std::vector<std::string> lines = absl::StrSplit(ReadFile(csv), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << ReadFile(csv);
  EXPECT_THAT(lines[0], HasSubstr("train_images_per_second"));
  EXPECT_THAT(lines[1], HasSubstr("lenet5,16,1,kiln manual,manual,"));
  EXPECT_THAT(lines[2], HasSubstr("lenet5,16,1,kiln naive,naive,"));

  const nlohmann::json report = nlohmann::json::parse(ReadFile(json));
  EXPECT_EQ(report["model"], "lenet5");
  EXPECT_EQ(report["batch"], 16);
  EXPECT_GT(report["peak_gflops"].get<double>(), 0);
  // LeNet-5's forward pass: 2 · (conv 117,600 + 240,000 + 48,000 MACs and dense 10,080 + 840)
  // plus the bias, pooling, ReLU and loss terms that compiler/model.cpp counts.
  EXPECT_NEAR(report["forward_flops_per_image"].get<double>(), 852e3, 10e3);
  // Plus the weight gradients of the five conv and dense layers (839,558 FLOPs with biases) and
  // the input gradients of all but conv1 (599,654).
  EXPECT_NEAR(report["train_flops_per_image"].get<double>(), 852410 + 839558 + 599654, 1e3);
  ASSERT_EQ(report["rows"].size(), 2u);
  for (const nlohmann::json& row : report["rows"]) {
    EXPECT_FALSE(row.contains("error")) << row.dump();
    EXPECT_GT(row["train_images_per_second"].get<double>(), 0) << row.dump();
    EXPECT_GT(row["inference_images_per_second"].get<double>(), 0) << row.dump();
    EXPECT_GT(row["batch1_latency_ms"].get<double>(), 0) << row.dump();
    EXPECT_GT(row["compile_seconds"].get<double>(), 0) << row.dump();
    // At least the parameters, gradients and momentum of 61,706 parameters.
    EXPECT_GT(row["train_peak_memory_bytes"].get<double>(), 3 * 61706 * 4) << row.dump();
  }
  // The manual schedule is the fast one; naive is the baseline that computes everything at
  // root in serial loops.
  EXPECT_GT(report["rows"][0]["train_images_per_second"].get<double>(),
            report["rows"][1]["train_images_per_second"].get<double>());

  const std::string image = ReadFile(png);
  ASSERT_GE(image.size(), 8u);
  EXPECT_EQ(image.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
}

TEST_F(BenchCli, UnknownScheduleIsAnErrorAndWritesNothing) {
  const std::string csv = (dir_ / "bench.csv").string();
  Result r = RunKiln("bench --schedules manual,fastest --seconds 0.05 --python off --csv " + csv);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, AllOf(HasSubstr("unknown schedule 'fastest'"), HasSubstr("naive")));
  EXPECT_FALSE(std::filesystem::exists(csv));
}

TEST_F(BenchCli, ModelWithoutVariantsIsAnError) {
  Result r = RunKiln("bench --model lenet7 --seconds 0.05 --python off");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, AllOf(HasSubstr("no compiled variant of model 'lenet7'"),
                              HasSubstr("lenet5")));
}

TEST_F(BenchCli, BadOutputPathFailsBeforeMeasuring) {
  const std::string csv = (dir_ / "missing" / "bench.csv").string();
  Result r = RunKiln("bench --seconds 0.05 --python off --csv " + csv);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr(csv));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("kiln bench: measuring")));
}

TEST_F(BenchCli, SameOutputPathTwiceIsAnError) {
  const std::string path = (dir_ / "bench.out").string();
  Result r = RunKiln("bench --seconds 0.05 --python off --csv " + path + " --json " + path);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("name the same file '" + path + "'"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("kiln bench: measuring")));
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(BenchCli, UncreatableOutputFailsBeforeMeasuring) {
  // No user can create files in /proc, although access() grants root write access there.
  Result r = RunKiln("bench --seconds 0.05 --python off --png /proc/kiln_bench.png");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("cannot write '/proc/kiln_bench.png'"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("kiln bench: measuring")));
}

TEST_F(BenchCli, NothingMeasuredFailsAndWritesNothing) {
  const std::string json = (dir_ / "bench.json").string();
  // ResNet-20 is compiled with the manual schedule only.
  Result r = RunKiln(
      "bench --model resnet20 --schedules li2018 --seconds 0.05 --python off --json " + json);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("no runner was measured"));
  EXPECT_FALSE(std::filesystem::exists(json));
}

TEST_F(BenchCli, BadRoundsIsAnError) {
  Result r = RunKiln("bench --rounds 0 --python off");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("rounds 0 must be at least 1"));
}

TEST_F(BenchCli, BadSecondsIsAnError) {
  Result r = RunKiln("bench --seconds 0 --python off");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("seconds 0 must be positive"));
}

TEST_F(BenchCli, MissingPythonBecomesARowNotAFailure) {
  const std::string json = (dir_ / "bench.json").string();
  Result r = RunKiln("bench --schedules manual --batch-size 4 --seconds 0.05 --python " +
                     (dir_ / "no_python").string() + " --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("does not import torch"));
  const nlohmann::json report = nlohmann::json::parse(ReadFile(json));
  ASSERT_EQ(report["rows"].size(), 3u);  // manual, then eager and torch.compile unmeasured.
  EXPECT_THAT(report["rows"][1]["error"].get<std::string>(), HasSubstr("does not import torch"));
}

}  // namespace
