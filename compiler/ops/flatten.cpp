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
    // The common case after a global pool or a full-size conv: an index the autodiff can invert.
    out(v.f, v.n) = in(0, 0, v.f, v.n);
  } else {
    Halide::Expr f = Halide::clamp(v.f, 0, channels * height * width - 1);
    out(v.f, v.n) = in(f % width, (f / width) % height, f / (width * height), v.n);
  }
  return {out, {}};
}

}  // namespace kiln::ops
