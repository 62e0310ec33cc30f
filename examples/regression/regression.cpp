#include "examples/regression/regression.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kiln::regression {

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::Status Predict(Network& net, const float* inputs, int64_t count, int batch_size,
                     float* outputs) {
  const CompiledModel& model = net.model();
  const int64_t input_size = Numel(model.input_shape), output_size = Numel(model.output_shape);
  if (batch_size <= 0) batch_size = model.batch_size;
  for (int64_t begin = 0; begin < count; begin += batch_size) {
    const int n = static_cast<int>(std::min<int64_t>(batch_size, count - begin));
    absl::Status status =
        net.Forward(inputs + begin * input_size, n, outputs + begin * output_size);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<double> EvaluateMse(Network& net, const float* inputs, const float* targets,
                                   int64_t count, int batch_size) {
  const CompiledModel& model = net.model();
  const int64_t input_size = Numel(model.input_shape), output_size = Numel(model.output_shape);
  if (batch_size <= 0) batch_size = model.batch_size;

  // One batch of predictions at a time, so memory stays small for large test sets.
  std::vector<float> predictions(static_cast<size_t>(batch_size) * output_size);
  double sum = 0;
  for (int64_t begin = 0; begin < count; begin += batch_size) {
    const int n = static_cast<int>(std::min<int64_t>(batch_size, count - begin));
    absl::Status status = net.Forward(inputs + begin * input_size, n, predictions.data());
    if (!status.ok()) return status;
    sum +=
        MeanSquaredDifference(predictions.data(), targets + begin * output_size, n * output_size) *
        (n * output_size);
  }
  return sum / static_cast<double>(count * output_size);
}

double MeanSquaredDifference(const float* a, const float* b, int64_t count) {
  double sum = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    sum += d * d;
  }
  return count > 0 ? sum / count : 0;
}

uint64_t DeriveSeed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double Random::Uniform() { return static_cast<double>(bits_() >> 11) * 0x1.0p-53; }

double Random::Normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  const double u1 = 1.0 - Uniform();  // In (0, 1], so the log is finite.
  const double u2 = Uniform();
  const double radius = std::sqrt(-2.0 * std::log(u1));
  constexpr double kTwoPi = 6.283185307179586;
  spare_ = radius * std::sin(kTwoPi * u2);
  has_spare_ = true;
  return radius * std::cos(kTwoPi * u2);
}

bool ShouldLog(int epoch, int epochs, int log_every) {
  if (log_every <= 0) log_every = std::max(1, (epochs + 19) / 20);
  return epoch == 1 || epoch == epochs || epoch % log_every == 0;
}

}  // namespace kiln::regression
