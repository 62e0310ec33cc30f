#include "runtime/optimizer.h"

#include <cmath>
#include <limits>

#include "HalideBuffer.h"
#include "absl/strings/str_cat.h"
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
    const float factor = LrMultiplierFor(multipliers, p.name);
    if (!runs.empty() && runs.back().factor == factor &&
        runs.back().offset + runs.back().count == p.offset) {
      runs.back().count += p.numel;
    } else {
      runs.push_back({p.offset, p.numel, factor});
    }
  }
  return runs;
}

// Checks that every tensor of `params` lies inside an array of `count` values; `array_name`
// names that array in the error.
absl::Status CheckInside(const std::vector<ParamInfo>& params, size_t count,
                         const char* array_name) {
  for (const ParamInfo& p : params) {
    if (p.offset < 0 || p.numel < 0 || p.offset + p.numel > static_cast<int64_t>(count)) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter '", p.name, "' lies outside the ", array_name, " array"));
    }
  }
  return absl::OkStatus();
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
  if (absl::Status s = CheckInside(params, grads.size(), "gradient"); !s.ok()) return s;
  std::vector<double> sums(params.size(), 0.0);
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params[i];
    if (p.numel == 0 || (trainable_only && !p.trainable)) continue;
    if (absl::Status s = SumOfSquares(grads.data() + p.offset, p.numel, sums[i]); !s.ok()) {
      return s;
    }
  }
  return sums;
}

}  // namespace

absl::StatusOr<std::vector<double>> GradientNorms(const std::vector<ParamInfo>& params,
                                                  absl::Span<const float> grads) {
  absl::StatusOr<std::vector<double>> norms =
      SumsOfSquares(params, grads, /*trainable_only=*/false);
  if (!norms.ok()) return norms.status();
  for (double& norm : *norms) norm = std::sqrt(norm);
  return norms;
}

absl::StatusOr<bool> TrainableSquaresFinite(const std::vector<ParamInfo>& params,
                                            absl::Span<const float> grads) {
  if (absl::Status s = CheckInside(params, grads.size(), "gradient"); !s.ok()) return s;
  for (const Run& run : Runs(params, /*multipliers=*/{})) {
    double sum = 0;
    if (absl::Status s = SumOfSquares(grads.data() + run.offset, run.count, sum); !s.ok()) {
      return s;
    }
    if (!std::isfinite(sum)) return false;
  }
  return true;
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
  if (absl::Status s = CheckInside(params, count, "parameter"); !s.ok()) return s;
  const bool adam = options.kind != OptimizerKind::kSgd;
  for (FloatArray* array :
       adam ? std::vector<FloatArray*>{&state.exp_avg, &state.exp_avg_sq}
            : std::vector<FloatArray*>{&state.momentum}) {
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

}  // namespace kiln
