/** \file
 * A compiled model with its state: parameters, gradients, optimizer state and running
 * statistics in flat float arrays, and the calls into the generated functions, segment by
 * segment: the forward pass stores each segment's output, and the backward pass runs the
 * segments in reverse, each recomputing its own forward pass from its stored input.
 *
 *   const kiln::CompiledModel* spec = kiln::FindCompiledModel("lenet5");
 *   kiln::Network net(*spec);
 *   net.InitParams(0);  // seed
 *   absl::StatusOr<kiln::BatchResult> r = net.Backward(images, labels, batch);
 *   absl::Status s = net.Update(kiln::SgdOptions{0.01f, 0.9f, 0.0f});
 *
 * Not thread-safe: one Network serves one training loop. The generated functions parallelize
 * internally on Halide's thread pool (see SetThreads).
 */
#ifndef KILN_RUNTIME_NETWORK_H_
#define KILN_RUNTIME_NETWORK_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/checkpoint.h"
#include "runtime/compiled_model.h"
#include "runtime/optimizer.h"

namespace kiln {

/// SGD hyperparameters, as torch.optim.SGD (no dampening, no Nesterov); OptimizerOptions has
/// every optimizer and option.
struct SgdOptions {
  float lr = 0.01f;
  float momentum = 0.9f;
  float weight_decay = 0.0f;
};

/// Loss and accuracy count of one batch.
struct BatchResult {
  float loss = 0;   ///< The model's loss, averaged over the batch.
  int correct = 0;  ///< Samples whose top-1 prediction is the label (0 for regression).
};

/// Sets the number of threads of Halide's thread pool for all compiled functions (0: all cores).
void SetThreads(int threads);

class Network {
 public:
  explicit Network(const CompiledModel& model);

  const CompiledModel& model() const { return model_; }

  /// Draws every conv and dense parameter uniform in ±1/sqrt(fan_in), as PyTorch's default
  /// initialization, from `seed` (same seed, same values on every platform); sets BatchNorm
  /// parameters and running statistics to PyTorch's starting values. Zeroes the momentum, and
  /// seeds dropout from `seed`.
  void InitParams(uint64_t seed);

  /// Evaluation-mode predictions {batch, output} (row-major; logits for classifiers) of `batch`
  /// inputs {batch, input_shape}; any batch ≥ 1.
  absl::Status Forward(const float* images, int batch, float* logits);

  /// Training-mode loss, correct count and the gradient of every parameter (kept in grads()) for
  /// a batch with class labels; updates the running statistics.
  absl::StatusOr<BatchResult> Backward(const float* images, const int32_t* labels, int batch);
  /// The same for models whose targets are tensors {batch, output} (regression, autoencoders).
  absl::StatusOr<BatchResult> Backward(const float* images, const float* targets, int batch);

  /// Applies one optimizer step to the current gradients at learning rate `lr`, the scheduled
  /// rate (options.lr is the base rate). Updates parameters and optimizer state in place.
  absl::StatusOr<UpdateStats> Update(const OptimizerOptions& options, float lr);
  /// One SGD step at options.lr.
  absl::Status Update(const SgdOptions& options);
  /// The L2 norm of each parameter's gradient, in the order of CompiledModel::params.
  absl::StatusOr<std::vector<double>> GradientNorms() const;
  /// Checks the result of the last Backward for NaN and infinity: the trainable gradients in
  /// layer order (by their norms, `norms` when given, else computed), then the loss. The error
  /// names the step (1-based, as counted by Backward), a non-finite loss, and the first layer
  /// whose gradient is not finite.
  absl::Status CheckFinite(const BatchResult& result,
                           const std::vector<double>* norms = nullptr) const;

  FloatArray& params() { return params_; }
  const FloatArray& params() const { return params_; }
  const FloatArray& grads() const { return grads_; }
  /// Written by Backward, read by Update; callers may replace them between the two.
  FloatArray& grads() { return grads_; }
  /// SGD's momentum buffers.
  FloatArray& velocity() { return optimizer_.momentum; }
  OptimizerState& optimizer_state() { return optimizer_; }
  const OptimizerState& optimizer_state() const { return optimizer_; }
  /// Running statistics, laid out by CompiledModel::buffers.
  FloatArray& buffers() { return buffers_; }
  const FloatArray& buffers() const { return buffers_; }
  /// Dropout masks of step k come from (seed, k); Backward counts the steps.
  void set_dropout_seed(uint64_t seed) { dropout_seed_ = seed; }

  /// Saves parameters (PyTorch names and shapes, float32), the optimizer state
  /// ("momentum_buffer.<name>", "exp_avg.<name>", "exp_avg_sq.<name>") and `metadata` as
  /// safetensors, atomically. The metadata also gets the step counts that exact resume needs:
  /// "kiln.optimizer_steps" (Adam's t), "kiln.steps" and "kiln.dropout_seed" (dropout masks).
  absl::Status SaveCheckpoint(const std::string& path,
                              const std::map<std::string, std::string>& metadata) const;

  /// Loads a checkpoint written by SaveCheckpoint, step counts included; returns its metadata.
  /// On any error the network's state is unchanged and the message lists what differs from this
  /// model. `check_metadata` may reject the metadata first (kiln::LoadCheckpoint).
  absl::StatusOr<std::map<std::string, std::string>> LoadCheckpoint(
      const std::string& path, const MetadataCheck& check_metadata = nullptr);

  /// Copies the matching parameters and running statistics of a pretrained checkpoint
  /// (kiln::LoadPretrained); the others, such as a new classifier head, keep their values.
  absl::StatusOr<PretrainedReport> LoadPretrained(const std::string& path);

  /// Bytes of the state this Network keeps between calls: parameters, gradients, optimizer state,
  /// running statistics and the stored segment outputs and their gradients.
  size_t StateBytes() const;

 private:
  absl::StatusOr<BatchResult> Train(const float* images, halide_buffer_t* targets, int batch);
  // Activations at the segment boundaries and their gradients, for `batch` samples.
  void ReserveBoundaries(int batch);

  const CompiledModel& model_;
  FloatArray params_, grads_, buffers_;
  OptimizerState optimizer_;
  std::vector<std::vector<float>> outputs_, output_grads_;  ///< One per segment but the last.
  int boundary_batch_ = 0;
  uint64_t dropout_seed_ = 0;
  uint64_t steps_ = 0;
};

}  // namespace kiln

#endif  // KILN_RUNTIME_NETWORK_H_
