// dense: the algorithm. Its schedule is in compiler/schedule/manual.cpp (section "dense").
#include "compiler/ops/ops.h"

namespace kiln::ops {

LoweredLayer Dense(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in,
                   Halide::Func weight, Halide::Func bias) {
  const Vars& v = vars();
  Halide::RDom r(0, static_cast<int>(in_shape[0]), layer.name + "_r");
  Halide::Func out(layer.name);
  out(v.f, v.n) = bias.defined() ? bias(v.f) : Halide::Expr(0.0f);
  out(v.f, v.n) += weight(r, v.f) * in(r, v.n);
  return {out, {}, {}, {}};
}

}  // namespace kiln::ops
