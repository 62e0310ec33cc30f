/** \file
 * Lowering: each segment of a Model (see Segment in model.h) becomes Halide Funcs for inference
 * or for training, and the training Funcs are differentiated with Halide::propagate_adjoints.
 * Nothing here is scheduled; see compiler/schedule/schedule.h.
 *
 * A model compiles to up to four functions per distinct segment:
 *   forward        input, params, stats                  → output (evaluation mode)
 *   train_forward  input, params, stats, seed            → output, new stats
 *   backward       input, params, seed, d output        → d input, d params
 *   train_last     input, targets, params, stats, seed   → loss, correct, d input, d params,
 *                  (the last segment only)                  new stats
 * where stats are the running statistics of its batch_norm layers and d params are the gradients
 * of the trainable parameters only. d input is left out where nothing below needs it: in the
 * first segment, and in the segment of a frozen model's lowest trainable layer. The segments below
 * that one get no backward function at all.
 * The backward functions recompute their segment's forward pass from its input, so only segment
 * boundaries are stored between the passes; dropout masks come from `seed` and repeat exactly.
 * The first segment has no d input. A model without blocks is one segment: LeNet-5 compiles to
 * forward and train_last only, as one fused pipeline each.
 *
 *   kiln::LoweredSegment s = kiln::LowerSegment(model, 0, kiln::LowerMode::kTrainLast);
 *   Halide::Pipeline p(s.outputs());
 */
#ifndef KILN_COMPILER_LOWER_H_
#define KILN_COMPILER_LOWER_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "Halide.h"
#include "compiler/model.h"
#include "compiler/ops/ops.h"

namespace kiln {

enum class LowerMode { kForward, kTrainForward, kBackward, kTrainLast };
const char* LowerModeName(LowerMode mode);  ///< "forward", "train_forward", ...

/// The Funcs of one lowered segment. Each call makes fresh Funcs, so pipelines can carry
/// different schedules. Tensors are Halide-ordered: (x, y, c, n) or (f, n).
struct LoweredSegment {
  const Model* model = nullptr;
  int index = 0;  ///< Into Model::segments.
  Segment segment;
  LowerMode mode = LowerMode::kForward;
  bool first = false;  ///< Reads the model input.
  bool last = false;   ///< Ends in the loss.

  Halide::ImageParam input;    ///< float; "images" in the first segment.
  Halide::ImageParam targets;  ///< train_last: int32 (n) labels or float like the prediction.
  std::vector<int> param_indices;  ///< Into Model::params, in the segment's order.
  std::vector<Halide::ImageParam> params;
  std::vector<Halide::Func> param_funcs;  ///< Wrappers of `params` that autodiff differentiates.
  std::vector<int> buffer_indices;        ///< Into Model::buffers.
  std::vector<Halide::ImageParam> buffers;  ///< Running statistics (not read by backward).
  Halide::Param<uint32_t> seed{"seed"};     ///< Training: the dropout seed of this step.
  Halide::Func input_func;                  ///< Wrapper of `input` (clamps the sample index).
  std::map<int, ops::LoweredLayer> layers;  ///< By Model::layers index.
  Halide::Func output;  ///< The last layer before the loss (the prediction in the last segment).

  // Training.
  std::vector<Halide::Func> new_buffers;  ///< Updated running statistics, one per buffer.
  ops::LossFuncs loss;                    ///< train_last.
  Halide::ImageParam output_grad;         ///< backward: d loss / d output.
  /// d loss / d param for the trainable ones among `params` (Param::trainable), in order.
  /// grad_params[i] is the position in `params` of grads[i].
  std::vector<Halide::Func> grads;
  std::vector<int> grad_params;
  Halide::Func input_grad;  ///< d loss / d input.
  /// The gathers that replaced adjoints which the autodiff scattered into layer inputs
  /// (ops::InputGather), "<adjoint>_gather".
  std::vector<Halide::Func> gathers;
  /// Whether the functions output input_grad: not in the first segment, nor where every
  /// segment before is frozen (NeedsInputGrad in model.h).
  bool needs_input_grad = false;

  /// The Func that reads as layer `layer`'s output: `input_func` for the segment's input.
  Halide::Func func_of(int layer) const;
  /// Arguments of the compiled function in order (see the file comment).
  std::vector<Halide::Argument> arguments() const;
  /// Outputs of the compiled function in order (see the file comment).
  std::vector<Halide::Func> outputs() const;
};

/// The names of the Funcs that `definition` reads.
std::set<std::string> FuncsRead(const Halide::Internal::Definition& definition);

/// Lowers segment `index` of `model` in `mode`. kTrainLast applies to the last segment only,
/// kTrainForward and kBackward to the others.
LoweredSegment LowerSegment(const Model& model, int index, LowerMode mode);

/// A string that is equal for two segments exactly when they compile to the same code: the
/// ops, attributes, shapes and wiring, without names.
std::string SegmentSignature(const Model& model, int index);

}  // namespace kiln

#endif  // KILN_COMPILER_LOWER_H_
