// max_pool2d, avg_pool2d, adaptive_avg_pool2d: the algorithms. Inference schedules compute a
// conv → relu → max_pool2d chain inside the pool (compiler/schedule/manual.cpp).
#include <limits>

#include "compiler/ops/ops.h"

namespace kiln::ops {

LoweredLayer Pool2d(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in) {
  const Vars& v = vars();
  const int k = static_cast<int>(layer.kernel_size);
  const int stride = static_cast<int>(layer.stride);
  const int pad = static_cast<int>(layer.padding);
  const int height = static_cast<int>(in_shape[1]);
  const int width = static_cast<int>(in_shape[2]);
  const bool max = layer.kind == OpKind::kMaxPool2d;

  // Positions outside the input (padding, and windows that ceil_mode lets run past the end)
  // read as −∞ for max pooling and 0 for average pooling. Without padding or ceil_mode every
  // window is inside and the input is read directly.
  const bool inside = pad == 0 && (layer.output_shape[1] - 1) * stride + k <= height &&
                      (layer.output_shape[2] - 1) * stride + k <= width;
  Halide::Func source = in;
  std::vector<Halide::Func> stages;
  if (!inside) {
    source = Halide::Func(layer.name + "_padded");
    const float outside = max ? -std::numeric_limits<float>::infinity() : 0.0f;
    source(v.x, v.y, v.c, v.n) = Halide::select(
        v.x >= 0 && v.x < width && v.y >= 0 && v.y < height,
        in(Halide::clamp(v.x, 0, width - 1), Halide::clamp(v.y, 0, height - 1), v.c, v.n), outside);
    stages.push_back(source);
  }

  // Unrolled in window order rather than Halide's maximum()/sum(): Halide 14's autodiff cannot
  // differentiate an inline maximum(), and select(b > a, b, a) keeps the first maximum on ties,
  // which is where PyTorch sends the gradient.
  Halide::Expr total;
  for (int ky = 0; ky < k; ++ky) {
    for (int kx = 0; kx < k; ++kx) {
      Halide::Expr value = source(v.x * stride + kx - pad, v.y * stride + ky - pad, v.c, v.n);
      if (!total.defined()) {
        total = value;
      } else {
        total = max ? Halide::select(value > total, value, total) : total + value;
      }
    }
  }
  if (!max) {
    // PyTorch's divisor (aten/src/ATen/native/cpu/AvgPoolKernel.cpp): the window clipped to the
    // padded input, or to the input itself without count_include_pad.
    auto span = [&](Halide::Expr start, int size, bool clip) {
      Halide::Expr end = Halide::min(start + k, size + pad);
      if (clip) {
        return Halide::min(end, size) - Halide::max(start, 0);
      }
      return end - start;
    };
    const bool clip = !layer.count_include_pad;
    Halide::Expr count = span(v.x * stride - pad, width, clip) * span(v.y * stride - pad, height, clip);
    total = total / Halide::cast<float>(count);
  }
  Halide::Func out(layer.name);
  out(v.x, v.y, v.c, v.n) = total;
  return {out, stages, {}};
}

LoweredLayer GlobalAvgPool2d(const Layer& layer, const std::vector<int64_t>& in_shape,
                             Halide::Func in) {
  const Vars& v = vars();
  const int height = static_cast<int>(in_shape[1]);
  const int width = static_cast<int>(in_shape[2]);
  Halide::RDom r(0, width, 0, height, layer.name + "_r");
  Halide::Func sum(layer.name + "_sum");
  sum(v.c, v.n) = 0.0f;
  sum(v.c, v.n) += in(r.x, r.y, v.c, v.n);
  Halide::Func out(layer.name);
  out(v.x, v.y, v.c, v.n) = sum(v.c, v.n) * (1.0f / static_cast<float>(width * height));
  return {out, {sum}, {}};
}

}  // namespace kiln::ops
