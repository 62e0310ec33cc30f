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
    source(v.x, v.y, v.c, v.n) = ReadInside(in, {v.x, v.y, v.c, v.n}, width, height, outside);
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
  LoweredLayer lowered{out, stages, {}, {}};
  if (inside && pad == 0 && stride == k) {
    // Windows that tile the input: each input position lies in at most one window, the one at
    // (x / k, y / k). Max pooling gives the window's whole gradient to the position it chose,
    // average pooling a k²-th of it to each. Positions past the last window get none.
    const int out_width = static_cast<int>(layer.output_shape[2]);
    const int out_height = static_cast<int>(layer.output_shape[1]);
    lowered.input_gather = {
        out, k * k,
        [=](Halide::Func out_grad, const std::vector<Halide::Expr>& at) {
          const Halide::Expr x = Halide::clamp(at[0] / k, 0, out_width - 1);
          const Halide::Expr y = Halide::clamp(at[1] / k, 0, out_height - 1);
          const Halide::Expr covered =
              at[0] >= 0 && at[0] < out_width * k && at[1] >= 0 && at[1] < out_height * k;
          const Halide::Expr grad = out_grad(x, y, at[2], at[3]);
          if (!max) return Halide::select(covered, grad / static_cast<float>(k * k), 0.0f);
          // The window position the forward's select chain chooses: the last one whose value
          // exceeds the maximum of those before it.
          Halide::Expr best, chosen = 0;
          for (int ky = 0; ky < k; ++ky) {
            for (int kx = 0; kx < k; ++kx) {
              Halide::Expr value = in(x * k + kx, y * k + ky, at[2], at[3]);
              if (!best.defined()) {
                best = value;
                continue;
              }
              const Halide::Expr greater = value > best;
              chosen = Halide::select(greater, ky * k + kx, chosen);
              best = Halide::select(greater, value, best);
            }
          }
          return Halide::select(covered && chosen == (at[1] % k) * k + at[0] % k, grad, 0.0f);
        }};
  }
  return lowered;
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
  return {out, {sum}, {}, {}};
}

}  // namespace kiln::ops
