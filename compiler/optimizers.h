/** \file
 * The optimizers as Halide pipelines over flat float arrays: SGD (momentum, Nesterov, weight
 * decay), Adam and AdamW, and the sum of squares that gradient norms and clipping need. They
 * depend on no model, so the build compiles them once (kiln-gen --optimizers) into one library
 * that every model's trainer links. The runtime calls them on a whole flat array or on the slice
 * of one parameter tensor (runtime/optimizer.h).
 *
 * Each update reads an element of every state array before writing it, through one Tuple Func,
 * so the outputs may alias the inputs (the runtime updates in place). Scalars that depend on the
 * step only (Adam's bias corrections, the clipping factor) are computed by the caller in double
 * precision and passed as float Params, as torch.optim passes Python floats to its kernels.
 *
 *   kiln::LoweredSgd sgd = kiln::LowerSgd();
 *   kiln::ScheduleOptimizer(sgd.updated, target);
 *   Halide::Pipeline(sgd.updated).compile_to_module(sgd.arguments(), "kiln_sgd_update", target);
 */
#ifndef KILN_COMPILER_OPTIMIZERS_H_
#define KILN_COMPILER_OPTIMIZERS_H_

#include <vector>

#include "Halide.h"

namespace kiln {

/// torch.optim.SGD (dampening 0) with the gradient first multiplied by `grad_scale`:
///   g = grad_scale · grad + weight_decay · param
///   velocity = momentum · velocity + g
///   param = param − lr · (nesterov ? g + momentum · velocity : velocity)
/// With momentum 0 this is plain SGD, and the velocity is the last g.
struct LoweredSgd {
  Halide::Param<float> lr{"lr"}, momentum{"momentum"}, weight_decay{"weight_decay"};
  Halide::Param<bool> nesterov{"nesterov"};
  Halide::Param<float> grad_scale{"grad_scale"};
  Halide::ImageParam params{Halide::Float(32), 1, "params"};
  Halide::ImageParam grads{Halide::Float(32), 1, "grads"};
  Halide::ImageParam velocity{Halide::Float(32), 1, "velocity"};
  Halide::Func updated{"sgd_updated"};  ///< Tuple (new params, new velocity).

  std::vector<Halide::Argument> arguments() const;
};
LoweredSgd LowerSgd();

/// torch.optim.Adam and AdamW (amsgrad off) with the gradient first multiplied by `grad_scale`:
///   p = param · decay                         (AdamW: decay = 1 − lr · weight_decay; Adam: 1)
///   g = grad_scale · grad + l2 · param        (Adam: l2 = weight_decay; AdamW: 0)
///   exp_avg = beta1 · exp_avg + one_minus_beta1 · g
///   exp_avg_sq = beta2 · exp_avg_sq + one_minus_beta2 · g²
///   param = p − step_size · exp_avg / (sqrt(exp_avg_sq) / bias_correction2_sqrt + eps)
/// where, at step t (from 1), step_size = lr / (1 − beta1^t) and bias_correction2_sqrt =
/// sqrt(1 − beta2^t). 1 − beta comes from the caller: in float, 1 − 0.999f is 4.7e-5 off the
/// 0.001 that torch.optim computes in double, which showed in the stored comparison.
struct LoweredAdam {
  Halide::Param<float> step_size{"step_size"}, beta1{"beta1"}, beta2{"beta2"}, eps{"eps"};
  Halide::Param<float> one_minus_beta1{"one_minus_beta1"}, one_minus_beta2{"one_minus_beta2"};
  Halide::Param<float> bias_correction2_sqrt{"bias_correction2_sqrt"};
  Halide::Param<float> l2{"l2"}, decay{"decay"}, grad_scale{"grad_scale"};
  Halide::ImageParam params{Halide::Float(32), 1, "params"};
  Halide::ImageParam grads{Halide::Float(32), 1, "grads"};
  Halide::ImageParam exp_avg{Halide::Float(32), 1, "exp_avg"};
  Halide::ImageParam exp_avg_sq{Halide::Float(32), 1, "exp_avg_sq"};
  Halide::Func updated{"adam_updated"};  ///< Tuple (new params, new exp_avg, new exp_avg_sq).

  std::vector<Halide::Argument> arguments() const;
};
LoweredAdam LowerAdam();

/// The sum of the squares of a flat array, as a zero-dimensional Func: per-tensor gradient
/// norms, and the global norm that clipping scales by (torch.nn.utils.clip_grad_norm_).
struct LoweredSumOfSquares {
  Halide::ImageParam values{Halide::Float(32), 1, "values"};
  Halide::Func partial{"partial_sums"};  ///< (chunk, lane): sums of strided runs of squares.
  Halide::Func sum{"sum_of_squares"};

  std::vector<Halide::Argument> arguments() const;
};
LoweredSumOfSquares LowerSumOfSquares();

/// Elements per chunk of LoweredSumOfSquares::partial, and its lanes.
inline constexpr int kSumOfSquaresChunk = 4096;
inline constexpr int kSumOfSquaresLanes = 16;

}  // namespace kiln

#endif  // KILN_COMPILER_OPTIMIZERS_H_
