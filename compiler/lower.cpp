#include "compiler/lower.h"

#include <map>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace kiln {
namespace {

// Halide names may not contain '.', which PyTorch names use between module and tensor.
std::string HalideName(const std::string& name) { return absl::StrReplaceAll(name, {{".", "_"}}); }

// The Region of a tensor of per-sample `shape` (PyTorch order) and `batch` samples, Halide-ordered.
Halide::Region TensorRegion(const std::vector<int64_t>& shape, Halide::Expr batch) {
  Halide::Region region;
  for (size_t d = shape.size(); d-- > 0;) region.push_back({0, static_cast<int>(shape[d])});
  region.push_back({0, batch});
  return region;
}

// Returns the output region to pass to Halide::propagate_adjoints for a tensor of per-sample
// `shape` and `batch` samples. Halide 14 turns each Range into the interval
// [min, min + extent], one past the end (src/Derivative.cpp,
// ReverseAccumulationVisitor::propagate_adjoints), so each extent here is one less. With the true extents, every backward segment's bounds grew by one sample,
// row, column and channel. Each weight gradient then summed a batch of 8 as a vector of 8
// samples plus a predicated pass over a ninth, which doubled its cost.
Halide::Region AdjointRegion(const std::vector<int64_t>& shape, Halide::Expr batch) {
  Halide::Region region = TensorRegion(shape, batch);
  for (Halide::Range& range : region) range.extent = range.extent - 1;
  return region;
}

// A float tensor argument with fixed per-sample extents and a free batch.
Halide::ImageParam TensorParam(Halide::Type type, const std::vector<int64_t>& shape, int batch,
                               const std::string& name) {
  const int rank = static_cast<int>(shape.size());
  Halide::ImageParam p(type, rank + 1, name);
  for (int d = 0; d < rank; ++d) {
    const int extent = static_cast<int>(shape[rank - 1 - d]);
    p.dim(d).set_bounds(0, extent).set_estimate(0, extent);
  }
  p.dim(rank).set_min(0).set_estimate(0, batch);
  p.dim(0).set_stride(1);
  return p;
}

// Reads `p` with every index clamped to its extent. On the sample index this lets schedules
// compute whole vectors of samples past a partial last batch: those lanes repeat the last sample
// and never reach an output. On the others it keeps the backward functions in bounds where they
// recompute the forward pass past a tensor's edge (behind a padded convolution), for positions
// whose adjoint is zero.
Halide::Func ClampedRead(const Halide::ImageParam& p, const std::string& name) {
  std::vector<Halide::Var> args = ops::TensorVars(p.dimensions() == 4 ? 3 : 1);
  if (p.dimensions() == 1) args = {ops::vars().n};
  std::vector<Halide::Expr> call;
  for (int d = 0; d < p.dimensions(); ++d) {
    call.push_back(Halide::clamp(args[d], 0, p.dim(d).extent() - 1));
  }
  Halide::Func f(name);
  f(args) = p(call);
  return f;
}

// A parameter or running statistic: the ImageParam and the wrapper Func that ops read.
std::pair<Halide::ImageParam, Halide::Func> StateParam(const Param& p) {
  const int dims = static_cast<int>(p.shape.size());
  Halide::ImageParam param(Halide::Float(32), dims, HalideName(p.name));
  for (int d = 0; d < dims; ++d) {
    const int extent = static_cast<int>(p.shape[dims - 1 - d]);
    param.dim(d).set_bounds(0, extent).set_estimate(0, extent);
  }
  // Clamped for the same reason as segment inputs (ClampedRead), and the clamps vanish where
  // bounds are exact.
  std::vector<Halide::Var> vars(dims);
  std::vector<Halide::Expr> call;
  for (int d = 0; d < dims; ++d) {
    call.push_back(Halide::clamp(vars[d], 0, static_cast<int>(p.shape[dims - 1 - d]) - 1));
  }
  Halide::Func wrapper(HalideName(p.name) + "_value");
  wrapper(vars) = param(call);
  return {param, wrapper};
}

Halide::Region ShapeRegion(const std::vector<int64_t>& shape) {
  Halide::Region region;
  for (size_t d = shape.size(); d-- > 0;) region.push_back({0, static_cast<int>(shape[d])});
  return region;
}

// Lowers the layers of `s` up to (not including) the loss.
void LowerLayers(LoweredSegment& s, const ops::Context& context) {
  const Model& model = *s.model;
  int dropout_salt = 0;
  for (int i = s.segment.first; i <= s.segment.last; ++i) {
    if (IsLoss(model.layers[i].kind)) break;
    // The ops name their Funcs after the layer, and Halide names may not contain '.'.
    Layer layer = model.layers[i];
    layer.name = HalideName(layer.name);
    const std::vector<int64_t>& in_shape = model.layers[layer.input()].output_shape;
    Halide::Func in = s.func_of(layer.input());
    auto param = [&](size_t k) {
      if (k >= layer.params.size()) return Halide::Func();
      for (size_t j = 0; j < s.param_indices.size(); ++j) {
        if (s.param_indices[j] == layer.params[k]) return s.param_funcs[j];
      }
      return Halide::Func();
    };
    auto buffer = [&](size_t k) {
      for (size_t j = 0; j < s.buffer_indices.size(); ++j) {
        if (s.buffer_indices[j] == layer.buffers[k]) {
          return Halide::Func(s.buffers[j]);
        }
      }
      return Halide::Func();
    };
    ops::LoweredLayer lowered;
    switch (layer.kind) {
      case OpKind::kConv2d: lowered = ops::Conv2d(layer, in_shape, in, param(0), param(1)); break;
      case OpKind::kRelu:
      case OpKind::kLeakyRelu:
      case OpKind::kSigmoid:
      case OpKind::kTanh: lowered = ops::Activation(layer, in); break;
      case OpKind::kMaxPool2d:
      case OpKind::kAvgPool2d: lowered = ops::Pool2d(layer, in_shape, in); break;
      case OpKind::kAdaptiveAvgPool2d: lowered = ops::GlobalAvgPool2d(layer, in_shape, in); break;
      case OpKind::kFlatten: lowered = ops::Flatten(layer, in_shape, in); break;
      case OpKind::kDense: lowered = ops::Dense(layer, in_shape, in, param(0), param(1)); break;
      case OpKind::kAdd: lowered = ops::Add(layer, in, s.func_of(layer.inputs[1])); break;
      case OpKind::kConcat: {
        std::vector<Halide::Func> ins;
        std::vector<int64_t> channels;
        for (int input : layer.inputs) {
          ins.push_back(s.func_of(input));
          channels.push_back(model.layers[input].output_shape[0]);
        }
        lowered = ops::Concat(layer, ins, channels);
        break;
      }
      case OpKind::kDropout:
        lowered = ops::Dropout(layer, in_shape, in, context, dropout_salt++);
        break;
      case OpKind::kBatchNorm2d:
      case OpKind::kBatchNorm1d: {
        // backward has no running statistics: training never reads them, only updates them.
        Halide::Func mean = s.buffers.empty() ? Halide::Func() : buffer(0);
        Halide::Func var = s.buffers.empty() ? Halide::Func() : buffer(1);
        if (!mean.defined()) {
          mean = Halide::Func(layer.name + "_unused_mean");
          mean(ops::vars().c) = 0.0f;
          var = Halide::Func(layer.name + "_unused_var");
          var(ops::vars().c) = 1.0f;
        }
        lowered = ops::BatchNorm(layer, in_shape, in, param(0), param(1), mean, var, context);
        break;
      }
      case OpKind::kInput:
      case OpKind::kCrossEntropyLoss:
      case OpKind::kMseLoss:
      case OpKind::kL1Loss:
      case OpKind::kBceWithLogitsLoss: break;
    }
    s.layers[i] = lowered;
    if (s.mode != LowerMode::kBackward) {
      for (const Halide::Func& f : lowered.new_buffers) s.new_buffers.push_back(f);
    }
  }
}

// Replaces, in the adjoints of `s`, each adjoint that Halide 14's autodiff scatters into a
// layer's input with the layer's gather (ops::InputGather). The autodiff writes such an adjoint
// as a pure definition (zero, or the gathers of other readers) plus one update per scattered read,
// each a pass over the reader's domain that reads and writes the whole adjoint. The gather adds
// the same terms in one pure definition, which the schedules may inline into its consumers.
// An adjoint is left as it is unless every one of its updates is a scatter that a rule covers.
// LeNet-5's max-pool inputs had five passes each (zero and 4 window positions), and the inputs
// of its conv paddings and flatten two each.
void GatherInputAdjoints(LoweredSegment& s, const Halide::Derivative& d) {
  const Model& model = *s.model;
  struct Scattered {
    Halide::Internal::Function adjoint;
    std::vector<const ops::InputGather*> rules;
  };
  std::map<std::string, Scattered> scattered;  // By adjoint name.
  for (const auto& [i, lowered] : s.layers) {
    const ops::InputGather& rule = lowered.input_gather;
    const int input = model.layers[i].input();
    if (!rule.gather || !d(rule.reader).defined()) continue;
    const Halide::Func adjoint = d(s.func_of(input));
    if (!adjoint.defined()) continue;
    Scattered& entry = scattered[adjoint.name()];
    entry.adjoint = adjoint.function();
    entry.rules.push_back(&rule);
  }

  std::map<std::string, Halide::Func> gathers;  // By the name of the adjoint they replace.
  for (const auto& [name, entry] : scattered) {
    const Halide::Internal::Function& adjoint = entry.adjoint;
    std::vector<int> scatters(entry.rules.size(), 0);
    // The pure definition must not read a rule's adjoint too: the gather would count it twice.
    const std::set<std::string> pure_reads = FuncsRead(adjoint.definition());
    bool covered = adjoint.has_pure_definition() && adjoint.outputs() == 1;
    for (const ops::InputGather* rule : entry.rules) {
      covered = covered && pure_reads.count(d(rule->reader).name()) == 0;
    }
    for (const Halide::Internal::Definition& update : adjoint.updates()) {
      const std::set<std::string> reads = FuncsRead(update);
      int matches = 0;
      for (size_t r = 0; r < entry.rules.size(); ++r) {
        if (reads.count(d(entry.rules[r]->reader).name()) != 0) {
          ++scatters[r];
          ++matches;
        }
      }
      covered = covered && matches == 1;
    }
    for (size_t r = 0; r < entry.rules.size(); ++r) {
      covered = covered && scatters[r] == entry.rules[r]->reads;
    }
    if (!covered) continue;
    std::vector<Halide::Var> args;
    for (const std::string& arg : adjoint.args()) args.emplace_back(arg);
    const std::vector<Halide::Expr> at(args.begin(), args.end());
    Halide::Expr value = adjoint.values()[0];
    if (Halide::Internal::is_const_zero(value)) value = Halide::Expr();
    for (const ops::InputGather* rule : entry.rules) {
      const Halide::Expr term = rule->gather(d(rule->reader), at);
      value = value.defined() ? value + term : term;
    }
    Halide::Func gather(name + "_gather");
    gather(args) = value;
    gathers[name] = gather;
  }
  if (gathers.empty()) return;

  // Every read of a replaced adjoint, in the adjoints, the outputs and the gathers themselves
  // (one gather may read another's adjoint), now reads its gather. The replaced adjoints keep
  // their own definitions, which read themselves: Funcs outside the outputs may still read
  // them.
  class ReadGathers : public Halide::Internal::IRMutator {
   public:
    explicit ReadGathers(const std::map<std::string, Halide::Func>& gathers) : gathers_(gathers) {}
    using IRMutator::visit;
    Halide::Expr visit(const Halide::Internal::Call* call) override {
      const auto it = call->call_type == Halide::Internal::Call::Halide
                          ? gathers_.find(call->name)
                          : gathers_.end();
      if (it == gathers_.end()) return IRMutator::visit(call);
      std::vector<Halide::Expr> args;
      for (const Halide::Expr& arg : call->args) args.push_back(mutate(arg));
      return Halide::Internal::Call::make(it->second.function(), args, call->value_index);
    }

   private:
    const std::map<std::string, Halide::Func>& gathers_;
  } read_gathers(gathers);
  // With d input too where the segment does not output it: tests compute it.
  std::vector<Halide::Internal::Function> outputs = {s.input_grad.function()};
  for (const Halide::Func& f : s.outputs()) outputs.push_back(f.function());
  for (auto& [name, function] : Halide::Internal::build_environment(outputs)) {
    if (gathers.count(name) == 0) function.mutate(&read_gathers);
  }
  for (auto& [name, gather] : gathers) {
    gather.function().mutate(&read_gathers);
    s.gathers.push_back(gather);
  }
}

}  // namespace

std::set<std::string> FuncsRead(const Halide::Internal::Definition& definition) {
  class Reads : public Halide::Internal::IRGraphVisitor {
   public:
    using IRGraphVisitor::visit;
    void visit(const Halide::Internal::Call* call) override {
      IRGraphVisitor::visit(call);
      if (call->call_type == Halide::Internal::Call::Halide) names.insert(call->name);
    }
    std::set<std::string> names;
  } reads;
  definition.accept(&reads);
  return reads.names;
}

const char* LowerModeName(LowerMode mode) {
  switch (mode) {
    case LowerMode::kForward: return "forward";
    case LowerMode::kTrainForward: return "train_forward";
    case LowerMode::kBackward: return "backward";
    case LowerMode::kTrainLast: return "train_last";
  }
  return "unknown";
}

Halide::Func LoweredSegment::func_of(int layer) const {
  return layer == segment.input ? input_func : layers.at(layer).output;
}

std::vector<Halide::Argument> LoweredSegment::arguments() const {
  std::vector<Halide::Argument> args = {input};
  if (mode == LowerMode::kTrainLast) args.push_back(targets);
  for (const Halide::ImageParam& p : params) args.push_back(p);
  if (mode != LowerMode::kBackward) {
    for (const Halide::ImageParam& b : buffers) args.push_back(b);
  }
  if (mode != LowerMode::kForward) args.push_back(seed);
  if (mode == LowerMode::kBackward) args.push_back(output_grad);
  return args;
}

std::vector<Halide::Func> LoweredSegment::outputs() const {
  std::vector<Halide::Func> out;
  switch (mode) {
    case LowerMode::kForward: out = {output}; break;
    case LowerMode::kTrainForward:
      out = {output};
      out.insert(out.end(), new_buffers.begin(), new_buffers.end());
      break;
    case LowerMode::kBackward:
      if (needs_input_grad) out.push_back(input_grad);
      out.insert(out.end(), grads.begin(), grads.end());
      break;
    case LowerMode::kTrainLast:
      out = {loss.loss, loss.correct};
      if (needs_input_grad) out.push_back(input_grad);
      out.insert(out.end(), grads.begin(), grads.end());
      out.insert(out.end(), new_buffers.begin(), new_buffers.end());
      break;
  }
  return out;
}

LoweredSegment LowerSegment(const Model& model, int index, LowerMode mode) {
  LoweredSegment s;
  s.model = &model;
  s.index = index;
  s.segment = model.segments[index];
  s.mode = mode;
  s.first = s.segment.input == 0;
  s.last = index + 1 == static_cast<int>(model.segments.size());

  const std::vector<int64_t>& in_shape = model.layers[s.segment.input].output_shape;
  s.input = TensorParam(Halide::Float(32), in_shape, model.batch_size, s.first ? "images" : "input");
  s.input_func = ClampedRead(s.input, s.first ? "input_batch" : "segment_input");
  const Halide::Expr batch = s.input.dim(static_cast<int>(in_shape.size())).extent();

  for (int i = s.segment.first; i <= s.segment.last; ++i) {
    for (int p : model.layers[i].params) {
      auto [param, wrapper] = StateParam(model.params[p]);
      s.param_indices.push_back(p);
      s.params.push_back(param);
      s.param_funcs.push_back(wrapper);
    }
    if (mode == LowerMode::kBackward) continue;
    for (int b : model.layers[i].buffers) {
      s.buffer_indices.push_back(b);
      s.buffers.push_back(StateParam(model.buffers[b]).first);
    }
  }

  const ops::Context context{mode != LowerMode::kForward, batch, s.seed};
  LowerLayers(s, context);
  const Layer& last_layer = model.layers[s.segment.last];
  const int output_layer = IsLoss(last_layer.kind) ? last_layer.input() : s.segment.last;
  // A copy, so schedules may store the layer in any order while the output buffer keeps the
  // caller's PyTorch layout.
  const std::vector<int64_t>& out_shape = model.layers[output_layer].output_shape;
  std::vector<Halide::Var> out_vars = ops::TensorVars(out_shape.size());
  s.output = Halide::Func(s.last ? "prediction_output" : "output");
  // A loss may read the segment's input directly (a model that is only a loss).
  s.output(out_vars) = s.func_of(output_layer)(out_vars);
  s.output.set_estimates(TensorRegion(out_shape, model.batch_size));
  for (size_t b = 0; b < s.new_buffers.size(); ++b) {
    s.new_buffers[b].set_estimates(ShapeRegion(model.buffers[s.buffer_indices[b]].shape));
  }
  if (mode == LowerMode::kForward || mode == LowerMode::kTrainForward) return s;

  // The given adjoint of the output, where backward starts; train_last starts from the loss.
  Halide::Func adjoint_of;
  if (mode == LowerMode::kTrainLast) {
    const Layer& loss = model.loss_layer();
    if (model.target_kind() == TargetKind::kClassLabels) {
      s.targets = Halide::ImageParam(Halide::Int(32), 1, "labels");
      s.targets.dim(0).set_min(0).set_estimate(0, model.batch_size);
      s.loss = ops::CrossEntropyLoss(loss, context, s.output, ClampedRead(s.targets, "label"));
    } else {
      s.targets = TensorParam(Halide::Float(32), out_shape, model.batch_size, "targets");
      s.loss = ops::RegressionLoss(loss, out_shape, context, s.output,
                                   ClampedRead(s.targets, "target"));
    }
    s.loss.loss.set_estimates({});
    s.loss.correct.set_estimates({});
  } else {
    s.output_grad = TensorParam(Halide::Float(32), out_shape, model.batch_size, "output_grad");
    // Zero outside the output: the adjoints of padded convolutions read their output's adjoint
    // past its edges.
    std::vector<Halide::Var> vars = ops::TensorVars(out_shape.size());
    std::vector<Halide::Expr> clamped;
    Halide::Expr inside = Halide::Internal::const_true();
    for (size_t d = 0; d < vars.size(); ++d) {
      Halide::Expr extent = s.output_grad.dim(static_cast<int>(d)).extent();
      inside = inside && vars[d] >= 0 && vars[d] < extent;
      clamped.push_back(Halide::clamp(vars[d], 0, extent - 1));
    }
    adjoint_of = Halide::Func("output_adjoint");
    adjoint_of(vars) = Halide::select(inside, s.output_grad(clamped), 0.0f);
  }
  // Reverse mode from the scalar loss or from the given output adjoint: one adjoint Func per
  // forward Func and per parameter.
  const Halide::Derivative d =
      mode == LowerMode::kTrainLast
          ? Halide::propagate_adjoints(s.loss.loss)
          : Halide::propagate_adjoints(s.output, adjoint_of, AdjointRegion(out_shape, batch));

  s.needs_input_grad = NeedsInputGrad(model, index);
  for (size_t i = 0; i < s.params.size(); ++i) {
    const Param& p = model.params[s.param_indices[i]];
    if (!p.trainable) continue;
    std::vector<Halide::Var> vars(p.shape.size());
    std::vector<Halide::Expr> call(vars.begin(), vars.end());
    Halide::Func grad(HalideName(p.name) + "_grad");
    grad(vars) = d(s.param_funcs[i])(call);
    grad.set_estimates(ShapeRegion(p.shape));
    // Exact bounds, so the schedules see constant extents (and may unroll over kernel taps).
    for (size_t d = 0; d < p.shape.size(); ++d) {
      grad.output_buffer().dim(static_cast<int>(d)).set_bounds(
          0, static_cast<int>(p.shape[p.shape.size() - 1 - d]));
    }
    s.grads.push_back(grad);
    s.grad_params.push_back(static_cast<int>(i));
  }
  std::vector<Halide::Var> vars = ops::TensorVars(in_shape.size());
  s.input_grad = Halide::Func(s.first ? "images_grad" : "input_grad");
  s.input_grad(vars) = d(s.input_func)(vars);
  s.input_grad.set_estimates(TensorRegion(in_shape, model.batch_size));
  GatherInputAdjoints(s, d);
  return s;
}

std::string SegmentSignature(const Model& model, int index) {
  const Segment& segment = model.segments[index];
  auto shape = [](const std::vector<int64_t>& s) { return absl::StrJoin(s, "x"); };
  std::string signature = absl::StrCat(
      "in=", shape(model.layers[segment.input].output_shape), segment.input == 0 ? " first" : "",
      index + 1 == static_cast<int>(model.segments.size()) ? " last" : "",
      NeedsInputGrad(model, index) ? " input_grad" : "", ";");
  for (int i = segment.first; i <= segment.last; ++i) {
    const Layer& l = model.layers[i];
    std::vector<std::string> inputs;
    for (int in : l.inputs) inputs.push_back(in == segment.input ? "in" : absl::StrCat(in - segment.first));
    absl::StrAppend(&signature, OpName(l.kind), "(", absl::StrJoin(inputs, ","), ") ",
                    shape(l.output_shape), " ", l.out_channels, " ", l.kernel_size, " ", l.stride,
                    " ", l.padding, " ", l.dilation, " ", l.groups, " ", l.bias, l.ceil_mode,
                    l.count_include_pad, l.target_is_input, " ", l.negative_slope, " ", l.p, " ",
                    l.eps, " ", l.momentum, " ", l.label_smoothing, " ", l.num_classes);
    for (int p : l.params) absl::StrAppend(&signature, model.params[p].trainable ? "" : " frozen");
    absl::StrAppend(&signature, ";");
  }
  return signature;
}

}  // namespace kiln
