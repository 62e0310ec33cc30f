// The inference function under each schedule: the same logits as the manual schedule at batches
// below, at and above a vector of samples, including a batch of one.
#include <random>
#include <vector>

#include "Halide.h"
#include "compiler/codegen.h"
#include "compiler/lower.h"
#include "compiler/model.h"
#include "compiler/schedule/schedule.h"
#include "gtest/gtest.h"
#include "tests/test_models.h"

namespace kiln {
namespace {

Model SmallLenet() {
  absl::StatusOr<Model> model = test_models::SmallLenet(16);
  EXPECT_TRUE(model.ok()) << model.status();
  return *model;
}

// Logits {classes, batch} of `scheduler`'s forward function on fixed random images and weights.
Halide::Buffer<float> ForwardLogits(const Model& model, Scheduler scheduler, int batch,
                                    ForwardBatch forward_batch = ForwardBatch::kAny) {
  LoweredSegment net = LowerSegment(model, 0, LowerMode::kForward);
  absl::StatusOr<Halide::Pipeline> pipeline =
      SegmentPipeline(net, scheduler, HostTarget(), {}, forward_batch);
  EXPECT_TRUE(pipeline.ok()) << pipeline.status();

  std::mt19937 generator(7);
  std::uniform_real_distribution<float> value(-0.5f, 1.0f);
  // Parameters first, then images in sample order, so sample 0 is the same at every batch.
  std::vector<Halide::Buffer<float>> params;
  for (size_t i = 0; i < model.params.size(); ++i) {
    std::vector<int> shape(model.params[i].shape.rbegin(), model.params[i].shape.rend());
    params.emplace_back(shape);
    params.back().for_each_value([&](float& v) { v = 0.5f * value(generator); });
    net.params[i].set(params.back());
  }
  const std::vector<int64_t>& in = model.input_layer().output_shape;
  Halide::Buffer<float> images(static_cast<int>(in[2]), static_cast<int>(in[1]),
                               static_cast<int>(in[0]), batch);
  float* pixel = images.data();  // dense, x fastest: fills sample 0 first
  for (size_t i = 0; i < images.number_of_elements(); ++i) pixel[i] = value(generator);
  net.input.set(images);
  Halide::Buffer<float> logits(static_cast<int>(model.loss_layer().num_classes), batch);
  pipeline->realize(logits, HostTarget());
  return logits;
}

class ForwardSchedule : public ::testing::TestWithParam<Scheduler> {};

TEST_P(ForwardSchedule, MatchesManualAtEveryBatch) {
  const Model model = SmallLenet();
  // 1 and 3 take the manual schedule's small-batch specialization; 16 fills one vector of
  // samples and 17 rounds up to two.
  for (int batch : {1, 3, 16, 17}) {
    Halide::Buffer<float> expected = ForwardLogits(model, Scheduler::kManual, batch);
    Halide::Buffer<float> actual = ForwardLogits(model, GetParam(), batch);
    for (int n = 0; n < batch; ++n) {
      for (int k = 0; k < expected.dim(0).extent(); ++k) {
        ASSERT_NEAR(actual(k, n), expected(k, n), 1e-5f * (1 + std::abs(expected(k, n))))
            << SchedulerName(GetParam()) << ", batch " << batch << ", sample " << n << ", class " << k;
      }
    }
  }
}

TEST(ForwardSchedule, ManualLargeBatchMatchesAnyBatch) {
  const Model model = SmallLenet();
  // From the smallest batch the large-batch function serves, through one vector of samples
  // and a partial second one.
  for (int batch : {kManualLargeBatch, 16, 21}) {
    Halide::Buffer<float> expected = ForwardLogits(model, Scheduler::kManual, batch);
    Halide::Buffer<float> actual =
        ForwardLogits(model, Scheduler::kManual, batch, ForwardBatch::kLarge);
    for (int n = 0; n < batch; ++n) {
      for (int k = 0; k < expected.dim(0).extent(); ++k) {
        ASSERT_NEAR(actual(k, n), expected(k, n), 1e-5f * (1 + std::abs(expected(k, n))))
            << "batch " << batch << ", sample " << n << ", class " << k;
      }
    }
  }
}

TEST(ForwardSchedule, ManualBatchOneMatchesItsRowInABatch) {
  const Model model = SmallLenet();
  Halide::Buffer<float> single = ForwardLogits(model, Scheduler::kManual, 1);
  Halide::Buffer<float> batched = ForwardLogits(model, Scheduler::kManual, 17);
  for (int k = 0; k < single.dim(0).extent(); ++k) {
    EXPECT_FLOAT_EQ(single(k, 0), batched(k, 0)) << "class " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(Autoschedulers, ForwardSchedule,
                         ::testing::Values(Scheduler::kLi2018, Scheduler::kMullapudi2016,
                                           Scheduler::kNaive),
                         [](const ::testing::TestParamInfo<Scheduler>& info) {
                           return std::string(SchedulerName(info.param));
                         });

}  // namespace
}  // namespace kiln
