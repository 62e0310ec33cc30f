/** \file
 * Lowering: a Model becomes Halide Funcs for inference, for a training step (forward, mean
 * cross-entropy, and the gradient of every parameter from Halide::propagate_adjoints), and for the
 * parameter update. Nothing here is scheduled; see compiler/schedule/schedule.h.
 *
 *   kiln::LoweredNetwork net = kiln::LowerTraining(model);
 *   Halide::Pipeline p(net.training_outputs());
 */
#ifndef KILN_COMPILER_LOWER_H_
#define KILN_COMPILER_LOWER_H_

#include <vector>

#include "Halide.h"
#include "compiler/model.h"
#include "compiler/ops/ops.h"

namespace kiln {

/// The Funcs of one lowered model. Each call to a Lower* function makes fresh Funcs, so inference
/// and training pipelines can carry different schedules.
struct LoweredNetwork {
  Halide::ImageParam images;  ///< float (x, y, c, n): the batch, PyTorch NCHW memory.
  Halide::ImageParam labels;  ///< int32 (n); training only.
  std::vector<Halide::ImageParam> params;  ///< One per Model::params, dimensions reversed.
  std::vector<Halide::Func> param_funcs;   ///< Wrappers of `params` that autodiff differentiates.
  Halide::Func input;                      ///< Wrapper of `images`.
  std::vector<ops::LoweredLayer> layers;   ///< Indexed like Model::layers.
  Halide::Func logits;                     ///< float (class, n).

  // Training only.
  ops::CrossEntropy loss;
  std::vector<Halide::Func> grads;  ///< d loss / d param, one per Model::params, same dimensions.
  Halide::Func input_grad;          ///< d loss / d images; used by tests, not compiled by default.

  /// Arguments of the compiled functions in order: images, [labels,] params...
  std::vector<Halide::Argument> arguments(bool training) const;
  /// Outputs of the training step: loss, correct, grads...
  std::vector<Halide::Func> training_outputs() const;
};

/// Lowers the inference path: images and parameters to logits.
LoweredNetwork LowerForward(const Model& model);

/// Lowers the training step and differentiates it with Halide::propagate_adjoints.
LoweredNetwork LowerTraining(const Model& model);

/// The SGD update as torch.optim.SGD (dampening 0, no Nesterov) on flat parameter arrays:
///   g = grad + weight_decay · param;  v = momentum · v + g;  param = param − lr · v.
/// Both results come from one Tuple Func, so each element is read before it is written and the
/// compiled function may update `params` and `velocity` in place.
struct LoweredUpdate {
  Halide::Param<float> lr{"lr"}, momentum{"momentum"}, weight_decay{"weight_decay"};
  Halide::ImageParam params{Halide::Float(32), 1, "params"};
  Halide::ImageParam grads{Halide::Float(32), 1, "grads"};
  Halide::ImageParam velocity{Halide::Float(32), 1, "velocity"};
  Halide::Func updated{"updated"};  ///< Tuple (new params, new velocity).

  std::vector<Halide::Argument> arguments() const;
};
LoweredUpdate LowerSgdUpdate(const Model& model);

}  // namespace kiln

#endif  // KILN_COMPILER_LOWER_H_
