// kiln::Trainer over kiln::Network: argument checks, status conversion, and no exception or
// abort past the API boundary.
#include "runtime/api/trainer.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <map>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/network.h"
#include "runtime/optimizer.h"

namespace kiln {
namespace {

Status FromAbsl(const absl::Status& status) {
  return status.ok() ? Status() : Status::Error(std::string(status.message()));
}

Status InvalidArgument(std::string message) { return Status::Error(std::move(message)); }

OptimizerOptions ToOptimizerOptions(const Hyperparameters& h) {
  OptimizerOptions o;
  o.kind = h.optimizer == Hyperparameters::Optimizer::kAdam    ? OptimizerKind::kAdam
           : h.optimizer == Hyperparameters::Optimizer::kAdamW ? OptimizerKind::kAdamW
                                                               : OptimizerKind::kSgd;
  o.lr = h.lr;
  o.momentum = h.momentum;
  o.nesterov = h.nesterov;
  o.weight_decay = h.weight_decay;
  o.beta1 = h.beta1;
  o.beta2 = h.beta2;
  o.eps = h.eps;
  o.max_grad_norm = h.max_grad_norm;
  return o;
}

// Runs `body`, turning an escaping exception (std::bad_alloc for a batch too large for memory)
// into an error status.
template <typename Body>
Status Guarded(const char* call, Body body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return Status::Error(absl::StrCat(call, ": out of memory; use a smaller batch"));
  } catch (const std::exception& e) {
    return Status::Error(absl::StrCat(call, ": ", e.what()));
  }
}

Hyperparameters FromOptimizerOptions(const OptimizerOptions& o) {
  Hyperparameters h;
  h.optimizer = o.kind == OptimizerKind::kAdam    ? Hyperparameters::Optimizer::kAdam
                : o.kind == OptimizerKind::kAdamW ? Hyperparameters::Optimizer::kAdamW
                                                  : Hyperparameters::Optimizer::kSgd;
  h.lr = o.lr;
  h.momentum = o.momentum;
  h.nesterov = o.nesterov;
  h.weight_decay = o.weight_decay;
  h.beta1 = o.beta1;
  h.beta2 = o.beta2;
  h.eps = o.eps;
  h.max_grad_norm = o.max_grad_norm;
  return h;
}

// Reads the optimizer's hyperparameters a checkpoint records ("kiln.optimizer", "kiln.lr", ...)
// over `o`; keys that are absent keep their values. The API has no schedule or multipliers, so
// those records are skipped.
absl::Status ReadHyperparameters(const std::map<std::string, std::string>& metadata,
                                 const CompiledModel& model, OptimizerOptions* o) {
  OptimizerOptions read = *o;
  LrSchedule unused;
  absl::StatusOr<std::vector<std::string>> keys = ReadHyperparameterMetadata(
      metadata, {"lr_mult", "lr_schedule", "lr_step_size", "lr_gamma", "min_lr", "warmup_epochs",
                 "warmup_start_factor"},
      /*epochs=*/1, read, unused);
  if (!keys.ok()) return keys.status();
  if (absl::Status s = CheckOptimizerOptions(read, model.params); !s.ok()) return s;
  *o = read;
  return absl::OkStatus();
}

// Checks the inputs for NaN and infinity, which ReLU and max pooling would turn into numbers.
Status CheckInputs(const char* call, const float* inputs, int batch, int64_t sample_size) {
  const int64_t count = batch * sample_size;
  for (int64_t i = 0; i < count; ++i) {
    if (std::isfinite(inputs[i])) continue;
    return InvalidArgument(absl::StrCat(call, ": input value ", i % sample_size, " of sample ",
                                        i / sample_size, " is ", inputs[i],
                                        "; pass finite inputs"));
  }
  return Status();
}

// Every call on a moved-from trainer returns this error.
#define KILN_REQUIRE_STATE(call)                                                            \
  if (!state_) {                                                                            \
    return Status::Error(call ": the trainer was moved from; use the one it was moved to"); \
  }

}  // namespace

struct Trainer::State {
  explicit State(const CompiledModel& m) : model(m), network(m) {
    for (const ParamInfo& p : m.params) {
      parameters.push_back({p.name, p.shape, p.offset, p.numel, p.trainable});
    }
  }

  // The start of the flat array and the entry of the parameter or running statistic `name`,
  // or nulls.
  std::pair<float*, const ParamInfo*> Find(const std::string& name) {
    for (const ParamInfo& p : model.params) {
      if (p.name == name) return {network.params().data(), &p};
    }
    for (const ParamInfo& b : model.buffers) {
      if (b.name == name) return {network.buffers().data(), &b};
    }
    return {nullptr, nullptr};
  }

  Status UnknownName(const std::string& name) const {
    std::string known;
    for (const ParamInfo& p : model.params)
      absl::StrAppend(&known, known.empty() ? "" : ", ", p.name);
    for (const ParamInfo& b : model.buffers) absl::StrAppend(&known, ", ", b.name);
    return InvalidArgument(absl::StrCat("model '", model.name, "' has no parameter '", name,
                                        "'; its parameters and running statistics: ", known));
  }

  // Checks the arguments every batch call shares.
  Status CheckBatch(const char* call, const float* inputs, const void* targets, int batch,
                    bool labels) const {
    if (inputs == nullptr || targets == nullptr) {
      return InvalidArgument(
          absl::StrCat(call, ": inputs and ", labels ? "labels" : "targets", " must not be null"));
    }
    if (batch < 1) {
      return InvalidArgument(absl::StrCat(call, ": batch is ", batch, "; pass at least 1 sample"));
    }
    if (Status s = CheckInputs(call, inputs, batch, InputSize()); !s.ok()) return s;
    const bool classifier = model.targets == Targets::kClassLabels;
    if (labels && !classifier) {
      return InvalidArgument(absl::StrCat(
          call, ": model '", model.name, "' is trained against tensors (", model.loss,
          "), not class labels; pass float targets of batch x ", OutputSize(), " values"));
    }
    if (!labels && classifier) {
      return InvalidArgument(absl::StrCat(call, ": model '", model.name,
                                          "' is a classifier; pass int32 class labels"));
    }
    if (labels) {
      const int32_t* l = static_cast<const int32_t*>(targets);
      for (int i = 0; i < batch; ++i) {
        if (l[i] < 0 || l[i] >= model.num_classes) {
          return InvalidArgument(absl::StrCat(call, ": label ", l[i], " of sample ", i,
                                              " is outside [0, ", model.num_classes,
                                              "), the classes of model '", model.name, "'"));
        }
      }
    }
    return Status();
  }

  int64_t InputSize() const {
    int64_t size = 1;
    for (int64_t d : model.input_shape) size *= d;
    return size;
  }

  int64_t OutputSize() const {
    int64_t size = 1;
    for (int64_t d : model.output_shape) size *= d;
    return size;
  }

  template <typename Target>
  Status Gradients(const char* call, const float* inputs, const Target* targets, int batch,
                   StepResult* result) {
    Status checked = CheckBatch(call, inputs, targets, batch, std::is_same_v<Target, int32_t>);
    if (!checked.ok()) return checked;
    return Guarded(call, [&] {
      absl::StatusOr<BatchResult> r = network.Backward(inputs, targets, batch);
      if (!r.ok()) return FromAbsl(r.status());
      if (result != nullptr) *result = {r->loss, r->correct};
      return Status();
    });
  }

  // The checks of TrainStep: a NaN or infinity in the loss or a gradient is an error before the
  // update, so the parameters stay as they were.
  template <typename Target>
  Status Step(const float* inputs, const Target* targets, int batch, StepResult* result) {
    StepResult local;
    Status s = Gradients("TrainStep", inputs, targets, batch, &local);
    if (!s.ok()) return s;
    if (result != nullptr) *result = local;
    s = Guarded("TrainStep", [&] {
      return FromAbsl(network.CheckFinite(BatchResult{local.loss, local.correct}));
    });
    return s.ok() ? Update("TrainStep") : s;
  }

  Status Update(const char* call) {
    return Guarded(call,
                   [&] { return FromAbsl(network.Update(optimizer, optimizer.lr).status()); });
  }

  const CompiledModel& model;
  Network network;
  Hyperparameters hyperparameters;
  OptimizerOptions optimizer = ToOptimizerOptions(hyperparameters);
  std::vector<ParameterInfo> parameters;
};

Trainer::Trainer(const CompiledModel& model) : state_(std::make_unique<State>(model)) {}
Trainer::~Trainer() = default;
Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;

// The accessors of a moved-from trainer describe an empty model.
namespace {
const std::string kNoName;
const std::vector<ParameterInfo> kNoParameters;
const Hyperparameters kDefaultHyperparameters;
}  // namespace

const std::string& Trainer::model_name() const { return state_ ? state_->model.name : kNoName; }
std::vector<int64_t> Trainer::input_shape() const {
  return state_ ? state_->model.input_shape : std::vector<int64_t>();
}
int64_t Trainer::input_size() const { return state_ ? state_->InputSize() : 0; }
int64_t Trainer::output_size() const { return state_ ? state_->OutputSize() : 0; }
int Trainer::num_classes() const { return state_ ? state_->model.num_classes : 0; }
int Trainer::batch_size() const { return state_ ? state_->model.batch_size : 0; }
const std::vector<ParameterInfo>& Trainer::parameters() const {
  return state_ ? state_->parameters : kNoParameters;
}
int64_t Trainer::parameter_count() const { return state_ ? state_->model.num_params : 0; }

Status Trainer::InitParameters(uint64_t seed) {
  KILN_REQUIRE_STATE("InitParameters");
  state_->network.InitParams(seed);
  return Status();
}

Status Trainer::LoadCheckpoint(const std::string& path) {
  KILN_REQUIRE_STATE("LoadCheckpoint");
  // The optimizer's hyperparameters come along when the checkpoint records them, checked before
  // anything is loaded.
  OptimizerOptions saved = state_->optimizer;
  auto read_hyperparameters = [&](const std::map<std::string, std::string>& metadata) {
    return ReadHyperparameters(metadata, state_->model, &saved);
  };
  Status s = Guarded("LoadCheckpoint", [&] {
    return FromAbsl(state_->network.LoadCheckpoint(path, read_hyperparameters).status());
  });
  if (!s.ok()) return s;
  state_->optimizer = saved;
  state_->hyperparameters = FromOptimizerOptions(saved);
  return Status();
}

Status Trainer::SaveCheckpoint(const std::string& path) const {
  KILN_REQUIRE_STATE("SaveCheckpoint");
  return Guarded("SaveCheckpoint", [&] {
    const std::map<std::string, std::string> metadata =
        HyperparameterMetadata(state_->optimizer, LrSchedule());
    return FromAbsl(state_->network.SaveCheckpoint(path, metadata));
  });
}

Status Trainer::GetParameter(const std::string& name, float* values, size_t count) const {
  KILN_REQUIRE_STATE("GetParameter");
  auto [array, info] = state_->Find(name);
  if (info == nullptr) return state_->UnknownName(name);
  if (values == nullptr || count != static_cast<size_t>(info->numel)) {
    return InvalidArgument(absl::StrCat("GetParameter('", name,
                                        "'): ", values ? "" : "null buffer, ", "count ", count,
                                        "; the parameter has ", info->numel, " floats"));
  }
  std::copy_n(array + info->offset, info->numel, values);
  return Status();
}

Status Trainer::SetParameter(const std::string& name, const float* values, size_t count) {
  KILN_REQUIRE_STATE("SetParameter");
  auto [array, info] = state_->Find(name);
  if (info == nullptr) return state_->UnknownName(name);
  if (values == nullptr || count != static_cast<size_t>(info->numel)) {
    return InvalidArgument(absl::StrCat("SetParameter('", name,
                                        "'): ", values ? "" : "null values, ", "count ", count,
                                        "; the parameter has ", info->numel, " floats"));
  }
  for (int64_t i = 0; i < info->numel; ++i) {
    if (!std::isfinite(values[i])) {
      return InvalidArgument(absl::StrCat("SetParameter('", name, "'): value ", i, " is ",
                                          values[i], "; pass finite values"));
    }
  }
  std::copy_n(values, info->numel, array + info->offset);
  return Status();
}

Status Trainer::SetHyperparameters(const Hyperparameters& hyperparameters) {
  KILN_REQUIRE_STATE("SetHyperparameters");
  const auto kind = static_cast<int>(hyperparameters.optimizer);
  if (kind < 0 || kind > static_cast<int>(Hyperparameters::Optimizer::kAdamW)) {
    return InvalidArgument(
        absl::StrCat("SetHyperparameters: optimizer ", kind, " is not kSgd, kAdam or kAdamW"));
  }
  const OptimizerOptions options = ToOptimizerOptions(hyperparameters);
  absl::Status checked = CheckOptimizerOptions(options, state_->model.params);
  if (!checked.ok()) return FromAbsl(checked);
  state_->hyperparameters = hyperparameters;
  state_->optimizer = options;
  return Status();
}

const Hyperparameters& Trainer::hyperparameters() const {
  return state_ ? state_->hyperparameters : kDefaultHyperparameters;
}

Status Trainer::TrainStep(const float* inputs, const int32_t* labels, int batch,
                          StepResult* result) {
  KILN_REQUIRE_STATE("TrainStep");
  return state_->Step(inputs, labels, batch, result);
}

Status Trainer::TrainStep(const float* inputs, const float* targets, int batch,
                          StepResult* result) {
  KILN_REQUIRE_STATE("TrainStep");
  return state_->Step(inputs, targets, batch, result);
}

Status Trainer::ComputeGradients(const float* inputs, const int32_t* labels, int batch,
                                 StepResult* result) {
  KILN_REQUIRE_STATE("ComputeGradients");
  return state_->Gradients("ComputeGradients", inputs, labels, batch, result);
}

Status Trainer::ComputeGradients(const float* inputs, const float* targets, int batch,
                                 StepResult* result) {
  KILN_REQUIRE_STATE("ComputeGradients");
  return state_->Gradients("ComputeGradients", inputs, targets, batch, result);
}

Status Trainer::GetGradients(float* gradients, size_t count) const {
  KILN_REQUIRE_STATE("GetGradients");
  const FloatArray& grads = state_->network.grads();
  if (gradients == nullptr || count != grads.size()) {
    return InvalidArgument(absl::StrCat("GetGradients: ", gradients ? "" : "null buffer, ",
                                        "count ", count, "; model '", state_->model.name, "' has ",
                                        grads.size(), " parameter values"));
  }
  std::copy(grads.begin(), grads.end(), gradients);
  return Status();
}

Status Trainer::ApplyGradients(const float* gradients, size_t count) {
  KILN_REQUIRE_STATE("ApplyGradients");
  FloatArray& grads = state_->network.grads();
  if (gradients == nullptr || count != grads.size()) {
    return InvalidArgument(absl::StrCat("ApplyGradients: ", gradients ? "" : "null gradients, ",
                                        "count ", count, "; model '", state_->model.name, "' has ",
                                        grads.size(), " parameter values"));
  }
  for (size_t i = 0; i < count; ++i) {
    if (std::isfinite(gradients[i])) continue;
    std::string name;
    for (const ParameterInfo& p : state_->parameters) {
      if (static_cast<int64_t>(i) >= p.offset) name = p.name;
    }
    return InvalidArgument(absl::StrCat("ApplyGradients: gradient value ", i, " (of ", name,
                                        ") is ", gradients[i], "; pass finite gradients"));
  }
  std::copy_n(gradients, count, grads.begin());
  return state_->Update("ApplyGradients");
}

Status Trainer::Predict(const float* inputs, int batch, float* outputs) {
  KILN_REQUIRE_STATE("Predict");
  if (inputs == nullptr || outputs == nullptr) {
    return InvalidArgument("Predict: inputs and outputs must not be null");
  }
  if (batch < 1) {
    return InvalidArgument(absl::StrCat("Predict: batch is ", batch, "; pass at least 1 sample"));
  }
  if (Status s = CheckInputs("Predict", inputs, batch, state_->InputSize()); !s.ok()) return s;
  return Guarded("Predict",
                 [&] { return FromAbsl(state_->network.Forward(inputs, batch, outputs)); });
}

}  // namespace kiln
