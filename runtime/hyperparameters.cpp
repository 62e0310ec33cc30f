#include "runtime/hyperparameters.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fmt/core.h"

namespace kiln {
namespace {

// Whether parameter `name` belongs to layer `layer` or to a layer inside it: "layer1" contains
// "layer1.0.conv1.weight".
bool InLayer(const std::string& name, const std::string& layer) {
  return name.size() > layer.size() && name.compare(0, layer.size(), layer) == 0 &&
         name[layer.size()] == '.';
}

absl::Status CheckRange(bool valid, absl::string_view name, double value, absl::string_view range) {
  if (valid) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(name, " ", fmt::format("{}", value), " is invalid; use a finite value ", range));
}

// Reads `text` into `value`; false when it is not one (or not finite).
bool ParseValue(const std::string& text, float* value) {
  return absl::SimpleAtof(text, value) && std::isfinite(*value);
}
bool ParseValue(const std::string& text, double* value) {
  return absl::SimpleAtod(text, value) && std::isfinite(*value);
}
bool ParseValue(const std::string& text, int* value) { return absl::SimpleAtoi(text, value); }
bool ParseValue(const std::string& text, bool* value) {
  if (text != "0" && text != "1") return false;
  *value = text == "1";
  return true;
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

absl::Status CheckOptimizerRanges(const OptimizerOptions& o) {
  absl::Status s = CheckRange(std::isfinite(o.lr) && o.lr >= 0, "learning rate", o.lr, ">= 0");
  if (s.ok()) {
    s = CheckRange(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "weight decay",
                   o.weight_decay, ">= 0");
  }
  if (s.ok()) {
    s = CheckRange(std::isfinite(o.max_grad_norm) && o.max_grad_norm >= 0, "max gradient norm",
                   o.max_grad_norm, ">= 0 (0 turns clipping off)");
  }
  // Every field, whichever optimizer reads it, so a checkpoint never records a bad value.
  if (s.ok()) {
    s = CheckRange(o.momentum >= 0 && o.momentum < 1, "momentum", o.momentum, "in [0, 1)");
  }
  if (s.ok() && o.nesterov && o.momentum <= 0) {
    s = absl::InvalidArgumentError(
        "Nesterov momentum needs a momentum above 0; set one, or turn Nesterov off");
  }
  if (s.ok()) s = CheckRange(o.beta1 >= 0 && o.beta1 < 1, "beta1", o.beta1, "in [0, 1)");
  if (s.ok()) s = CheckRange(o.beta2 >= 0 && o.beta2 < 1, "beta2", o.beta2, "in [0, 1)");
  if (s.ok()) s = CheckRange(std::isfinite(o.eps) && o.eps > 0, "epsilon", o.eps, "> 0");
  return s;
}

absl::Status CheckOptimizerOptions(const OptimizerOptions& o,
                                   const std::vector<ParamInfo>& params) {
  if (absl::Status s = CheckOptimizerRanges(o); !s.ok()) return s;
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

float LrMultiplierFor(const std::vector<LrMultiplier>& multipliers, const std::string& name) {
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

std::map<std::string, std::string> HyperparameterMetadata(const OptimizerOptions& o,
                                                          const LrSchedule& s) {
  // fmt writes the shortest text that reads back to the same float.
  auto text = [](auto value) { return fmt::format("{}", value); };
  return {{"kiln.optimizer", OptimizerName(o.kind)},
          {"kiln.lr", text(o.lr)},
          {"kiln.momentum", text(o.momentum)},
          {"kiln.nesterov", o.nesterov ? "1" : "0"},
          {"kiln.weight_decay", text(o.weight_decay)},
          {"kiln.beta1", text(o.beta1)},
          {"kiln.beta2", text(o.beta2)},
          {"kiln.eps", text(o.eps)},
          {"kiln.max_grad_norm", text(o.max_grad_norm)},
          {"kiln.lr_mult", FormatLrMultipliers(o.lr_multipliers)},
          {"kiln.lr_schedule", LrScheduleName(s.kind)},
          {"kiln.lr_step_size", absl::StrCat(s.step_size)},
          {"kiln.lr_gamma", text(s.gamma)},
          {"kiln.min_lr", text(s.min_lr)},
          {"kiln.warmup_epochs", absl::StrCat(s.warmup_epochs)},
          {"kiln.warmup_start_factor", text(s.warmup_start_factor)}};
}

absl::StatusOr<std::vector<std::string>> ReadHyperparameterMetadata(
    const std::map<std::string, std::string>& metadata, const std::set<std::string>& keep,
    int epochs, OptimizerOptions& optimizer, LrSchedule& schedule, std::string* invalid_key) {
  OptimizerOptions o = optimizer;
  LrSchedule s = schedule;
  // Each key with a reader of its text into `o` or `s` that returns false on bad text.
  using Reader = std::function<bool(const std::string&)>;
  auto into = [](auto* field) {
    return Reader([field](const std::string& t) { return ParseValue(t, field); });
  };
  const std::pair<const char*, Reader> readers[] = {
      {"optimizer",
       [&](const std::string& t) {
         absl::StatusOr<OptimizerKind> kind = ParseOptimizer(t);
         if (kind.ok()) o.kind = *kind;
         return kind.ok();
       }},
      {"lr", into(&o.lr)},
      {"momentum", into(&o.momentum)},
      {"nesterov", into(&o.nesterov)},
      {"weight_decay", into(&o.weight_decay)},
      {"beta1", into(&o.beta1)},
      {"beta2", into(&o.beta2)},
      {"eps", into(&o.eps)},
      {"max_grad_norm", into(&o.max_grad_norm)},
      {"lr_mult",
       [&](const std::string& t) {
         absl::StatusOr<std::vector<LrMultiplier>> m = ParseLrMultipliers(t);
         if (m.ok()) o.lr_multipliers = *std::move(m);
         return m.ok();
       }},
      {"lr_schedule",
       [&](const std::string& t) {
         absl::StatusOr<LrSchedule::Kind> kind = ParseLrSchedule(t);
         if (kind.ok()) s.kind = *kind;
         return kind.ok();
       }},
      {"lr_step_size", into(&s.step_size)},
      {"lr_gamma", into(&s.gamma)},
      {"min_lr", into(&s.min_lr)},
      {"warmup_epochs", into(&s.warmup_epochs)},
      {"warmup_start_factor", into(&s.warmup_start_factor)},
  };
  std::vector<std::string> read;
  for (const auto& [key, reader] : readers) {
    const auto it = metadata.find(absl::StrCat("kiln.", key));
    if (it == metadata.end() || keep.count(key) > 0) continue;
    // The values read so far passed, so a failing check is this key's.
    std::string problem;
    if (!reader(it->second)) {
      problem = "it is not a valid value";
    } else if (absl::Status status = CheckOptimizerRanges(o); !status.ok()) {
      problem = std::string(status.message());
    } else if (absl::Status status = CheckLrSchedule(s, epochs); !status.ok()) {
      problem = std::string(status.message());
    }
    if (!problem.empty()) {
      if (invalid_key != nullptr) *invalid_key = key;
      return absl::InvalidArgumentError(
          absl::StrCat(it->first, " is '", it->second, "': ", problem));
    }
    read.push_back(key);
  }
  optimizer = o;
  schedule = s;
  return read;
}

}  // namespace kiln
