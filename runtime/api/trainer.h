/** \file
 * The stable C++ API for applications that embed a compiled Kiln model: create a trainer,
 * initialize or load its parameters, train, compute and apply gradients, predict, save. Each
 * compiled model's generated header `<model>_trainer.h` defines a subclass with the model's sizes
 * (`kiln::models::Lenet5Trainer`); runtime/api/trainer_c.h is the same API in C.
 *
 *   #include "lenet5_trainer.h"
 *
 *   kiln::models::Lenet5Trainer trainer;
 *   kiln::Status s = trainer.LoadCheckpoint("lenet5.safetensors");
 *   if (!s.ok()) { std::fprintf(stderr, "%s\n", s.message().c_str()); return 1; }
 *   kiln::StepResult step;
 *   s = trainer.TrainStep(images.data(), labels.data(), batch, &step);
 *   s = trainer.Predict(images.data(), batch, logits.data());
 *   s = trainer.SaveCheckpoint("tuned.safetensors");
 *
 * This header needs only the C++17 standard library: no Halide, LLVM or Abseil headers.
 *
 * Buffers. Every pointer argument is borrowed for the duration of the call only: the trainer
 * copies what it keeps and never frees or retains caller memory. All arrays are dense, row-major
 * (C order), float32 unless stated:
 *   - inputs:  batch × input_size() floats, each sample in PyTorch's layout (C × H × W for
 *              images: channel planes of rows);
 *   - labels:  batch int32 class indices in [0, num_classes());
 *   - targets: batch × output_size() floats, for regression models (num_classes() == 0);
 *   - outputs: batch × output_size() floats written by Predict (logits for classifiers);
 *   - a parameter: its shape() in PyTorch's order (conv weight: out × in × kh × kw);
 *   - gradients: parameter_count() floats, the parameters' concatenation in the order of
 *              parameters() (each at its `offset`).
 * Any batch ≥ 1 runs up to Halide's limit of 2 GB per buffer (LeNet-5: about 100,000 images).
 * A larger batch is an error whose message suggests splitting it. The generated class's kBatchSize
 * is the batch the code was tuned for.
 *
 * Errors. Every call that can fail returns a Status; none throws or aborts on bad input (null
 * pointers, wrong sizes, labels out of range, unknown names, unreadable or mismatched files). A
 * failed call leaves the trainer's state as it was, except TrainStep and ComputeGradients, which
 * may have updated BatchNorm running statistics before a kernel failed.
 *
 * A moved-from trainer describes an empty model and every fallible call on it returns an error.
 *
 * Threading. A Trainer is not thread-safe: calls on one trainer must not overlap (guard it with
 * a mutex to share it). Different trainers, of the same model or not, may be used from different
 * threads at once. Each call runs the compiled kernels on Halide's thread pool, shared by all
 * trainers in the process; SetThreads sizes it.
 */
#ifndef KILN_RUNTIME_API_TRAINER_H_
#define KILN_RUNTIME_API_TRAINER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln {

struct CompiledModel;

/// The outcome of a call: ok, or an error with a message that names the bad value and the fix.
class Status {
 public:
  Status() = default;  ///< OK.
  static Status Error(std::string message) { return Status(std::move(message)); }
  bool ok() const { return !error_; }
  /// Empty when ok.
  const std::string& message() const { return message_; }

 private:
  explicit Status(std::string message) : error_(true), message_(std::move(message)) {}
  bool error_ = false;
  std::string message_;
};

/// The optimizer a TrainStep or ApplyGradients applies, as torch.optim defines it.
struct Hyperparameters {
  enum class Optimizer { kSgd, kAdam, kAdamW };
  Optimizer optimizer = Optimizer::kSgd;
  float lr = 0.01f;
  float momentum = 0.9f;   ///< SGD.
  bool nesterov = false;   ///< SGD; needs momentum > 0.
  float weight_decay = 0;  ///< L2 for SGD and Adam, decoupled for AdamW.
  double beta1 = 0.9, beta2 = 0.999;  ///< Adam and AdamW.
  float eps = 1e-8f;                  ///< Adam and AdamW.
  /// Clips the gradients to this global L2 norm first (clip_grad_norm_); 0: no clipping.
  float max_grad_norm = 0;
};

/// A learnable tensor of the model, named as in a PyTorch state_dict ("conv1.weight").
struct ParameterInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  ///< Position, in floats, in the gradient array.
  int64_t size = 0;    ///< Number of floats.
  bool trainable = true;  ///< False for layers the model was compiled frozen: no gradient.
};

/// The result of one batch.
struct StepResult {
  float loss = 0;   ///< The model's loss, averaged over the batch.
  int correct = 0;  ///< Samples whose top-1 prediction is their label (0 for regression).
};

/// Sets the threads of the pool that runs all compiled kernels (0 or less: one per core).
void SetThreads(int threads);

class Trainer {
 public:
  /// A trainer of `model` with zero parameters (see InitParameters) and SGD's defaults. Throws
  /// std::bad_alloc only when memory for the parameters runs out.
  explicit Trainer(const CompiledModel& model);
  virtual ~Trainer();
  Trainer(Trainer&&) noexcept;
  Trainer& operator=(Trainer&&) noexcept;
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // ---- the model ----
  const std::string& model_name() const;
  std::vector<int64_t> input_shape() const;  ///< Per sample: {C, H, W} or {features}.
  int64_t input_size() const;                ///< Floats per input sample.
  int64_t output_size() const;               ///< Floats per prediction.
  int num_classes() const;                   ///< 0 for regression models.
  int batch_size() const;                    ///< The batch the code was tuned for.
  const std::vector<ParameterInfo>& parameters() const;
  int64_t parameter_count() const;  ///< Floats in all parameters together.

  // ---- state ----
  /// PyTorch's default initialization (uniform ±1/sqrt(fan_in) for conv and dense, BatchNorm at
  /// 1 and 0), reproducible from `seed`; clears the optimizer state and step count.
  Status InitParameters(uint64_t seed);
  /// Loads parameters, running statistics, optimizer state and step counts from a checkpoint
  /// written by SaveCheckpoint or `kiln train`, and the optimizer's hyperparameters it records
  /// (those it does not keep their values). Mismatches are listed in the message. A checkpoint of
  /// another build of the same model definition (a frozen variant, another target) loads too.
  Status LoadCheckpoint(const std::string& path);
  /// Writes the state as a safetensors checkpoint, atomically (a temporary file, then a rename).
  Status SaveCheckpoint(const std::string& path) const;
  /// Copies the parameter `name` into values[0, count); count must equal its size.
  Status GetParameter(const std::string& name, float* values, size_t count) const;
  Status SetParameter(const std::string& name, const float* values, size_t count);
  /// Checked as torch.optim checks them; the optimizer state is kept across calls.
  Status SetHyperparameters(const Hyperparameters& hyperparameters);
  const Hyperparameters& hyperparameters() const;

  // ---- training ----
  /// One optimizer step on a batch: forward, backward, update. Updates running statistics. A
  /// NaN or infinity in the loss or a gradient is an error naming the step and the first layer
  /// affected, and the parameters are not updated.
  Status TrainStep(const float* inputs, const int32_t* labels, int batch, StepResult* result);
  /// The same for regression models: `targets` is batch × output_size() floats.
  Status TrainStep(const float* inputs, const float* targets, int batch, StepResult* result);
  /// Forward and backward without the update: the gradients of the batch's mean loss stay in
  /// the trainer (GetGradients) and the parameters are unchanged. Running statistics are
  /// updated as in TrainStep. `result` may be null.
  Status ComputeGradients(const float* inputs, const int32_t* labels, int batch,
                          StepResult* result);
  Status ComputeGradients(const float* inputs, const float* targets, int batch,
                          StepResult* result);
  /// Copies the last computed gradients (parameter_count() floats; zero for frozen parameters,
  /// and for all before the first ComputeGradients or TrainStep).
  Status GetGradients(float* gradients, size_t count) const;
  /// One optimizer step with the given gradients instead of computed ones: averaged over
  /// micro-batches for gradient accumulation, all-reduced across workers, or changed by a
  /// custom rule. Frozen parameters are left alone. A NaN or infinite gradient is an error.
  Status ApplyGradients(const float* gradients, size_t count);

  // ---- inference ----
  /// Evaluation-mode predictions (running statistics, no dropout) of `batch` inputs.
  Status Predict(const float* inputs, int batch, float* outputs);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kiln

#endif  // KILN_RUNTIME_API_TRAINER_H_
