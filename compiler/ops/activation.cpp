// relu, leaky_relu, sigmoid, tanh: the algorithms. Schedules inline them into their consumers.
#include "compiler/ops/ops.h"

namespace kiln::ops {

LoweredLayer Activation(const Layer& layer, Halide::Func in) {
  std::vector<Halide::Var> args = in.args();
  Halide::Expr value = in(args);
  Halide::Expr out_value;
  switch (layer.kind) {
    // select, not max: its derivative is 0 at 0 (PyTorch's choice for ReLU).
    case OpKind::kRelu: out_value = Halide::select(value > 0, value, 0.0f); break;
    case OpKind::kLeakyRelu:
      out_value = Halide::select(value > 0, value, value * layer.negative_slope);
      break;
    case OpKind::kSigmoid: out_value = 1.0f / (1.0f + Halide::exp(-value)); break;
    case OpKind::kTanh: out_value = Halide::tanh(value); break;
    default: break;
  }
  Halide::Func out(layer.name);
  out(args) = out_value;
  return {out, {}, {}, {}};
}

}  // namespace kiln::ops
