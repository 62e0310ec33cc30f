/** \file
 * The hyperparameters of training as a user writes them: the optimizer and its settings,
 * per-layer learning-rate multipliers and the learning-rate schedule, with their parsers, range
 * checks and text forms. Nothing here runs a kernel (runtime/optimizer.h applies them), so the
 * readers of flags and checkpoint metadata link without the compiled code.
 *
 *   absl::StatusOr<std::vector<kiln::LrMultiplier>> m = kiln::ParseLrMultipliers("conv1=0.1");
 *   kiln::OptimizerOptions options;
 *   options.lr_multipliers = *m;
 *   absl::Status s = kiln::CheckOptimizerOptions(options, model.params);
 */
#ifndef KILN_RUNTIME_HYPERPARAMETERS_H_
#define KILN_RUNTIME_HYPERPARAMETERS_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/compiled_model.h"

namespace kiln {

/// kSgd: torch.optim.SGD (momentum, Nesterov, L2 weight decay; no dampening). kAdam:
/// torch.optim.Adam (L2 weight decay added to the gradient). kAdamW: torch.optim.AdamW (decoupled
/// weight decay). Adam's amsgrad is not supported.
enum class OptimizerKind { kSgd, kAdam, kAdamW };
const char* OptimizerName(OptimizerKind kind);  ///< "sgd", "adam", "adamw"
/// Parses "sgd", "adam" or "adamw" (any case).
absl::StatusOr<OptimizerKind> ParseOptimizer(absl::string_view name);

/// Multiplies the learning rate of the parameters of layer `layer` (and of the layers inside it,
/// for a block such as "layer1") by `factor`: the parameters whose names are `layer` followed by
/// a dot and more. When several entries match a parameter, the longest `layer` wins.
struct LrMultiplier {
  std::string layer;
  float factor = 1;
};

/// Parses "conv1=0.1,layer1=0.5" (layer=factor pairs, factors ≥ 0 and finite).
absl::StatusOr<std::vector<LrMultiplier>> ParseLrMultipliers(absl::string_view spec);
/// The inverse of ParseLrMultipliers; "" for none.
std::string FormatLrMultipliers(const std::vector<LrMultiplier>& multipliers);

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kSgd;
  float lr = 0.01f;  ///< The base learning rate, before the schedule and the multipliers.
  float momentum = 0.9f;  ///< SGD.
  bool nesterov = false;  ///< SGD; needs momentum > 0, as in PyTorch.
  float weight_decay = 0;
  /// Adam and AdamW. The betas are doubles because torch.optim computes 1 − beta in double:
  /// from a float 0.999 it would be 1.3e-5 off.
  double beta1 = 0.9, beta2 = 0.999;
  float eps = 1e-8f;
  /// Scales the gradients by min(1, max_grad_norm / (norm + 1e-6)) first, where norm is the L2
  /// norm of all trainable gradients together (clip_grad_norm_); 0 turns clipping off.
  float max_grad_norm = 0;
  std::vector<LrMultiplier> lr_multipliers;
};

/// Checks the ranges of the hyperparameters: those torch.optim checks, and also momentum below
/// 1 and eps above 0 (torch accepts momentum >= 1, whose updates grow without bound, and eps 0,
/// which divides by zero where a gradient was always 0). The message names the value and the
/// valid range.
absl::Status CheckOptimizerRanges(const OptimizerOptions& options);
/// CheckOptimizerRanges, and that every multiplier names a layer of `params` once.
absl::Status CheckOptimizerOptions(const OptimizerOptions& options,
                                   const std::vector<ParamInfo>& params);
/// The learning-rate factor of parameter `name`: the longest matching multiplier's, or 1.
float LrMultiplierFor(const std::vector<LrMultiplier>& multipliers, const std::string& name);

/// A learning-rate schedule over epochs, as torch.optim.lr_scheduler stepped once per epoch:
/// `warmup_epochs` of LinearLR from warmup_start_factor · lr up to lr, then
///   kConstant: lr
///   kStep:     StepLR: lr · gamma^⌊e / step_size⌋
///   kCosine:   CosineAnnealingLR over the remaining epochs:
///              min_lr + (lr − min_lr)(1 + cos(π e / T)) / 2
/// where e counts epochs after the warm-up and T = epochs − warmup_epochs (SequentialLR of the
/// two).
struct LrSchedule {
  enum class Kind { kConstant, kStep, kCosine };
  Kind kind = Kind::kConstant;
  int step_size = 30;
  float gamma = 0.1f;
  float min_lr = 0;
  int warmup_epochs = 0;
  float warmup_start_factor = 0.1f;
};
const char* LrScheduleName(LrSchedule::Kind kind);  ///< "constant", "step", "cosine"
absl::StatusOr<LrSchedule::Kind> ParseLrSchedule(absl::string_view name);
/// Checks the schedule's values for a run of `epochs`.
absl::Status CheckLrSchedule(const LrSchedule& schedule, int epochs);

/// The learning rate of epoch `epoch` (0-based) of `epochs` from base rate `lr`.
double ScheduledLr(const LrSchedule& schedule, double lr, int epoch, int epochs);

/// The checkpoint metadata that records `optimizer` and `schedule`: "kiln.optimizer", "kiln.lr",
/// "kiln.momentum", ..., "kiln.lr_mult", "kiln.lr_schedule", ..., "kiln.warmup_start_factor", in
/// text that reads back to the same values.
std::map<std::string, std::string> HyperparameterMetadata(const OptimizerOptions& optimizer,
                                                          const LrSchedule& schedule);

/// Reads what HyperparameterMetadata wrote over `optimizer` and `schedule` (for a run of
/// `epochs`), except the keys in `keep` ("lr", "lr_mult": the settings given some other way).
/// Absent keys keep their values; other keys are ignored. Returns the keys read, without
/// "kiln.". Each value must parse and pass CheckOptimizerRanges and CheckLrSchedule. Otherwise
/// the error names the key and value, and `invalid_key` (when not null) receives the key. Neither
/// output changes then.
absl::StatusOr<std::vector<std::string>> ReadHyperparameterMetadata(
    const std::map<std::string, std::string>& metadata, const std::set<std::string>& keep,
    int epochs, OptimizerOptions& optimizer, LrSchedule& schedule,
    std::string* invalid_key = nullptr);

}  // namespace kiln

#endif  // KILN_RUNTIME_HYPERPARAMETERS_H_
