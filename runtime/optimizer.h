/** \file
 * Optimizers, learning-rate schedules, per-layer learning-rate multipliers and gradient clipping,
 * as torch.optim and torch.nn.utils.clip_grad_norm_ define them. The arithmetic runs in the
 * compiled kernels of compiler/optimizers.h, one library for all models. This file chooses the
 * scalars of each step and the slices of the flat arrays they apply to; the options themselves,
 * their parsers and checks are in runtime/hyperparameters.h.
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
#include "runtime/huge_pages.h"
#include "runtime/hyperparameters.h"

namespace kiln {

/// The optimizer's state over the flat parameter array. Arrays are empty until the optimizer
/// that uses them first runs (then zero), or until a checkpoint fills them.
struct OptimizerState {
  FloatArray momentum;    ///< SGD's momentum_buffer.
  FloatArray exp_avg;     ///< Adam's first moment.
  FloatArray exp_avg_sq;  ///< Adam's second moment.
  int64_t steps = 0;      ///< Updates applied; Adam's bias correction uses it.
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

/// Whether the squares of the trainable gradients in `grads` sum to a finite value, with one
/// compiled call per run of adjacent trainable tensors. True means each GradientNorms value of a
/// trainable tensor is finite too; false means one is NaN or infinite, or the total overflows.
absl::StatusOr<bool> TrainableSquaresFinite(const std::vector<ParamInfo>& params,
                                            absl::Span<const float> grads);

}  // namespace kiln

#endif  // KILN_RUNTIME_OPTIMIZER_H_
