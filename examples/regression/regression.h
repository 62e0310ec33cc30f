/** \file
 * What the two regression tasks of kiln-regression share: batched prediction and mean squared
 * error through a compiled model, reproducible random numbers, and the per-epoch record.
 *
 *   kiln::regression::Random random(kiln::regression::DeriveSeed(seed, 1));
 *   const double z = random.Normal();
 *   absl::StatusOr<double> mse = kiln::regression::EvaluateMse(net, x, y, count, 0);
 */
#ifndef KILN_EXAMPLES_REGRESSION_REGRESSION_H_
#define KILN_EXAMPLES_REGRESSION_REGRESSION_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/network.h"

namespace kiln::regression {

/// Mean squared errors after one epoch.
struct EpochMse {
  int epoch = 0;       ///< 1-based.
  double train = 0;    ///< On the training set (see the task for how it is measured).
  double test = 0;     ///< On the test set, with the parameters at the end of the epoch.
  double seconds = 0;  ///< Wall time of the epoch, evaluation included.
};

/// Number of floats in one sample of `shape` (the product of its sizes).
int64_t Numel(const std::vector<int64_t>& shape);

/// Runs `count` samples of `inputs` through `net` in evaluation mode, `batch_size` at a time
/// (0: the batch the model was compiled for), and writes count × (model output size) values to
/// `outputs`.
absl::Status Predict(Network& net, const float* inputs, int64_t count, int batch_size,
                     float* outputs);

/// Returns the mean squared error of the predictions for `count` samples of `inputs` against
/// `targets`, averaged over every output value as torch.nn.MSELoss does, accumulated in double.
absl::StatusOr<double> EvaluateMse(Network& net, const float* inputs, const float* targets,
                                   int64_t count, int batch_size);

/// Returns the mean of (a[i] − b[i])² over `count` values, accumulated in double.
double MeanSquaredDifference(const float* a, const float* b, int64_t count);

/// Returns a seed for the independent random stream `stream` of a run seeded with `seed`
/// (a SplitMix64 step), so the data, the noise and the initialization never share a sequence.
uint64_t DeriveSeed(uint64_t seed, uint64_t stream);

/// Uniform and normal variates whose sequence depends only on the seed (and on the C library's
/// log, sqrt, cos and sin). The conversions from the Mersenne Twister's bits are written out
/// here because std::uniform_real_distribution and std::normal_distribution differ between
/// standard libraries.
class Random {
 public:
  explicit Random(uint64_t seed) : bits_(seed) {}
  /// Returns a value in [0, 1) with 53 random bits.
  double Uniform();
  /// Returns a standard normal value (Box–Muller transform, the second value of each pair
  /// cached for the next call).
  double Normal();

 private:
  std::mt19937_64 bits_;
  bool has_spare_ = false;
  double spare_ = 0;
};

/// Whether to print a line after `epoch` (1-based) of `epochs`: every `log_every`-th epoch and
/// always the first and the last. log_every 0 picks a period that prints about 20 lines.
bool ShouldLog(int epoch, int epochs, int log_every);

}  // namespace kiln::regression

#endif  // KILN_EXAMPLES_REGRESSION_REGRESSION_H_
