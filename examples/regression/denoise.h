/** \file
 * A convolutional denoising autoencoder on Fashion-MNIST: the denoising_autoencoder model learns
 * to map an image corrupted with Gaussian noise, clean + N(0, σ²) clipped to [0, 1], back to the
 * clean image, with mean squared error against the clean pixels. Training images get fresh noise
 * every epoch; the test images get one fixed draw, so the test MSE of successive epochs compares
 * like with like. The MSE of the noisy test images themselves is the baseline that a useful
 * denoiser must beat.
 *
 *   kiln::Network net(*kiln::FindCompiledModel("denoising_autoencoder"));
 *   kiln::regression::DenoiseOptions options;
 *   absl::StatusOr<kiln::regression::DenoiseResult> result =
 *       kiln::regression::RunDenoise(net, train, test, options);
 *   absl::StatusOr<kiln::plot::Image> grid = kiln::regression::PlotDenoise(*result);
 */
#ifndef KILN_EXAMPLES_REGRESSION_DENOISE_H_
#define KILN_EXAMPLES_REGRESSION_DENOISE_H_

#include <cstdint>
#include <cstdio>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/plot.h"
#include "examples/regression/regression.h"
#include "runtime/idx.h"
#include "runtime/network.h"

namespace kiln::regression {

/// Writes clip(clean[i] + sigma · N(0, 1), 0, 1) to noisy[i] for i < count, from `random`.
void AddClippedNoise(const float* clean, int64_t count, double sigma, Random& random, float* noisy);

struct DenoiseOptions {
  double noise = 0.3;  ///< σ of the Gaussian noise on pixels in [0, 1].
  int epochs = 3;
  SgdOptions sgd{0.1f, 0.9f, 0.0f};
  int batch_size = 0;            ///< 0: the batch the model was compiled for.
  uint64_t seed = 0;             ///< Initialization, shuffling, training noise and test noise.
  int grid_images = 8;           ///< Test images kept for PlotDenoise.
  std::FILE* log = stdout;       ///< Start line, baseline and one line per epoch; nullptr for none.
  std::FILE* progress = stderr;  ///< Progress bar, drawn only when this is a terminal.
};

struct DenoiseResult {
  /// One entry per epoch. `train` is the mean of the batch losses during the epoch, while the
  /// parameters still change. `test` is the MSE on the noisy test set after the epoch.
  std::vector<EpochMse> history;
  double baseline_mse = 0;  ///< MSE of the noisy test images against the clean ones.
  int channels = 0, height = 0, width = 0;  ///< Shape of one image.
  /// The first kept_images test images (options.grid_images, or fewer when the test set is
  /// smaller), channels × height × width values each: clean, with the test noise, and the
  /// model's output for the noisy one after the last epoch.
  int kept_images = 0;
  std::vector<float> clean, noisy, denoised;
  double seconds = 0;  ///< All epochs, evaluation included.
};

/// Initializes `net` from options.seed and trains it to denoise the images of `train`,
/// evaluating on `test` after every epoch. Labels are ignored. Returns InvalidArgument when the
/// model's input and output are not both the datasets' image shape with tensor targets
/// (denoising_autoencoder compiled for 1×28×28), or an option is out of range;
/// FailedPrecondition when the training loss stops being finite.
absl::StatusOr<DenoiseResult> RunDenoise(Network& net, const Dataset& train, const Dataset& test,
                                         const DenoiseOptions& options);

/// Tiles the kept test images: clean on the first row, noisy on the second, denoised on the
/// third, each pixel drawn 3 × 3. Returns InvalidArgument when no images were kept.
absl::StatusOr<plot::Image> PlotDenoise(const DenoiseResult& result);

}  // namespace kiln::regression

#endif  // KILN_EXAMPLES_REGRESSION_DENOISE_H_
