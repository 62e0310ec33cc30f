// Every schedule LeNet-5 is compiled with (CMakeLists.txt: li2018, mullapudi2016, naive, and
// adams2019 with -DKILN_BENCH_ADAMS2019=ON) computes what the manual schedule computes: the same
// training-mode loss and gradients, the same parameters after two SGD steps, and the same
// evaluation logits at a batch that fills vectors of samples and at batch 1.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "runtime/compiled_model.h"
#include "runtime/network.h"

namespace kiln {
namespace {

// Relative bound for float results computed in a different order: the schedules sum the same
// terms in different orders, and over LeNet-5's longest reduction (dense 120 → 84 on top of a
// conv over 400 values) round-off stays near 1e-6 of the result's scale.
constexpr float kTolerance = 2e-5f;

std::vector<std::string> OtherSchedules() {
  std::vector<std::string> names;
  for (const std::string& name : CompiledModelNames()) {
    const CompiledModel* m = FindCompiledModel(name);
    if (m->model == "lenet5" && m->schedule != "manual") names.push_back(name);
  }
  return names;
}

struct Batch {
  std::vector<float> images;
  std::vector<int32_t> labels;
};

Batch RandomBatch(const CompiledModel& model, int batch, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  Batch b;
  b.images.resize(static_cast<size_t>(batch) * model.channels * model.height * model.width);
  for (float& p : b.images) p = pixel(generator);
  for (int n = 0; n < batch; ++n) {
    b.labels.push_back(static_cast<int32_t>(generator() % model.num_classes));
  }
  return b;
}

// Expects `actual` within kTolerance of `expected`, relative to the largest |expected|.
void ExpectClose(absl::Span<const float> expected, absl::Span<const float> actual,
                 const std::string& what) {
  ASSERT_EQ(expected.size(), actual.size()) << what;
  float scale = 0;
  for (float v : expected) scale = std::max(scale, std::fabs(v));
  size_t worst = 0;
  float worst_difference = -1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const float difference = std::fabs(actual[i] - expected[i]);
    if (!(difference <= worst_difference)) {
      worst_difference = difference;
      worst = i;
    }
  }
  EXPECT_LE(worst_difference, kTolerance * scale)
      << what << ": element " << worst << " is " << actual[worst] << ", the manual schedule's "
      << expected[worst] << " (scale " << scale << ")";
}

class LenetSchedule : public ::testing::TestWithParam<std::string> {};

TEST_P(LenetSchedule, TrainingStepsMatchManual) {
  const CompiledModel* manual = FindCompiledModel("lenet5");
  const CompiledModel* other = FindCompiledModel(GetParam());
  ASSERT_NE(manual, nullptr);
  ASSERT_NE(other, nullptr);
  ASSERT_EQ(other->num_params, manual->num_params);
  Network expected(*manual), actual(*other);
  expected.InitParams(3);
  actual.InitParams(3);
  const SgdOptions sgd{0.05f, 0.9f, 1e-4f};
  for (int step = 0; step < 2; ++step) {
    // 37 samples: two full vectors of 16 and a tail.
    const Batch b = RandomBatch(*manual, 37, 100 + step);
    absl::StatusOr<BatchResult> e = expected.Backward(b.images.data(), b.labels.data(), 37);
    absl::StatusOr<BatchResult> a = actual.Backward(b.images.data(), b.labels.data(), 37);
    ASSERT_TRUE(e.ok()) << e.status();
    ASSERT_TRUE(a.ok()) << GetParam() << ": " << a.status();
    EXPECT_NEAR(a->loss, e->loss, kTolerance * std::fabs(e->loss)) << GetParam() << ", step " << step;
    EXPECT_EQ(a->correct, e->correct) << GetParam() << ", step " << step;
    ExpectClose(expected.grads(), actual.grads(), GetParam() + " gradients, step " + std::to_string(step));
    ASSERT_TRUE(expected.Update(sgd).ok());
    ASSERT_TRUE(actual.Update(sgd).ok());
    ExpectClose(expected.params(), actual.params(), GetParam() + " parameters after step " + std::to_string(step));
  }
}

TEST_P(LenetSchedule, EvaluationMatchesManual) {
  const CompiledModel* manual = FindCompiledModel("lenet5");
  const CompiledModel* other = FindCompiledModel(GetParam());
  ASSERT_NE(other, nullptr);
  Network expected(*manual), actual(*other);
  expected.InitParams(5);
  actual.InitParams(5);
  for (int batch : {1, 16, 21}) {
    const Batch b = RandomBatch(*manual, batch, 7);
    std::vector<float> e(static_cast<size_t>(batch) * manual->num_classes), a(e.size());
    ASSERT_TRUE(expected.Forward(b.images.data(), batch, e.data()).ok());
    absl::Status status = actual.Forward(b.images.data(), batch, a.data());
    ASSERT_TRUE(status.ok()) << GetParam() << ": " << status;
    ExpectClose(e, a, GetParam() + " logits at batch " + std::to_string(batch));
  }
}

TEST(LenetSchedules, EveryBuiltScheduleIsLinked) {
  // li2018, mullapudi2016 and naive are always built (adams2019 on request).
  const std::vector<std::string> names = OtherSchedules();
  for (const std::string expected : {"lenet5_li2018", "lenet5_mullapudi2016", "lenet5_naive"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end())
        << expected << " is not linked; linked: " << absl::StrJoin(names, ", ");
  }
}

INSTANTIATE_TEST_SUITE_P(Schedules, LenetSchedule, ::testing::ValuesIn(OtherSchedules()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace kiln
