/** \file
 * Comparisons of Kiln's results with the PyTorch values that tools/make_parity_reference.py
 * stores, shared by the parity tests. Each comparison prints one line per tensor (its largest
 * error and how much of the tolerance its worst element uses) and returns a gtest assertion
 * whose failure message names the worst element, its two values and the tolerance that applied.
 *
 *   const kiln::TensorFile file = *kiln::ReadSafetensors(path);
 *   EXPECT_TRUE(kiln::parity::MatchesTensor(file, "output", logits.data(), logits.size()));
 *   EXPECT_TRUE(kiln::parity::MatchesSampled(file, "grad.fc.weight", grad, numel));
 *
 * Kiln's values are passed as a pointer to `count` floats in PyTorch's row-major order, which is
 * the memory order of Kiln's Halide buffers and of the runtime's flat arrays.
 */
#ifndef KILN_TESTS_PARITY_COMPARE_H_
#define KILN_TESTS_PARITY_COMPARE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/safetensors.h"

namespace kiln::parity {

/// Returns the directory of the reference files: $KILN_TEST_DATA/parity, or the source tree's
/// tests/data/parity (KILN_DEFAULT_TEST_DATA, set by tests/CMakeLists.txt) when the variable is
/// unset, as when gtest_discover_tests lists the tests without the ctest environment.
std::string ParityDir();

/// The bound on each element: |kiln − torch| ≤ abs + rel·|torch| + spread_multiple·spread, where
/// spread is the largest difference of PyTorch's float32 runs from float64 at that element
/// (<group>_spread.<tensor>, stored for sampled results). The default is the tolerance of every
/// result whose float32 round-off is small, and ignores the spread.
/// Tolerance::row_max for a model's logits (model_parity_test, import_parity_test).
constexpr double kLogitRowMax = 1e-6;

struct Tolerance {
  double abs = 1e-5;
  double rel = 1e-4;
  double spread_multiple = 0;
  /// Adds row_max·max|torch| over the element's row (the tensor's last dimension): a logit that
  /// is a small difference of large terms carries the round-off of those terms, not its own.
  double row_max = 0;
  /// false: MatchesSampled compares the sampled elements as one vector,
  /// ||kiln − torch||₂ ≤ rel·||torch||₂ + abs·sqrt(k) + spread_multiple·||spread||₂, for results
  /// whose float32 error concentrates in a few elements that differ between implementations.
  bool elementwise = true;
  std::string reason = "the default";  ///< Why this bound applies, for messages.
};

/// Returns "name[i, j, ...]" for flat element `flat` of a row-major tensor of `shape`.
std::string ElementName(const std::string& name, const std::vector<int64_t>& shape, int64_t flat);

/// Compares `count` values of Kiln with stored tensor `name` element by element. Fails when the
/// tensor is missing, its element count differs from `count`, or an element (NaN included) is
/// outside `tolerance`, whose spread term is taken from `spread` (`count` values) when given.
/// When `score` is not null, it receives the worst element's |kiln − torch| / bound, so a value
/// ≤ 1 passes (infinity for NaN).
::testing::AssertionResult MatchesTensor(const TensorFile& file, const std::string& name,
                                         const float* kiln, int64_t count,
                                         const Tolerance& tolerance = {},
                                         double* score = nullptr,
                                         const float* spread = nullptr);

/// Compares `count` values of Kiln's result `name` ("grad.<tensor>" or "buffer_after.<buffer>")
/// with the sampled form that the model cases store: the elements at index.<tensor> within
/// `tolerance`, the L2 norm within abs + rel·||torch||₂, and the sum within the bound that the
/// element tolerance implies, rel·sqrt(n)·||torch||₂ + abs·n. Fails when any of the three stored
/// tensors is missing, an index is outside [0, count), or `tolerance` has a spread term and
/// <group>_spread.<tensor> is missing. `score`, when not null, receives the largest of the three
/// errors as a fraction of its bound.
::testing::AssertionResult MatchesSampled(const TensorFile& file, const std::string& name,
                                          const float* kiln, int64_t count,
                                          const Tolerance& tolerance = {},
                                          double* score = nullptr);

}  // namespace kiln::parity

#endif  // KILN_TESTS_PARITY_COMPARE_H_
