// Training features on compiled LeNet-5 and ResNet-20 variants and real Fashion-MNIST. Covered:
// exact resume with AdamW, a schedule, clipping and augmentation, augmentation that never reaches
// the test set, compile-time freezing, transfer from a checkpoint with another head, and the run
// directory's report.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/augment.h"
#include "runtime/compiled_model.h"
#include "runtime/idx.h"
#include "runtime/metrics_log.h"
#include "runtime/network.h"
#include "runtime/trainer.h"
#include "tests/training_helpers.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

const CompiledModel& Model(const std::string& name) { return test::Compiled(name); }

using test::FileBytes;
using test::First;
using test::Split;
using test::TempPath;

// Classes 5 to 9, relabelled 0 to 4, at most `per_class` images of each (0: all).
Dataset UpperClasses(const Dataset& data, int64_t per_class) {
  absl::StatusOr<Dataset> subset = SelectClasses(data, {5, 6, 7, 8, 9}, per_class);
  EXPECT_TRUE(subset.ok()) << subset.status();
  return *subset;
}

Augmentation Parse(const std::string& spec) {
  absl::StatusOr<Augmentation> a = ParseAugmentation(spec, 1, 28, 28);
  EXPECT_TRUE(a.ok()) << a.status();
  return *a;
}

// AdamW with warm-up and step decay, clipping, a learning-rate multiplier, augmentation and
// gradient-norm metrics: the state a resumed run must restore exactly. (A cosine schedule spans
// the run's --epochs, so a shorter first run would follow another schedule.)
TrainOptions FullOptions(int epochs) {
  TrainOptions options = test::QuietOptions(epochs);
  options.seed = 11;
  options.optimizer.kind = OptimizerKind::kAdamW;
  options.optimizer.lr = 2e-3f;
  options.optimizer.weight_decay = 0.01f;
  options.optimizer.max_grad_norm = 1.0f;
  options.optimizer.lr_multipliers = {{"conv1", 0.5f}};
  options.schedule.kind = LrSchedule::Kind::kStep;
  options.schedule.step_size = 1;
  options.schedule.gamma = 0.5f;
  options.schedule.warmup_epochs = 1;
  options.augmentation =
      Parse("hflip,resized_crop(scale=0.5:1),perspective(distortion=0.3,p=0.5),"
            "jitter(brightness=0.3,contrast=0.3),erase(p=0.5)");
  options.log_grad_norms = true;
  return options;
}

TEST(TrainingFeatures, ResumeIsBitwiseExact) {
  const Dataset train = First(Split("train"), 640);
  const Dataset test = First(Split("t10k"), 200);

  Network uninterrupted(Model("lenet5"));
  TrainOptions all = FullOptions(3);
  all.metrics = TempPath("uninterrupted.jsonl");
  ASSERT_TRUE(Train(uninterrupted, train, &test, all).ok());

  Network first_part(Model("lenet5"));
  TrainOptions first = FullOptions(2);
  first.checkpoint = TempPath("adamw.safetensors");
  first.metrics = TempPath("resumed.jsonl");
  ASSERT_TRUE(Train(first_part, train, &test, first).ok());

  Network resumed(Model("lenet5"));
  TrainOptions second = FullOptions(3);
  second.seed = 999;  // the checkpoint's seed wins
  second.checkpoint = first.checkpoint;
  second.metrics = first.metrics;
  second.resume = true;
  absl::StatusOr<std::vector<EpochStats>> history = Train(resumed, train, &test, second);
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->size(), 1u);
  EXPECT_EQ(resumed.params(), uninterrupted.params());  // bitwise
  EXPECT_EQ(resumed.optimizer_state().exp_avg, uninterrupted.optimizer_state().exp_avg);
  EXPECT_EQ(resumed.optimizer_state().exp_avg_sq, uninterrupted.optimizer_state().exp_avg_sq);
  EXPECT_EQ(resumed.optimizer_state().steps, uninterrupted.optimizer_state().steps);
  EXPECT_EQ(resumed.buffers(), uninterrupted.buffers());
  // The metrics file of the resumed run, its records after epoch 2 dropped and rewritten,
  // equals the uninterrupted run's (times aside: compare the losses and gradient norms).
  absl::StatusOr<std::vector<MetricsRecord>> a = ReadMetrics(all.metrics);
  absl::StatusOr<std::vector<MetricsRecord>> b = ReadMetrics(first.metrics);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->size(), b->size());
  for (size_t i = 0; i < a->size(); ++i) {
    if (const auto* step = std::get_if<StepRecord>(&(*a)[i])) {
      const auto* other = std::get_if<StepRecord>(&(*b)[i]);
      ASSERT_NE(other, nullptr) << "record " << i;
      EXPECT_EQ(step->step, other->step);
      EXPECT_EQ(step->loss, other->loss) << "step " << step->step;
      EXPECT_EQ(step->lr, other->lr);
      EXPECT_EQ(step->grad_norm, other->grad_norm);
      EXPECT_EQ(step->layer_grad_norms, other->layer_grad_norms);
    }
  }
}

TEST(TrainingFeatures, ResumeRepeatsDropoutMasks) {
  // Dropout masks come from (seed, step), and the checkpoint carries both, so the resumed run
  // draws the masks the uninterrupted one drew. Had it lost the step count, epoch 2 would reuse
  // epoch 1's masks and the parameters would differ.
  const Dataset train = First(Split("train"), 384);
  Network uninterrupted(Model("lenet5_dropout"));
  TrainOptions all = test::QuietOptions(2);
  all.seed = 5;
  ASSERT_TRUE(Train(uninterrupted, train, nullptr, all).ok());

  Network first_part(Model("lenet5_dropout"));
  TrainOptions first = test::QuietOptions(1);
  first.seed = 5;
  first.checkpoint = TempPath("dropout.safetensors");
  ASSERT_TRUE(Train(first_part, train, nullptr, first).ok());
  Network resumed(Model("lenet5_dropout"));
  TrainOptions second = test::QuietOptions(2);
  second.checkpoint = first.checkpoint;
  second.resume = true;
  ASSERT_TRUE(Train(resumed, train, nullptr, second).ok());
  EXPECT_EQ(resumed.params(), uninterrupted.params());  // bitwise
}

TEST(TrainingFeatures, AugmentationChangesTrainingButNeverTheTestSet) {
  const Dataset train = First(Split("train"), 320);
  const Dataset test = First(Split("t10k"), 300);
  const std::vector<float> test_images = test.images;

  Network plain(Model("lenet5"));
  TrainOptions options = test::QuietOptions(1);
  ASSERT_TRUE(Train(plain, train, &test, options).ok());

  Network augmented(Model("lenet5"));
  options.augmentation = Parse("erase(p=1,scale=0.3:0.33,value=1),hflip(p=1)");
  absl::StatusOr<std::vector<EpochStats>> history = Train(augmented, train, &test, options);
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_NE(augmented.params(), plain.params());  // the training batches were augmented
  EXPECT_EQ(test.images, test_images);             // the test set was not touched
  // The test figures of the epoch are those of the unaugmented test set.
  absl::StatusOr<EvalResult> direct = Evaluate(augmented, test);
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(history->back().test.loss, direct->loss);
  EXPECT_EQ(history->back().test.accuracy, direct->accuracy);
}

TEST(TrainingFeatures, FrozenLeNetTrainsTheHeadOnly) {
  const Dataset train = UpperClasses(First(Split("train"), 2000), 0);
  Network full(Model("lenet5_c5"));
  Network frozen(Model("lenet5_c5_features"));
  full.InitParams(3);
  frozen.InitParams(3);
  ASSERT_EQ(full.params(), frozen.params());
  const int batch = 64;
  ASSERT_TRUE(full.Backward(train.images.data(), train.labels.data(), batch).ok());
  ASSERT_TRUE(frozen.Backward(train.images.data(), train.labels.data(), batch).ok());
  int trainable = 0;
  for (const ParamInfo& p : frozen.model().params) {
    const auto begin = frozen.grads().begin() + p.offset;
    if (!p.trainable) {
      EXPECT_TRUE(std::all_of(begin, begin + p.numel, [](float g) { return g == 0; })) << p.name;
      continue;
    }
    ++trainable;
    EXPECT_TRUE(p.name.rfind("fc2.", 0) == 0) << p.name;
    for (int64_t i = 0; i < p.numel; ++i) {
      const float expected = full.grads()[p.offset + i];
      EXPECT_NEAR(begin[i], expected, 1e-6f + 1e-5f * std::abs(expected)) << p.name << i;
    }
  }
  EXPECT_EQ(trainable, 2);

  // Training moves fc2 only.
  const FloatArray start = frozen.params();
  TrainOptions options = test::QuietOptions(1);
  options.seed = 3;
  options.optimizer.weight_decay = 0.01f;
  ASSERT_TRUE(Train(frozen, train, nullptr, options).ok());
  for (const ParamInfo& p : frozen.model().params) {
    const bool same = std::equal(frozen.params().begin() + p.offset,
                                 frozen.params().begin() + p.offset + p.numel,
                                 start.begin() + p.offset);
    EXPECT_EQ(same, !p.trainable) << p.name;
  }
}

TEST(TrainingFeatures, FrozenResNetGradientsMatch) {
  // resnet20_features freezes the stem and stages 1 and 2: their segments get no backward
  // function, and stage 3 and the head get the same gradients as in the full model.
  const CompiledModel& model = Model("resnet20_features");
  int without_backward = 0;
  for (const SegmentInfo& s : model.segments) {
    without_backward += model.functions[s.functions].backward == nullptr;
  }
  EXPECT_GE(without_backward, 7);  // stem, 3 + 3 blocks

  const Dataset train = First(Split("train"), 64);
  Network full(Model("resnet20"));
  Network frozen(model);
  full.InitParams(5);
  frozen.InitParams(5);
  const int batch = 16;
  ASSERT_TRUE(full.Backward(train.images.data(), train.labels.data(), batch).ok());
  ASSERT_TRUE(frozen.Backward(train.images.data(), train.labels.data(), batch).ok());
  double worst = 0;
  for (const ParamInfo& p : model.params) {
    for (int64_t i = 0; i < p.numel; ++i) {
      const float actual = frozen.grads()[p.offset + i];
      if (!p.trainable) {
        ASSERT_EQ(actual, 0.0f) << p.name;
        continue;
      }
      const float expected = full.grads()[p.offset + i];
      worst = std::max(worst, std::abs(static_cast<double>(actual) - expected) /
                                  (1e-6 + 1e-4 * std::abs(expected)));
    }
  }
  EXPECT_LE(worst, 1.0);
}

TEST(TrainingFeatures, TransferKeepsTheFeaturesAndReinitializesTheHead) {
  Network source(Model("lenet5"));
  source.InitParams(21);
  const std::string path = TempPath("source.safetensors");
  ASSERT_TRUE(source.SaveCheckpoint(path, {}).ok());

  Network target(Model("lenet5_c5_features"));
  target.InitParams(4);
  const FloatArray fresh = target.params();
  absl::StatusOr<PretrainedReport> report = target.LoadPretrained(path);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->mismatched.size(), 2u);  // fc2.weight [5, 84] and fc2.bias [5]
  EXPECT_THAT(report->mismatched[0], HasSubstr("fc2.weight [5, 84] (the file has F32 [10, 84])"));
  for (const ParamInfo& p : target.model().params) {
    const FloatArray& expected = p.name.rfind("fc2.", 0) == 0 ? fresh : source.params();
    EXPECT_TRUE(std::equal(target.params().begin() + p.offset,
                           target.params().begin() + p.offset + p.numel,
                           expected.begin() + p.offset))
        << p.name;
  }
  // Another architecture is rejected, listing what is missing, and changes nothing.
  Network resnet(Model("resnet20"));
  resnet.InitParams(1);
  const FloatArray before = resnet.params();
  absl::StatusOr<PretrainedReport> rejected = resnet.LoadPretrained(path);
  ASSERT_FALSE(rejected.ok());
  EXPECT_THAT(rejected.status().message(), HasSubstr("'bn1.weight' is missing"));
  EXPECT_EQ(resnet.params(), before);
}

TEST(TrainingFeatures, RunDirectoryGetsMetricsFiguresAndReport) {
  const Dataset train = First(Split("train"), 256);
  const Dataset test = First(Split("t10k"), 100);
  Network net(Model("lenet5"));
  TrainOptions options = test::QuietOptions(2);
  options.run_dir = TempPath("run");
  options.log_grad_norms = true;
  ASSERT_TRUE(Train(net, train, &test, options).ok());
  for (const char* file : {"metrics.jsonl", "loss.png", "accuracy.png", "grad_norms.png",
                           "confusion.png", "filters.png", "report.html"}) {
    EXPECT_TRUE(std::filesystem::exists(options.run_dir + "/" + file)) << file;
  }
  const std::string html = FileBytes(options.run_dir + "/report.html");
  size_t images = 0;
  for (size_t at = html.find("data:image/png;base64,"); at != std::string::npos;
       at = html.find("data:image/png;base64,", at + 1)) {
    ++images;
  }
  EXPECT_EQ(images, 5u);
  absl::StatusOr<std::vector<MetricsRecord>> records =
      ReadMetrics(options.run_dir + "/metrics.jsonl");
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_EQ(records->size(), 2u * (256 / 64) + 2u);  // 4 steps and one epoch record, twice
}

TEST(TrainingFeatures, SelectClassesRelabelsAndLimits) {
  const Dataset subset = UpperClasses(Split("train"), 50);
  EXPECT_EQ(subset.count, 250);
  EXPECT_EQ(subset.num_classes, 5);
  std::vector<int> counts(5, 0);
  for (int32_t label : subset.labels) ++counts.at(label);
  EXPECT_EQ(counts, std::vector<int>(5, 50));
  EXPECT_THAT(SelectClasses(Split("train"), {3, 3}).status().message(),
              HasSubstr("class 3 is listed twice"));
  EXPECT_THAT(SelectClasses(Split("train"), {10}).status().message(),
              HasSubstr("class 10 is outside"));
  EXPECT_THAT(ParseClassList("4-1").status().message(), HasSubstr("'4-1'"));
  // Found by fuzz/fuzz_config.cpp: a huge range used to fill memory.
  EXPECT_THAT(ParseClassList("2-666686666").status().message(),
              HasSubstr("names class 666686666, above 255"));
  absl::StatusOr<std::vector<int>> list = ParseClassList("0-2,7");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<int>{0, 1, 2, 7}));
}

}  // namespace
}  // namespace kiln
