#include "examples/regression/denoise.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "fmt/core.h"
#include "runtime/progress.h"
#include "runtime/trainer.h"

namespace kiln::regression {
namespace {

// Random streams of a run, passed to DeriveSeed.
constexpr uint64_t kTestNoiseStream = 1;
constexpr uint64_t kTrainNoiseStream = 2;

absl::Status CheckShapes(const CompiledModel& model, const Dataset& data, const char* role) {
  const std::vector<int64_t> image = {data.channels, data.height, data.width};
  if (model.targets != Targets::kTensor || model.input_shape != image ||
      model.output_shape != image) {
    return absl::InvalidArgumentError(absl::StrCat(
        "denoise needs a model that maps ", data.channels, "x", data.height, "x", data.width,
        " images (the ", role, " images", data.images_path.empty() ? "" : " in ", data.images_path,
        ") to images of the same shape against tensor targets, but model '", model.name, "' takes ",
        Numel(model.input_shape), " values and predicts ", Numel(model.output_shape), " with loss ",
        model.loss, "; use denoising_autoencoder compiled for this image size"));
  }
  if (data.count < 1 || data.images.size() != static_cast<size_t>(data.count * Numel(image))) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", role, " set contains ", data.images.size(), " pixel values for ",
                     data.count, " images of ", Numel(image), "; it must be non-empty"));
  }
  return absl::OkStatus();
}

absl::Status CheckOptions(const DenoiseOptions& options) {
  if (!std::isfinite(options.noise) || options.noise < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the noise σ ", options.noise, " must be finite and not negative"));
  }
  if (options.epochs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("epochs ", options.epochs, " must be at least 1"));
  }
  if (options.grid_images < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the number of grid images ", options.grid_images, " must not be negative"));
  }
  return absl::OkStatus();
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

void AddClippedNoise(const float* clean, int64_t count, double sigma, Random& random,
                     float* noisy) {
  for (int64_t i = 0; i < count; ++i) {
    const double value = clean[i] + sigma * random.Normal();
    noisy[i] = static_cast<float>(std::clamp(value, 0.0, 1.0));
  }
}

absl::StatusOr<DenoiseResult> RunDenoise(Network& net, const Dataset& train, const Dataset& test,
                                         const DenoiseOptions& options) {
  const CompiledModel& model = net.model();
  if (absl::Status s = CheckShapes(model, train, "training"); !s.ok()) return s;
  if (absl::Status s = CheckShapes(model, test, "test"); !s.ok()) return s;
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  const int64_t pixels = Numel(model.input_shape);
  const int batch_size = static_cast<int>(std::min<int64_t>(
      options.batch_size > 0 ? options.batch_size : model.batch_size, train.count));

  // One fixed noisy copy of the test set, and the baseline of leaving it as it is.
  DenoiseResult result;
  result.channels = test.channels;
  result.height = test.height;
  result.width = test.width;
  std::vector<float> noisy_test(test.images.size());
  Random test_noise(DeriveSeed(options.seed, kTestNoiseStream));
  AddClippedNoise(test.images.data(), static_cast<int64_t>(test.images.size()), options.noise,
                  test_noise, noisy_test.data());
  result.baseline_mse = MeanSquaredDifference(noisy_test.data(), test.images.data(),
                                              static_cast<int64_t>(test.images.size()));

  net.InitParams(options.seed);
  if (options.log != nullptr) {
    fmt::print(options.log,
               "denoise: {} ({} parameters, {} schedule) on {} training and {} test images with "
               "Gaussian noise σ {} clipped to [0, 1]; batch {}, lr {}, momentum {}, seed {}\n"
               "denoise: MSE of the noisy test images against the clean ones (the baseline): "
               "{:.5f}\n",
               model.name, model.num_params, model.schedule, train.count, test.count, options.noise,
               batch_size, options.sgd.lr, options.sgd.momentum, options.seed, result.baseline_mse);
    std::fflush(options.log);
  }

  // Each epoch: shuffled batches of clean targets, noised afresh as the inputs.
  const auto start = std::chrono::steady_clock::now();
  std::vector<float> clean(static_cast<size_t>(batch_size) * pixels), noisy(clean.size());
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    const auto epoch_start = std::chrono::steady_clock::now();
    const std::vector<int64_t> order = EpochOrder(train.count, options.seed, epoch);
    Random noise(DeriveSeed(DeriveSeed(options.seed, kTrainNoiseStream), epoch));
    ProgressBar bar(options.progress, fmt::format("epoch {}/{}", epoch + 1, options.epochs),
                    train.count);
    double loss_sum = 0;
    for (int64_t begin = 0; begin < train.count; begin += batch_size) {
      const int n = static_cast<int>(std::min<int64_t>(batch_size, train.count - begin));
      for (int i = 0; i < n; ++i) {
        std::copy_n(train.images.begin() + order[begin + i] * pixels, pixels,
                    clean.begin() + i * pixels);
      }
      AddClippedNoise(clean.data(), n * pixels, options.noise, noise, noisy.data());

      absl::StatusOr<BatchResult> step = net.Backward(noisy.data(), clean.data(), n);
      if (!step.ok()) return step.status();
      if (absl::Status s = net.Update(options.sgd); !s.ok()) return s;
      loss_sum += static_cast<double>(step->loss) * n;
      bar.Update(begin + n, loss_sum / (begin + n));
    }
    bar.Finish();
    const double train_seconds = Seconds(epoch_start);

    const double train_mse = loss_sum / train.count;
    if (!std::isfinite(train_mse)) {
      return absl::FailedPreconditionError(
          absl::StrCat("training diverged in epoch ", epoch + 1, ": the mean training loss is ",
                       train_mse, "; lower the learning rate (now ", options.sgd.lr, ")"));
    }
    absl::StatusOr<double> test_mse =
        EvaluateMse(net, noisy_test.data(), test.images.data(), test.count, batch_size);
    if (!test_mse.ok()) return test_mse.status();
    const double seconds = Seconds(epoch_start);
    result.history.push_back(EpochMse{epoch + 1, train_mse, *test_mse, seconds});
    if (options.log != nullptr) {
      fmt::print(options.log,
                 "epoch {}/{}: train MSE {:.5f}, test MSE {:.5f} (noisy input {:.5f}), "
                 "{:.1f} s, training {:.0f} images/s\n",
                 epoch + 1, options.epochs, train_mse, *test_mse, result.baseline_mse, seconds,
                 train.count / train_seconds);
      std::fflush(options.log);
    }
  }
  result.seconds = Seconds(start);

  // The first test images, noisy and denoised, for the picture.
  const int64_t grid_images = std::min<int64_t>(options.grid_images, test.count);
  result.kept_images = static_cast<int>(grid_images);
  result.clean.assign(test.images.begin(), test.images.begin() + grid_images * pixels);
  result.noisy.assign(noisy_test.begin(), noisy_test.begin() + grid_images * pixels);
  result.denoised.resize(grid_images * pixels);
  if (grid_images > 0) {
    absl::Status status =
        Predict(net, result.noisy.data(), grid_images, batch_size, result.denoised.data());
    if (!status.ok()) return status;
  }
  return result;
}

absl::StatusOr<plot::Image> PlotDenoise(const DenoiseResult& result) {
  if (result.kept_images < 1) {
    return absl::InvalidArgumentError("the denoising result keeps no test images to draw");
  }

  // NOTE: images with more than one channel show their first channel only.
  const int64_t stride = static_cast<int64_t>(result.channels) * result.height * result.width;
  std::vector<std::vector<const float*>> rows(3);
  for (int64_t i = 0; i < result.kept_images; ++i) {
    rows[0].push_back(result.clean.data() + i * stride);
    rows[1].push_back(result.noisy.data() + i * stride);
    rows[2].push_back(result.denoised.data() + i * stride);
  }
  return plot::TileGrayscale(rows, result.height, result.width, 3, 2);
}

}  // namespace kiln::regression
