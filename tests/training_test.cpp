// The runtime on the compiled LeNet-5: training on real Fashion-MNIST, evaluation, checkpoints
// and exact resume.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/compiled_model.h"
#include "runtime/idx.h"
#include "runtime/network.h"
#include "runtime/safetensors.h"
#include "runtime/trainer.h"
#include "tests/training_helpers.h"

namespace kiln {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

const CompiledModel& Lenet5() {
  const CompiledModel* model = FindCompiledModel("lenet5");
  EXPECT_NE(model, nullptr);
  return *model;
}

using test::FileBytes;
using test::First;
using test::QuietOptions;
using test::TempPath;

const Dataset& TrainSplit() { return test::Split("train"); }
const Dataset& TestSplit() { return test::Split("t10k"); }

TEST(Training, ShortRunLearnsFashionMnist) {
  const Dataset train = First(TrainSplit(), 2000);
  // Small batches: 2,000 images at batch 64 are only 32 steps, too few to leave the first
  // plateau (PyTorch stays below 0.35 there too). Seeds 0 to 4 reach 0.63, 0.36, 0.61, 0.65 and
  // 0.54, where chance is 0.10. Which seed lands highest changes with the order of summation in
  // the compiled step (seed 1 reached 0.57 before it changed), so the test takes the median of
  // three seeds.
  TrainOptions options = QuietOptions(1);
  options.optimizer.lr = 0.03f;
  options.optimizer.momentum = 0.9f;
  options.batch_size = 8;
  std::vector<double> accuracies;
  for (uint64_t seed : {0, 1, 2}) {
    Network net(Lenet5());
    options.seed = seed;
    absl::StatusOr<std::vector<EpochStats>> history = Train(net, train, &TestSplit(), options);
    ASSERT_TRUE(history.ok()) << history.status();
    ASSERT_EQ(history->size(), 1u);
    EXPECT_EQ(history->back().test.count, 10000);
    EXPECT_LT(history->back().train_loss, 2.3) << "seed " << seed;  // ln 10: uniform guessing
    EXPECT_GE(history->back().test.accuracy, 0.25) << "seed " << seed;
    accuracies.push_back(history->back().test.accuracy);
  }
  std::sort(accuracies.begin(), accuracies.end());
  EXPECT_GE(accuracies[1], 0.5);
}

TEST(Training, ResumeMatchesUninterruptedRun) {
  const Dataset train = First(TrainSplit(), 640);
  const Dataset test = First(TestSplit(), 100);

  Network uninterrupted(Lenet5());
  TrainOptions options = QuietOptions(2);
  options.seed = 7;
  ASSERT_TRUE(Train(uninterrupted, train, &test, options).ok());

  Network first_half(Lenet5());
  TrainOptions first = QuietOptions(1);
  first.seed = 7;
  first.checkpoint = TempPath("resume.safetensors");
  ASSERT_TRUE(Train(first_half, train, &test, first).ok());

  Network resumed(Lenet5());
  TrainOptions second = QuietOptions(2);
  second.seed = 12345;  // ignored: the checkpoint's seed wins, so the shuffles match
  second.checkpoint = first.checkpoint;
  second.resume = true;
  absl::StatusOr<std::vector<EpochStats>> history = Train(resumed, train, &test, second);
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->size(), 1u);
  EXPECT_EQ(history->front().epoch, 2);
  EXPECT_EQ(resumed.params(), uninterrupted.params());  // bitwise
  EXPECT_EQ(resumed.velocity(), uninterrupted.velocity());
}

TEST(Training, ResultsDoNotDependOnThreadCount) {
  const Dataset train = First(TrainSplit(), 256);
  std::vector<FloatArray> results;
  for (int threads : {1, 2}) {
    SetThreads(threads);
    Network net(Lenet5());
    ASSERT_TRUE(Train(net, train, nullptr, QuietOptions(1)).ok());
    results.push_back(net.params());
  }
  SetThreads(0);
  EXPECT_EQ(results[0], results[1]);
}

TEST(Training, BadCheckpointPathFailsBeforeTraining) {
  Network net(Lenet5());
  TrainOptions options = QuietOptions(1);
  options.checkpoint = TempPath("no_such_dir/lenet5.safetensors");
  absl::StatusOr<std::vector<EpochStats>> history =
      Train(net, First(TrainSplit(), 64), nullptr, options);
  ASSERT_FALSE(history.ok());
  EXPECT_THAT(history.status().message(),
              AllOf(HasSubstr(TempPath("no_such_dir")), HasSubstr("not an existing directory")));
}

TEST(Training, DivergenceStopsAndKeepsCheckpoint) {
  const std::string path = TempPath("diverged.safetensors");
  Network good(Lenet5());
  good.InitParams(0);
  ASSERT_TRUE(good.SaveCheckpoint(path, {}).ok());
  const std::string before = FileBytes(path);

  Network net(Lenet5());
  TrainOptions options = QuietOptions(1);
  options.optimizer.lr = 1e6f;
  options.checkpoint = path;
  absl::StatusOr<std::vector<EpochStats>> history =
      Train(net, First(TrainSplit(), 256), nullptr, options);
  ASSERT_FALSE(history.ok());
  // Caught in the step that produced it, before any update with a non-finite gradient.
  EXPECT_THAT(history.status().message(),
              AllOf(HasSubstr("step "), HasSubstr("is the first layer affected"),
                    HasSubstr("stopped in epoch 1 at learning rate 1e+06")));
  EXPECT_EQ(FileBytes(path), before);
}

TEST(Training, ResumeRejectsNegativeEpoch) {
  Network net(Lenet5());
  net.InitParams(0);
  const std::string path = TempPath("negative_epoch.safetensors");
  ASSERT_TRUE(net.SaveCheckpoint(path, {{"kiln.epoch", "-5"}, {"kiln.seed", "0"}}).ok());
  TrainOptions options = QuietOptions(2);
  options.checkpoint = path;
  options.resume = true;
  absl::StatusOr<std::vector<EpochStats>> history =
      Train(net, First(TrainSplit(), 64), nullptr, options);
  ASSERT_FALSE(history.ok());
  EXPECT_THAT(history.status().message(), AllOf(HasSubstr(path), HasSubstr("kiln.epoch")));
}

TEST(Evaluate, CoversLastPartialBatch) {
  Network net(Lenet5());
  net.InitParams(3);
  const Dataset test = First(TestSplit(), 100);  // one batch of 64 and one of 36
  absl::StatusOr<EvalResult> batched = Evaluate(net, test, 64);
  ASSERT_TRUE(batched.ok()) << batched.status();
  absl::StatusOr<EvalResult> single = Evaluate(net, test, 1);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(batched->count, 100);
  EXPECT_DOUBLE_EQ(batched->accuracy, single->accuracy);
  EXPECT_NEAR(batched->loss, single->loss, 1e-5);
}

TEST(Forward, SmallBatchesMatchFullBatch) {
  const CompiledModel& model = Lenet5();
  Network net(model);
  net.InitParams(5);
  const Dataset test = First(TestSplit(), 64);
  std::vector<float> full(64 * 10);
  ASSERT_TRUE(net.Forward(test.images.data(), 64, full.data()).ok());
  // Batches below 4 take the schedule's x-vectorized function, which rounds differently. The
  // others round up to vectors of 16 samples. Each logit may differ by 1e-6 of the sample's
  // largest logit.
  auto tolerance = [&](int sample) {
    float largest = 0;
    for (int k = 0; k < 10; ++k) largest = std::max(largest, std::abs(full[sample * 10 + k]));
    return 1e-6f * largest;
  };
  for (int batch : {1, 2, 3, 5, 17}) {
    std::vector<float> part(batch * 10);
    ASSERT_TRUE(net.Forward(test.images.data(), batch, part.data()).ok()) << "batch " << batch;
    for (int i = 0; i < batch * 10; ++i) {
      ASSERT_NEAR(part[i], full[i], tolerance(i / 10))
          << "batch " << batch << ", sample " << i / 10;
    }
  }
  std::vector<float> one(10);
  ASSERT_TRUE(net.Forward(test.images.data() + 63 * 784, 1, one.data()).ok());
  for (int k = 0; k < 10; ++k) {
    EXPECT_NEAR(one[k], full[63 * 10 + k], tolerance(63)) << "last sample alone";
  }
}

TEST(Init, UniformWithinFanInBound) {
  const CompiledModel& model = Lenet5();
  Network net(model);
  net.InitParams(11);
  for (const ParamInfo& p : model.params) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(p.fan_in));
    float max_abs = 0;
    double mean = 0;
    for (int64_t i = 0; i < p.numel; ++i) {
      max_abs = std::max(max_abs, std::abs(net.params()[p.offset + i]));
      mean += net.params()[p.offset + i];
    }
    EXPECT_LE(max_abs, bound) << p.name;
    EXPECT_GT(max_abs, 0.5f * bound) << p.name;  // spread over the range, not collapsed
    if (p.numel >= 1000) {
      EXPECT_NEAR(mean / p.numel, 0.0, 0.05 * bound) << p.name;
    }
  }
  Network again(model);
  again.InitParams(11);
  EXPECT_EQ(again.params(), net.params());
}

TEST(Checkpoint, RoundTripRestoresState) {
  Network net(Lenet5());
  net.InitParams(1);
  for (size_t i = 0; i < net.velocity().size(); ++i) net.velocity()[i] = 0.001f * (i % 97);
  const std::string path = TempPath("round_trip.safetensors");
  ASSERT_TRUE(net.SaveCheckpoint(path, {{"kiln.epoch", "3"}}).ok());

  Network loaded(Lenet5());
  absl::StatusOr<std::map<std::string, std::string>> metadata = loaded.LoadCheckpoint(path);
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  EXPECT_EQ(metadata->at("kiln.epoch"), "3");
  EXPECT_EQ(metadata->at("kiln.model"), "lenet5");
  EXPECT_EQ(loaded.params(), net.params());
  EXPECT_EQ(loaded.velocity(), net.velocity());
}

TEST(Checkpoint, TruncatedFileIsAnErrorAndChangesNothing) {
  Network net(Lenet5());
  net.InitParams(1);
  const std::string path = TempPath("truncated.safetensors");
  ASSERT_TRUE(net.SaveCheckpoint(path, {}).ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);

  Network target(Lenet5());
  target.InitParams(2);
  const FloatArray before = target.params();
  absl::StatusOr<std::map<std::string, std::string>> loaded = target.LoadCheckpoint(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), AllOf(HasSubstr(path), HasSubstr("truncated")));
  EXPECT_EQ(target.params(), before);
}

TEST(Checkpoint, CorruptedHeaderIsAnError) {
  Network net(Lenet5());
  net.InitParams(1);
  const std::string path = TempPath("corrupted.safetensors");
  ASSERT_TRUE(net.SaveCheckpoint(path, {}).ok());
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(12);
    file.write("#####", 5);
  }
  Network target(Lenet5());
  absl::StatusOr<std::map<std::string, std::string>> loaded = target.LoadCheckpoint(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr(path));
}

TEST(Checkpoint, ShapeMismatchListsDifferences) {
  const CompiledModel& model = Lenet5();
  TensorFile file;
  std::vector<float> zeros(48120, 0.0f);
  for (const ParamInfo& p : model.params) file.tensors[p.name] = MakeF32(p.shape, zeros.data());
  file.tensors["fc2.weight"] = MakeF32({5, 84}, zeros.data());  // a head for 5 classes
  file.tensors.erase("fc2.bias");
  file.tensors["extra.weight"] = MakeF32({2}, zeros.data());
  const std::string path = TempPath("mismatch.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, file).ok());

  Network target(model);
  absl::StatusOr<std::map<std::string, std::string>> loaded = target.LoadCheckpoint(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(),
              AllOf(HasSubstr(path), HasSubstr("'fc2.weight' has shape [5, 84], expected [10, 84]"),
                    HasSubstr("'fc2.bias' is missing"), HasSubstr("'extra.weight' is not a parameter")));
}

TEST(Checkpoint, FailedSaveKeepsPreviousFile) {
  Network net(Lenet5());
  net.InitParams(1);
  const std::string path = TempPath("kept.safetensors");
  ASSERT_TRUE(net.SaveCheckpoint(path, {}).ok());
  const std::string before = FileBytes(path);

  net.InitParams(2);
  const std::string unwritable = TempPath("missing_dir/kept.safetensors");
  absl::Status saved = net.SaveCheckpoint(unwritable, {});
  ASSERT_FALSE(saved.ok());
  EXPECT_THAT(saved.message(), HasSubstr("missing_dir"));
  EXPECT_EQ(FileBytes(path), before);
}

TEST(Dataset, LabelOutsideClassesIsAnError) {
  Dataset data = First(TestSplit(), 10);
  data.labels[4] = 12;
  Network net(Lenet5());
  absl::StatusOr<EvalResult> result = Evaluate(net, data);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(),
              AllOf(HasSubstr("label 12"), HasSubstr("sample 4"), HasSubstr("t10k-labels-idx1")));
}

TEST(Dataset, WrongImageShapeIsAnError) {
  Dataset data = First(TestSplit(), 10);
  data.height = 14;
  data.width = 56;
  Network net(Lenet5());
  absl::StatusOr<std::vector<EpochStats>> history = Train(net, data, nullptr, QuietOptions(1));
  ASSERT_FALSE(history.ok());
  EXPECT_THAT(history.status().message(), AllOf(HasSubstr("1x14x56"), HasSubstr("1x28x28")));
}

TEST(EpochOrder, IsAPermutationThatChangesEachEpoch) {
  std::vector<int64_t> first = EpochOrder(1000, 3, 0);
  std::vector<int64_t> second = EpochOrder(1000, 3, 1);
  EXPECT_EQ(first, EpochOrder(1000, 3, 0));
  EXPECT_NE(first, second);
  std::sort(first.begin(), first.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(first[i], i);
}

}  // namespace
}  // namespace kiln
