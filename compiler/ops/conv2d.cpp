// conv2d: the algorithm. Its schedules are in compiler/schedule/manual.cpp (section "conv2d").
#include "compiler/ops/ops.h"

namespace kiln::ops {

const Vars& vars() {
  static const Vars v;
  return v;
}

std::vector<Halide::Var> TensorVars(size_t rank) {
  const Vars& v = vars();
  if (rank == 1) return {v.f, v.n};
  return {v.x, v.y, v.c, v.n};
}

Halide::Expr ReadInside(Halide::Func f, const std::vector<Halide::Expr>& at, int width,
                        int height, Halide::Expr outside) {
  const Halide::Expr x = at[0], y = at[1];
  return Halide::select(x >= 0 && x < width && y >= 0 && y < height,
                        f(Halide::clamp(x, 0, width - 1), Halide::clamp(y, 0, height - 1), at[2],
                          at[3]),
                        outside);
}

LoweredLayer Conv2d(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in,
                    Halide::Func weight, Halide::Func bias) {
  const Vars& v = vars();
  const int in_channels = static_cast<int>(in_shape[0]);
  const int height = static_cast<int>(in_shape[1]);
  const int width = static_cast<int>(in_shape[2]);
  const int k = static_cast<int>(layer.kernel_size);
  const int stride = static_cast<int>(layer.stride);
  const int pad = static_cast<int>(layer.padding);
  const int dilation = static_cast<int>(layer.dilation);
  const int groups = static_cast<int>(layer.groups);
  const int group_in = in_channels / groups;
  const int group_out = static_cast<int>(layer.out_channels) / groups;

  // The input reads as zero outside its W x H extent, so padded and over-computed (vector tail)
  // positions never read another sample's memory.
  Halide::Func padded(layer.name + "_padded");
  padded(v.x, v.y, v.c, v.n) = ReadInside(in, {v.x, v.y, v.c, v.n}, width, height, 0.0f);
  // The input's gradient is the padded input's, inside the input. The autodiff's own form zeroes
  // it and then adds the padded input's gradient in a second pass.
  InputGather input_gather{padded, 1,
                           [width, height](Halide::Func padded_grad,
                                           const std::vector<Halide::Expr>& at) {
                             return ReadInside(padded_grad, at, width, height, 0.0f);
                           }};

  Halide::RDom r(0, k, 0, k, 0, group_in, layer.name + "_r");
  Halide::Func conv(layer.name);
  conv(v.x, v.y, v.c, v.n) = bias.defined() ? bias(v.c) : Halide::Expr(0.0f);

  // With a 1×1 output (a conv as large as its input, like LeNet's C5), x and y are always 0.
  // Written as 0, they let the autodiff gather the input gradient over output channels only.
  // With x + kx it would gather over every kernel tap, and nearly all of them fall outside.
  const bool single_output = layer.output_shape[1] == 1 && layer.output_shape[2] == 1;
  Halide::Expr x = single_output ? Halide::Expr(0) : Halide::Expr(v.x);
  Halide::Expr y = single_output ? Halide::Expr(0) : Halide::Expr(v.y);
  // Without groups the input channel is the reduction variable itself, which keeps the
  // autodiff's input gradient a gather.
  Halide::Expr channel = groups == 1 ? Halide::Expr(r.z) : (v.c / group_out) * group_in + r.z;
  conv(v.x, v.y, v.c, v.n) +=
      weight(r.x, r.y, r.z, v.c) *
      padded(x * stride + r.x * dilation - pad, y * stride + r.y * dilation - pad, channel, v.n);
  return {conv, {padded}, {}, input_gather};
}

}  // namespace kiln::ops
