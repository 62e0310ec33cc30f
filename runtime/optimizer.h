/** \file
 * Optimizers, learning-rate schedules, per-layer learning-rate multipliers and gradient clipping,
 * as torch.optim and torch.nn.utils.clip_grad_norm_ define them. The arithmetic runs in the
 * compiled kernels of compiler/optimizers.h, one library for all models. This file chooses the
 * scalars of each step and the slices of the flat arrays they apply to.
 *
 *   kiln::OptimizerOptions options;
 *   options.kind = kiln::OptimizerKind::kAdamW;
 *   options.lr = 1e-3f;
 *   options.weight_decay = 0.01f;
 *   options.max_grad_norm = 1.0f;
 *   kiln::OptimizerState state;
 *   absl::StatusOr<kiln::UpdateStats> s =
 *       kiln::ApplyUpdate(options, options.lr, model.params, params, grads, state);
 *
 * Differences from torch.optim: one learning rate per step for all parameters, times each
 * parameter's multiplier (torch's parameter groups); Adam's step count is shared by all
 * parameters (torch keeps one per parameter, equal unless parameters join late).
 */
#ifndef KILN_RUNTIME_OPTIMIZER_H_
#define KILN_RUNTIME_OPTIMIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "runtime/compiled_model.h"

namespace kiln {

/// kSgd: torch.optim.SGD (momentum, Nesterov, L2 weight decay; no dampening). kAdam:
/// torch.optim.Adam (L2 weight decay added to the gradient). kAdamW: torch.optim.AdamW (decoupled
/// weight decay). Adam's amsgrad is not supported.
enum class OptimizerKind { kSgd, kAdam, kAdamW };
const char* OptimizerName(OptimizerKind kind);  ///< "sgd", "adam", "adamw"
/// Parses "sgd", "adam" or "adamw" (any case).
absl::StatusOr<OptimizerKind> ParseOptimizer(absl::string_view name);

/// Multiplies the learning rate of the parameters of layer `layer` (and of the layers inside it,
/// for a block such as "layer1") by `factor`: the parameters whose names are `layer` followed by
/// a dot and more. When several entries match a parameter, the longest `layer` wins.
struct LrMultiplier {
  std::string layer;
  float factor = 1;
};

/// Parses "conv1=0.1,layer1=0.5" (layer=factor pairs, factors ≥ 0 and finite).
absl::StatusOr<std::vector<LrMultiplier>> ParseLrMultipliers(absl::string_view spec);
/// The inverse of ParseLrMultipliers; "" for none.
std::string FormatLrMultipliers(const std::vector<LrMultiplier>& multipliers);

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kSgd;
  float lr = 0.01f;  ///< The base learning rate, before the schedule and the multipliers.
  float momentum = 0.9f;  ///< SGD.
  bool nesterov = false;  ///< SGD; needs momentum > 0, as in PyTorch.
  float weight_decay = 0;
  /// Adam and AdamW. The betas are doubles because torch.optim computes 1 − beta in double:
  /// from a float 0.999 it would be 1.3e-5 off.
  double beta1 = 0.9, beta2 = 0.999;
  float eps = 1e-8f;
  /// Scales the gradients by min(1, max_grad_norm / (norm + 1e-6)) first, where norm is the L2
  /// norm of all trainable gradients together (clip_grad_norm_); 0 turns clipping off.
  float max_grad_norm = 0;
  std::vector<LrMultiplier> lr_multipliers;
};

/// Checks the hyperparameters (ranges as torch.optim checks them) and that every multiplier
/// names a layer of `params`. The message names the flag's value and the valid range.
absl::Status CheckOptimizerOptions(const OptimizerOptions& options,
                                   const std::vector<ParamInfo>& params);

/// The optimizer's state over the flat parameter array. Arrays are empty until the optimizer
/// that uses them first runs (then zero), or until a checkpoint fills them.
struct OptimizerState {
  std::vector<float> momentum;    ///< SGD's momentum_buffer.
  std::vector<float> exp_avg;     ///< Adam's first moment.
  std::vector<float> exp_avg_sq;  ///< Adam's second moment.
  int64_t steps = 0;              ///< Updates applied; Adam's bias correction uses it.
};

struct UpdateStats {
  double grad_norm = 0;    ///< Of the trainable gradients before clipping; 0 unless clipping.
  double grad_scale = 1;   ///< The clipping factor applied (1: not clipped).
};

/// One optimizer step at learning rate `lr` (the scheduled one) on `values` in place, from
/// `grads`, for the tensors `params` describes (CompiledModel::params). Parameters that are not
/// trainable (ParamInfo::trainable) are left alone, state included. Errors: InvalidArgument for
/// arrays of the wrong size; Internal when a kernel fails.
absl::StatusOr<UpdateStats> ApplyUpdate(const OptimizerOptions& options, float lr,
                                        const std::vector<ParamInfo>& params,
                                        absl::Span<float> values, absl::Span<const float> grads,
                                        OptimizerState& state);

/// The L2 norm of each tensor of `params` in `grads`, computed by the compiled sum of squares.
absl::StatusOr<std::vector<double>> GradientNorms(const std::vector<ParamInfo>& params,
                                                  absl::Span<const float> grads);

/// A learning-rate schedule over epochs, as torch.optim.lr_scheduler stepped once per epoch:
/// `warmup_epochs` of LinearLR from warmup_start_factor · lr up to lr, then
///   kConstant: lr
///   kStep:     StepLR: lr · gamma^⌊e / step_size⌋
///   kCosine:   CosineAnnealingLR over the remaining epochs:
///              min_lr + (lr − min_lr)(1 + cos(π e / T)) / 2
/// where e counts epochs after the warm-up and T = epochs − warmup_epochs (SequentialLR of the
/// two).
struct LrSchedule {
  enum class Kind { kConstant, kStep, kCosine };
  Kind kind = Kind::kConstant;
  int step_size = 30;
  float gamma = 0.1f;
  float min_lr = 0;
  int warmup_epochs = 0;
  float warmup_start_factor = 0.1f;
};
const char* LrScheduleName(LrSchedule::Kind kind);  ///< "constant", "step", "cosine"
absl::StatusOr<LrSchedule::Kind> ParseLrSchedule(absl::string_view name);
/// Checks the schedule's values for a run of `epochs`.
absl::Status CheckLrSchedule(const LrSchedule& schedule, int epochs);

/// The learning rate of epoch `epoch` (0-based) of `epochs` from base rate `lr`.
double ScheduledLr(const LrSchedule& schedule, double lr, int epoch, int epochs);

}  // namespace kiln

#endif  // KILN_RUNTIME_OPTIMIZER_H_
