// dropout: the algorithm. Schedules inline it into its consumer.
#include "compiler/ops/ops.h"

namespace kiln::ops {
namespace {

Halide::Expr U32(uint64_t value) { return Halide::Internal::make_const(Halide::UInt(32), value); }

// A 32-bit integer finalizer (the "lowbias32" constants found by Chris Wellons' hash-prospector,
// https://github.com/skeeto/hash-prospector): every input bit affects every output bit, so
// consecutive element indices give independent-looking values.
Halide::Expr Mix(Halide::Expr h) {
  h = h ^ (h >> 16);
  h = h * U32(0x7feb352d);
  h = h ^ (h >> 15);
  h = h * U32(0x846ca68b);
  return h ^ (h >> 16);
}

}  // namespace

LoweredLayer Dropout(const Layer& layer, const std::vector<int64_t>& in_shape, Halide::Func in,
                     const Context& context, int salt) {
  std::vector<Halide::Var> args = in.args();
  Halide::Func out(layer.name);
  if (!context.training || layer.p == 0) {
    out(args) = in(args);
    return {out, {}, {}, {}};
  }
  // The element's index in the batch, in PyTorch's memory order.
  Halide::Expr index = Halide::cast<uint32_t>(args.back());
  for (size_t d = in_shape.size(); d-- > 0;) {
    index = index * U32(in_shape[in_shape.size() - 1 - d]) +
            Halide::cast<uint32_t>(args[d]);
  }
  Halide::Expr stream = Mix(context.seed ^ Mix(U32(static_cast<uint32_t>(salt) * 0x9e3779b9u + 1u)));
  Halide::Expr bits = Mix(index ^ stream);
  // The top 24 bits as a float in [0, 1), exact in float32.
  Halide::Expr unit = Halide::cast<float>(bits >> 8) * (1.0f / 16777216.0f);
  const float scale = 1.0f / (1.0f - layer.p);
  out(args) = Halide::select(unit >= layer.p, in(args) * scale, 0.0f);
  return {out, {}, {}, {}};
}

}  // namespace kiln::ops
