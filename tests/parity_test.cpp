// Every op against PyTorch, from the reference files in $KILN_TEST_DATA/parity that
// tools/make_parity_reference.py writes:
//   OpParity       the op cases (full gradients), one test per file and schedule
//   ModelParity    the model cases without blocks (sampled gradients), every Func at root
//   ModelCaseSpec  every model case's spec against the registered model of the same name
//   ModelSpec      the spec parser of tests/model_spec.h
// The ResNet cases have blocks, so several segments, and are left to the compiled models' test.
//
// OpParity and ModelParity build the case's model from the spec in the file's metadata, lower its
// one segment, JIT-compile it, run it on the stored input, targets, parameters and running
// statistics, and compare the results element by element:
//   MatchesPyTorch                 every Func computed at root (a schedule for correctness, not
//                                  speed), with extra outputs so that every stored value is
//                                  compared:
//     train  LowerSegment(kTrainLast): output, loss, d loss / d input, every parameter gradient
//            and the running statistics after the step.
//     eval   LowerSegment(kForward): the output. Kiln's lowering has no evaluation-mode loss or
//            gradient, so the test adds the case's loss to the forward Funcs and differentiates
//            it with Halide::propagate_adjoints itself, and compares loss and gradients too.
//   ManualScheduleMatchesPyTorch   the function the runtime gets, SegmentPipeline under the
//                                  manual schedule: what its outputs() include.
// An element passes when |kiln − torch| ≤ 1e-5 + 1e-4·|torch|; a failure names the worst
// element of the tensor and its two values (tests/parity_compare.h).
//
// The parameters and running statistics in the files come from the hash formulas of
// tests/reference_weights.h. MatchesPyTorch also checks that the C++ formulas give the same bits,
// because the model cases store no weights and rely on those formulas.

#include <algorithm>
#include <cctype>
#include <cstdint>
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
#include "absl/strings/str_join.h"
#include "compiler/codegen.h"
#include "compiler/lower.h"
#include "compiler/model.h"
#include "compiler/ops/ops.h"
#include "compiler/schedule/schedule.h"
#include "gtest/gtest.h"
#include "models/registry.h"
#include "runtime/safetensors.h"
#include "tests/model_spec.h"
#include "tests/parity_compare.h"
#include "tests/reference_weights.h"

namespace kiln {
namespace {

// The cases whose metadata "gradients" is `gradients` ("full": op cases; "sampled": model
// cases), by file name without ".safetensors", sorted. Unless `blocks`, only those whose model
// has no blocks, so one segment.
std::vector<std::string> CasesWith(const std::string& gradients, bool blocks) {
  std::vector<std::string> cases;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(parity::ParityDir(), error)) {
    if (entry.path().extension() != ".safetensors") continue;
    absl::StatusOr<TensorFile> file = ReadSafetensors(entry.path().string());
    if (!file.ok() || file->metadata["gradients"] != gradients) continue;
    if (blocks || file->metadata["spec"].find("begin_block") == std::string::npos) {
      cases.push_back(entry.path().stem().string());
    }
  }
  std::sort(cases.begin(), cases.end());
  return cases;
}

// A gtest name for a case: its file name with every character but letters and digits as '_'.
std::string TestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

std::vector<int> HalideSizes(const std::vector<int64_t>& torch_shape) {
  return std::vector<int>(torch_shape.rbegin(), torch_shape.rend());
}

Halide::Buffer<float> ToBuffer(const TensorData& t) {
  Halide::Buffer<float> buffer(HalideSizes(t.shape));
  std::memcpy(buffer.data(), t.f32(), t.data.size());
  return buffer;
}

// Compares Kiln's values of stored tensor `name` (Halide buffer, PyTorch's memory order) with
// PyTorch's under the default tolerance, after checking that the shapes agree.
::testing::AssertionResult Matches(const TensorFile& file, const std::string& name,
                                   const Halide::Buffer<float>& kiln) {
  auto it = file.tensors.find(name);
  if (it == file.tensors.end()) return ::testing::AssertionFailure() << name << " is not stored";
  std::vector<int64_t> kiln_shape;
  for (int d = kiln.dimensions(); d-- > 0;) kiln_shape.push_back(kiln.dim(d).extent());
  if (kiln_shape != it->second.shape) {
    return ::testing::AssertionFailure()
           << name << ": Kiln's shape [" << absl::StrJoin(kiln_shape, ", ")
           << "] differs from PyTorch's [" << absl::StrJoin(it->second.shape, ", ") << "]";
  }
  return parity::MatchesTensor(file, name, kiln.data(), kiln.number_of_elements());
}

// Returns the result of which stored tensor `name` contains all or part ("grad.conv.weight" for
// "grad_sample.conv.weight"), or "" for inputs and indices.
std::string ResultOf(const std::string& name) {
  if (name == "output" || name == "loss") return name;
  for (const char* group : {"grad", "buffer_after"}) {
    for (const char* form : {".", "_stats.", "_sample."}) {
      const std::string prefix = absl::StrCat(group, form);
      if (name.rfind(prefix, 0) == 0) return absl::StrCat(group, ".", name.substr(prefix.size()));
    }
  }
  return "";
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
  // Stored in the op cases; regenerated for the model cases.
  for (const std::vector<Param>* group : {&model.params, &model.buffers}) {
    const std::string prefix = group == &model.params ? "param." : "buffer.";
    for (const Param& p : *group) {
      auto it = file.tensors.find(prefix + p.name);
      if (it != file.tensors.end()) {
        inputs.state[p.name] = ToBuffer(it->second);
        continue;
      }
      Halide::Buffer<float> values(HalideSizes(p.shape));
      const std::vector<float> initial = reference::InitialValues(p);
      std::copy(initial.begin(), initial.end(), values.data());
      inputs.state[p.name] = values;
    }
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

// One reference file: its values and the model its spec defines.
class ParityCase : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string path = parity::ParityDir() + "/" + GetParam() + ".safetensors";
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
    ASSERT_EQ(model_.segments.size(), 1u) << path << ": this test runs models without blocks";
  }

  // Checks that the stored parameters and running statistics, where the file has them, are
  // tests/reference_weights.h's.
  void ExpectReferenceWeights() {
    for (const std::vector<Param>* group : {&model_.params, &model_.buffers}) {
      const std::string prefix = group == &model_.params ? "param." : "buffer.";
      for (const Param& p : *group) {
        if (file_.tensors.count(prefix + p.name) == 0) continue;
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

  void RunAndCompare(LoweredSegment& s, Halide::Pipeline& pipeline,
                     const std::vector<std::string>& names, const Halide::ImageParam& eval_targets);
  void CheckEverythingAtRoot();

  TensorFile file_;
  int batch_ = 0;
  std::string mode_;
  Model model_;
};

// The buffer that receives stored result `name` ("loss", "output", "grad.<tensor>",
// "buffer_after.<buffer>"), or the int32 scalar "correct", which no file stores.
Halide::Buffer<> ResultBuffer(const Model& model, int batch, const std::string& name) {
  if (name == "correct") return Halide::Buffer<int32_t>::make_scalar();
  if (name == "loss" || name == "eval_loss") return Halide::Buffer<float>::make_scalar();
  if (name == "output" || name == "eval_output") {
    return BufferOfShape(model.logits_layer().output_shape, batch);
  }
  if (name == "grad.input") return BufferOfShape(model.input_layer().output_shape, batch);
  for (const std::vector<Param>* group : {&model.params, &model.buffers}) {
    const std::string prefix = group == &model.params ? "grad." : "buffer_after.";
    for (const Param& p : *group) {
      if (name == prefix + p.name) return BufferOfShape(p.shape, 0);
    }
  }
  ADD_FAILURE() << "no tensor of the model is stored as " << name;
  return Halide::Buffer<float>::make_scalar();
}

// Names of the stored results that `s.outputs()` computes, in its order.
std::vector<std::string> OutputNames(const LoweredSegment& s) {
  const Model& model = *s.model;
  if (s.mode == LowerMode::kForward) return {"output"};
  std::vector<std::string> names = {"loss", "correct"};
  if (!s.first) names.push_back("grad.input");
  for (int p : s.param_indices) names.push_back("grad." + model.params[p].name);
  for (int b : s.buffer_indices) names.push_back("buffer_after." + model.buffers[b].name);
  return names;
}

// Binds the file's values to `s`, compiles and runs `pipeline` for the stored results `names`
// (one per pipeline output, in order), and compares them with PyTorch's.
void ParityCase::RunAndCompare(LoweredSegment& s, Halide::Pipeline& pipeline,
                             const std::vector<std::string>& names,
                             const Halide::ImageParam& eval_targets) {
  Inputs inputs = ReadInputs(model_, file_);
  Bind(s, inputs);
  if (eval_targets.defined()) {
    Halide::ImageParam targets = eval_targets;  // A handle to the same parameter.
    targets.set(targets.type() == Halide::Int(32) ? Halide::Buffer<>(inputs.labels)
                                                  : Halide::Buffer<>(inputs.float_targets));
  }
  std::vector<Halide::Buffer<>> results;
  for (const std::string& name : names) results.push_back(ResultBuffer(model_, batch_, name));
  const Halide::Target target = HostTarget();
  try {
    pipeline.compile_jit(target);
    Halide::Realization realization(results);
    pipeline.realize(realization, target);
  } catch (const Halide::Error& e) {
    FAIL() << GetParam() << ": compiling or running the lowered segment failed: " << e.what();
  }
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == "correct") continue;
    const Halide::Buffer<float> result(results[i]);
    if (file_.tensors.count(names[i]) > 0) {
      EXPECT_TRUE(Matches(file_, names[i], result)) << GetParam();
    } else {
      EXPECT_TRUE(parity::MatchesSampled(file_, names[i], result.data(),
                                         result.number_of_elements()))
          << GetParam();
    }
  }
}

// Runs the case with every Func computed at root. The pipeline also outputs the prediction, the
// input gradient and, in eval mode, the loss and gradients that the test adds, so every stored
// result is compared. A train case that also stores its eval-mode output and loss (the model
// cases) runs a second, forward-only pipeline for them.
void ParityCase::CheckEverythingAtRoot() {
  ExpectReferenceWeights();
  const bool training = mode_ == "train";
  std::cout << "[  parity  ] " << GetParam() << ": " << mode_ << ", batch " << batch_ << "\n"
            << file_.metadata["spec"];

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
  std::vector<std::string> names = {"loss", "output", "grad.input"};
  for (size_t i = 0; i < grads.size(); ++i) {
    outputs.push_back(grads[i]);
    names.push_back("grad." + model_.params[s.param_indices[i]].name);
  }
  for (size_t i = 0; i < s.new_buffers.size(); ++i) {
    outputs.push_back(s.new_buffers[i]);
    names.push_back("buffer_after." + model_.buffers[s.buffer_indices[i]].name);
  }

  internal::ComputeEverythingAtRoot(outputs);
  Halide::Pipeline pipeline(outputs);
  RunAndCompare(s, pipeline, names, eval.targets);

  for (const auto& [name, tensor] : file_.tensors) {
    const std::string result = ResultOf(name);
    // Evaluation does not update running statistics; the file stores them unchanged.
    const bool unchanged_stats = !training && result.rfind("buffer_after.", 0) == 0;
    const bool compared = std::find(names.begin(), names.end(), result) != names.end();
    EXPECT_TRUE(result.empty() || compared || unchanged_stats)
        << GetParam() << ": " << name << " was not compared";
  }

  if (!training || file_.tensors.count("eval_output") == 0) return;
  LoweredSegment forward = LowerSegment(model_, 0, LowerMode::kForward);
  EvalLoss eval_loss = AddEvalLoss(forward);
  std::vector<Halide::Func> eval_outputs = {eval_loss.loss.loss, forward.output};
  internal::ComputeEverythingAtRoot(eval_outputs);
  Halide::Pipeline eval_pipeline(eval_outputs);
  RunAndCompare(forward, eval_pipeline, {"eval_loss", "eval_output"}, eval_loss.targets);
}

class OpParity : public ParityCase {};

TEST_P(OpParity, MatchesPyTorch) { CheckEverythingAtRoot(); }

// The compiled function as the runtime gets it: s.outputs() under Kiln's manual schedule. Train
// cases compare loss, gradients and running statistics (the first segment computes no input
// gradient), eval cases the output.
TEST_P(OpParity, ManualScheduleMatchesPyTorch) {
  const bool training = mode_ == "train";
  LoweredSegment s =
      LowerSegment(model_, 0, training ? LowerMode::kTrainLast : LowerMode::kForward);
  absl::StatusOr<Halide::Pipeline> pipeline =
      SegmentPipeline(s, Scheduler::kManual, HostTarget());
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  RunAndCompare(s, *pipeline, OutputNames(s), Halide::ImageParam());
}

INSTANTIATE_TEST_SUITE_P(Cases, OpParity, ::testing::ValuesIn(CasesWith("full", false)),
                         TestName);

// The model cases without blocks (LeNet-5, the MLP, the autoencoder, AlexNet) run here as well,
// from regenerated weights against the sampled gradients. This checks the model data, the
// weight formulas and the sampled format. The ResNets have blocks and so several segments, so
// they are left to the compiled models' test.
class ModelParity : public ParityCase {};

TEST_P(ModelParity, MatchesPyTorch) { CheckEverythingAtRoot(); }

INSTANTIATE_TEST_SUITE_P(Models, ModelParity, ::testing::ValuesIn(CasesWith("sampled", false)),
                         TestName);

// The model cases: the spec that made each file's data must define, layer for layer, the
// registered model of the same name (models/*.cpp) at the file's input size and class count.
// Otherwise the compiled models' test would compare a different network with PyTorch.
class ModelCaseSpec : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelCaseSpec, DefinesRegisteredModel) {
  const std::string path = parity::ParityDir() + "/" + GetParam() + ".safetensors";
  absl::StatusOr<TensorFile> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  int batch = 0;
  ASSERT_TRUE(absl::SimpleAtoi(file->metadata["batch"], &batch)) << path << ": metadata 'batch'";
  absl::StatusOr<Model> spec = BuildModelFromSpec(file->metadata["spec"], batch);
  ASSERT_TRUE(spec.ok()) << path << ": " << spec.status();

  // A flat input of F features is read by the registry as channels = F, 1×1.
  const std::vector<int64_t>& in = spec->input_layer().output_shape;
  ModelOptions options;
  options.batch_size = batch;
  options.channels = in[0];
  options.height = in.size() == 3 ? in[1] : 1;
  options.width = in.size() == 3 ? in[2] : 1;
  const Layer& loss = spec->loss_layer();
  options.num_classes = loss.kind == OpKind::kCrossEntropyLoss
                            ? loss.num_classes
                            : spec->logits_layer().output_shape[0];
  absl::StatusOr<Model> registered = BuildModel(spec->name, options);
  ASSERT_TRUE(registered.ok()) << registered.status();

  ASSERT_EQ(spec->layers.size(), registered->layers.size()) << spec->name << ": layer count";
  for (size_t i = 0; i < spec->layers.size(); ++i) {
    const Layer& a = spec->layers[i];
    const Layer& b = registered->layers[i];
    EXPECT_EQ(a.name, b.name) << spec->name << ": layer " << i;
    EXPECT_EQ(OpName(a.kind), std::string(OpName(b.kind))) << spec->name << ": layer " << a.name;
    EXPECT_EQ(a.inputs, b.inputs) << spec->name << ": inputs of layer " << a.name;
    EXPECT_EQ(a.output_shape, b.output_shape) << spec->name << ": shape of layer " << a.name;
  }
  ASSERT_EQ(spec->params.size(), registered->params.size()) << spec->name << ": parameter count";
  for (size_t i = 0; i < spec->params.size(); ++i) {
    EXPECT_EQ(spec->params[i].name, registered->params[i].name) << spec->name;
    EXPECT_EQ(spec->params[i].shape, registered->params[i].shape) << spec->params[i].name;
    EXPECT_EQ(spec->params[i].fan_in, registered->params[i].fan_in) << spec->params[i].name;
  }
  ASSERT_EQ(spec->buffers.size(), registered->buffers.size()) << spec->name << ": buffer count";
  for (size_t i = 0; i < spec->buffers.size(); ++i) {
    EXPECT_EQ(spec->buffers[i].name, registered->buffers[i].name) << spec->name;
  }
  ASSERT_EQ(spec->blocks.size(), registered->blocks.size()) << spec->name << ": block count";
  for (size_t i = 0; i < spec->blocks.size(); ++i) {
    const Block& a = spec->blocks[i];
    const Block& b = registered->blocks[i];
    EXPECT_EQ(a.name, b.name) << spec->name << ": block " << i;
    EXPECT_EQ(a.first, b.first) << spec->name << ": first layer of block " << a.name;
    EXPECT_EQ(a.last, b.last) << spec->name << ": last layer of block " << a.name;
  }
  // Attributes and wiring.
  ASSERT_EQ(spec->segments.size(), registered->segments.size()) << spec->name << ": segments";
  for (size_t i = 0; i < spec->segments.size(); ++i) {
    EXPECT_EQ(SegmentSignature(*spec, static_cast<int>(i)),
              SegmentSignature(*registered, static_cast<int>(i)))
        << spec->name << ": segment " << i;
  }
}

// ---- the spec parser ---------------------------------------------------------------------------

TEST(ModelSpec, BuildsEveryOp) {
  absl::StatusOr<Model> model = BuildModelFromSpec(R"(model name=every_op
input channels=3 height=8 width=8   # a comment
conv2d name=conv out_channels=4 kernel_size=3 stride=2 padding=1 bias=false dilation=1 groups=1
batch_norm2d name=bn eps=1e-3 momentum=0.2
leaky_relu negative_slope=0.2
begin_block name=block
conv2d name=block.conv out_channels=4 kernel_size=1
sigmoid
add a=sigmoid1 b=leaky_relu1
end_block
max_pool2d kernel_size=2 ceil_mode=true
avg_pool2d name=avg_pool2d1 kernel_size=3 stride=1 padding=1 count_include_pad=0
concat from=avg_pool2d1,max_pool2d1
adaptive_avg_pool2d
tanh
relu from=tanh1
flatten
dropout p=0.25
dense name=fc out_features=6 bias=true
batch_norm1d name=bn1d
bce_with_logits_loss target=data
)",
                                                   3);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->name, "every_op");
  EXPECT_EQ(model->batch_size, 3);
  EXPECT_EQ(model->blocks.size(), 1u);
  std::vector<std::string> names;
  for (const Layer& layer : model->layers) names.push_back(layer.name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "input", "conv", "bn", "leaky_relu1", "block.conv", "sigmoid1", "add1",
                       "max_pool2d1", "avg_pool2d1", "concat1", "adaptive_avg_pool2d1", "tanh1",
                       "relu1", "flatten1", "dropout1", "fc", "bn1d", "loss"}));
  const Layer& conv = model->layers[1];
  EXPECT_EQ(conv.stride, 2);
  EXPECT_FALSE(conv.bias);
  EXPECT_FLOAT_EQ(model->layers[2].eps, 1e-3f);
  EXPECT_FLOAT_EQ(model->layers[2].momentum, 0.2f);
  EXPECT_FLOAT_EQ(model->layers[3].negative_slope, 0.2f);
  EXPECT_TRUE(model->layers[7].ceil_mode);
  EXPECT_FALSE(model->layers[8].count_include_pad);
  EXPECT_EQ(model->layers[9].output_shape, (std::vector<int64_t>{8, 2, 2}));
  EXPECT_FLOAT_EQ(model->layers[14].p, 0.25f);
  EXPECT_EQ(model->target_kind(), TargetKind::kTensor);
}

TEST(ModelSpec, TargetIsInput) {
  absl::StatusOr<Model> model = BuildModelFromSpec(
      "input features=4\ndense name=fc out_features=4\nmse_loss target=input\n", 2);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->target_kind(), TargetKind::kInput);
}

// Each invalid spec fails with InvalidArgument, and the message names the line and the problem.
TEST(ModelSpec, RejectsInvalidSpecs) {
  const std::string head = "input channels=1 height=4 width=4\n";
  const std::string tail = "flatten\ndense name=fc out_features=2\ncross_entropy_loss num_classes=2\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {head + "conv3d name=c out_channels=1 kernel_size=1\n" + tail, "spec line 2 (conv3d): unknown op"},
      {head + "relu slope=2\n" + tail, "spec line 2 (relu): unknown key 'slope'"},
      {head + "conv2d name=c kernel_size=1\n" + tail, "out_channels= is required"},
      {head + "conv2d out_channels=1 kernel_size=1\n" + tail, "name= is required"},
      {head + "conv2d name=c out_channels=x kernel_size=1\n" + tail, "'x' is not an integer"},
      {head + "max_pool2d kernel_size=2 ceil_mode=yes\n" + tail, "not true, false, 1 or 0"},
      {head + "relu from=conv\n" + tail, "input layer 'conv' is not defined"},
      {head + "relu name=relu2\n" + tail, "differs from the automatic name 'relu1'"},
      {head + "relu stride\n" + tail, "'stride' is not a key=value field"},
      {head + "relu from=input from=input\n" + tail, "key 'from' is repeated"},
      {head + "model name=late\n" + tail, "must come before every layer"},
      {head + tail + "", ""},  // Valid: checks that the cases above fail only for their line.
  };
  for (const auto& [spec, message] : cases) {
    absl::StatusOr<Model> model = BuildModelFromSpec(spec, 1);
    if (message.empty()) {
      EXPECT_TRUE(model.ok()) << model.status();
      continue;
    }
    ASSERT_FALSE(model.ok()) << "accepted:\n" << spec;
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
    EXPECT_NE(model.status().message().find(message), absl::string_view::npos)
        << "expected '" << message << "' in: " << model.status();
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ModelCaseSpec, ::testing::ValuesIn(CasesWith("sampled", true)),
                         TestName);

}  // namespace
}  // namespace kiln
