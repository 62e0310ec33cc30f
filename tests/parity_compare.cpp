#include "tests/parity_compare.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace kiln::parity {

std::string ParityDir() {
  const char* data = std::getenv("KILN_TEST_DATA");
  return std::string(data != nullptr ? data : KILN_DEFAULT_TEST_DATA) + "/parity";
}

std::string ElementName(const std::string& name, const std::vector<int64_t>& shape, int64_t flat) {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = flat % shape[d];
    flat /= shape[d];
  }
  return absl::StrCat(name, "[", absl::StrJoin(index, ", "), "]");
}

::testing::AssertionResult MatchesTensor(const TensorFile& file, const std::string& name,
                                         const float* kiln, int64_t count,
                                         const Tolerance& tolerance, double* score,
                                         const float* spread) {
  auto it = file.tensors.find(name);
  if (it == file.tensors.end()) return ::testing::AssertionFailure() << name << " is not stored";
  const TensorData& torch = it->second;
  if (torch.numel() != count) {
    return ::testing::AssertionFailure()
           << name << ": Kiln has " << count << " values, PyTorch's tensor of shape ["
           << absl::StrJoin(torch.shape, ", ") << "] has " << torch.numel();
  }

  const int64_t row = torch.shape.empty() ? 1 : std::max<int64_t>(torch.shape.back(), 1);
  std::vector<double> row_max(static_cast<size_t>((count + row - 1) / row), 0.0);
  for (int64_t i = 0; i < count; ++i) {
    row_max[i / row] = std::max(row_max[i / row], std::fabs(double{torch.f32()[i]}));
  }
  int64_t failures = 0, worst = 0;
  double worst_score = -1, max_difference = 0;
  double max_relative = 0;  // Over elements with |torch| ≥ 1e-3, where round-off is small.
  for (int64_t i = 0; i < count; ++i) {
    const double expected = torch.f32()[i], actual = kiln[i];
    const double difference = std::fabs(actual - expected);
    const double allowed = tolerance.abs + tolerance.rel * std::fabs(expected) +
                           tolerance.row_max * row_max[i / row] +
                           (spread != nullptr ? tolerance.spread_multiple * spread[i] : 0.0);
    const double element_score = difference / allowed;
    if (!(element_score <= 1)) ++failures;  // NaN fails.
    if (!(element_score <= worst_score)) {
      worst_score = std::isnan(element_score) ? INFINITY : element_score;
      worst = i;
    }
    if (!(difference <= max_difference)) max_difference = difference;
    if (std::fabs(expected) >= 1e-3) {
      max_relative = std::max(max_relative, difference / std::fabs(expected));
    }
  }
  if (score != nullptr) *score = worst_score;

  const std::string element = ElementName(name, torch.shape, worst);
  std::cout << absl::StreamFormat(
      "[  parity  ] %-32s %6d values, max |error| %.2e, max rel error %.2e, %s at %.3f of "
      "tolerance\n",
      name, count, max_difference, max_relative, element, worst_score);
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << absl::StreamFormat(
             "%s: %d of %d values differ from PyTorch by more than %g + %g·|torch|%s%s (%s); "
             "the worst is %s: Kiln %.9g, PyTorch %.9g (%.1f times the tolerance)",
             name, failures, count, tolerance.abs, tolerance.rel,
             tolerance.row_max != 0 ? absl::StrFormat(" + %g·max|row|", tolerance.row_max) : "",
             spread != nullptr ? absl::StrFormat(" + %g·spread", tolerance.spread_multiple) : "",
             tolerance.reason, element, kiln[worst], torch.f32()[worst], worst_score);
}

::testing::AssertionResult MatchesSampled(const TensorFile& file, const std::string& name,
                                          const float* kiln, int64_t count,
                                          const Tolerance& tolerance, double* score) {
  const size_t dot = name.find('.');
  const std::string group = name.substr(0, dot), tensor = name.substr(dot + 1);
  auto index = file.tensors.find("index." + tensor);
  auto stats = file.tensors.find(group + "_stats." + tensor);
  auto sample = file.tensors.find(group + "_sample." + tensor);
  if (index == file.tensors.end() || stats == file.tensors.end() || sample == file.tensors.end()) {
    return ::testing::AssertionFailure() << name << " is stored neither in full nor sampled";
  }

  // The sampled elements, as a tensor of their own.
  const int64_t samples = index->second.numel();
  std::vector<float> picked(static_cast<size_t>(samples));
  for (int64_t i = 0; i < samples; ++i) {
    const int32_t flat = index->second.i32()[i];
    if (flat < 0 || flat >= count) {
      return ::testing::AssertionFailure()
             << "index." << tensor << " stores element " << flat << ", but Kiln's " << name
             << " has " << count << " values";
    }
    picked[static_cast<size_t>(i)] = kiln[flat];
  }
  const float* spread = nullptr;
  if (tolerance.spread_multiple > 0) {
    auto stored = file.tensors.find(group + "_spread." + tensor);
    if (stored == file.tensors.end() || stored->second.numel() != samples) {
      return ::testing::AssertionFailure()
             << group << "_spread." << tensor << " is missing or not of " << samples
             << " values, and the tolerance of " << name << " needs it (" << tolerance.reason
             << ")";
    }
    spread = stored->second.f32();
  }
  double element_score = 0;
  if (tolerance.elementwise) {
    TensorFile sampled;
    sampled.tensors[group + "_sample." + tensor] = sample->second;
    ::testing::AssertionResult elements = MatchesTensor(sampled, group + "_sample." + tensor,
                                                        picked.data(), samples, tolerance,
                                                        &element_score, spread);
    if (score != nullptr) *score = element_score;
    if (!elements) return elements;
  } else {
    double difference = 0, torch_norm = 0, spread_norm = 0;
    for (int64_t i = 0; i < samples; ++i) {
      const double t = sample->second.f32()[i];
      difference += (picked[i] - t) * (picked[i] - t);
      torch_norm += t * t;
      if (spread != nullptr) spread_norm += static_cast<double>(spread[i]) * spread[i];
    }
    difference = std::sqrt(difference);
    const double bound = tolerance.rel * std::sqrt(torch_norm) +
                         tolerance.abs * std::sqrt(static_cast<double>(samples)) +
                         tolerance.spread_multiple * std::sqrt(spread_norm);
    element_score = difference / bound;
    if (std::isnan(element_score)) element_score = INFINITY;
    if (score != nullptr) *score = element_score;
    std::cout << absl::StreamFormat("[  parity  ] %-32s %6d samples, L2 difference %.3e, %.3f of "
                                    "its bound\n",
                                    name, samples, difference, element_score);
    if (!(element_score <= 1)) {
      return ::testing::AssertionFailure() << absl::StreamFormat(
                 "%s: the %d sampled values differ from PyTorch's by %.4g in L2 norm, more than "
                 "%.4g (%s)",
                 name, samples, difference, bound, tolerance.reason);
    }
  }

  // The whole tensor through its sum and L2 norm.
  double sum = 0, squares = 0;
  for (int64_t i = 0; i < count; ++i) {
    sum += kiln[i];
    squares += static_cast<double>(kiln[i]) * kiln[i];
  }
  const double norm = std::sqrt(squares);
  const double torch_sum = stats->second.f32()[0], torch_norm = stats->second.f32()[1];
  const double n = static_cast<double>(count);
  const double norm_tolerance = tolerance.abs + tolerance.rel * torch_norm;
  const double sum_tolerance = tolerance.rel * std::sqrt(n) * torch_norm + tolerance.abs * n;
  const double norm_score = std::fabs(norm - torch_norm) / norm_tolerance;
  const double sum_score = std::fabs(sum - torch_sum) / sum_tolerance;
  if (score != nullptr) {
    *score = std::max({element_score, std::isnan(norm_score) ? INFINITY : norm_score,
                       std::isnan(sum_score) ? INFINITY : sum_score});
  }
  std::cout << absl::StreamFormat("[  parity  ] %-32s sum %.7g (PyTorch %.7g), L2 norm %.7g "
                                  "(PyTorch %.7g)\n",
                                  name, sum, torch_sum, norm, torch_norm);
  if (!(norm_score <= 1)) {
    return ::testing::AssertionFailure() << absl::StreamFormat(
               "%s: L2 norm %.9g differs from PyTorch's %.9g by more than %g (%s)", name, norm,
               torch_norm, norm_tolerance, tolerance.reason);
  }
  if (!(sum_score <= 1)) {
    return ::testing::AssertionFailure() << absl::StreamFormat(
               "%s: sum %.9g differs from PyTorch's %.9g by more than %g (%s)", name, sum,
               torch_sum, sum_tolerance, tolerance.reason);
  }
  return ::testing::AssertionSuccess();
}

}  // namespace kiln::parity
