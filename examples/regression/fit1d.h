/** \file
 * The textbook empirical-risk example: learn f(x) = sin(2πx) + 0.3x on [−1, 1] from noisy
 * samples y = f(x) + N(0, σ²) with the mlp_regression model and mean squared error. The MSE on
 * the training points is the empirical risk that SGD minimizes, and the MSE on a separate test
 * sample estimates the expected (held-out) risk. The expected test MSE cannot fall below σ², the
 * noise variance; the training MSE can, when the model fits the noise.
 *
 *   kiln::Network net(*kiln::FindCompiledModel("mlp_regression"));
 *   kiln::regression::Fit1dOptions options;
 *   absl::StatusOr<kiln::regression::Fit1dResult> fit = kiln::regression::RunFit1d(net, options);
 *   absl::Status s = kiln::regression::WriteFit1dCsv("fit1d.csv", *fit);
 *   s = kiln::plot::WritePng("fit1d.png", kiln::regression::PlotFit1d(*fit));
 */
#ifndef KILN_EXAMPLES_REGRESSION_FIT1D_H_
#define KILN_EXAMPLES_REGRESSION_FIT1D_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/plot.h"
#include "examples/regression/regression.h"
#include "runtime/network.h"

namespace kiln::regression {

/// The function to learn: f(x) = sin(2πx) + 0.3x.
double TrueFunction(double x);

/// Points (x[i], y[i]) of the 1-D problem.
struct Samples1d {
  std::vector<float> x, y;
};

/// Draws `count` points with x uniform in [−1, 1) and y = f(x) + noise · N(0, 1), from `seed`.
Samples1d MakeNoisySamples(int count, double noise, uint64_t seed);

struct Fit1dOptions {
  int train_points = 256;
  int test_points = 1024;
  double noise = 0.1;  ///< σ, the standard deviation of the noise on y.
  int epochs = 400;
  SgdOptions sgd{0.05f, 0.9f, 0.0f};
  int batch_size = 0;       ///< 0: the batch the model was compiled for.
  uint64_t seed = 0;        ///< Data, test data and initialization each derive their own stream.
  int log_every = 0;        ///< See ShouldLog.
  std::FILE* log = stdout;  ///< Start line, epoch lines and summary; nullptr for none.
};

struct Fit1dResult {
  Samples1d train, test;
  std::vector<float> train_fit;   ///< The model's prediction at each train.x.
  std::vector<float> grid_x;      ///< Evenly spaced points on [−1, 1] for drawing curves.
  std::vector<float> grid_fit;    ///< The model's prediction at each grid_x.
  std::vector<EpochMse> history;  ///< One entry per epoch; `train` is the MSE on all training
                                  ///< points after the epoch, not a running mean.
  double seconds = 0;             ///< Training and evaluation, all epochs.
};

/// Initializes `net` from options.seed and trains it with SGD on MSE over the training points,
/// then evaluates both sets after every epoch. Returns InvalidArgument when an option is out of
/// range, or when the model does not take one input feature and predict one value against tensor
/// targets (mlp_regression does). Returns FailedPrecondition when the training MSE stops being
/// finite, because the learning rate is too high.
absl::StatusOr<Fit1dResult> RunFit1d(Network& net, const Fit1dOptions& options);

/// Writes the training points sorted by x as CSV with the header `x,y_data,y_fit,y_true`
/// (data, model prediction and f(x)), atomically.
absl::Status WriteFit1dCsv(const std::string& path, const Fit1dResult& result);

/// Draws the fit: the training points (blue dots), f (green line) and the model (red line) on
/// a 720 × 450 chart.
plot::Image PlotFit1d(const Fit1dResult& result);

}  // namespace kiln::regression

#endif  // KILN_EXAMPLES_REGRESSION_FIT1D_H_
