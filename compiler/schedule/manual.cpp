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

void ScheduleConvUpdate(Func conv, int64_t width) {
  const Var x = ops::vars().x, y = ops::vars().y;
  const std::vector<Halide::RVar> r = RVars(conv, 0);  // kx, ky, ci
  Halide::Stage update = conv.update();
  update.reorder(x, r[0], r[1], r[2], y);
  if (width >= kConvLanes) {
    conv.vectorize(x, kConvLanes);
    update.vectorize(x, kConvLanes);
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
constexpr int kGradientLanes = 8;

bool IsCopy(const Halide::Internal::Function& f) {
  const auto* call = f.values()[0].as<Halide::Internal::Call>();
  if (!call || call->args.size() != f.args().size()) return false;
  for (size_t i = 0; i < call->args.size(); ++i) {
    const auto* var = call->args[i].as<Halide::Internal::Variable>();
    if (!var || var->name != f.args()[i]) return false;
  }
  return true;
}

void ScheduleAdjointUpdate(Func f, int u, int64_t width) {
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
  const bool all_pure = pure.size() == lhs.size();
  const Halide::Internal::ReductionVariable* inner =
      rvars.empty() ? nullptr : &f.function().update(u).schedule().rvars()[0];
  const int64_t* inner_extent = inner ? Halide::Internal::as_const_int(inner->extent) : nullptr;
  if (all_pure && pure.size() > 1 && inner_extent && *inner_extent >= kGradientLanes) {
    // A parameter gradient: sum partial vectors along the innermost RVar, then reduce them.
    Halide::RVar outer, lanes;
    Var lane("lane");
    update.split(rvars[0], outer, lanes, kGradientLanes, Halide::TailStrategy::GuardWithIf);
    Func partial = update.rfactor(lanes, lane);
    partial.compute_root().vectorize(lane).parallel(pure.back());
    partial.update().vectorize(lane).parallel(pure.back());
    update.parallel(pure.back());
    return;
  }

  update.parallel(pure.back());
  if (lhs[0].as<Halide::Internal::Variable>() == nullptr || width < kConvLanes) return;
  Var x = pure.front();
  if (x.name() != lhs[0].as<Halide::Internal::Variable>()->name) return;
  std::vector<Halide::VarOrRVar> order = {x};
  for (const Halide::RVar& r : rvars) order.emplace_back(r);
  update.reorder(order).vectorize(x, kConvLanes, Halide::TailStrategy::GuardWithIf);
}

void ScheduleAdjoint(Func f, int64_t width) {
  const Halide::Internal::Function& function = f.function();
  if (function.updates().empty()) {
    // Pure adjoints: a relu mask or a copy. Copies stay inlined; masks are stored once, since
    // several reductions read them.
    if (IsCopy(function) || function.args().size() < 2) return;
  }
  f.compute_root();
  std::vector<Var> args = f.args();
  if (args.size() >= 2) f.parallel(args.back());
  if (args.size() >= 2 && width >= kConvLanes) f.vectorize(args.front(), kConvLanes);
  for (int u = 0; u < static_cast<int>(function.updates().size()); ++u) {
    ScheduleAdjointUpdate(f, u, width);
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
    if (layer.kind == OpKind::kConv2d && !fused_convs.count(i)) {
      ScheduleConvAtRoot(net.layers[i].output, layer.output_shape[2]);
    } else if (layer.kind == OpKind::kDense) {
      ScheduleDense(net.layers[i].output, layer.output_shape[0]);
    }
    // relu, flatten and each conv's zero-padded input stay inlined.
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
    ScheduleAdjoint(Func(function), width);
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
