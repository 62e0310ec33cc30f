// max_pool2d: the algorithm. Its schedule (fused with the conv it reads) is in
// compiler/schedule/manual.cpp.
#include "compiler/ops/ops.h"

namespace kiln::ops {

LoweredLayer MaxPool2d(const Layer& layer, Halide::Func in) {
  const Vars& v = vars();
  const int k = static_cast<int>(layer.kernel_size);
  const int stride = static_cast<int>(layer.stride);

  // Unrolled as a chain of selects in window order, not Halide's maximum(): Halide 14's autodiff
  // cannot differentiate an inline maximum(), and select(b > a, b, a) keeps the first maximum on
  // ties, which is where PyTorch sends the gradient.
  Halide::Expr best;
  for (int ky = 0; ky < k; ++ky) {
    for (int kx = 0; kx < k; ++kx) {
      Halide::Expr value = in(v.x * stride + kx, v.y * stride + ky, v.c, v.n);
      best = best.defined() ? Halide::select(value > best, value, best) : value;
    }
  }
  Halide::Func out(layer.name);
  out(v.x, v.y, v.c, v.n) = best;
  return {out, {}};
}

}  // namespace kiln::ops
