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

}  // namespace

struct Trainer::State {
  explicit State(const CompiledModel& m) : model(m), network(m) {
    for (const ParamInfo& p : m.params) {
      parameters.push_back({p.name, p.shape, p.offset, p.numel, p.trainable});
    }
  }

  // The flat array and entry of the parameter or running statistic `name`, or null.
  std::pair<std::vector<float>*, const ParamInfo*> Find(const std::string& name) {
    for (const ParamInfo& p : model.params) {
      if (p.name == name) return {&network.params(), &p};
    }
    for (const ParamInfo& b : model.buffers) {
      if (b.name == name) return {&network.buffers(), &b};
    }
    return {nullptr, nullptr};
  }

  Status UnknownName(const std::string& name) const {
    std::string known;
    for (const ParamInfo& p : model.params) absl::StrAppend(&known, known.empty() ? "" : ", ", p.name);
    for (const ParamInfo& b : model.buffers) absl::StrAppend(&known, ", ", b.name);
    return InvalidArgument(absl::StrCat("model '", model.name, "' has no parameter '", name,
                                        "'; its parameters and running statistics: ", known));
  }

  // Checks the arguments every batch call shares.
  Status CheckBatch(const char* call, const float* inputs, const void* targets, int batch,
                    bool labels) const {
    if (inputs == nullptr || targets == nullptr) {
      return InvalidArgument(absl::StrCat(call, ": inputs and ", labels ? "labels" : "targets",
                                          " must not be null"));
    }
    if (batch < 1) {
      return InvalidArgument(absl::StrCat(call, ": batch is ", batch, "; pass at least 1 sample"));
    }
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

  Status Update(const char* call) {
    return Guarded(call, [&] { return FromAbsl(network.Update(optimizer, optimizer.lr).status()); });
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

const std::string& Trainer::model_name() const { return state_->model.name; }
std::vector<int64_t> Trainer::input_shape() const { return state_->model.input_shape; }
int64_t Trainer::input_size() const {
  int64_t size = 1;
  for (int64_t d : state_->model.input_shape) size *= d;
  return size;
}
int64_t Trainer::output_size() const { return state_->OutputSize(); }
int Trainer::num_classes() const { return state_->model.num_classes; }
int Trainer::batch_size() const { return state_->model.batch_size; }
const std::vector<ParameterInfo>& Trainer::parameters() const { return state_->parameters; }
int64_t Trainer::parameter_count() const { return state_->model.num_params; }

Status Trainer::InitParameters(uint64_t seed) {
  state_->network.InitParams(seed);
  return Status();
}

Status Trainer::LoadCheckpoint(const std::string& path) {
  return Guarded("LoadCheckpoint", [&] {
    return FromAbsl(state_->network.LoadCheckpoint(path).status());
  });
}

Status Trainer::SaveCheckpoint(const std::string& path) const {
  return Guarded("SaveCheckpoint", [&] {
    const OptimizerOptions& o = state_->optimizer;
    const std::map<std::string, std::string> metadata = {
        {"kiln.optimizer", OptimizerName(o.kind)},
        {"kiln.lr", absl::StrCat(o.lr)},
        {"kiln.momentum", absl::StrCat(o.momentum)},
        {"kiln.nesterov", o.nesterov ? "1" : "0"},
        {"kiln.weight_decay", absl::StrCat(o.weight_decay)},
        {"kiln.beta1", absl::StrCat(o.beta1)},
        {"kiln.beta2", absl::StrCat(o.beta2)},
        {"kiln.eps", absl::StrCat(o.eps)},
        {"kiln.max_grad_norm", absl::StrCat(o.max_grad_norm)}};
    return FromAbsl(state_->network.SaveCheckpoint(path, metadata));
  });
}

Status Trainer::GetParameter(const std::string& name, float* values, size_t count) const {
  auto [array, info] = state_->Find(name);
  if (info == nullptr) return state_->UnknownName(name);
  if (values == nullptr || count != static_cast<size_t>(info->numel)) {
    return InvalidArgument(absl::StrCat("GetParameter('", name, "'): ", values ? "" : "null buffer, ",
                                        "count ", count, "; the parameter has ", info->numel,
                                        " floats"));
  }
  std::copy_n(array->data() + info->offset, info->numel, values);
  return Status();
}

Status Trainer::SetParameter(const std::string& name, const float* values, size_t count) {
  auto [array, info] = state_->Find(name);
  if (info == nullptr) return state_->UnknownName(name);
  if (values == nullptr || count != static_cast<size_t>(info->numel)) {
    return InvalidArgument(absl::StrCat("SetParameter('", name, "'): ", values ? "" : "null values, ",
                                        "count ", count, "; the parameter has ", info->numel,
                                        " floats"));
  }
  std::copy_n(values, info->numel, array->data() + info->offset);
  return Status();
}

Status Trainer::SetHyperparameters(const Hyperparameters& hyperparameters) {
  const OptimizerOptions options = ToOptimizerOptions(hyperparameters);
  absl::Status checked = CheckOptimizerOptions(options, state_->model.params);
  if (!checked.ok()) return FromAbsl(checked);
  state_->hyperparameters = hyperparameters;
  state_->optimizer = options;
  return Status();
}

const Hyperparameters& Trainer::hyperparameters() const { return state_->hyperparameters; }

Status Trainer::TrainStep(const float* inputs, const int32_t* labels, int batch,
                          StepResult* result) {
  Status s = state_->Gradients("TrainStep", inputs, labels, batch, result);
  return s.ok() ? state_->Update("TrainStep") : s;
}

Status Trainer::TrainStep(const float* inputs, const float* targets, int batch,
                          StepResult* result) {
  Status s = state_->Gradients("TrainStep", inputs, targets, batch, result);
  return s.ok() ? state_->Update("TrainStep") : s;
}

Status Trainer::ComputeGradients(const float* inputs, const int32_t* labels, int batch,
                                 StepResult* result) {
  return state_->Gradients("ComputeGradients", inputs, labels, batch, result);
}

Status Trainer::ComputeGradients(const float* inputs, const float* targets, int batch,
                                 StepResult* result) {
  return state_->Gradients("ComputeGradients", inputs, targets, batch, result);
}

Status Trainer::GetGradients(float* gradients, size_t count) const {
  const std::vector<float>& grads = state_->network.grads();
  if (gradients == nullptr || count != grads.size()) {
    return InvalidArgument(absl::StrCat("GetGradients: ", gradients ? "" : "null buffer, ",
                                        "count ", count, "; model '", state_->model.name,
                                        "' has ", grads.size(), " parameter values"));
  }
  std::copy(grads.begin(), grads.end(), gradients);
  return Status();
}

Status Trainer::ApplyGradients(const float* gradients, size_t count) {
  std::vector<float>& grads = state_->network.grads();
  if (gradients == nullptr || count != grads.size()) {
    return InvalidArgument(absl::StrCat("ApplyGradients: ", gradients ? "" : "null gradients, ",
                                        "count ", count, "; model '", state_->model.name,
                                        "' has ", grads.size(), " parameter values"));
  }
  std::copy_n(gradients, count, grads.begin());
  return state_->Update("ApplyGradients");
}

Status Trainer::Predict(const float* inputs, int batch, float* outputs) {
  if (inputs == nullptr || outputs == nullptr) {
    return InvalidArgument("Predict: inputs and outputs must not be null");
  }
  if (batch < 1) {
    return InvalidArgument(absl::StrCat("Predict: batch is ", batch, "; pass at least 1 sample"));
  }
  return Guarded("Predict", [&] { return FromAbsl(state_->network.Forward(inputs, batch, outputs)); });
}

}  // namespace kiln
