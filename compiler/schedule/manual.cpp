// Kiln's hand-written schedules, one section per op. The algorithms are in compiler/ops/.
#include <cctype>
#include <map>
#include <set>
#include <string>

#include "compiler/schedule/schedule.h"

namespace kiln::internal {
namespace {

using Halide::Func;
using Halide::Var;

// Consumers of each layer, from the model's edges.
std::vector<std::vector<int>> Consumers(const Model& model) {
  std::vector<std::vector<int>> consumers(model.layers.size());
  for (size_t i = 1; i < model.layers.size(); ++i) consumers[model.layers[i].input].push_back(i);
  return consumers;
}

// The single consumer of `layer` if it has exactly one of `kind`, else -1.
int OnlyConsumer(const Model& model, const std::vector<std::vector<int>>& consumers, int layer,
                 OpKind kind) {
  if (consumers[layer].size() != 1) return -1;
  const int next = consumers[layer][0];
  return model.layers[next].kind == kind ? next : -1;
}

// The reduction variables of update definition `update` of `f`, innermost first.
std::vector<Halide::RVar> RVars(Func f, int update) {
  std::vector<Halide::RVar> rvars;
  for (const Halide::Internal::ReductionVariable& r : f.function().update(update).schedule().rvars()) {
    rvars.emplace_back(r.var);
  }
  return rvars;
}

// ---- conv2d --------------------------------------------------------------------------------
// x is innermost in memory (PyTorch NCHW), so the conv vectorizes across x and moves x inside the
// reduction: each step of the reduction over (kx, ky, ci) is one broadcast weight times a vector
// of inputs. 8 lanes, not AVX-512's 16: LeNet's rows are 28, 10 and 1 wide, and 16 lanes would
// waste 4 of 32 and 6 of 16 lanes on the first two.
constexpr int kConvLanes = 8;
constexpr int kConvRowLanes = 16;

void ScheduleConvUpdate(Func conv, int64_t width) {
  const Var x = ops::vars().x, y = ops::vars().y;
  const std::vector<Halide::RVar> r = RVars(conv, 0);  // kx, ky, ci
  Halide::Stage update = conv.update();
  update.reorder(x, r[0], r[1], r[2], y).unroll(r[0]);
  if (width >= kConvLanes) {
    conv.vectorize(x, kConvRowLanes, Halide::TailStrategy::RoundUp);
    update.vectorize(x, kConvRowLanes, Halide::TailStrategy::RoundUp);
  }
}

// A conv computed on its own, for training (its output feeds the backward pass) or when no
// pool follows.
void ScheduleConvAtRoot(Func conv, int64_t width) {
  const ops::Vars& v = ops::vars();
  Var cn("cn");
  conv.compute_root().fuse(v.c, v.n, cn).parallel(cn);
  conv.update().fuse(v.c, v.n, cn).parallel(cn);
  ScheduleConvUpdate(conv, width);
}

// The zero-padded input is stored once per call: inlined, its clamped reads would turn every
// vector load of the conv loops into a gather.
void SchedulePadded(Func padded, const Layer& conv) {
  const ops::Vars& v = ops::vars();
  padded.compute_root().parallel(v.n);
  if (conv.output_shape[2] + conv.kernel_size > kConvLanes) padded.vectorize(v.x, kConvLanes);
}

// A conv with a 1×1 output (as large as its input) is a matrix-vector product per sample:
// vectorize across output channels, with the weights stored channel-innermost for it.
bool IsSingleOutput(const Layer& conv) {
  return conv.output_shape[1] == 1 && conv.output_shape[2] == 1;
}

void ScheduleSingleOutputConv(Func conv, Func weight) {
  const ops::Vars& v = ops::vars();
  std::vector<Var> w = weight.args();  // (kx, ky, ci, co)
  weight.compute_root().reorder_storage(w[3], w[0], w[1], w[2]).parallel(w[2]);
  weight.vectorize(w[3], kConvLanes, Halide::TailStrategy::RoundUp);
  conv.compute_root().parallel(v.n).vectorize(v.c, kConvLanes, Halide::TailStrategy::RoundUp);
  const std::vector<Halide::RVar> r = RVars(conv, 0);
  conv.update().reorder(v.c, r[0], r[1], r[2]).parallel(v.n)
      .vectorize(v.c, kConvLanes, Halide::TailStrategy::RoundUp);
}

// ---- max_pool2d, fused with conv2d → relu ----------------------------------------------------
// The pool computes the conv rows that one output row needs, so inference never stores a full
// conv output. The relu between them is inlined.
void SchedulePoolOverConv(Func pool, Func conv, int64_t pool_width, int64_t conv_width) {
  const ops::Vars& v = ops::vars();
  Var cn("cn");
  pool.compute_root().fuse(v.c, v.n, cn).parallel(cn);
  if (pool_width >= kConvLanes) pool.vectorize(v.x, kConvLanes);
  conv.compute_at(pool, v.y);
  ScheduleConvUpdate(conv, conv_width);
}

void SchedulePoolAtRoot(Func pool, int64_t width) {
  const ops::Vars& v = ops::vars();
  Var cn("cn");
  pool.compute_root().fuse(v.c, v.n, cn).parallel(cn);
  if (width >= kConvLanes) pool.vectorize(v.x, kConvLanes);
}

// ---- dense ---------------------------------------------------------------------------------
// Parallel over the batch, vectorized across output features.
void ScheduleDense(Func dense, int64_t out_features) {
  const ops::Vars& v = ops::vars();
  dense.compute_root().parallel(v.n);
  dense.update().parallel(v.n);
  if (out_features >= kConvLanes) {
    // GuardWithIf: an update rounded up to whole vectors would read weights past out_features.
    dense.vectorize(v.f, kConvLanes);
    dense.update().vectorize(v.f, kConvLanes, Halide::TailStrategy::GuardWithIf);
  }
}

// ---- gradients (adjoints from propagate_adjoints) ---------------------------------------------
// propagate_adjoints makes one adjoint Func per forward definition, named
// "<forward>_<definition>_d_def__". Kiln's ops give them three shapes:
//  - gather reductions (a conv's input gradient): pure in (x, y, c, n), reducing over the kernel;
//  - scatters (max_pool2d and zero-padding adjoints): update left-hand sides made of RVars;
//  - parameter gradients: pure in the parameter's indices, reducing over batch and space.
// Every adjoint with an update is computed at root. Parameter gradients split their innermost
// spatial RVar into vectors with rfactor, because their pure dimensions (kernel taps) are too
// narrow to vectorize; the rest run in parallel over their outermost pure dimension.
constexpr int kGradientLanes = 16;

bool IsCopy(const Halide::Internal::Function& f) {
  const auto* call = f.values()[0].as<Halide::Internal::Call>();
  if (!call || call->args.size() != f.args().size()) return false;
  for (size_t i = 0; i < call->args.size(); ++i) {
    const auto* var = call->args[i].as<Halide::Internal::Variable>();
    if (!var || var->name != f.args()[i]) return false;
  }
  return true;
}

// The value of a constant extent, or 0 when it depends on run-time sizes (the batch).
int64_t ConstantExtent(const Halide::Expr& extent) {
  const int64_t* value = Halide::Internal::as_const_int(Halide::Internal::simplify(extent));
  return value ? *value : 0;
}

// Lanes to sum a reduction of constant `extent` in: the whole extent when it fits one AVX-512
// vector, else the largest divisor from 8 to 16, so no lane is wasted on a tail; 0 when neither.
int ReductionLanes(int64_t extent) {
  if (extent >= 4 && extent <= kGradientLanes) return static_cast<int>(extent);
  for (int lanes = kGradientLanes; lanes >= 8; --lanes) {
    if (extent % lanes == 0) return lanes;
  }
  return 0;
}

// `param_shape` is the parameter's shape in Halide order when `f` is a parameter gradient, else
// empty.
void ScheduleAdjointUpdate(Func f, int u, int64_t width, const std::vector<int64_t>& param_shape) {
  Halide::Stage update = f.update(u);
  const std::vector<Halide::Expr>& lhs = f.function().update(u).args();
  std::vector<Var> pure;
  for (const Halide::Expr& e : lhs) {
    if (const auto* var = e.as<Halide::Internal::Variable>(); var && !var->reduction_domain.defined()) {
      pure.emplace_back(var->name);
    }
  }
  if (pure.empty()) return;  // A scalar reduction or a scatter over RVars only: left serial.

  const std::vector<Halide::RVar> rvars = RVars(f, u);
  const auto& rvar_info = f.function().update(u).schedule().rvars();
  const bool parameter_gradient = !param_shape.empty() && pure.size() == lhs.size() && !rvars.empty();
  const int lanes = parameter_gradient ? ReductionLanes(ConstantExtent(rvar_info[0].extent)) : 0;
  if (lanes > 0) {
    // Partial sums in vector lanes along the innermost reduction (the output's x), then a
    // short serial sum of the lanes.
    Halide::RVar outer("lane_groups"), inner("lanes");
    Var lane("lane");
    update.split(rvars[0], outer, inner, lanes);
    Func partial = update.rfactor(inner, lane);
    // Kernel taps inside the reduction: each loaded vector of output gradients serves every
    // tap of the kernel window before the loop moves on.
    std::vector<Halide::VarOrRVar> order = {lane};
    for (size_t i = 0; i + 2 < pure.size() && i < 2; ++i) order.emplace_back(pure[i]);
    order.emplace_back(outer);
    for (size_t i = 1; i < rvars.size(); ++i) order.emplace_back(rvars[i]);
    std::vector<Var> storage = {lane};  // rfactor stores the new dimension outermost otherwise.
    for (const Var& v : partial.args()) {
      if (v.name() != lane.name()) storage.push_back(v);
    }
    partial.reorder_storage(storage);
    partial.compute_root().vectorize(lane).parallel(pure.back());
    partial.update().reorder(order).vectorize(lane).parallel(pure.back());
    update.parallel(pure.back());
    return;
  }
  if (parameter_gradient && pure.size() > 1 && param_shape.back() >= kGradientLanes) {
    // No reduction to vectorize (a conv with a 1×1 output): vectorize across output channels,
    // stored innermost so the vectors are contiguous.
    std::vector<Var> storage = {pure.back()};
    storage.insert(storage.end(), pure.begin(), pure.end() - 1);
    f.reorder_storage(storage);
    std::vector<Halide::VarOrRVar> order = {pure.back()};
    for (const Halide::RVar& r : rvars) order.emplace_back(r);
    order.insert(order.end(), pure.begin(), pure.end() - 1);
    update.reorder(order).vectorize(pure.back(), kGradientLanes, Halide::TailStrategy::RoundUp);
    update.parallel(pure[pure.size() - 2]);
    return;
  }
  update.parallel(pure.back());

  const auto* first = lhs[0].as<Halide::Internal::Variable>();
  if (first == nullptr || first->name != pure.front().name()) return;
  if (!parameter_gradient && width < kGradientLanes / 2) return;

  // Vectorize dimension 0 inside the reduction. RoundUp computes whole vectors: the extra lanes
  // land in padding of this Func's allocation and read producers that are zero there.
  std::vector<Halide::VarOrRVar> order = {pure.front()};
  for (const Halide::RVar& r : rvars) order.emplace_back(r);
  update.reorder(order).vectorize(pure.front(), kGradientLanes, Halide::TailStrategy::RoundUp);
}

void ScheduleAdjoint(Func f, int64_t width, const std::vector<int64_t>& param_shape) {
  const Halide::Internal::Function& function = f.function();
  if (function.updates().empty()) {
    // Pure adjoints: a relu mask or a copy. Copies stay inlined; masks are stored once, since
    // several reductions read them.
    if (IsCopy(function) || function.args().size() < 2) return;
  }
  f.compute_root();
  std::vector<Var> args = f.args();
  if (args.size() >= 2) f.parallel(args.back());
  if (args.size() >= 2 && width >= kGradientLanes / 2) {
    f.vectorize(args.front(), kGradientLanes, Halide::TailStrategy::RoundUp);
  }
  for (int u = 0; u < static_cast<int>(function.updates().size()); ++u) {
    ScheduleAdjointUpdate(f, u, width, param_shape);
  }
}

// Schedules every layer's output Func. With `fuse_pools`, a conv → relu → max_pool2d chain is
// computed inside the pool; otherwise every conv and pool output is stored for the backward pass.
void ScheduleLayers(const Model& model, const LoweredNetwork& net, bool fuse_pools) {
  const std::vector<std::vector<int>> consumers = Consumers(model);
  std::set<int> fused_convs;
  for (size_t i = 1; i < model.layers.size(); ++i) {
    const Layer& layer = model.layers[i];
    if (layer.kind != OpKind::kMaxPool2d) continue;
    const int64_t width = layer.output_shape[2];
    const Layer& relu = model.layers[layer.input];
    const bool after_conv_relu = relu.kind == OpKind::kRelu &&
                                 model.layers[relu.input].kind == OpKind::kConv2d &&
                                 OnlyConsumer(model, consumers, relu.input, OpKind::kRelu) >= 0 &&
                                 OnlyConsumer(model, consumers, layer.input, OpKind::kMaxPool2d) >= 0;
    if (fuse_pools && after_conv_relu) {
      SchedulePoolOverConv(net.layers[i].output, net.layers[relu.input].output, width,
                           model.layers[relu.input].output_shape[2]);
      fused_convs.insert(relu.input);
    } else {
      SchedulePoolAtRoot(net.layers[i].output, width);
    }
  }
  for (size_t i = 1; i < model.layers.size(); ++i) {
    const Layer& layer = model.layers[i];
    if (layer.kind == OpKind::kConv2d && IsSingleOutput(layer)) {
      ScheduleSingleOutputConv(net.layers[i].output, net.param_funcs[layer.params[0]]);
    } else if (layer.kind == OpKind::kConv2d && !fused_convs.count(i)) {
      ScheduleConvAtRoot(net.layers[i].output, layer.output_shape[2]);
    } else if (layer.kind == OpKind::kDense) {
      ScheduleDense(net.layers[i].output, layer.output_shape[0]);
    }
    if (layer.kind == OpKind::kConv2d) SchedulePadded(net.layers[i].stages[0], layer);
    // relu and flatten stay inlined.
  }
}

}  // namespace

void ManualForward(const Model& model, const LoweredNetwork& net, const Halide::Target&) {
  ScheduleLayers(model, net, /*fuse_pools=*/true);
}

void ManualTraining(const Model& model, const LoweredNetwork& net, Halide::Pipeline& pipeline,
                    const Halide::Target&) {
  ScheduleLayers(model, net, /*fuse_pools=*/false);
  for (Halide::Func f : net.loss.stages) f.compute_root();

  // Width of dimension 0 of each forward Func, so adjoints named after it know their extent.
  std::map<std::string, int64_t> widths;
  for (size_t i = 0; i < model.layers.size() && i < net.layers.size(); ++i) {
    const Layer& layer = model.layers[i];
    if (!net.layers[i].output.defined() || layer.output_shape.empty()) continue;
    const int64_t width = layer.output_shape.size() == 3 ? layer.output_shape[2] : layer.output_shape[0];
    widths[net.layers[i].output.name()] = width;
    for (const Halide::Func& stage : net.layers[i].stages) widths[stage.name()] = width;
  }

  std::vector<Halide::Internal::Function> outputs;
  for (const Halide::Func& f : pipeline.outputs()) outputs.push_back(f.function());
  for (const auto& [name, function] : Halide::Internal::build_environment(outputs)) {
    if (name.find("_d_def__") == std::string::npos) continue;
    int64_t width = 0;
    for (const auto& [forward, w] : widths) {
      if (name.rfind(forward + "_", 0) == 0 && forward.size() + 1 < name.size() &&
          std::isdigit(static_cast<unsigned char>(name[forward.size() + 1]))) {
        width = w;
      }
    }
    std::vector<int64_t> param_shape;
    for (size_t p = 0; p < net.param_funcs.size(); ++p) {
      if (name.rfind(net.param_funcs[p].name() + "_", 0) == 0) {
        param_shape.assign(model.params[p].shape.rbegin(), model.params[p].shape.rend());
      }
    }
    ScheduleAdjoint(Func(function), width, param_shape);
  }
}

void ManualUpdate(const LoweredUpdate& update, const Halide::Target& target) {
  // Elementwise over the flat arrays: large vectors, split across threads in big chunks.
  Func updated = update.updated;
  Var i = updated.args()[0], outer("outer"), inner("inner");
  const int lanes = target.natural_vector_size<float>();
  updated.compute_root()
      .split(i, outer, inner, lanes * 256, Halide::TailStrategy::GuardWithIf)
      .parallel(outer)
      .vectorize(inner, lanes, Halide::TailStrategy::GuardWithIf);
}

}  // namespace kiln::internal
