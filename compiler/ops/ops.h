/** \file
 * The algorithm of each op as Halide Funcs, with no schedule. Schedules live in compiler/schedule/.
 *
 * Layout: an image tensor {N, C, H, W} in PyTorch is the Halide Func `t(x, y, c, n)` (x fastest),
 * a flat tensor {N, F} is `t(f, n)`, and a parameter of PyTorch shape {d0, ..., dk} is an
 * ImageParam with its dimensions reversed, so PyTorch's contiguous memory is used as it is.
 */
#ifndef KILN_COMPILER_OPS_OPS_H_
#define KILN_COMPILER_OPS_OPS_H_

#include <vector>

#include "Halide.h"
#include "compiler/model.h"

namespace kiln::ops {

/// The Funcs of one lowered layer. `output` is what the next layer reads, and `stages` contains
/// the layer's other Funcs that a schedule may place (e.g. a conv's zero-padded input).
struct LoweredLayer {
  Halide::Func output;
  std::vector<Halide::Func> stages;
};

/// Indexing variables shared by all ops.
struct Vars {
  Halide::Var x{"x"}, y{"y"}, c{"c"}, n{"n"}, f{"f"};
};
const Vars& vars();

/// conv2d: out(x, y, co, n) = bias(co) + Σ weight(kx, ky, ci, co) · in(x·s + kx − p, y·s + ky − p, ci, n),
/// reading zeros outside the input's {W, H}. `bias` is undefined when the layer has none.
LoweredLayer Conv2d(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in,
                    Halide::Func weight, Halide::Func bias);

/// relu: out = max(in, 0). The derivative at 0 is 0, as in PyTorch.
LoweredLayer Relu(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in);

/// max_pool2d: the maximum of each kernel_size² window. On ties the gradient goes to the first
/// maximum in row-major window order, as in PyTorch's CPU kernel.
LoweredLayer MaxPool2d(const Layer& layer, Halide::Func in);

/// flatten: out(f, n) with f = (c·H + y)·W + x, PyTorch's order.
LoweredLayer Flatten(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in);

/// dense: out(o, n) = bias(o) + Σ_i weight(i, o) · in(i, n).
LoweredLayer Dense(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in,
                   Halide::Func weight, Halide::Func bias);

/// The outputs of cross_entropy_loss for a batch of `batch` samples.
struct CrossEntropy {
  Halide::Func loss;     ///< Zero-dimensional: mean over the batch of logsumexp(z) − z[label].
  Halide::Func correct;  ///< Zero-dimensional int32: samples whose argmax (first on ties) is the label.
  std::vector<Halide::Func> stages;
};
CrossEntropy CrossEntropyLoss(int64_t num_classes, Halide::Expr batch, Halide::Func logits,
                              Halide::Func labels);

}  // namespace kiln::ops

#endif  // KILN_COMPILER_OPS_OPS_H_
