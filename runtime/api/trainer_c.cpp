// The C API over kiln::Trainer: opaque handles, and statuses the caller frees.
#include "runtime/api/trainer_c.h"

#include <memory>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/api/trainer.h"
#include "runtime/compiled_model.h"

struct kiln_trainer {
  explicit kiln_trainer(const kiln::CompiledModel& model) : trainer(model) {}
  kiln::Trainer trainer;
};

struct kiln_status {
  std::string message;
};

namespace {

// Null for success; a new status for an error. Allocation failure while reporting one is
// reported as the static status below, which kiln_status_free leaves alone.
kiln_status kOutOfMemory{"out of memory"};

kiln_status* ToC(const kiln::Status& status) {
  if (status.ok()) return nullptr;
  kiln_status* error = new (std::nothrow) kiln_status;
  if (error == nullptr) return &kOutOfMemory;
  error->message = status.message();
  return error;
}

kiln_status* Error(std::string message) { return ToC(kiln::Status::Error(std::move(message))); }

// The C calls with optional loss and correct outputs.
template <typename Call>
kiln_status* WithResult(Call call, float* loss, int* correct) {
  kiln::StepResult result;
  kiln::Status status = call(&result);
  if (status.ok()) {
    if (loss != nullptr) *loss = result.loss;
    if (correct != nullptr) *correct = result.correct;
  }
  return ToC(status);
}

#define KILN_CHECK_HANDLE(trainer, call) \
  if ((trainer) == nullptr) return Error(call ": the trainer is null; create it first")

}  // namespace

extern "C" {

const char* kiln_status_message(const kiln_status* status) {
  return status == nullptr ? "" : status->message.c_str();
}

void kiln_status_free(kiln_status* status) {
  if (status != &kOutOfMemory) delete status;
}

kiln_hyperparameters kiln_hyperparameters_default(void) {
  const kiln::Hyperparameters d;
  return {KILN_OPTIMIZER_SGD, d.lr,    d.momentum, d.nesterov ? 1 : 0,
          d.weight_decay,     d.beta1, d.beta2,    d.eps,
          d.max_grad_norm};
}

kiln_status* kiln_trainer_create(const char* model_name, kiln_trainer** trainer) {
  if (trainer == nullptr) return Error("kiln_trainer_create: the output pointer is null");
  *trainer = nullptr;
  if (model_name == nullptr) return Error("kiln_trainer_create: the model name is null");
  const kiln::CompiledModel* model = kiln::FindCompiledModel(model_name);
  if (model == nullptr) {
    std::string known;
    for (const std::string& name : kiln::CompiledModelNames()) {
      absl::StrAppend(&known, known.empty() ? "" : ", ", name);
    }
    return Error(
        absl::StrCat("kiln_trainer_create: no compiled model '", model_name,
                     "' is linked into this program; linked: ", known.empty() ? "none" : known));
  }
  try {
    *trainer = new kiln_trainer(*model);
  } catch (const std::bad_alloc&) {
    return Error(absl::StrCat("kiln_trainer_create: out of memory for model '", model_name, "'"));
  }
  return nullptr;
}

void kiln_trainer_destroy(kiln_trainer* trainer) { delete trainer; }

void kiln_set_threads(int threads) { kiln::SetThreads(threads); }

const char* kiln_trainer_model_name(const kiln_trainer* t) {
  return t == nullptr ? "" : t->trainer.model_name().c_str();
}
int64_t kiln_trainer_input_size(const kiln_trainer* t) {
  return t == nullptr ? 0 : t->trainer.input_size();
}
int64_t kiln_trainer_output_size(const kiln_trainer* t) {
  return t == nullptr ? 0 : t->trainer.output_size();
}
int kiln_trainer_num_classes(const kiln_trainer* t) {
  return t == nullptr ? 0 : t->trainer.num_classes();
}
int kiln_trainer_batch_size(const kiln_trainer* t) {
  return t == nullptr ? 0 : t->trainer.batch_size();
}
int64_t kiln_trainer_parameter_count(const kiln_trainer* t) {
  return t == nullptr ? 0 : t->trainer.parameter_count();
}
int kiln_trainer_num_parameters(const kiln_trainer* t) {
  return t == nullptr ? 0 : static_cast<int>(t->trainer.parameters().size());
}
const char* kiln_trainer_parameter_name(const kiln_trainer* t, int index) {
  if (t == nullptr || index < 0 || index >= static_cast<int>(t->trainer.parameters().size())) {
    return nullptr;
  }
  return t->trainer.parameters()[index].name.c_str();
}

kiln_status* kiln_trainer_parameter_size(const kiln_trainer* t, const char* name, int64_t* size) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_parameter_size");
  if (name == nullptr || size == nullptr) {
    return Error("kiln_trainer_parameter_size: name and size must not be null");
  }
  for (const kiln::ParameterInfo& p : t->trainer.parameters()) {
    if (p.name == name) {
      *size = p.size;
      return nullptr;
    }
  }
  // GetParameter's message lists the names.
  return ToC(t->trainer.GetParameter(name, nullptr, 0));
}

kiln_status* kiln_trainer_init_parameters(kiln_trainer* t, uint64_t seed) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_init_parameters");
  return ToC(t->trainer.InitParameters(seed));
}

kiln_status* kiln_trainer_load_checkpoint(kiln_trainer* t, const char* path) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_load_checkpoint");
  if (path == nullptr) return Error("kiln_trainer_load_checkpoint: the path is null");
  return ToC(t->trainer.LoadCheckpoint(path));
}

kiln_status* kiln_trainer_save_checkpoint(const kiln_trainer* t, const char* path) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_save_checkpoint");
  if (path == nullptr) return Error("kiln_trainer_save_checkpoint: the path is null");
  return ToC(t->trainer.SaveCheckpoint(path));
}

kiln_status* kiln_trainer_get_parameter(const kiln_trainer* t, const char* name, float* values,
                                        size_t count) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_get_parameter");
  if (name == nullptr) return Error("kiln_trainer_get_parameter: the name is null");
  return ToC(t->trainer.GetParameter(name, values, count));
}

kiln_status* kiln_trainer_set_parameter(kiln_trainer* t, const char* name, const float* values,
                                        size_t count) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_set_parameter");
  if (name == nullptr) return Error("kiln_trainer_set_parameter: the name is null");
  return ToC(t->trainer.SetParameter(name, values, count));
}

kiln_status* kiln_trainer_set_hyperparameters(kiln_trainer* t, const kiln_hyperparameters* h) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_set_hyperparameters");
  if (h == nullptr) return Error("kiln_trainer_set_hyperparameters: the hyperparameters are null");
  kiln::Hyperparameters cpp;
  switch (h->optimizer) {
    case KILN_OPTIMIZER_SGD:
      cpp.optimizer = kiln::Hyperparameters::Optimizer::kSgd;
      break;
    case KILN_OPTIMIZER_ADAM:
      cpp.optimizer = kiln::Hyperparameters::Optimizer::kAdam;
      break;
    case KILN_OPTIMIZER_ADAMW:
      cpp.optimizer = kiln::Hyperparameters::Optimizer::kAdamW;
      break;
    default:
      return Error(absl::StrCat("kiln_trainer_set_hyperparameters: optimizer ", h->optimizer,
                                " is not KILN_OPTIMIZER_SGD, _ADAM or _ADAMW"));
  }
  cpp.lr = h->lr;
  cpp.momentum = h->momentum;
  cpp.nesterov = h->nesterov != 0;
  cpp.weight_decay = h->weight_decay;
  cpp.beta1 = h->beta1;
  cpp.beta2 = h->beta2;
  cpp.eps = h->eps;
  cpp.max_grad_norm = h->max_grad_norm;
  return ToC(t->trainer.SetHyperparameters(cpp));
}

kiln_status* kiln_trainer_train_step(kiln_trainer* t, const float* inputs, const int32_t* labels,
                                     int batch, float* loss, int* correct) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_train_step");
  return WithResult(
      [&](kiln::StepResult* r) { return t->trainer.TrainStep(inputs, labels, batch, r); }, loss,
      correct);
}

kiln_status* kiln_trainer_train_step_targets(kiln_trainer* t, const float* inputs,
                                             const float* targets, int batch, float* loss) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_train_step_targets");
  return WithResult(
      [&](kiln::StepResult* r) { return t->trainer.TrainStep(inputs, targets, batch, r); }, loss,
      nullptr);
}

kiln_status* kiln_trainer_compute_gradients(kiln_trainer* t, const float* inputs,
                                            const int32_t* labels, int batch, float* loss,
                                            int* correct) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_compute_gradients");
  return WithResult(
      [&](kiln::StepResult* r) { return t->trainer.ComputeGradients(inputs, labels, batch, r); },
      loss, correct);
}

kiln_status* kiln_trainer_compute_gradients_targets(kiln_trainer* t, const float* inputs,
                                                    const float* targets, int batch, float* loss) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_compute_gradients_targets");
  return WithResult(
      [&](kiln::StepResult* r) { return t->trainer.ComputeGradients(inputs, targets, batch, r); },
      loss, nullptr);
}

kiln_status* kiln_trainer_get_gradients(const kiln_trainer* t, float* gradients, size_t count) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_get_gradients");
  return ToC(t->trainer.GetGradients(gradients, count));
}

kiln_status* kiln_trainer_apply_gradients(kiln_trainer* t, const float* gradients, size_t count) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_apply_gradients");
  return ToC(t->trainer.ApplyGradients(gradients, count));
}

kiln_status* kiln_trainer_predict(kiln_trainer* t, const float* inputs, int batch, float* outputs) {
  KILN_CHECK_HANDLE(t, "kiln_trainer_predict");
  return ToC(t->trainer.Predict(inputs, batch, outputs));
}

}  // extern "C"
