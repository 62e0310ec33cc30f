// One training step of models with several segments (ResNet-20 and the torchvision ResNets)
// through the ahead-of-time compiled code and kiln::Network, against the model cases that
// tools/make_parity_reference.py stores in $KILN_TEST_DATA/parity. resnet20 runs as the CLI
// compiles it (1×28×28 inputs, a model compiled for batch 64 run at the reference's batch of 3).
// resnet18/34/50/101/152 are compiled for the reference's 3×64×64 inputs, batch 2 and 10 classes
// (tests/CMakeLists.txt).
//
// Each test writes the parameters and running statistics of tests/reference_weights.h into the
// Network's flat arrays (the model cases store no weights; the deep ResNets' files name the
// tensors they scale, "scaled_weights") and then checks:
//   EvalForwardMatchesPyTorch      Forward in evaluation mode: the logits against eval_output,
//                                  and their mean cross-entropy, computed here in double,
//                                  against eval_loss.
//   TrainingStepMatchesPyTorch     Backward in training mode: the loss, every parameter gradient
//                                  (sampled: 32 elements, the L2 norm and the sum) and every
//                                  running statistic after the step.
// Two stored results are not compared. The training-mode logits ("output") are not an output of
// Kiln's training functions, which return the loss, the gradients and the new running
// statistics, so the logits are checked in evaluation mode through Forward. The runtime does not
// compute d loss / d input ("grad.input").
//
// Tolerances (see ToleranceFor): an element passes when |kiln − torch| ≤ 1e-5 + 1e-4·|torch|,
// unless PyTorch's own float32 steps moved that result by 1e-5 or more (relative L2 error, the
// largest of several float32 runs, stored per result). In a deep network with BatchNorm in
// training mode, float32 round-off flips the sign of a few pre-ReLU values that lie within it of
// 0 (resnet34 before its reference was regenerated: −2.5e-5 in a channel whose values reach 6.5).
// Each flip switches one pixel's gradient path, and BatchNorm's backward pass spreads that over
// its channel and every earlier layer, so every gradient moves by about 1/sqrt(the layer's
// values), 0.4% to 1.5% in resnet34 and resnet50. Which values flip depends on the order of
// float32 sums, so it differs between any two implementations. The reference script therefore
// keeps those networks away from it (file comment there) and stores, besides the error, the
// spread of several float32 runs at each sampled element. Where the error is large, the bound
// grows with both. Every failure message names the bound and why it applied, and the segment
// whose function computed the tensor.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "runtime/compiled_model.h"
#include "runtime/network.h"
#include "runtime/safetensors.h"
#include "tests/parity_compare.h"
#include "tests/reference_weights.h"

namespace kiln {
namespace {

// A reference file and the compiled model that runs it.
struct ModelCase {
  std::string reference;  // The file's name in ParityDir(), without ".safetensors".
  std::string compiled;   // The CompiledModel's registered name.
};

// Names a case in gtest's messages, which otherwise print the struct's bytes.
void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.reference << " on " << c.compiled; }

const ModelCase kModelCases[] = {
    {"resnet20", "resnet20"},
    {"resnet18", "resnet18_parity"},
    {"resnet34", "resnet34_parity"},
    {"resnet50", "resnet50_parity"},
    {"resnet101", "resnet101_parity"},
    {"resnet152", "resnet152_parity"},
};

// PyTorch's float32 steps move a result r by float32_error = max over the runs of
// ||r32 − r||₂ / ||r||₂ from its float64 value. Below 1e-5 the default bound, 1e-5 + 1e-4·|torch|,
// covers that. Above it, a float32 step can only be expected to land about as far from float64
// as PyTorch's, so the bound scales with the error: rel = K·float32_error and, because an
// element's error does not shrink with its value, abs = K·float32_error·rms, where
// rms = ||r||₂ / sqrt(n) is the root mean square of the tensor; and, because a flipped ReLU moves
// some channels much more than others, K·spread at each sampled element, where spread is the
// largest |r32 − r| of PyTorch's runs there. Neither part drops below the default.
//
// K = 4: over whole gradients, Kiln's errors against float64 were at most 3.2 (resnet18), 1.8
// (resnet101) and 1.9 (resnet152) times one float32 run of PyTorch's, measured with torch 1.13.
constexpr double kFloat32ErrorMultiple = 4;
constexpr double kSmallFloat32Error = 1e-5;
// From 1e-3 on, the error comes from flipped ReLUs (resnet101 and resnet152: 1e-3 to 4e-2), and
// which elements they move differs between float32 implementations: with BatchNorm's statistics
// summed in a different order, Kiln's resnet101 left the per-element bound by up to 1.3 times at
// single elements of five tensors. There the sampled elements are compared in L2 norm, the
// measure the stored error is defined in.
constexpr double kFlippedFloat32Error = 1e-3;

bool IsSmallFloat32Error(double float32_error) { return !(float32_error >= kSmallFloat32Error); }

// `spread` is whether the result has a stored spread per element (the loss has none).
parity::Tolerance ToleranceFor(double float32_error, double rms, bool spread = true) {
  parity::Tolerance tolerance;
  if (IsSmallFloat32Error(float32_error)) {
    tolerance.reason = absl::StrFormat("the default, as PyTorch's float32 error is %.2g < %g",
                                       float32_error, kSmallFloat32Error);
    return tolerance;
  }
  tolerance.abs = std::max(tolerance.abs, kFloat32ErrorMultiple * float32_error * rms);
  tolerance.rel = std::max(tolerance.rel, kFloat32ErrorMultiple * float32_error);
  if (spread) tolerance.spread_multiple = kFloat32ErrorMultiple;
  tolerance.elementwise = float32_error < kFlippedFloat32Error;
  tolerance.reason = absl::StrFormat(
      "%g times PyTorch's float32 error %.2g, with rms %.3g of its values%s%s",
      kFloat32ErrorMultiple, float32_error, rms, spread ? ", and its spread" : "",
      tolerance.elementwise ? "" : ", in L2 norm over the samples");
  return tolerance;
}

// The worst comparison of a test, for the summary line that shows how close it came to failing.
struct Worst {
  double score = -1;  // Fraction of the tolerance; > 1 failed.
  std::string tensor;
  std::string reason;

  void Update(double new_score, const std::string& name, const parity::Tolerance& tolerance) {
    if (std::isnan(new_score) || new_score > score) {
      score = std::isnan(new_score) ? INFINITY : new_score;
      tensor = name;
      reason = tolerance.reason;
    }
  }
};

class ResNetParity : public ::testing::TestWithParam<ModelCase> {
 protected:
  void SetUp() override {
    path_ = parity::ParityDir() + "/" + GetParam().reference + ".safetensors";
    absl::StatusOr<TensorFile> file = ReadSafetensors(path_);
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = *std::move(file);
    ASSERT_TRUE(absl::SimpleAtoi(file_.metadata["batch"], &batch_))
        << path_ << ": metadata 'batch' is missing or not an integer";
    ASSERT_EQ(file_.metadata["mode"], "train") << path_;
    ASSERT_EQ(file_.metadata["gradients"], "sampled") << path_;
    // CrossEntropy below has no label smoothing.
    ASSERT_EQ(file_.metadata["spec"].find("label_smoothing"), std::string::npos)
        << path_ << ": the test computes the evaluation loss without label smoothing";

    model_ = FindCompiledModel(GetParam().compiled);
    ASSERT_NE(model_, nullptr) << "compiled model " << GetParam().compiled
                               << " is not linked into this test; the linked models are: "
                               << absl::StrJoin(CompiledModelNames(), ", ");
    ASSERT_EQ(model_->targets, Targets::kClassLabels) << model_->name;

    std::vector<int64_t> input_shape = {batch_};
    input_shape.insert(input_shape.end(), model_->input_shape.begin(), model_->input_shape.end());
    ASSERT_EQ(file_.tensors.count("input"), 1u) << path_ << ": no input";
    input_ = &file_.tensors.at("input");
    ASSERT_EQ(input_->shape, input_shape) << path_ << ": input shape differs from " << model_->name
                                          << "'s, batch " << batch_;
    ASSERT_EQ(file_.tensors.count("targets"), 1u) << path_ << ": no targets";
    labels_ = &file_.tensors.at("targets");
    ASSERT_EQ(labels_->dtype, DType::kI32) << path_ << ": targets";
    ASSERT_EQ(labels_->shape, std::vector<int64_t>{batch_}) << path_ << ": targets";

    reference::ScaledWeights scaled;
    if (auto it = file_.metadata.find("scaled_weights"); it != file_.metadata.end()) {
      const std::vector<std::string> parts = absl::StrSplit(it->second, ' ');
      ASSERT_EQ(parts.size(), 2u) << path_ << ": metadata 'scaled_weights' is '" << it->second
                                  << "', not '<suffix> <factor>'";
      ASSERT_TRUE(absl::SimpleAtod(parts[1], &scaled.factor))
          << path_ << ": the factor of metadata 'scaled_weights' is '" << parts[1]
          << "', not a number";
      scaled.suffix = parts[0];
    }
    network_ = std::make_unique<Network>(*model_);
    for (const ParamInfo& p : model_->params) {
      const std::vector<float> values =
          reference::InitialValues(p.name, p.numel, p.fan_in, scaled);
      std::copy(values.begin(), values.end(), network_->params().begin() + p.offset);
    }
    for (const ParamInfo& b : model_->buffers) {
      const std::vector<float> values =
          reference::InitialValues(b.name, b.numel, b.fan_in, scaled);
      std::copy(values.begin(), values.end(), network_->buffers().begin() + b.offset);
    }
  }

  // Returns "segment k" for the segment whose function computes the gradient of parameter
  // `param` or updates running statistic `buffer` (pass -1 for the other).
  std::string SegmentOf(int param, int buffer) const {
    for (size_t k = 0; k < model_->segments.size(); ++k) {
      const std::vector<int>& list = param >= 0 ? model_->segments[k].params
                                                : model_->segments[k].buffers;
      if (std::find(list.begin(), list.end(), param >= 0 ? param : buffer) != list.end()) {
        return absl::StrCat("segment ", k, " of ", model_->segments.size());
      }
    }
    return "no segment";
  }

  // Returns the stored float32 error and rms of sampled result `name` ("grad.<tensor>" or
  // "buffer_after.<buffer>") of `count` values, or {0, 0} when the file lacks its statistics
  // (MatchesSampled then reports it).
  std::pair<double, double> Float32ErrorAndRms(const std::string& name, int64_t count) const {
    const size_t dot = name.find('.');
    auto stats = file_.tensors.find(name.substr(0, dot) + "_stats." + name.substr(dot + 1));
    if (stats == file_.tensors.end() || stats->second.numel() != 3) return {0, 0};
    const double norm = stats->second.f32()[1];
    return {stats->second.f32()[2], norm / std::sqrt(static_cast<double>(count))};
  }

  // Returns the float metadata value `key`, or fails the test and returns NaN.
  double MetadataNumber(const std::string& key) {
    double value = NAN;
    EXPECT_TRUE(absl::SimpleAtod(file_.metadata[key], &value))
        << path_ << ": metadata '" << key << "' is missing or not a number";
    return value;
  }

  // Checks that the file stores a sampled result for exactly the model's tensors of `infos`
  // under "<group>_stats.", besides the input's gradient, so nothing stored goes unchecked.
  void ExpectStoredFor(const std::string& group, const std::vector<ParamInfo>& infos) {
    std::vector<std::string> stored, compiled;
    const std::string prefix = group + "_stats.";
    for (const auto& [name, tensor] : file_.tensors) {
      if (name.rfind(prefix, 0) == 0 && name != prefix + "input") {
        stored.push_back(name.substr(prefix.size()));
      }
    }
    for (const ParamInfo& p : infos) compiled.push_back(p.name);
    std::sort(compiled.begin(), compiled.end());
    EXPECT_EQ(stored, compiled) << path_ << ": the tensors stored under " << prefix
                                << " differ from " << model_->name << "'s";
  }

  std::string path_;
  TensorFile file_;
  int batch_ = 0;
  const CompiledModel* model_ = nullptr;
  const TensorData* input_ = nullptr;
  const TensorData* labels_ = nullptr;
  std::unique_ptr<Network> network_;
};

// Returns the mean cross-entropy of `logits` {batch, classes} against `labels`, in double.
double CrossEntropy(const std::vector<float>& logits, const int32_t* labels, int batch) {
  const size_t classes = logits.size() / batch;
  double total = 0;
  for (int n = 0; n < batch; ++n) {
    const float* row = logits.data() + n * classes;
    const double max = *std::max_element(row, row + classes);
    double exp_sum = 0;
    for (size_t c = 0; c < classes; ++c) exp_sum += std::exp(row[c] - max);
    total += max + std::log(exp_sum) - row[labels[n]];
  }
  return total / batch;
}

TEST_P(ResNetParity, EvalForwardMatchesPyTorch) {
  std::vector<float> logits(static_cast<size_t>(batch_ * model_->num_classes));
  absl::Status status = network_->Forward(input_->f32(), batch_, logits.data());
  ASSERT_TRUE(status.ok()) << status;

  // PyTorch stores no float32 error for the evaluation step: in evaluation mode BatchNorm
  // normalizes with fixed statistics and amplifies nothing, so the default bound applies, plus
  // 1e-6 of the sample's largest logit. resnet18's logit 0.072 sits among logits up to 35 and
  // moved by 2.2e-5 (1.3 times the default bound) when its convolutions began to sum over
  // input channels innermost; PyTorch's own float32 runs of the training step differ by 4.2e-6.
  parity::Tolerance tolerance;
  tolerance.row_max = parity::kLogitRowMax;
  EXPECT_TRUE(parity::MatchesTensor(file_, "eval_output", logits.data(),
                                    static_cast<int64_t>(logits.size()), tolerance))
      << GetParam().reference << ": Forward (every segment's forward function)";
  const float loss = static_cast<float>(CrossEntropy(logits, labels_->i32(), batch_));
  EXPECT_TRUE(parity::MatchesTensor(file_, "eval_loss", &loss, 1, tolerance))
      << GetParam().reference << ": the cross-entropy of Forward's logits";
}

TEST_P(ResNetParity, TrainingStepMatchesPyTorch) {
  ExpectStoredFor("grad", model_->params);
  ExpectStoredFor("buffer_after", model_->buffers);

  absl::StatusOr<BatchResult> result = network_->Backward(input_->f32(), labels_->i32(), batch_);
  ASSERT_TRUE(result.ok()) << result.status();
  // The worst result overall and the worst of those under the default tolerance.
  Worst worst, worst_default;
  auto record = [&](double score, const std::string& name, double float32_error,
                    const parity::Tolerance& tolerance) {
    worst.Update(score, name, tolerance);
    if (IsSmallFloat32Error(float32_error)) worst_default.Update(score, name, tolerance);
  };

  // The loss: train_last of the last segment.
  const double loss_error = MetadataNumber("float32_loss_error");
  const parity::Tolerance loss_tolerance =
      ToleranceFor(loss_error, std::fabs(result->loss), /*spread=*/false);
  double score = 0;
  EXPECT_TRUE(parity::MatchesTensor(file_, "loss", &result->loss, 1, loss_tolerance, &score))
      << GetParam().reference << ": segment " << model_->segments.size() - 1
      << " (train_last) of " << model_->segments.size();
  record(score, "loss", loss_error, loss_tolerance);

  for (size_t i = 0; i < model_->params.size(); ++i) {
    const ParamInfo& p = model_->params[i];
    const std::string name = "grad." + p.name;
    const auto [float32_error, rms] = Float32ErrorAndRms(name, p.numel);
    const parity::Tolerance tolerance = ToleranceFor(float32_error, rms);
    EXPECT_TRUE(parity::MatchesSampled(file_, name, network_->grads().data() + p.offset, p.numel,
                                       tolerance, &score))
        << GetParam().reference << ": " << SegmentOf(static_cast<int>(i), -1);
    record(score, name, float32_error, tolerance);
  }

  for (size_t i = 0; i < model_->buffers.size(); ++i) {
    const ParamInfo& b = model_->buffers[i];
    const std::string name = "buffer_after." + b.name;
    const auto [float32_error, rms] = Float32ErrorAndRms(name, b.numel);
    const parity::Tolerance tolerance = ToleranceFor(float32_error, rms);
    EXPECT_TRUE(parity::MatchesSampled(file_, name, network_->buffers().data() + b.offset,
                                       b.numel, tolerance, &score))
        << GetParam().reference << ": " << SegmentOf(-1, static_cast<int>(i));
    record(score, name, float32_error, tolerance);
  }

  std::cout << absl::StreamFormat(
      "[  parity  ] %s: worst %s at %.3f of its tolerance (%s); worst under the default "
      "tolerance %s at %.3f\n",
      GetParam().reference, worst.tensor, worst.score, worst.reason, worst_default.tensor,
      worst_default.score);
}

std::string CaseName(const ::testing::TestParamInfo<ModelCase>& info) {
  return info.param.reference;
}

INSTANTIATE_TEST_SUITE_P(Models, ResNetParity, ::testing::ValuesIn(kModelCases), CaseName);

}  // namespace
}  // namespace kiln
