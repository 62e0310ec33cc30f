// flatten: the algorithm. It is inlined into the dense layer that reads it.
#include "compiler/ops/ops.h"

namespace kiln::ops {

LoweredLayer Flatten(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in) {
  const Vars& v = vars();
  const int channels = static_cast<int>(in_shape[0]);
  const int height = static_cast<int>(in_shape[1]);
  const int width = static_cast<int>(in_shape[2]);
  Halide::Func out(layer.name);
  if (height == 1 && width == 1) {
    // The common case, after a global pool or a full-size conv.
    out(v.f, v.n) = in(0, 0, v.f, v.n);
  } else {
    Halide::Expr f = Halide::clamp(v.f, 0, channels * height * width - 1);
    out(v.f, v.n) = in(f % width, (f / width) % height, f / (width * height), v.n);
  }
  // Each input element is one output feature, so its gradient is that feature's.
  const int features = channels * height * width;
  InputGather input_gather{
      out, 1, [=](Halide::Func out_grad, const std::vector<Halide::Expr>& at) {
        const Halide::Expr x = at[0], y = at[1], c = at[2];
        const Halide::Expr inside =
            x >= 0 && x < width && y >= 0 && y < height && c >= 0 && c < channels;
        const Halide::Expr f = Halide::clamp((c * height + y) * width + x, 0, features - 1);
        return Halide::select(inside, out_grad(f, at[3]), 0.0f);
      }};
  return {out, {}, {}, input_gather};
}

}  // namespace kiln::ops
