// The kiln command line: each bad flag, model or path is one clear message and a non-zero exit.
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/run_command.h"

namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

using Result = kiln::test::CommandResult;

Result RunKiln(const std::string& arguments) {
  return kiln::test::RunCommand(std::string(KILN_BINARY) + " " + arguments);
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
                        Case{"train --threads=1000", "--threads 1000 is above Halide's limit"},
                        Case{"train --weight-decay=-0.1", "--weight-decay -0.1"},
                        Case{"train --lr=inf", "--lr inf must be positive and finite"},
                        Case{"train --weight-decay=nan", "--weight-decay nan"},
                        Case{"train --resume", "--resume needs --checkpoint"},
                        Case{"train --optimizer rmsprop", "unknown optimizer 'rmsprop'"},
                        Case{"train --beta2 1", "--beta2 1 must be in [0, 1)"},
                        Case{"train --max-grad-norm=-1", "--max-grad-norm -1"},
                        Case{"train --lr-mult conv1", "'conv1' is not LAYER=FACTOR"},
                        Case{"train --lr-schedule linear", "unknown learning-rate schedule"},
                        Case{"train --augment flip", "--augment: "},
                        Case{"augment-preview --augment hflip", "needs --output"}}) {
    Result r = RunKiln(c.arguments);
    EXPECT_EQ(r.exit_code, 2) << c.arguments << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr(c.expected)) << c.arguments;
  }
}

TEST(Cli, UnparsableValueIsAnError) {
  Result r = RunKiln("train --lr=fast");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--lr 'fast'"));
}

TEST(Cli, MisusedFlagsAreUsageErrors) {
  struct Case {
    const char* arguments;
    const char* expected;
  };
  for (const Case& c :
       {Case{"eval --epochs 3 --checkpoint x.safetensors",
             "--epochs does not apply to kiln eval; it is an option of kiln train"},
        Case{"summary --threads 2", "--threads does not apply to kiln summary; it is an option "
                                    "of kiln bench, kiln eval, kiln export, kiln train"},
        Case{"train --metrics=", "--metrics is empty; give it a value or leave it out"},
        Case{"train --lr 1e308", "--lr 1e+308 is outside the range of 32-bit floats"},
        Case{"train --eps 1e-320", "is outside the range of 32-bit floats"},
        Case{"train --epoch 3", "unknown flag --epoch"},
        Case{"train --epochs three", "--epochs 'three'"},
        Case{"eval --checkpoint", "--checkpoint needs a value"},
        Case{"summary -lr 0.1", "--lr does not apply to kiln summary"},
        Case{"train --nesterov=maybe", "--nesterov 'maybe'"},
        Case{"train --flagfile=flags.txt", "unknown flag --flagfile"},
        Case{"train --metrics m.txt", "has an unknown extension; use .jsonl (JSON Lines) or .csv"},
        Case{"train -weight-decay=-1", "--weight-decay -1 must be finite and not negative"}}) {
    Result r = RunKiln(c.arguments);
    EXPECT_EQ(r.exit_code, 2) << c.arguments << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr(c.expected)) << c.arguments;
  }
}

std::string ReadFile(const std::string& path) {
  std::string bytes;
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return bytes;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), file)) > 0;) bytes.append(buffer, n);
  std::fclose(file);
  return bytes;
}

// Writes an IDX file: big-endian magic and sizes, then the bytes.
void WriteIdx(const std::string& path, int magic, std::vector<int> sizes,
              const std::vector<unsigned char>& bytes) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  sizes.insert(sizes.begin(), magic);
  for (int value : sizes) {
    const unsigned char word[4] = {static_cast<unsigned char>(value >> 24),
                                   static_cast<unsigned char>(value >> 16),
                                   static_cast<unsigned char>(value >> 8),
                                   static_cast<unsigned char>(value)};
    std::fwrite(word, 1, 4, file);
  }
  std::fwrite(bytes.data(), 1, bytes.size(), file);
  std::fclose(file);
}

TEST(Cli, LabelOutsideTheModelNamesFileAndSample) {
  char pattern[] = "/tmp/kiln_cli_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  for (const char* split : {"train", "t10k"}) {
    WriteIdx(dir + "/" + split + "-images-idx3-ubyte", 0x803, {4, 28, 28},
             std::vector<unsigned char>(4 * 28 * 28, 100));
    WriteIdx(dir + "/" + split + "-labels-idx1-ubyte", 0x801, {4}, {1, 2, 200, 3});
  }
  Result r = RunKiln("train --epochs 1 --threads 1 --data " + dir);
  EXPECT_EQ(r.exit_code, 1) << r.output;  // a damaged file, not a bad command line
  EXPECT_THAT(r.output, HasSubstr("label 200 of sample 2 in '" + dir +
                                  "/train-labels-idx1-ubyte' does not fit model 'lenet5'"));
  // Past --train-limit and --test-limit the label is not used.
  r = RunKiln("train --epochs 1 --threads 1 --train-limit 2 --test-limit 2 --data " + dir);
  EXPECT_EQ(r.exit_code, 0) << r.output;

  r = RunKiln("train --epochs 1 --data " + dir + "/train-labels-idx1-ubyte");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("is a file, not a directory"));
}

TEST(Cli, ExistingMetricsNeedResumeOrOverwrite) {
  char pattern[] = "/tmp/kiln_cli_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string metrics = std::string(pattern) + "/m.jsonl";
  const std::string common = "train --epochs 1 --train-limit 64 --test-limit 64 --threads 1 ";
  ASSERT_EQ(RunKiln(common + "--metrics " + metrics).exit_code, 0);
  const std::string before = ReadFile(metrics);
  Result r = RunKiln(common + "--metrics " + metrics);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("metrics log '" + metrics + "' already exists; pass --resume"));
  EXPECT_EQ(ReadFile(metrics), before);
  r = RunKiln(common + "--run-dir " + std::string(pattern) + "/run");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunKiln(common + "--run-dir " + std::string(pattern) + "/run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("/run/metrics.jsonl' already exists"));
  EXPECT_EQ(RunKiln(common + "--overwrite --metrics " + metrics).exit_code, 0);
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

TEST(Cli, ResumeContinuesWithSavedHyperparameters) {
  char pattern[] = "/tmp/kiln_cli_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string checkpoint = std::string(pattern) + "/run.safetensors";
  const std::string common = " --train-limit 128 --test-limit 64 --threads 1 --checkpoint " + checkpoint;

  Result first = RunKiln("train --epochs 1 --lr 0.05 --momentum 0.5 --batch-size 32" + common);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  // --nonesterov is given, so the checkpoint's nesterov is not read back.
  Result resumed = RunKiln("train --epochs 2 --resume --nonesterov" + common);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_THAT(resumed.output, AllOf(HasSubstr("lr 0.05"), HasSubstr("momentum 0.5"),
                                    HasSubstr("batch size 32"), HasSubstr("epoch   2/2")));
  EXPECT_THAT(resumed.output, ::testing::Not(HasSubstr("nesterov 0")));

  Result done = RunKiln("train --epochs 1 --resume" + common);
  EXPECT_EQ(done.exit_code, 0) << done.output;
  EXPECT_THAT(done.output, HasSubstr("already has 2 epochs"));
}

TEST(Cli, ExportWritesOnnxAndRejectsBadArguments) {
  char pattern[] = "/tmp/kiln_cli_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  Result trained = RunKiln("train --epochs 1 --train-limit 128 --test-limit 64 --threads 1 "
                           "--checkpoint " + dir + "/m.safetensors");
  ASSERT_EQ(trained.exit_code, 0) << trained.output;

  Result r = RunKiln("export --checkpoint " + dir + "/m.safetensors --output " + dir + "/m.onnx");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("(ONNX opset 13, batch symbolic)"));
  FILE* onnx = std::fopen((dir + "/m.onnx").c_str(), "rb");
  ASSERT_NE(onnx, nullptr);
  std::fclose(onnx);

  r = RunKiln("export --checkpoint " + dir + "/m.safetensors --output " + dir +
              "/m.tflite --format tflite");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("--format 'tflite' is not supported; use --format onnx"));
  r = RunKiln("export --output " + dir + "/x.onnx");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("export needs --checkpoint PATH and --output MODEL.onnx"));
  r = RunKiln("export --checkpoint " + dir + "/m.safetensors --output /nonexistent/m.onnx");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("/nonexistent/m.onnx"));
  // A rename over a device would replace it (as root, /dev/null would become a regular file).
  r = RunKiln("export --checkpoint " + dir + "/m.safetensors --output /dev/null");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("'/dev/null': it exists and is not a regular file"));
  r = RunKiln("augment-preview --augment hflip --output /dev/null");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("not a regular file"));
  // A checkpoint of another model: nothing is written.
  r = RunKiln("export --model resnet20 --checkpoint " + dir + "/m.safetensors --output " + dir +
              "/r.onnx");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("lenet5"));
  EXPECT_EQ(std::fopen((dir + "/r.onnx").c_str(), "rb"), nullptr);
}

// No user can create files in /proc, root included, so it serves as an unwritable directory in
// tests that may run as root.
TEST(Cli, UnwritableCheckpointDirectoryFailsBeforeTraining) {
  Result r = RunKiln("train --epochs 1 --train-limit 64 --test-limit 64 "
                     "--checkpoint /proc/kiln_run.safetensors");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("cannot write '/proc/kiln_run.safetensors'"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("epoch   1/1")));
}

TEST(Cli, ExistingCheckpointNeedsResumeOrOverwrite) {
  char pattern[] = "/tmp/kiln_cli_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string run = "train --epochs 1 --train-limit 64 --test-limit 64 --threads 1 "
                          "--checkpoint " + std::string(pattern) + "/run.safetensors";
  ASSERT_EQ(RunKiln(run).exit_code, 0);
  Result again = RunKiln(run);
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_THAT(again.output, HasSubstr("already exists; pass --resume to continue it, "
                                      "--overwrite to replace it"));
  EXPECT_EQ(RunKiln(run + " --overwrite").exit_code, 0);
}

// Opening a FIFO for reading waits for a writer, so readers check the type first.
TEST(Cli, FifoAsInputIsRejectedWithoutHanging) {
  char pattern[] = "/tmp/kiln_cli_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string fifo = std::string(pattern) + "/fifo.jsonl";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  Result r = RunKiln("eval --checkpoint " + fifo);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("is not a regular file"));
  r = RunKiln("train --epochs 1 --train-limit 64 --test-limit 64 --metrics " + fifo);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("metrics log '" + fifo + "' is not a regular file"));
}

TEST(Cli, DeviceAsCheckpointIsRejected) {
  Result r = RunKiln("train --epochs 1 --train-limit 64 --test-limit 64 --checkpoint /dev/null");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, AllOf(HasSubstr("/dev/null"), HasSubstr("not a regular file")));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("epoch   1/1")));
}

TEST(Cli, TrainingFlagsReachTheTrainer) {
  char pattern[] = "/tmp/kiln_cli_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  Result r = RunKiln("train --epochs 2 --train-limit 128 --test-limit 64 --threads 1 "
                     "--optimizer adamw --lr 0.002 --weight-decay 0.01 --max-grad-norm 1 "
                     "--lr-schedule cosine --warmup-epochs 1 --lr-mult conv1=0.1 "
                     "--augment hflip,erase --metrics " + std::string(pattern) + "/m.csv");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, AllOf(HasSubstr("adamw lr 0.002"), HasSubstr("cosine schedule after 1"),
                              HasSubstr("clipped to norm 1"), HasSubstr("conv1=0.1"),
                              HasSubstr("augmentation hflip(p=0.5),erase(")));
  FILE* csv = std::fopen((std::string(pattern) + "/m.csv").c_str(), "r");
  ASSERT_NE(csv, nullptr);
  std::fclose(csv);
}

TEST(Cli, UnknownLayerInLrMultListsTheLayers) {
  Result r = RunKiln("train --epochs 1 --train-limit 64 --test-limit 64 --lr-mult conv9=0.1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, AllOf(HasSubstr("'conv9' matches no parameter"),
                              HasSubstr("conv1, conv2, conv3, fc1, fc2")));
}

TEST(Cli, AugmentPreviewWritesAGrid) {
  char pattern[] = "/tmp/kiln_cli_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string png = std::string(pattern) + "/grid.png";
  Result r = RunKiln("augment-preview --augment hflip,perspective --images 3 --variants 4 "
                     "--train-limit 100 --output " + png);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("3 images (rows)"));
  FILE* file = std::fopen(png.c_str(), "rb");
  ASSERT_NE(file, nullptr);
  unsigned char signature[8] = {};
  EXPECT_EQ(std::fread(signature, 1, 8, file), 8u);
  std::fclose(file);
  EXPECT_EQ(signature[1], 'P');
}

TEST(Cli, HelpStatesDefaults) {
  Result r = RunKiln("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("learning rate"), HasSubstr("--lr (default: 0.01)"),
                              HasSubstr("--weight-decay"), HasSubstr("kiln train"),
                              HasSubstr("Exit status")));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr(".cpp")));
}

}  // namespace
