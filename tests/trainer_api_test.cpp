// The embedding API (runtime/api/trainer.h, trainer_c.h, the generated <model>_trainer.h) on the
// compiled LeNet-5 and real Fashion-MNIST images: its steps against kiln::Network, gradient
// accumulation, checkpoints, frozen layers, concurrent trainers, and every bad argument.
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lenet5_c5_features_trainer.h"
#include "lenet5_trainer.h"
#include "mlp_regression_trainer.h"
#include "resnet20_features_trainer.h"
#include "resnet20_trainer.h"
#include "runtime/network.h"
#include "runtime/safetensors.h"
#include "tests/training_helpers.h"

namespace kiln {
namespace {

using models::Lenet5Trainer;
using ::testing::HasSubstr;

constexpr int kBatch = 64;

const Dataset& Batch() {
  static const Dataset* batch = new Dataset(test::First(test::Split("train"), kBatch));
  return *batch;
}

std::vector<float> Parameters(const Trainer& trainer) {
  std::vector<float> all;
  for (const ParameterInfo& p : trainer.parameters()) {
    std::vector<float> values(p.size);
    EXPECT_TRUE(trainer.GetParameter(p.name, values.data(), values.size()).ok());
    all.insert(all.end(), values.begin(), values.end());
  }
  return all;
}

TEST(TrainerApi, GeneratedClassDescribesTheModel) {
  Lenet5Trainer trainer;
  EXPECT_EQ(trainer.model_name(), "lenet5");
  EXPECT_EQ(trainer.input_size(), Lenet5Trainer::kInputSize);
  EXPECT_EQ(trainer.input_shape(), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(trainer.output_size(), Lenet5Trainer::kOutputSize);
  EXPECT_EQ(trainer.num_classes(), Lenet5Trainer::kNumClasses);
  EXPECT_EQ(trainer.batch_size(), Lenet5Trainer::kBatchSize);
  EXPECT_EQ(trainer.parameter_count(), Lenet5Trainer::kNumParameters);
  ASSERT_EQ(trainer.parameters().size(), 10u);
  EXPECT_EQ(trainer.parameters()[0].name, "conv1.weight");
  EXPECT_EQ(trainer.parameters()[0].shape, (std::vector<int64_t>{6, 1, 5, 5}));
  const ParameterInfo& last = trainer.parameters().back();
  EXPECT_EQ(last.offset + last.size, trainer.parameter_count());
}

// The API's TrainStep is the runtime's Backward and Update, bit for bit, for SGD and AdamW.
TEST(TrainerApi, TrainStepEqualsNetworkStep) {
  for (const bool adamw : {false, true}) {
    SCOPED_TRACE(adamw ? "adamw" : "sgd");
    Lenet5Trainer trainer;
    ASSERT_TRUE(trainer.InitParameters(3).ok());
    Hyperparameters h;
    h.lr = 0.02f;
    if (adamw) {
      h.optimizer = Hyperparameters::Optimizer::kAdamW;
      h.weight_decay = 0.01f;
    }
    ASSERT_TRUE(trainer.SetHyperparameters(h).ok());
    Network net(models::lenet5());
    net.InitParams(3);
    OptimizerOptions o;
    o.kind = adamw ? OptimizerKind::kAdamW : OptimizerKind::kSgd;
    o.lr = 0.02f;
    o.weight_decay = adamw ? 0.01f : 0.0f;
    for (int step = 0; step < 3; ++step) {
      StepResult r;
      ASSERT_TRUE(trainer.TrainStep(Batch().images.data(), Batch().labels.data(), kBatch, &r).ok());
      absl::StatusOr<BatchResult> expected =
          net.Backward(Batch().images.data(), Batch().labels.data(), kBatch);
      ASSERT_TRUE(expected.ok());
      ASSERT_TRUE(net.Update(o, o.lr).ok());
      EXPECT_EQ(r.loss, expected->loss);
      EXPECT_EQ(r.correct, expected->correct);
    }
    EXPECT_THAT(Parameters(trainer), ::testing::ElementsAreArray(net.params()));
  }
}

// ComputeGradients leaves the parameters alone; the mean of two half-batch gradients applied with
// ApplyGradients is one full-batch step (LeNet-5 has no BatchNorm or dropout).
TEST(TrainerApi, AccumulatedGradientsMatchOneBatch) {
  Lenet5Trainer whole, halves;
  ASSERT_TRUE(whole.InitParameters(5).ok());
  ASSERT_TRUE(halves.InitParameters(5).ok());
  const std::vector<float> before = Parameters(halves);
  const size_t n = static_cast<size_t>(halves.parameter_count());
  std::vector<float> sum(n, 0.0f), part(n);
  const int half = kBatch / 2;
  for (int k = 0; k < 2; ++k) {
    ASSERT_TRUE(halves
                    .ComputeGradients(Batch().images.data() + k * half * 784,
                                      Batch().labels.data() + k * half, half, nullptr)
                    .ok());
    ASSERT_TRUE(halves.GetGradients(part.data(), n).ok());
    for (size_t i = 0; i < n; ++i) sum[i] += part[i] / 2;
  }
  EXPECT_EQ(Parameters(halves), before);
  ASSERT_TRUE(halves.ApplyGradients(sum.data(), n).ok());
  StepResult r;
  ASSERT_TRUE(whole.TrainStep(Batch().images.data(), Batch().labels.data(), kBatch, &r).ok());
  const std::vector<float> a = Parameters(whole), b = Parameters(halves);
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  // Summation order differs; the step moves parameters by about lr * gradient ~ 1e-3.
  EXPECT_LT(worst, 1e-6);
  EXPECT_NE(a, before);
}

TEST(TrainerApi, CheckpointRoundTripAndParameterAccess) {
  Lenet5Trainer trainer;
  ASSERT_TRUE(trainer.InitParameters(1).ok());
  ASSERT_TRUE(
      trainer.TrainStep(Batch().images.data(), Batch().labels.data(), kBatch, nullptr).ok());
  const std::string path = test::TempPath("api.safetensors");
  ASSERT_TRUE(trainer.SaveCheckpoint(path).ok());

  Lenet5Trainer loaded;
  Status s = loaded.LoadCheckpoint(path);
  ASSERT_TRUE(s.ok()) << s.message();
  std::vector<float> expected(kBatch * 10), actual(kBatch * 10);
  ASSERT_TRUE(trainer.Predict(Batch().images.data(), kBatch, expected.data()).ok());
  ASSERT_TRUE(loaded.Predict(Batch().images.data(), kBatch, actual.data()).ok());
  EXPECT_EQ(actual, expected);
  // Both continue identically: the optimizer state came along.
  ASSERT_TRUE(
      trainer.TrainStep(Batch().images.data(), Batch().labels.data(), kBatch, nullptr).ok());
  ASSERT_TRUE(loaded.TrainStep(Batch().images.data(), Batch().labels.data(), kBatch, nullptr).ok());
  EXPECT_EQ(Parameters(loaded), Parameters(trainer));

  // Zeroing fc2 makes every logit fc2's bias.
  std::vector<float> zeros(840, 0.0f), bias(10);
  ASSERT_TRUE(loaded.SetParameter("fc2.weight", zeros.data(), zeros.size()).ok());
  ASSERT_TRUE(loaded.GetParameter("fc2.bias", bias.data(), bias.size()).ok());
  ASSERT_TRUE(loaded.Predict(Batch().images.data(), 1, actual.data()).ok());
  for (int c = 0; c < 10; ++c) EXPECT_EQ(actual[c], bias[c]);
}

TEST(TrainerApi, FrozenParametersStayPut) {
  models::Lenet5C5FeaturesTrainer trainer;
  ASSERT_TRUE(trainer.InitParameters(2).ok());
  const std::vector<float> before = Parameters(trainer);
  std::vector<float> ones(trainer.parameter_count(), 1.0f);
  ASSERT_TRUE(trainer.ApplyGradients(ones.data(), ones.size()).ok());
  const std::vector<float> after = Parameters(trainer);
  for (const ParameterInfo& p : trainer.parameters()) {
    const bool moved = !std::equal(before.begin() + p.offset, before.begin() + p.offset + p.size,
                                   after.begin() + p.offset);
    EXPECT_EQ(moved, p.trainable) << p.name;
  }
}

// Two trainers on two threads at once end where each ends alone.
TEST(TrainerApi, TrainersRunConcurrently) {
  auto train = [](uint64_t seed, std::vector<float>* out) {
    Lenet5Trainer trainer;
    trainer.InitParameters(seed);
    for (int step = 0; step < 4; ++step) {
      trainer.TrainStep(Batch().images.data(), Batch().labels.data(), kBatch, nullptr);
    }
    *out = Parameters(trainer);
  };
  Batch();  // Loaded before the threads start.
  std::vector<float> alone0, alone1, together0, together1;
  train(10, &alone0);
  train(11, &alone1);
  std::thread a(train, 10, &together0), b(train, 11, &together1);
  a.join();
  b.join();
  EXPECT_EQ(together0, alone0);
  EXPECT_EQ(together1, alone1);
}

TEST(TrainerApi, RegressionModelsTakeTargets) {
  models::MlpRegressionTrainer trainer;
  ASSERT_TRUE(trainer.InitParameters(0).ok());
  ASSERT_EQ(trainer.num_classes(), 0);
  const int batch = 4;
  std::vector<float> inputs(batch * trainer.input_size(), 0.5f);
  std::vector<float> targets(batch * trainer.output_size(), 1.0f);
  StepResult first, later;
  ASSERT_TRUE(trainer.TrainStep(inputs.data(), targets.data(), batch, &first).ok());
  for (int i = 0; i < 20; ++i) trainer.TrainStep(inputs.data(), targets.data(), batch, &later);
  EXPECT_LT(later.loss, first.loss);
  std::vector<int32_t> labels(batch, 0);
  Status s = trainer.TrainStep(inputs.data(), labels.data(), batch, nullptr);
  EXPECT_THAT(s.message(), HasSubstr("not class labels; pass float targets"));
}

// Every bad argument is an error naming it, and leaves the parameters as they were.
TEST(TrainerApi, BadArgumentsAreErrors) {
  Lenet5Trainer trainer;
  ASSERT_TRUE(trainer.InitParameters(0).ok());
  const std::vector<float> before = Parameters(trainer);
  const float* images = Batch().images.data();
  std::vector<int32_t> labels(Batch().labels.begin(), Batch().labels.end());
  std::vector<float> out(kBatch * 10);

  EXPECT_THAT(trainer.TrainStep(nullptr, labels.data(), kBatch, nullptr).message(),
              HasSubstr("must not be null"));
  EXPECT_THAT(trainer.TrainStep(images, labels.data(), 0, nullptr).message(),
              HasSubstr("batch is 0; pass at least 1"));
  labels[7] = 10;
  EXPECT_THAT(trainer.TrainStep(images, labels.data(), kBatch, nullptr).message(),
              HasSubstr("label 10 of sample 7 is outside [0, 10)"));
  labels[7] = -1;
  EXPECT_THAT(trainer.ComputeGradients(images, labels.data(), kBatch, nullptr).message(),
              HasSubstr("label -1 of sample 7"));
  std::vector<float> targets(kBatch * 10);
  EXPECT_THAT(trainer.TrainStep(images, targets.data(), kBatch, nullptr).message(),
              HasSubstr("is a classifier; pass int32 class labels"));
  EXPECT_THAT(trainer.Predict(images, -3, out.data()).message(), HasSubstr("batch is -3"));
  EXPECT_THAT(trainer.Predict(images, kBatch, nullptr).message(), HasSubstr("must not be null"));

  std::vector<float> values(150);
  EXPECT_THAT(trainer.GetParameter("conv1.weight", values.data(), 149).message(),
              HasSubstr("count 149; the parameter has 150 floats"));
  Status unknown = trainer.SetParameter("conv9.weight", values.data(), 150);
  EXPECT_THAT(unknown.message(), HasSubstr("no parameter 'conv9.weight'"));
  EXPECT_THAT(unknown.message(), HasSubstr("conv1.weight, conv1.bias"));
  EXPECT_THAT(trainer.ApplyGradients(values.data(), 150).message(),
              HasSubstr("count 150; model 'lenet5' has 61706 parameter values"));
  EXPECT_THAT(trainer.GetGradients(nullptr, 61706).message(), HasSubstr("null buffer"));

  Hyperparameters h;
  h.lr = -1;
  EXPECT_THAT(trainer.SetHyperparameters(h).message(), HasSubstr("learning rate"));
  EXPECT_EQ(trainer.hyperparameters().lr, Hyperparameters().lr);
  h = Hyperparameters();
  h.optimizer = Hyperparameters::Optimizer::kAdam;
  h.beta2 = 1.0;
  EXPECT_THAT(trainer.SetHyperparameters(h).message(), HasSubstr("beta2"));

  EXPECT_THAT(trainer.LoadCheckpoint(test::TempPath("missing.safetensors")).message(),
              HasSubstr("missing.safetensors"));
  // A checkpoint of another model lists the differences.
  models::Resnet20Trainer resnet;
  ASSERT_TRUE(resnet.InitParameters(0).ok());
  const std::string other = test::TempPath("resnet20_api.safetensors");
  ASSERT_TRUE(resnet.SaveCheckpoint(other).ok());
  Status mismatch = trainer.LoadCheckpoint(other);
  EXPECT_THAT(mismatch.message(), HasSubstr("resnet20"));
  EXPECT_THAT(mismatch.message(), HasSubstr("conv1.weight"));
  EXPECT_THAT(trainer.SaveCheckpoint("/nonexistent-dir/x.safetensors").message(),
              HasSubstr("/nonexistent-dir"));

  EXPECT_EQ(Parameters(trainer), before);
}

// A NaN input, loss or gradient is an error, and the parameters keep their values.
TEST(TrainerApi, NonFiniteValuesAreErrors) {
  Lenet5Trainer trainer;
  ASSERT_TRUE(trainer.InitParameters(0).ok());
  std::vector<float> images(Batch().images.begin(), Batch().images.end());
  images[3 * 784 + 10] = NAN;
  std::vector<float> logits(kBatch * 10);
  // ReLU and max pooling would turn the NaN into numbers, so the inputs are checked.
  EXPECT_THAT(trainer.Predict(images.data(), kBatch, logits.data()).message(),
              HasSubstr("Predict: input value 10 of sample 3 is nan"));
  EXPECT_THAT(trainer.TrainStep(images.data(), Batch().labels.data(), kBatch, nullptr).message(),
              HasSubstr("TrainStep: input value 10 of sample 3 is nan"));

  // Weights so large that the logits overflow: the loss and the gradients are not finite.
  std::vector<float> huge(840, 3e38f);
  ASSERT_TRUE(trainer.SetParameter("fc2.weight", huge.data(), huge.size()).ok());
  const std::vector<float> before = Parameters(trainer);
  Status s = trainer.TrainStep(Batch().images.data(), Batch().labels.data(), kBatch, nullptr);
  EXPECT_THAT(s.message(), HasSubstr("step 1: the loss is"));
  EXPECT_THAT(s.message(), HasSubstr("is the first layer affected"));
  EXPECT_EQ(Parameters(trainer), before);

  std::vector<float> gradients(trainer.parameter_count(), 0.0f);
  gradients[2560] = INFINITY;  // conv2.bias starts at 2556.
  EXPECT_THAT(trainer.ApplyGradients(gradients.data(), gradients.size()).message(),
              HasSubstr("gradient value 2560 (of conv2.bias) is inf"));
  EXPECT_EQ(Parameters(trainer), before);
}

TEST(TrainerApi, MovedFromTrainerReturnsErrors) {
  Lenet5Trainer trainer;
  Trainer moved(std::move(trainer));
  EXPECT_THAT(trainer.InitParameters(1).message(), HasSubstr("the trainer was moved from"));
  EXPECT_THAT(trainer.Predict(nullptr, 1, nullptr).message(), HasSubstr("moved from"));
  EXPECT_EQ(trainer.parameter_count(), 0);
  EXPECT_TRUE(trainer.parameters().empty());
  EXPECT_TRUE(moved.InitParameters(1).ok());
  EXPECT_EQ(moved.parameter_count(), Lenet5Trainer::kNumParameters);
  Hyperparameters h;
  h.optimizer = static_cast<Hyperparameters::Optimizer>(7);
  EXPECT_THAT(moved.SetHyperparameters(h).message(), HasSubstr("optimizer 7 is not"));
}

// LoadCheckpoint restores the optimizer the checkpoint records; bad values are errors.
TEST(TrainerApi, CheckpointRestoresHyperparameters) {
  Lenet5Trainer trainer;
  ASSERT_TRUE(trainer.InitParameters(1).ok());
  Hyperparameters h;
  h.optimizer = Hyperparameters::Optimizer::kAdam;
  h.lr = 0.003f;
  h.beta2 = 0.99;
  ASSERT_TRUE(trainer.SetHyperparameters(h).ok());
  const std::string path = test::TempPath("adam.safetensors");
  ASSERT_TRUE(trainer.SaveCheckpoint(path).ok());
  Lenet5Trainer loaded;
  ASSERT_TRUE(loaded.LoadCheckpoint(path).ok());
  EXPECT_EQ(loaded.hyperparameters().optimizer, Hyperparameters::Optimizer::kAdam);
  EXPECT_EQ(loaded.hyperparameters().lr, 0.003f);
  EXPECT_EQ(loaded.hyperparameters().beta2, 0.99);

  // An invalid value without a checksum to catch it first: an error, and nothing loaded.
  absl::StatusOr<TensorFile> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok());
  file->metadata["kiln.optimizer"] = "rmsprop";
  file->metadata.erase("kiln.checksum");
  const std::string bad = test::TempPath("rmsprop.safetensors");
  ASSERT_TRUE(WriteSafetensors(bad, *file).ok());
  Lenet5Trainer fresh;
  const std::vector<float> before = Parameters(fresh);
  EXPECT_THAT(fresh.LoadCheckpoint(bad).message(),
              HasSubstr("has invalid metadata: kiln.optimizer is 'rmsprop': it is not a valid "
                        "value"));
  EXPECT_EQ(Parameters(fresh), before);
  // With the checksum, the same change is corruption.
  file->metadata["kiln.checksum"] = "crc32:00000000";
  ASSERT_TRUE(WriteSafetensors(bad, *file).ok());
  EXPECT_THAT(fresh.LoadCheckpoint(bad).message(), HasSubstr("is corrupt"));
}

// A checkpoint of ResNet-20 loads into the build with stages 1 and 2 frozen, and back.
TEST(TrainerApi, BuildsOfOneDefinitionShareCheckpoints) {
  models::Resnet20Trainer full;
  ASSERT_TRUE(full.InitParameters(2).ok());
  const std::string path = test::TempPath("resnet20_full.safetensors");
  ASSERT_TRUE(full.SaveCheckpoint(path).ok());
  models::Resnet20FeaturesTrainer frozen;
  Status s = frozen.LoadCheckpoint(path);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(Parameters(frozen), Parameters(full));
  const std::string back = test::TempPath("resnet20_frozen.safetensors");
  ASSERT_TRUE(frozen.SaveCheckpoint(back).ok());
  s = full.LoadCheckpoint(back);
  EXPECT_TRUE(s.ok()) << s.message();
}

// The C API: creation by name and through the generated function, a step, errors as statuses.
TEST(TrainerApi, CApi) {
  kiln_trainer* trainer = nullptr;
  kiln_status* status = kiln_trainer_create("lenet6", &trainer);
  ASSERT_NE(status, nullptr);
  EXPECT_THAT(kiln_status_message(status), HasSubstr("no compiled model 'lenet6'"));
  EXPECT_THAT(kiln_status_message(status), HasSubstr("lenet5"));
  EXPECT_EQ(trainer, nullptr);
  kiln_status_free(status);

  ASSERT_EQ(kiln_lenet5_trainer_create(&trainer), nullptr);
  EXPECT_STREQ(kiln_trainer_model_name(trainer), "lenet5");
  EXPECT_EQ(kiln_trainer_input_size(trainer), 784);
  EXPECT_EQ(kiln_trainer_num_parameters(trainer), 10);
  EXPECT_STREQ(kiln_trainer_parameter_name(trainer, 9), "fc2.bias");
  EXPECT_EQ(kiln_trainer_parameter_name(trainer, 10), nullptr);
  int64_t size = 0;
  ASSERT_EQ(kiln_trainer_parameter_size(trainer, "fc1.weight", &size), nullptr);
  EXPECT_EQ(size, 10080);
  ASSERT_EQ(kiln_trainer_init_parameters(trainer, 3), nullptr);
  kiln_hyperparameters h = kiln_hyperparameters_default();
  h.lr = 0.02f;
  ASSERT_EQ(kiln_trainer_set_hyperparameters(trainer, &h), nullptr);
  float loss = 0;
  int correct = -1;
  ASSERT_EQ(kiln_trainer_train_step(trainer, Batch().images.data(), Batch().labels.data(), kBatch,
                                    &loss, &correct),
            nullptr);
  Lenet5Trainer cpp;
  ASSERT_TRUE(cpp.InitParameters(3).ok());
  Hyperparameters hc;
  hc.lr = 0.02f;
  ASSERT_TRUE(cpp.SetHyperparameters(hc).ok());
  StepResult r;
  ASSERT_TRUE(cpp.TrainStep(Batch().images.data(), Batch().labels.data(), kBatch, &r).ok());
  EXPECT_EQ(loss, r.loss);
  EXPECT_EQ(correct, r.correct);
  std::vector<float> c_out(10), cpp_out(10);
  ASSERT_EQ(kiln_trainer_predict(trainer, Batch().images.data(), 1, c_out.data()), nullptr);
  ASSERT_TRUE(cpp.Predict(Batch().images.data(), 1, cpp_out.data()).ok());
  EXPECT_EQ(c_out, cpp_out);

  h.optimizer = 7;
  status = kiln_trainer_set_hyperparameters(trainer, &h);
  EXPECT_THAT(kiln_status_message(status), HasSubstr("optimizer 7 is not"));
  kiln_status_free(status);
  status = kiln_trainer_predict(nullptr, Batch().images.data(), 1, c_out.data());
  EXPECT_THAT(kiln_status_message(status), HasSubstr("the trainer is null"));
  kiln_status_free(status);
  status = kiln_trainer_get_parameter(trainer, nullptr, c_out.data(), 10);
  EXPECT_THAT(kiln_status_message(status), HasSubstr("the name is null"));
  kiln_status_free(status);
  status = kiln_trainer_load_checkpoint(trainer, test::TempPath("none.safetensors").c_str());
  EXPECT_THAT(kiln_status_message(status), HasSubstr("none.safetensors"));
  kiln_status_free(status);
  kiln_trainer_destroy(trainer);
  kiln_trainer_destroy(nullptr);
}

}  // namespace
}  // namespace kiln
