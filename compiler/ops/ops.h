/** \file
 * The algorithm of each op as Halide Funcs, with no schedule. Schedules live in compiler/schedule/.
 *
 * Layout: an image tensor {N, C, H, W} in PyTorch is the Halide Func `t(x, y, c, n)` (x fastest),
 * a flat tensor {N, F} is `t(f, n)`, and a parameter of PyTorch shape {d0, ..., dk} is an
 * ImageParam with its dimensions reversed, so PyTorch's contiguous memory is used as it is.
 *
 * Each function documents its PyTorch counterpart; the shape formulas are in compiler/model.h.
 */
#ifndef KILN_COMPILER_OPS_OPS_H_
#define KILN_COMPILER_OPS_OPS_H_

#include <functional>
#include <vector>

#include "Halide.h"
#include "compiler/model.h"

namespace kiln::ops {

/// An op's input gradient written as a gather, for reads whose position Halide 14's autodiff
/// cannot invert (x·s + k with s > 1, a clamped or flattened index). For those it zeroes the
/// input's adjoint and then adds each read's contribution in a pass over the reader's domain,
/// one pass per read. The lowering replaces those passes with `gather` (GatherInputAdjoints in
/// compiler/lower.cpp).
struct InputGather {
  Halide::Func reader;  ///< The op's Func that reads its input.
  int reads = 0;        ///< How many times `reader`'s definition reads the input.
  /// Given the adjoint of `reader`, the input's adjoint at position `at`, (x, y, c, n) or (f, n).
  std::function<Halide::Expr(Halide::Func, const std::vector<Halide::Expr>&)> gather;
};

/// The Funcs of one lowered layer. `output` is what the next layer reads, and `stages` contains
/// the layer's other Funcs that a schedule may place (e.g. a conv's zero-padded input).
struct LoweredLayer {
  Halide::Func output;
  std::vector<Halide::Func> stages;
  /// batch_norm in training: the updated running mean and variance, (c).
  std::vector<Halide::Func> new_buffers;
  /// The input gradient as a gather, where the op has one (see InputGather).
  InputGather input_gather;
};

/// Indexing variables shared by all ops.
struct Vars {
  Halide::Var x{"x"}, y{"y"}, c{"c"}, n{"n"}, f{"f"};
};
const Vars& vars();
/// The pure variables of a tensor of per-sample rank `rank`: (x, y, c, n) or (f, n).
std::vector<Halide::Var> TensorVars(size_t rank);

/// `f` at `at` = (x, y, c, n) inside the width × height plane and `outside` elsewhere. The read's
/// position is clamped to the plane, so bounds inference never requests `f` outside it.
Halide::Expr ReadInside(Halide::Func f, const std::vector<Halide::Expr>& at, int width,
                        int height, Halide::Expr outside);

/// The step's state that ops read besides tensors.
struct Context {
  bool training = false;
  Halide::Expr batch;  ///< The run-time number of samples (int32).
  Halide::Expr seed;   ///< uint32 dropout seed of this step; training only.
};

/// conv2d, torch.nn.Conv2d: out(x, y, co, n) = bias(co) + Σ weight(kx, ky, ci, co) ·
/// in(x·s + kx·d − p, y·s + ky·d − p, g·C_in/groups + ci, n) with g the group of co, reading zeros
/// outside the input's {W, H}. `bias` is undefined when the layer has none.
LoweredLayer Conv2d(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in,
                    Halide::Func weight, Halide::Func bias);

/// relu, leaky_relu, sigmoid, tanh (torch.nn.ReLU, LeakyReLU, Sigmoid, Tanh). ReLU's derivative
/// at 0 is 0, as in PyTorch.
LoweredLayer Activation(const Layer& layer, Halide::Func in);

/// max_pool2d and avg_pool2d (torch.nn.MaxPool2d, AvgPool2d). Max pooling sends the gradient to
/// the first maximum in row-major window order on ties, as PyTorch's CPU kernel.
LoweredLayer Pool2d(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in);

/// adaptive_avg_pool2d to 1×1 (torch.nn.AdaptiveAvgPool2d(1)): the mean of each channel.
LoweredLayer GlobalAvgPool2d(const Layer& layer, const std::vector<int64_t>& in_shape,
                             Halide::Func in);

/// flatten: out(f, n) with f = (c·H + y)·W + x, PyTorch's order.
LoweredLayer Flatten(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in);

/// dense, torch.nn.Linear: out(o, n) = bias(o) + Σ_i weight(i, o) · in(i, n).
LoweredLayer Dense(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in,
                   Halide::Func weight, Halide::Func bias);

/// add: a + b. concat: torch.cat(dim=1) of `ins` with `channels` each.
LoweredLayer Add(const Layer& layer, Halide::Func a, Halide::Func b);
LoweredLayer Concat(const Layer& layer, const std::vector<Halide::Func>& ins,
                    const std::vector<int64_t>& channels);

/// dropout, torch.nn.Dropout: identity in evaluation; in training, element e is kept when
/// u(seed, salt, e) ≥ p, with u uniform in [0, 1) from a counter-based hash, and scaled by
/// 1/(1 − p). `salt` distinguishes the dropout layers of one segment.
LoweredLayer Dropout(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in,
                     const Context& context, int salt);

/// batch_norm2d and batch_norm1d (torch.nn.BatchNorm2d, BatchNorm1d). Training normalizes with
/// the batch's mean and biased variance and returns the updated running statistics in
/// `new_buffers`; evaluation uses `running_mean` and `running_var`.
LoweredLayer BatchNorm(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in,
                       Halide::Func weight, Halide::Func bias, Halide::Func running_mean,
                       Halide::Func running_var, const Context& context);

/// The outputs of a loss for one batch.
struct LossFuncs {
  Halide::Func loss;     ///< Zero-dimensional float: the mean over the batch.
  Halide::Func correct;  ///< Zero-dimensional int32: correct top-1 predictions (0 for regression).
  std::vector<Halide::Func> stages;
};

/// Mean softmax cross-entropy (torch.nn.CrossEntropyLoss with label_smoothing) against int32
/// `labels(n)`.
LossFuncs CrossEntropyLoss(const Layer& layer, const Context& context, Halide::Func logits,
                           Halide::Func labels);

/// mse_loss, l1_loss, bce_with_logits_loss (torch.nn.MSELoss, L1Loss, BCEWithLogitsLoss; mean
/// over every element) of `prediction` against `targets`, both with the prediction's shape.
LossFuncs RegressionLoss(const Layer& layer, const std::vector<int64_t>& shape,
                         const Context& context, Halide::Func prediction, Halide::Func targets);

}  // namespace kiln::ops

#endif  // KILN_COMPILER_OPS_OPS_H_
