/** \file
 * Deterministic weights for tests against PyTorch: the value of each parameter and running
 * statistic is a function of the tensor's name and the element's index, so a test regenerates the
 * weights that tools/make_parity_reference.py used instead of storing them. The Python script
 * implements the same formulas, and tests/parity_test.cpp checks that both give the same bits.
 *
 *   std::vector<float> w = kiln::reference::InitialValues(model.params[0]);  // PyTorch order
 *
 * The formulas (each computed in double and rounded once to float):
 *   u(name, i)    element i of the SplitMix64 stream seeded with FNV-1a-64(name), shifted right
 *                 by 40 bits and scaled by 2^-24: a value in [0, 1) that float represents exactly
 *   running_mean  0.1 · (2u − 1)
 *   running_var   0.5 + u
 *   fan_in > 0    weight: sqrt(6 / fan_in) · (2u − 1) (He's uniform initialization, so that
 *                 activations keep their scale through ReLU layers); bias: (2u − 1) / sqrt(fan_in)
 *   weight        1 + 0.2 · (2u − 1): batch_norm (fan_in 0)
 *   other         0.1 · (2u − 1): batch_norm bias
 * The rule is chosen by the text after the name's last '.', in that order. A case may scale
 * some tensors (ScaledWeights): their values are multiplied by the factor before the rounding.
 */
#ifndef KILN_TESTS_REFERENCE_WEIGHTS_H_
#define KILN_TESTS_REFERENCE_WEIGHTS_H_

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "compiler/model.h"

namespace kiln::reference {

/// 64-bit FNV-1a of the bytes of `text`.
inline uint64_t Fnv1a64(absl::string_view text) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char byte : text) {
    h ^= byte;
    h *= 0x100000001B3ull;
  }
  return h;
}

/// Element `index` (from 0) of the SplitMix64 stream whose state starts at `seed`.
inline uint64_t HashBits(uint64_t seed, int64_t index) {
  uint64_t z = seed + (static_cast<uint64_t>(index) + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Returns u(name, index) in [0, 1) with 24 significant bits, where `seed` is Fnv1a64(name).
inline double HashUniform(uint64_t seed, int64_t index) {
  return static_cast<double>(HashBits(seed, index) >> 40) * (1.0 / (1 << 24));
}

/// The tensors whose name ends with "." + `suffix` start at `factor` times their hashed value
/// (metadata "scaled_weights" of a reference file, "<suffix> <factor>"). The default scales
/// nothing.
struct ScaledWeights {
  std::string suffix;
  double factor = 1;

  bool Applies(absl::string_view name) const {
    return !suffix.empty() && name.size() > suffix.size() &&
           name.substr(name.size() - suffix.size() - 1) == "." + suffix;
  }
};

/// Returns the `numel` initial values of parameter or running statistic `name` in PyTorch's
/// row-major order. `fan_in` is 0 for batch_norm tensors, as ModelBuilder sets it.
inline std::vector<float> InitialValues(const std::string& name, int64_t numel, int64_t fan_in,
                                        const ScaledWeights& scaled = {}) {
  const uint64_t seed = Fnv1a64(name);
  const size_t dot = name.rfind('.');
  const std::string suffix = dot == std::string::npos ? name : name.substr(dot + 1);
  const double factor = scaled.Applies(name) ? scaled.factor : 1.0;
  std::vector<float> values(static_cast<size_t>(numel));
  for (int64_t i = 0; i < numel; ++i) {
    const double u = HashUniform(seed, i);
    double value;
    if (suffix == "running_mean") {
      value = 0.1 * (2.0 * u - 1.0);
    } else if (suffix == "running_var") {
      value = 0.5 + u;
    } else if (fan_in > 0 && suffix == "weight") {
      value = std::sqrt(6.0 / static_cast<double>(fan_in)) * (2.0 * u - 1.0);
    } else if (fan_in > 0) {
      value = (1.0 / std::sqrt(static_cast<double>(fan_in))) * (2.0 * u - 1.0);
    } else if (suffix == "weight") {
      value = 1.0 + 0.2 * (2.0 * u - 1.0);
    } else {
      value = 0.1 * (2.0 * u - 1.0);
    }
    values[static_cast<size_t>(i)] = static_cast<float>(value * factor);
  }
  return values;
}

/// Returns the initial values of `p`, a tensor of a compiler Model (compiler/model.h).
inline std::vector<float> InitialValues(const Param& p) {
  return InitialValues(p.name, p.numel(), p.fan_in);
}

}  // namespace kiln::reference

#endif  // KILN_TESTS_REFERENCE_WEIGHTS_H_
