// batch_norm2d and batch_norm1d: the algorithms. The per-channel statistics are small reductions
// computed at root; the normalization is inlined into its consumer.
#include "compiler/ops/ops.h"

namespace kiln::ops {

LoweredLayer BatchNorm(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in,
                       Halide::Func weight, Halide::Func bias, Halide::Func running_mean,
                       Halide::Func running_var, const Context& context) {
  const Vars& v = vars();
  std::vector<Halide::Var> args = in.args();
  const Halide::Var channel = in_shape.size() == 3 ? v.c : v.f;
  Halide::Func out(layer.name);
  auto affine = [&](Halide::Expr normalized) {
    return normalized * weight(channel) + bias(channel);
  };
  if (!context.training) {
    out(args) = affine((in(args) - running_mean(channel)) /
                       Halide::sqrt(running_var(channel) + layer.eps));
    return {out, {}, {}, {}};
  }

  // Batch statistics over samples and positions, with the variance from a second pass over the
  // centered values (more accurate in float32 than E[x²] − E[x]²).
  Halide::RDom r = in_shape.size() == 3
                       ? Halide::RDom(0, static_cast<int>(in_shape[2]), 0,
                                      static_cast<int>(in_shape[1]), 0, context.batch,
                                      layer.name + "_r")
                       : Halide::RDom(0, context.batch, layer.name + "_r");
  auto at = [&](Halide::Func f) {
    return in_shape.size() == 3 ? f(r[0], r[1], v.c, r[2]) : f(v.f, r[0]);
  };
  int64_t positions = 1;
  for (size_t d = 1; d < in_shape.size(); ++d) positions *= in_shape[d];
  Halide::Expr count = Halide::cast<float>(context.batch * static_cast<int>(positions));

  Halide::Func sum(layer.name + "_sum");
  sum(channel) = 0.0f;
  sum(channel) += at(in);
  Halide::Func mean(layer.name + "_mean");
  mean(channel) = sum(channel) / count;
  Halide::Func centered(layer.name + "_centered");
  centered(args) = in(args) - mean(channel);
  Halide::Func square_sum(layer.name + "_square_sum");
  square_sum(channel) = 0.0f;
  square_sum(channel) += at(centered) * at(centered);
  Halide::Func inv_std(layer.name + "_inv_std");
  inv_std(channel) = 1.0f / Halide::sqrt(square_sum(channel) / count + layer.eps);
  out(args) = affine(centered(args) * inv_std(channel));

  // PyTorch updates the running variance with the unbiased batch variance.
  const float m = layer.momentum;
  Halide::Func new_mean(layer.name + "_new_running_mean");
  new_mean(channel) = (1 - m) * running_mean(channel) + m * mean(channel);
  Halide::Func new_var(layer.name + "_new_running_var");
  new_var(channel) = (1 - m) * running_var(channel) + m * square_sum(channel) / (count - 1);
  return {out, {sum, mean, square_sum, inv_std}, {new_mean, new_var}, {}};
}

}  // namespace kiln::ops
