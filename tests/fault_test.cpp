// Faults a long training run meets, on compiled models and real Fashion-MNIST: NaN and infinite
// values in a step (stop naming the step and layer, or skip the batch).
#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/compiled_model.h"
#include "runtime/network.h"
#include "runtime/trainer.h"
#include "tests/training_helpers.h"

namespace kiln {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

using test::Compiled;

constexpr int kImages = 256;  // Four batches of 64.
constexpr int kPoisoned = 70;  // The sample that gets a NaN pixel.

Dataset Poisoned(const Dataset& clean, float value) {
  Dataset data = clean;
  data.images[kPoisoned * 784 + 400] = value;
  return data;
}

// Returns the 1-based step, counted from the first epoch, whose batch in epoch `epoch` (0-based)
// contains sample kPoisoned.
int64_t PoisonedStep(uint64_t seed, int epoch) {
  const std::vector<int64_t> order = EpochOrder(kImages, seed, epoch);
  int64_t position = 0;
  while (order[position] != kPoisoned) ++position;
  return epoch * (kImages / 64) + position / 64 + 1;
}

TEST(NonFinite, NanStopsAtItsStepAndKeepsCheckpoint) {
  const Dataset clean = test::First(test::Split("train"), kImages);
  Network net(Compiled("lenet5"));
  TrainOptions options = test::QuietOptions(1);
  options.seed = 3;
  options.checkpoint = test::TempPath("nan.safetensors");
  ASSERT_TRUE(Train(net, clean, nullptr, options).ok());
  const std::string saved = test::FileBytes(options.checkpoint);

  Network resumed(Compiled("lenet5"));
  options.epochs = 2;
  options.resume = true;
  absl::StatusOr<std::vector<EpochStats>> history =
      Train(resumed, Poisoned(clean, NAN), nullptr, options);
  ASSERT_FALSE(history.ok());
  const std::string message(history.status().message());
  EXPECT_THAT(message, HasSubstr("step " + std::to_string(PoisonedStep(3, 1)) + ": "));
  // ReLU's max(x, 0) turns the NaN into 0 in the forward pass, so the loss stays finite; conv1's
  // weight gradient multiplies the input itself.
  EXPECT_THAT(message, HasSubstr("the gradient of conv1.weight is NaN"));
  EXPECT_THAT(message, HasSubstr("layer conv1 is the first layer affected"));
  EXPECT_THAT(message, HasSubstr("stopped in epoch 2"));
  EXPECT_THAT(message, HasSubstr("is left as it was"));
  EXPECT_EQ(test::FileBytes(options.checkpoint), saved);
  for (float p : resumed.params()) ASSERT_TRUE(std::isfinite(p));
}

TEST(NonFinite, InfinityIsCaughtToo) {
  Network net(Compiled("lenet5"));
  TrainOptions options = test::QuietOptions(1);
  options.seed = 4;
  absl::StatusOr<std::vector<EpochStats>> history =
      Train(net, Poisoned(test::First(test::Split("train"), kImages), INFINITY), nullptr, options);
  ASSERT_FALSE(history.ok());
  EXPECT_THAT(std::string(history.status().message()),
              HasSubstr("step " + std::to_string(PoisonedStep(4, 0)) + ": "));
}

// CheckFinite sums all gradients' squares at once and looks at each tensor only when that sum
// is not finite: a total that overflows while every tensor's sum is finite still passes.
TEST(NonFinite, CheckFiniteOnSetGradients) {
  Network net(Compiled("lenet5"));
  const std::vector<ParamInfo>& params = net.model().params;
  ASSERT_EQ(params.front().name, "conv1.weight");
  ASSERT_EQ(params.back().name, "fc2.bias");
  const BatchResult finite_loss{2.3f, 7};
  ASSERT_TRUE(net.CheckFinite(finite_loss).ok());

  // Squares of 2.25e38: finite in each tensor, infinite in their float sum.
  net.grads()[params.front().offset] = 1.5e19f;
  net.grads()[params.back().offset] = 1.5e19f;
  EXPECT_TRUE(net.CheckFinite(finite_loss).ok());

  net.grads()[params.back().offset] = NAN;
  absl::Status nan = net.CheckFinite(finite_loss);
  ASSERT_FALSE(nan.ok());
  EXPECT_THAT(std::string(nan.message()), HasSubstr("the gradient of fc2.bias is NaN"));

  net.grads()[params.back().offset] = 0.0f;
  absl::Status loss = net.CheckFinite(BatchResult{NAN, 0});
  ASSERT_FALSE(loss.ok());
  EXPECT_THAT(std::string(loss.message()),
              AllOf(HasSubstr("the loss is nan while every gradient is finite"),
                    HasSubstr("check the targets")));
}

// Skipping undoes the batch's BatchNorm statistics, so the run goes on with finite values.
TEST(NonFinite, SkipCountsBatchesAndUndoesStatistics) {
  Network net(Compiled("resnet20"));
  TrainOptions options = test::QuietOptions(1);
  options.skip_nonfinite = true;
  absl::StatusOr<std::vector<EpochStats>> history =
      Train(net, Poisoned(test::First(test::Split("train"), kImages), NAN), nullptr, options);
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_EQ(history->back().skipped_batches, 1);
  EXPECT_TRUE(std::isfinite(history->back().train_loss));
  for (float p : net.params()) ASSERT_TRUE(std::isfinite(p));
  for (float b : net.buffers()) ASSERT_TRUE(std::isfinite(b));
}

// Skipped steps can still leave parameters that overflow on the test set; that epoch must not
// replace the last good checkpoint.
TEST(NonFinite, DivergedEpochKeepsCheckpointWhenSkipping) {
  const Dataset train = test::First(test::Split("train"), 1000);
  const Dataset test = test::First(test::Split("t10k"), 100);
  Network net(Compiled("lenet5"));
  TrainOptions options = test::QuietOptions(2);
  options.checkpoint = test::TempPath("diverged.safetensors");
  ASSERT_TRUE(Train(net, train, &test, options).ok());
  const std::string saved = test::FileBytes(options.checkpoint);

  Network resumed(Compiled("lenet5"));
  options.epochs = 3;
  options.resume = true;
  options.optimizer.lr = 1e3f;
  options.skip_nonfinite = true;
  absl::StatusOr<std::vector<EpochStats>> history = Train(resumed, train, &test, options);
  ASSERT_FALSE(history.ok());
  EXPECT_THAT(std::string(history.status().message()),
              AllOf(HasSubstr("epoch 3 diverged"), HasSubstr("is left as it was")));
  EXPECT_EQ(test::FileBytes(options.checkpoint), saved);
}

}  // namespace
}  // namespace kiln
