#include "runtime/optimizer.h"

#include <cmath>
#include <limits>

#include "HalideBuffer.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fmt/core.h"
#include "kiln_optimizers.h"

namespace kiln {
namespace {

using FloatBuffer = Halide::Runtime::Buffer<float>;

// A view of `count` floats from `data`, for the compiled kernels.
FloatBuffer Slice(const float* data, int64_t count) {
  return FloatBuffer(const_cast<float*>(data), static_cast<int>(count));
}

absl::Status KernelStatus(int code, const char* kernel) {
  if (code == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(kernel, " failed with Halide error ", code));
}

// Whether parameter `name` belongs to layer `layer` or to a layer inside it: "layer1" contains
// "layer1.0.conv1.weight".
bool InLayer(const std::string& name, const std::string& layer) {
  return name.size() > layer.size() && name.compare(0, layer.size(), layer) == 0 &&
         name[layer.size()] == '.';
}

// The learning-rate factor of parameter `name`: the longest matching multiplier's, or 1.
float Multiplier(const std::vector<LrMultiplier>& multipliers, const std::string& name) {
  float factor = 1;
  size_t longest = 0;
  for (const LrMultiplier& m : multipliers) {
    if (InLayer(name, m.layer) && m.layer.size() > longest) {
      factor = m.factor;
      longest = m.layer.size();
    }
  }
  return factor;
}

// A run of parameters, contiguous in the flat array, that one kernel call updates.
struct Run {
  int64_t offset = 0, count = 0;
  float factor = 1;
};

// Trainable parameters grouped into runs of equal multiplier.
std::vector<Run> Runs(const std::vector<ParamInfo>& params,
                      const std::vector<LrMultiplier>& multipliers) {
  std::vector<Run> runs;
  for (const ParamInfo& p : params) {
    if (!p.trainable || p.numel == 0) continue;
    const float factor = Multiplier(multipliers, p.name);
    if (!runs.empty() && runs.back().factor == factor &&
        runs.back().offset + runs.back().count == p.offset) {
      runs.back().count += p.numel;
    } else {
      runs.push_back({p.offset, p.numel, factor});
    }
  }
  return runs;
}

absl::Status CheckRange(bool valid, absl::string_view name, double value, absl::string_view range) {
  if (valid) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(name, " ", fmt::format("{}", value), " is invalid; use a finite value ", range));
}

absl::Status SumOfSquares(const float* data, int64_t count, double& sum) {
  FloatBuffer values = Slice(data, count);
  FloatBuffer result = FloatBuffer::make_scalar();
  const int code = kiln_sum_of_squares(values.raw_buffer(), result.raw_buffer());
  if (code != 0) return KernelStatus(code, "kiln_sum_of_squares");
  sum = result();
  return absl::OkStatus();
}

// The sum of the squares of each tensor of `params` in `grads` (0 for the frozen ones when
// `trainable_only`), computed by the compiled kiln_sum_of_squares.
absl::StatusOr<std::vector<double>> SumsOfSquares(const std::vector<ParamInfo>& params,
                                                  absl::Span<const float> grads,
                                                  bool trainable_only) {
  std::vector<double> sums(params.size(), 0.0);
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params[i];
    if (p.offset < 0 || p.numel < 0 || p.offset + p.numel > static_cast<int64_t>(grads.size())) {
      return absl::InvalidArgumentError(absl::StrCat("parameter '", p.name,
                                                     "' lies outside the gradient array"));
    }
    if (p.numel == 0 || (trainable_only && !p.trainable)) continue;
    if (absl::Status s = SumOfSquares(grads.data() + p.offset, p.numel, sums[i]); !s.ok()) {
      return s;
    }
  }
  return sums;
}

}  // namespace

const char* OptimizerName(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd: return "sgd";
    case OptimizerKind::kAdam: return "adam";
    case OptimizerKind::kAdamW: return "adamw";
  }
  return "unknown";
}

absl::StatusOr<OptimizerKind> ParseOptimizer(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdam, OptimizerKind::kAdamW}) {
    if (lower == OptimizerName(kind)) return kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown optimizer '", name, "'; use sgd, adam or adamw"));
}

absl::StatusOr<std::vector<LrMultiplier>> ParseLrMultipliers(absl::string_view spec) {
  std::vector<LrMultiplier> multipliers;
  if (spec.empty()) return multipliers;
  for (absl::string_view entry : absl::StrSplit(spec, ',')) {
    std::vector<absl::string_view> parts = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    LrMultiplier m;
    if (parts.size() == 2) m.layer = std::string(absl::StripAsciiWhitespace(parts[0]));
    if (parts.size() != 2 || m.layer.empty() ||
        !absl::SimpleAtof(absl::StripAsciiWhitespace(parts[1]), &m.factor) ||
        !std::isfinite(m.factor) || m.factor < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "learning-rate multiplier '", entry,
          "' is not LAYER=FACTOR with a factor >= 0; e.g. --lr-mult conv1=0.1,conv2=0.5"));
    }
    multipliers.push_back(m);
  }
  return multipliers;
}

std::string FormatLrMultipliers(const std::vector<LrMultiplier>& multipliers) {
  return absl::StrJoin(multipliers, ",", [](std::string* out, const LrMultiplier& m) {
    absl::StrAppend(out, m.layer, "=", fmt::format("{}", m.factor));
  });
}

absl::Status CheckOptimizerOptions(const OptimizerOptions& o,
                                   const std::vector<ParamInfo>& params) {
  absl::Status s = CheckRange(std::isfinite(o.lr) && o.lr >= 0, "learning rate", o.lr, ">= 0");
  if (s.ok()) {
    s = CheckRange(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "weight decay",
                   o.weight_decay, ">= 0");
  }
  if (s.ok()) {
    s = CheckRange(std::isfinite(o.max_grad_norm) && o.max_grad_norm >= 0, "max gradient norm",
                   o.max_grad_norm, ">= 0 (0 turns clipping off)");
  }
  if (s.ok() && o.kind == OptimizerKind::kSgd) {
    s = CheckRange(std::isfinite(o.momentum) && o.momentum >= 0, "momentum", o.momentum, ">= 0");
    if (s.ok() && o.nesterov && o.momentum <= 0) {
      s = absl::InvalidArgumentError(
          "Nesterov momentum needs a momentum above 0; set one, or turn Nesterov off");
    }
  }
  if (s.ok() && o.kind != OptimizerKind::kSgd) {
    s = CheckRange(o.beta1 >= 0 && o.beta1 < 1, "beta1", o.beta1, "in [0, 1)");
    if (s.ok()) s = CheckRange(o.beta2 >= 0 && o.beta2 < 1, "beta2", o.beta2, "in [0, 1)");
    if (s.ok()) s = CheckRange(std::isfinite(o.eps) && o.eps >= 0, "epsilon", o.eps, ">= 0");
  }
  if (!s.ok()) return s;
  for (size_t i = 0; i < o.lr_multipliers.size(); ++i) {
    const LrMultiplier& m = o.lr_multipliers[i];
    for (size_t k = 0; k < i; ++k) {
      if (o.lr_multipliers[k].layer == m.layer) {
        return absl::InvalidArgumentError(absl::StrCat(
            "learning-rate multiplier for '", m.layer, "' is given twice; give each layer once"));
      }
    }
    bool found = false, trainable = false;
    for (const ParamInfo& p : params) {
      if (p.name == m.layer) {
        return absl::InvalidArgumentError(absl::StrCat(
            "learning-rate multiplier for '", m.layer, "' names a parameter; use its layer, '",
            m.layer.substr(0, m.layer.rfind('.')), "'"));
      }
      if (InLayer(p.name, m.layer)) {
        found = true;
        trainable = trainable || p.trainable;
      }
    }
    if (found && !trainable) {
      return absl::InvalidArgumentError(absl::StrCat(
          "learning-rate multiplier for '", m.layer,
          "' has no effect: the model freezes that layer; drop it"));
    }
    if (!found) {
      std::vector<std::string> layers;
      for (const ParamInfo& p : params) {
        std::string layer = p.name.substr(0, p.name.rfind('.'));
        if (layers.empty() || layers.back() != layer) layers.push_back(layer);
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "learning-rate multiplier for '", m.layer,
          "' matches no parameter; layers with parameters: ", absl::StrJoin(layers, ", ")));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> GradientNorms(const std::vector<ParamInfo>& params,
                                                  absl::Span<const float> grads) {
  absl::StatusOr<std::vector<double>> norms =
      SumsOfSquares(params, grads, /*trainable_only=*/false);
  if (!norms.ok()) return norms.status();
  for (double& norm : *norms) norm = std::sqrt(norm);
  return norms;
}

absl::StatusOr<UpdateStats> ApplyUpdate(const OptimizerOptions& options, float lr,
                                        const std::vector<ParamInfo>& params,
                                        absl::Span<float> values, absl::Span<const float> grads,
                                        OptimizerState& state) {
  const size_t count = values.size();
  if (grads.size() != count) {
    return absl::InvalidArgumentError(absl::StrCat("the update got ", count, " parameters but ",
                                                   grads.size(), " gradients"));
  }
  for (const ParamInfo& p : params) {
    if (p.offset < 0 || p.numel < 0 || p.offset + p.numel > static_cast<int64_t>(count)) {
      return absl::InvalidArgumentError(absl::StrCat("parameter '", p.name,
                                                     "' lies outside the parameter array"));
    }
  }
  const bool adam = options.kind != OptimizerKind::kSgd;
  for (std::vector<float>* array :
       adam ? std::vector<std::vector<float>*>{&state.exp_avg, &state.exp_avg_sq}
            : std::vector<std::vector<float>*>{&state.momentum}) {
    if (array->size() != count) array->assign(count, 0.0f);
  }

  UpdateStats stats;
  if (options.max_grad_norm > 0) {
    // As clip_grad_norm_: the norm of the per-tensor norms, each in float.
    absl::StatusOr<std::vector<double>> sums =
        SumsOfSquares(params, grads, /*trainable_only=*/true);
    if (!sums.ok()) return sums.status();
    float squares = 0;
    for (double sum : *sums) {
      const float norm = std::sqrt(static_cast<float>(sum));
      squares += norm * norm;
    }
    const float norm = std::sqrt(squares);
    stats.grad_norm = norm;
    stats.grad_scale = std::min(1.0f, options.max_grad_norm / (norm + 1e-6f));
  }
  const float grad_scale = static_cast<float>(stats.grad_scale);

  state.steps += 1;
  const double t = static_cast<double>(state.steps);
  for (const Run& run : Runs(params, options.lr_multipliers)) {
    const double run_lr = static_cast<double>(lr) * run.factor;
    FloatBuffer p = Slice(values.data() + run.offset, run.count);
    FloatBuffer g = Slice(grads.data() + run.offset, run.count);
    int code = 0;
    if (!adam) {
      FloatBuffer v = Slice(state.momentum.data() + run.offset, run.count);
      code = kiln_sgd_update(static_cast<float>(run_lr), options.momentum, options.weight_decay,
                             options.nesterov, grad_scale, p.raw_buffer(), g.raw_buffer(),
                             v.raw_buffer(), p.raw_buffer(), v.raw_buffer());
      if (code != 0) return KernelStatus(code, "kiln_sgd_update");
      continue;
    }
    // torch.optim.Adam: bias corrections from Python floats (double), then float kernels.
    const double step_size = run_lr / (1 - std::pow(options.beta1, t));
    const double correction2 = std::sqrt(1 - std::pow(options.beta2, t));
    const bool decoupled = options.kind == OptimizerKind::kAdamW;
    const float l2 = decoupled ? 0.0f : options.weight_decay;
    const float decay = decoupled ? static_cast<float>(1 - run_lr * options.weight_decay) : 1.0f;
    FloatBuffer m = Slice(state.exp_avg.data() + run.offset, run.count);
    FloatBuffer v = Slice(state.exp_avg_sq.data() + run.offset, run.count);
    code = kiln_adam_update(static_cast<float>(step_size), static_cast<float>(options.beta1),
                            static_cast<float>(options.beta2),
                            static_cast<float>(1 - options.beta1),
                            static_cast<float>(1 - options.beta2), options.eps,
                            static_cast<float>(correction2), l2, decay, grad_scale,
                            p.raw_buffer(), g.raw_buffer(), m.raw_buffer(), v.raw_buffer(),
                            p.raw_buffer(), m.raw_buffer(), v.raw_buffer());
    if (code != 0) return KernelStatus(code, "kiln_adam_update");
  }
  return stats;
}

const char* LrScheduleName(LrSchedule::Kind kind) {
  switch (kind) {
    case LrSchedule::Kind::kConstant: return "constant";
    case LrSchedule::Kind::kStep: return "step";
    case LrSchedule::Kind::kCosine: return "cosine";
  }
  return "unknown";
}

absl::StatusOr<LrSchedule::Kind> ParseLrSchedule(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (LrSchedule::Kind kind :
       {LrSchedule::Kind::kConstant, LrSchedule::Kind::kStep, LrSchedule::Kind::kCosine}) {
    if (lower == LrScheduleName(kind)) return kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown learning-rate schedule '", name, "'; use constant, step or cosine"));
}

absl::Status CheckLrSchedule(const LrSchedule& s, int epochs) {
  absl::Status status = CheckRange(s.warmup_epochs >= 0, "warm-up epochs", s.warmup_epochs, ">= 0");
  if (status.ok() && s.warmup_epochs > 0) {
    status = CheckRange(s.warmup_start_factor > 0 && s.warmup_start_factor <= 1,
                        "warm-up start factor", s.warmup_start_factor, "in (0, 1]");
  }
  if (status.ok() && s.kind == LrSchedule::Kind::kStep) {
    status = CheckRange(s.step_size > 0, "learning-rate step size", s.step_size, "> 0 (epochs)");
    if (status.ok()) {
      status = CheckRange(std::isfinite(s.gamma) && s.gamma > 0, "learning-rate gamma", s.gamma,
                          "> 0");
    }
  }
  if (status.ok() && s.kind == LrSchedule::Kind::kCosine) {
    status = CheckRange(std::isfinite(s.min_lr) && s.min_lr >= 0, "minimum learning rate",
                        s.min_lr, ">= 0");
    if (status.ok() && s.warmup_epochs >= epochs) {
      status = absl::InvalidArgumentError(absl::StrCat(
          "the cosine schedule has no epochs left after ", s.warmup_epochs,
          " warm-up epochs of ", epochs, "; use fewer warm-up epochs or more epochs"));
    }
  }
  return status;
}

double ScheduledLr(const LrSchedule& s, double lr, int epoch, int epochs) {
  if (epoch < s.warmup_epochs) {
    // LinearLR's closed form: the factor rises linearly from start to 1 over the warm-up.
    return lr * (s.warmup_start_factor +
                 (1.0 - s.warmup_start_factor) * epoch / static_cast<double>(s.warmup_epochs));
  }
  const int e = epoch - s.warmup_epochs;
  switch (s.kind) {
    case LrSchedule::Kind::kConstant: return lr;
    case LrSchedule::Kind::kStep:
      return lr * std::pow(static_cast<double>(s.gamma), e / s.step_size);
    case LrSchedule::Kind::kCosine: {
      const double period = std::max(1, epochs - s.warmup_epochs);
      return s.min_lr + (lr - s.min_lr) * (1 + std::cos(M_PI * e / period)) / 2;
    }
  }
  return lr;
}

}  // namespace kiln
