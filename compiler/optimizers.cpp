#include "compiler/optimizers.h"

namespace kiln {
namespace {

// Estimates for the autoschedulers and bounds inference: a ResNet-18-sized array.
constexpr int kEstimatedCount = 1 << 23;

void SetEstimates(std::initializer_list<Halide::ImageParam*> arrays) {
  for (Halide::ImageParam* a : arrays) a->dim(0).set_estimate(0, kEstimatedCount);
}

}  // namespace

std::vector<Halide::Argument> LoweredSgd::arguments() const {
  return {lr, momentum, weight_decay, nesterov, grad_scale, params, grads, velocity};
}

LoweredSgd LowerSgd() {
  LoweredSgd u;
  SetEstimates({&u.params, &u.grads, &u.velocity});
  u.lr.set_estimate(0.01f);
  u.momentum.set_estimate(0.9f);
  u.weight_decay.set_estimate(0.0f);
  u.nesterov.set_estimate(false);
  u.grad_scale.set_estimate(1.0f);
  Halide::Var i("i");
  // The order of operations is torch.optim.SGD's, so the rounding is too.
  Halide::Expr g = u.grads(i) * u.grad_scale + u.weight_decay * u.params(i);
  Halide::Expr velocity = u.momentum * u.velocity(i) + g;
  Halide::Expr step = Halide::select(u.nesterov, g + u.momentum * velocity, velocity);
  u.updated(i) = Halide::Tuple(u.params(i) - u.lr * step, velocity);
  u.updated.set_estimates({{0, kEstimatedCount}});
  return u;
}

std::vector<Halide::Argument> LoweredAdam::arguments() const {
  return {step_size, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, bias_correction2_sqrt,
          l2,        decay, grad_scale, params, grads, exp_avg, exp_avg_sq};
}

LoweredAdam LowerAdam() {
  LoweredAdam u;
  SetEstimates({&u.params, &u.grads, &u.exp_avg, &u.exp_avg_sq});
  u.step_size.set_estimate(1e-3f);
  u.beta1.set_estimate(0.9f);
  u.beta2.set_estimate(0.999f);
  u.one_minus_beta1.set_estimate(0.1f);
  u.one_minus_beta2.set_estimate(0.001f);
  u.eps.set_estimate(1e-8f);
  u.bias_correction2_sqrt.set_estimate(1.0f);
  u.l2.set_estimate(0.0f);
  u.decay.set_estimate(1.0f);
  u.grad_scale.set_estimate(1.0f);
  Halide::Var i("i");
  Halide::Expr g = u.grads(i) * u.grad_scale + u.l2 * u.params(i);
  Halide::Expr exp_avg = u.exp_avg(i) * u.beta1 + g * u.one_minus_beta1;
  Halide::Expr exp_avg_sq = u.exp_avg_sq(i) * u.beta2 + u.one_minus_beta2 * (g * g);
  Halide::Expr denom = Halide::sqrt(exp_avg_sq) / u.bias_correction2_sqrt + u.eps;
  Halide::Expr param = u.params(i) * u.decay - u.step_size * (exp_avg / denom);
  u.updated(i) = Halide::Tuple(param, exp_avg, exp_avg_sq);
  u.updated.set_estimates({{0, kEstimatedCount}});
  return u;
}

std::vector<Halide::Argument> LoweredSumOfSquares::arguments() const { return {values}; }

LoweredSumOfSquares LowerSumOfSquares() {
  LoweredSumOfSquares s;
  SetEstimates({&s.values});
  // Chunks of kSumOfSquaresChunk elements, each summed in kSumOfSquaresLanes interleaved runs
  // (lane l adds elements l, l + lanes, ...) so that the partial sums vectorize. Elements past
  // the end read as zero.
  Halide::Func value = Halide::BoundaryConditions::constant_exterior(s.values, 0.0f);
  Halide::Var chunk("chunk"), lane("lane");
  Halide::RDom k(0, kSumOfSquaresChunk / kSumOfSquaresLanes, "k");
  Halide::Expr x = value(chunk * kSumOfSquaresChunk + k * kSumOfSquaresLanes + lane);
  s.partial(lane, chunk) = 0.0f;
  s.partial(lane, chunk) += x * x;
  Halide::Expr chunks = (s.values.dim(0).extent() + kSumOfSquaresChunk - 1) / kSumOfSquaresChunk;
  Halide::RDom all(0, kSumOfSquaresLanes, 0, chunks, "all");
  s.sum() = 0.0f;
  s.sum() += s.partial(all.x, all.y);
  return s;
}

}  // namespace kiln
