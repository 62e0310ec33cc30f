// add and concat: the algorithms. Schedules inline them into their consumers.
#include "compiler/ops/ops.h"

namespace kiln::ops {

LoweredLayer Add(const Layer& layer, Halide::Func a, Halide::Func b) {
  std::vector<Halide::Var> args = a.args();
  Halide::Func out(layer.name);
  out(args) = a(args) + b(args);
  return {out, {}, {}, {}};
}

LoweredLayer Concat(const Layer& layer, const std::vector<Halide::Func>& ins,
                    const std::vector<int64_t>& channels) {
  const Vars& v = vars();
  // A select chain over channel ranges; each input is read at a clamped channel, so bounds stay
  // inside it and the autodiff sends each range's gradient to its own input.
  std::vector<int> begins = {0};
  for (int64_t count : channels) begins.push_back(begins.back() + static_cast<int>(count));
  Halide::Expr value;
  for (size_t i = ins.size(); i-- > 0;) {
    Halide::Expr c = Halide::clamp(v.c - begins[i], 0, static_cast<int>(channels[i]) - 1);
    Halide::Expr read = ins[i](v.x, v.y, c, v.n);
    value = value.defined() ? Halide::select(v.c < begins[i + 1], read, value) : read;
  }
  Halide::Func out(layer.name);
  out(v.x, v.y, v.c, v.n) = value;
  return {out, {}, {}, {}};
}

}  // namespace kiln::ops
