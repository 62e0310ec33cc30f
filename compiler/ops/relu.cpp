// relu: the algorithm. It is inlined into its consumer by every hand-written schedule.
#include "compiler/ops/ops.h"

namespace kiln::ops {

LoweredLayer Relu(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in) {
  const Vars& v = vars();
  Halide::Func out(layer.name);
  if (in_shape.size() == 3) {
    out(v.x, v.y, v.c, v.n) = Halide::max(in(v.x, v.y, v.c, v.n), 0.0f);
  } else {
    out(v.f, v.n) = Halide::max(in(v.f, v.n), 0.0f);
  }
  return {out, {}};
}

}  // namespace kiln::ops
