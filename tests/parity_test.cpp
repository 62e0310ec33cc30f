// Every op against PyTorch: one test per op case in $KILN_TEST_DATA/parity, the files that
// tools/make_parity_reference.py writes with full gradients (the model cases, with sampled
// gradients and blocks, are for the compiled models' test).
//
// Each test builds the case's model from the spec in the file's metadata, lowers its one segment,
// JIT-compiles it with every Func computed at root (a schedule for correctness, not speed), runs
// it on the stored input, targets, parameters and running statistics, and compares each stored
// value element by element:
//   train  LowerSegment(kTrainLast): output, loss, d loss / d input, every parameter gradient and
//          the running statistics after the step.
//   eval   LowerSegment(kForward): the output. Kiln's lowering has no evaluation-mode loss or
//          gradient, so the test adds the case's loss to the forward Funcs and differentiates it
//          with Halide::propagate_adjoints itself, and compares loss and gradients too.
// An element passes when |kiln − torch| ≤ 1e-5 + 1e-4·|torch|; a failure names the worst
// element of the tensor and its two values.
//
// The parameters and running statistics in the files come from the hash formulas of
// tests/reference_weights.h; each test also checks that the C++ formulas give the same bits, so
// that the model cases, which store no weights, start from PyTorch's.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "Halide.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "compiler/codegen.h"
#include "compiler/lower.h"
#include "compiler/model.h"
#include "compiler/ops/ops.h"
#include "gtest/gtest.h"
#include "runtime/safetensors.h"
#include "tests/model_spec.h"
#include "tests/reference_weights.h"

namespace kiln {
namespace {

constexpr double kRelTol = 1e-4;
constexpr double kAbsTol = 1e-5;

std::string ParityDir() {
  // gtest_discover_tests lists the tests without the ctest environment, so the source tree's
  // directory is the default.
  const char* data = std::getenv("KILN_TEST_DATA");
  return std::string(data != nullptr ? data : KILN_DEFAULT_TEST_DATA) + "/parity";
}

// The cases with full gradients, by file name without ".safetensors", sorted.
std::vector<std::string> OpCases() {
  std::vector<std::string> cases;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(ParityDir(), error)) {
    if (entry.path().extension() != ".safetensors") continue;
    absl::StatusOr<TensorFile> file = ReadSafetensors(entry.path().string());
    if (file.ok() && file->metadata["gradients"] == "full") {
      cases.push_back(entry.path().stem().string());
    }
  }
  std::sort(cases.begin(), cases.end());
  return cases;
}

std::vector<int> HalideSizes(const std::vector<int64_t>& torch_shape) {
  return std::vector<int>(torch_shape.rbegin(), torch_shape.rend());
}

Halide::Buffer<float> ToBuffer(const TensorData& t) {
  Halide::Buffer<float> buffer(HalideSizes(t.shape));
  std::memcpy(buffer.data(), t.f32(), t.data.size());
  return buffer;
}

// "name[i, j, ...]" for flat element `flat` of a row-major tensor of `shape`.
std::string ElementName(const std::string& name, const std::vector<int64_t>& shape, int64_t flat) {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = flat % shape[d];
    flat /= shape[d];
  }
  return absl::StrCat(name, "[", absl::StrJoin(index, ", "), "]");
}

// Compares Kiln's values of stored tensor `name` (Halide buffer, PyTorch's memory order) with
// PyTorch's, prints the largest error and returns a failure that names the worst element.
::testing::AssertionResult Matches(const TensorFile& file, const std::string& name,
                                   const Halide::Buffer<float>& kiln) {
  auto it = file.tensors.find(name);
  if (it == file.tensors.end()) return ::testing::AssertionFailure() << name << " is not stored";
  const TensorData& torch = it->second;
  std::vector<int64_t> kiln_shape;
  for (int d = kiln.dimensions(); d-- > 0;) kiln_shape.push_back(kiln.dim(d).extent());
  if (kiln_shape != torch.shape) {
    return ::testing::AssertionFailure()
           << name << ": Kiln's shape [" << absl::StrJoin(kiln_shape, ", ")
           << "] differs from PyTorch's [" << absl::StrJoin(torch.shape, ", ") << "]";
  }

  int64_t failures = 0, worst = 0;
  double worst_score = -1, max_difference = 0;
  for (int64_t i = 0; i < torch.numel(); ++i) {
    const double expected = torch.f32()[i], actual = kiln.data()[i];
    const double difference = std::fabs(actual - expected);
    const double score = difference / (kAbsTol + kRelTol * std::fabs(expected));
    if (!(score <= 1)) ++failures;  // NaN fails.
    if (!(score <= worst_score)) {
      worst_score = std::isnan(score) ? INFINITY : score;
      worst = i;
    }
    if (!(difference <= max_difference)) max_difference = difference;
  }
  const std::string element = ElementName(name, torch.shape, worst);
  std::cout << absl::StreamFormat("[  parity  ] %-32s %6d values, max |error| %.2e, %s at %.3f "
                                  "of tolerance\n",
                                  name, torch.numel(), max_difference, element, worst_score);
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << absl::StreamFormat(
             "%s: %d of %d values differ from PyTorch by more than %g + %g·|torch|; the worst is "
             "%s: Kiln %.9g, PyTorch %.9g (%.1f times the tolerance)",
             name, failures, torch.numel(), kAbsTol, kRelTol, element, kiln.data()[worst],
             torch.f32()[worst], worst_score);
}

// Schedules every Func of the pipeline that computes `outputs` at root.
void ComputeEverythingAtRoot(const std::vector<Halide::Func>& outputs) {
  std::vector<Halide::Internal::Function> functions;
  for (const Halide::Func& f : outputs) functions.push_back(f.function());
  for (auto& [name, function] : Halide::Internal::build_environment(functions)) {
    Halide::Func(function).compute_root();
  }
}

// The values a lowered segment reads, from the file.
struct Inputs {
  Halide::Buffer<float> input;
  Halide::Buffer<float> float_targets;  // Regression losses; the input for autoencoders.
  Halide::Buffer<int32_t> labels;       // cross_entropy_loss.
  std::map<std::string, Halide::Buffer<float>> state;  // Parameters and running statistics.
};

Inputs ReadInputs(const Model& model, const TensorFile& file) {
  Inputs inputs;
  inputs.input = ToBuffer(file.tensors.at("input"));
  if (model.target_kind() == TargetKind::kClassLabels) {
    const TensorData& labels = file.tensors.at("targets");
    inputs.labels = Halide::Buffer<int32_t>(static_cast<int>(labels.numel()));
    std::memcpy(inputs.labels.data(), labels.i32(), labels.data.size());
  } else if (model.target_kind() == TargetKind::kInput) {
    inputs.float_targets = inputs.input;
  } else {
    inputs.float_targets = ToBuffer(file.tensors.at("targets"));
  }
  for (const Param& p : model.params) {
    inputs.state[p.name] = ToBuffer(file.tensors.at("param." + p.name));
  }
  for (const Param& b : model.buffers) {
    inputs.state[b.name] = ToBuffer(file.tensors.at("buffer." + b.name));
  }
  return inputs;
}

void Bind(LoweredSegment& s, Inputs& inputs) {
  s.input.set(inputs.input);
  if (s.targets.defined()) {
    if (s.targets.type() == Halide::Int(32)) {
      s.targets.set(inputs.labels);
    } else {
      s.targets.set(inputs.float_targets);
    }
  }
  for (size_t i = 0; i < s.params.size(); ++i) {
    s.params[i].set(inputs.state.at(s.model->params[s.param_indices[i]].name));
  }
  for (size_t i = 0; i < s.buffers.size(); ++i) {
    s.buffers[i].set(inputs.state.at(s.model->buffers[s.buffer_indices[i]].name));
  }
  s.seed.set(0);
}

Halide::Buffer<float> BufferOfShape(const std::vector<int64_t>& sample_shape, int batch) {
  std::vector<int> sizes = HalideSizes(sample_shape);
  if (batch > 0) sizes.push_back(batch);
  return Halide::Buffer<float>(sizes);
}

// The evaluation-mode loss of `s` (lowered with kForward) and its adjoints. LowerSegment defines
// a loss only for training, so the test builds it from the loss ops here.
struct EvalLoss {
  Halide::ImageParam targets;
  ops::LossFuncs loss;
};

EvalLoss AddEvalLoss(const LoweredSegment& s) {
  const Model& model = *s.model;
  const Layer& loss_layer = model.loss_layer();
  const std::vector<int64_t>& out_shape = model.logits_layer().output_shape;
  const int rank = static_cast<int>(model.input_layer().output_shape.size());
  const ops::Context context{false, s.input.dim(rank).extent(), s.seed};

  EvalLoss eval;
  const bool labels = model.target_kind() == TargetKind::kClassLabels;
  const int dims = labels ? 1 : static_cast<int>(out_shape.size()) + 1;
  eval.targets = Halide::ImageParam(labels ? Halide::Int(32) : Halide::Float(32), dims, "targets");
  std::vector<Halide::Var> vars =
      labels ? std::vector<Halide::Var>{ops::vars().n} : ops::TensorVars(out_shape.size());
  Halide::Func targets("eval_targets");
  targets(vars) = eval.targets(std::vector<Halide::Expr>(vars.begin(), vars.end()));
  eval.loss = labels ? ops::CrossEntropyLoss(loss_layer, context, s.output, targets)
                     : ops::RegressionLoss(loss_layer, out_shape, context, s.output, targets);
  return eval;
}

class OpParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string path = ParityDir() + "/" + GetParam() + ".safetensors";
    absl::StatusOr<TensorFile> file = ReadSafetensors(path);
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = *std::move(file);
    ASSERT_TRUE(absl::SimpleAtoi(file_.metadata["batch"], &batch_))
        << path << ": metadata 'batch' is missing or not an integer";
    mode_ = file_.metadata["mode"];
    ASSERT_TRUE(mode_ == "train" || mode_ == "eval") << path << ": mode '" << mode_ << "'";
    absl::StatusOr<Model> model = BuildModelFromSpec(file_.metadata["spec"], batch_);
    ASSERT_TRUE(model.ok()) << path << ": " << model.status();
    model_ = *std::move(model);
    ASSERT_EQ(model_.segments.size(), 1u) << path << ": the op cases must have no blocks";
  }

  // Checks that the stored parameters and running statistics are tests/reference_weights.h's.
  void ExpectReferenceWeights() {
    for (const std::vector<Param>* group : {&model_.params, &model_.buffers}) {
      const std::string prefix = group == &model_.params ? "param." : "buffer.";
      for (const Param& p : *group) {
        const TensorData& stored = file_.tensors.at(prefix + p.name);
        const std::vector<float> expected = reference::InitialValues(p);
        ASSERT_EQ(stored.shape, p.shape) << prefix << p.name;
        int64_t first_difference = -1;
        for (int64_t i = 0; i < p.numel() && first_difference < 0; ++i) {
          if (std::memcmp(&stored.f32()[i], &expected[i], sizeof(float)) != 0) first_difference = i;
        }
        EXPECT_EQ(first_difference, -1)
            << prefix << p.name << ": the stored value at flat index " << first_difference
            << " differs from tests/reference_weights.h's, so the C++ and Python formulas "
               "disagree: stored "
            << stored.f32()[first_difference] << ", computed " << expected[first_difference];
      }
    }
  }

  TensorFile file_;
  int batch_ = 0;
  std::string mode_;
  Model model_;
};

TEST_P(OpParity, MatchesPyTorch) {
  ExpectReferenceWeights();
  Inputs inputs = ReadInputs(model_, file_);
  const Halide::Target target = HostTarget();
  const bool training = mode_ == "train";
  std::cout << "[  parity  ] " << GetParam() << ": " << mode_ << ", batch " << batch_ << "\n"
            << file_.metadata["spec"];

  // Lowering: the training step, or the forward Funcs with the test's own loss.
  LoweredSegment s =
      LowerSegment(model_, 0, training ? LowerMode::kTrainLast : LowerMode::kForward);
  EvalLoss eval;
  Halide::Func loss = s.loss.loss;
  std::vector<Halide::Func> grads = s.grads;
  Halide::Func input_grad = s.input_grad;
  if (!training) {
    eval = AddEvalLoss(s);
    loss = eval.loss.loss;
    const Halide::Derivative d = Halide::propagate_adjoints(loss);
    for (const Halide::Func& param : s.param_funcs) grads.push_back(d(param));
    input_grad = d(s.input_func);
  }
  std::vector<Halide::Func> outputs = {loss, s.output, input_grad};
  outputs.insert(outputs.end(), grads.begin(), grads.end());
  outputs.insert(outputs.end(), s.new_buffers.begin(), s.new_buffers.end());

  // Buffers for the outputs, in the same order.
  const std::vector<int64_t>& in_shape = model_.input_layer().output_shape;
  std::vector<Halide::Buffer<float>> results = {
      Halide::Buffer<float>::make_scalar(),
      BufferOfShape(model_.logits_layer().output_shape, batch_), BufferOfShape(in_shape, batch_)};
  std::vector<std::string> names = {"loss", "output", "grad.input"};
  for (int p : s.param_indices) {
    results.push_back(BufferOfShape(model_.params[p].shape, 0));
    names.push_back("grad." + model_.params[p].name);
  }
  for (int b : s.buffer_indices) {
    if (!training) break;
    results.push_back(BufferOfShape(model_.buffers[b].shape, 0));
    names.push_back("buffer_after." + model_.buffers[b].name);
  }
  ASSERT_EQ(results.size(), outputs.size()) << "one result buffer per output Func";

  Bind(s, inputs);
  if (!training) {
    eval.targets.set(eval.targets.type() == Halide::Int(32)
                         ? Halide::Buffer<>(inputs.labels)
                         : Halide::Buffer<>(inputs.float_targets));
  }
  try {
    ComputeEverythingAtRoot(outputs);
    Halide::Pipeline pipeline(outputs);
    pipeline.compile_jit(target);
    std::vector<Halide::Buffer<>> buffers(results.begin(), results.end());
    Halide::Realization realization(buffers);
    pipeline.realize(realization, target);
  } catch (const Halide::Error& e) {
    FAIL() << GetParam() << ": compiling or running the lowered segment failed: " << e.what();
  }

  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_TRUE(Matches(file_, names[i], results[i])) << GetParam();
  }

  // Every stored result must have been compared.
  for (const auto& [name, tensor] : file_.tensors) {
    const bool result = name == "output" || name == "loss" || name.rfind("grad.", 0) == 0 ||
                        name.rfind("buffer_after.", 0) == 0;
    if (!result) continue;
    const bool compared = std::find(names.begin(), names.end(), name) != names.end();
    // Evaluation does not update running statistics; the file stores them unchanged.
    const bool unchanged_stats = !training && name.rfind("buffer_after.", 0) == 0;
    EXPECT_TRUE(compared || unchanged_stats) << GetParam() << ": " << name << " was not compared";
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, OpParity, ::testing::ValuesIn(OpCases()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace kiln
