// kiln-regression: two MSE regression tasks on Kiln's compiled models (docs/regression.md).
//
//   kiln-regression fit1d     # mlp_regression on noisy samples of sin(2πx) + 0.3x
//   kiln-regression denoise   # denoising_autoencoder on Fashion-MNIST
#include <cmath>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/atomic_file.h"
#include "examples/regression/denoise.h"
#include "examples/regression/fit1d.h"
#include "runtime/plot.h"
#include "fmt/core.h"
#include "runtime/compiled_model.h"
#include "runtime/idx.h"
#include "runtime/network.h"

// Both commands.
ABSL_FLAG(std::optional<int>, epochs, std::nullopt,
          "Training epochs (passes over the training set); default 400 for fit1d, 3 for denoise.");
ABSL_FLAG(std::optional<double>, lr, std::nullopt,
          "SGD learning rate; default 0.05 for fit1d, 0.1 for denoise.");
ABSL_FLAG(double, momentum, 0.9, "SGD momentum, in [0, 1).");
ABSL_FLAG(int, batch_size, 0, "Samples per step; 0 uses the batch the model was compiled for.");
ABSL_FLAG(uint64_t, seed, 0, "Seed for the data, the noise, initialization and shuffling.");
ABSL_FLAG(int, threads, 0, "Worker threads; 0 uses all cores.");
ABSL_FLAG(std::optional<double>, noise, std::nullopt,
          "Standard deviation of the Gaussian noise: on y for fit1d (default 0.1), on pixel "
          "values in [0, 1] for denoise (default 0.3).");
ABSL_FLAG(std::optional<std::string>, plot, std::nullopt,
          "PNG file to write; default fit1d.png or denoise.png in the current directory.");
// fit1d.
ABSL_FLAG(int, train_points, 256, "fit1d: number of training points.");
ABSL_FLAG(int, test_points, 1024, "fit1d: number of test points.");
ABSL_FLAG(int, log_every, 0, "fit1d: print every N-th epoch; 0 prints about 20 lines.");
ABSL_FLAG(std::string, csv, "fit1d.csv", "fit1d: CSV file of the training points and the fit.");
// denoise.
ABSL_FLAG(
    std::string, data, kiln::kDefaultDataDir,
    "denoise: directory with the Fashion-MNIST IDX files {train,t10k}-images-idx3-ubyte[.gz].");
ABSL_FLAG(int64_t, train_limit, 0, "denoise: use only the first N training images; 0 uses all.");
ABSL_FLAG(int64_t, test_limit, 0, "denoise: use only the first N test images; 0 uses all.");
ABSL_FLAG(int, grid_images, 8, "denoise: test images shown in the PNG, 1 to 32.");

namespace {

constexpr char kUsage[] =
    "Trains Kiln's compiled models on two mean-squared-error regression tasks.\n\n"
    "Usage:\n"
    "  kiln-regression fit1d   [--epochs 400] [--lr 0.05] [--noise 0.1] [--train-points 256]\n"
    "                          [--test-points 1024] [--csv fit1d.csv] [--plot fit1d.png]\n"
    "  kiln-regression denoise [--epochs 3] [--lr 0.1] [--noise 0.3] [--data DIR]\n"
    "                          [--train-limit N] [--test-limit N] [--plot denoise.png]\n"
    "Both take --momentum, --batch-size, --seed and --threads.\n\n"
    "fit1d fits y = sin(2πx) + 0.3x + noise on [-1, 1] with mlp_regression and prints the\n"
    "training and test MSE; denoise trains denoising_autoencoder to remove Gaussian noise from\n"
    "Fashion-MNIST images and prints the test MSE beside that of the noisy input.\n\n"
    "Flags may be spelled with '-' or '_' (--batch-size, --batch_size).";

// Flags that only one command reads, so the other rejects them instead of ignoring them.
const std::set<std::string> kFit1dFlags = {"train_points", "test_points", "log_every", "csv"};
const std::set<std::string> kDenoiseFlags = {"data", "train_limit", "test_limit", "grid_images"};

int Fail(const absl::Status& status) {
  fmt::print(stderr, "kiln-regression: {}\n", std::string(status.message()));
  return 1;
}

int Usage(const std::string& message) {
  fmt::print(stderr, "kiln-regression: {}\nRun 'kiln-regression --help' for usage.\n", message);
  return 2;
}

// absl flag names cannot contain '-', so "--batch-size=8" is rewritten to "--batch_size=8".
// Records the flag names given (with '_') in `given_flags`.
std::vector<char*> NormalizeFlagNames(int argc, char** argv, std::vector<std::string>& storage,
                                      std::set<std::string>& given_flags) {
  storage.assign(argv, argv + argc);
  for (std::string& arg : storage) {
    if (arg == "--") break;
    if (arg.rfind("--", 0) != 0) continue;
    const size_t end = std::min(arg.find('='), arg.size());
    for (size_t i = 2; i < end; ++i) {
      if (arg[i] == '-') arg[i] = '_';
    }
    given_flags.insert(arg.substr(2, end - 2));
  }
  std::vector<char*> pointers;
  for (std::string& arg : storage) pointers.push_back(arg.data());
  return pointers;
}

absl::Status ValidateCommonFlags(const std::string& command,
                                 const std::set<std::string>& given_flags) {
  const std::set<std::string>& foreign = command == "fit1d" ? kDenoiseFlags : kFit1dFlags;
  for (const std::string& flag : given_flags) {
    if (foreign.count(flag) > 0) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, " does not apply to ", command));
    }
  }

  const std::optional<int> epochs = absl::GetFlag(FLAGS_epochs);
  if (epochs.has_value() && *epochs < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--epochs ", *epochs, " must be at least 1"));
  }
  const std::optional<double> lr = absl::GetFlag(FLAGS_lr);
  if (lr.has_value() && !(std::isfinite(*lr) && *lr > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--lr ", *lr, " must be positive and finite"));
  }
  const double momentum = absl::GetFlag(FLAGS_momentum);
  if (!(momentum >= 0 && momentum < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--momentum ", momentum, " must be in [0, 1)"));
  }
  if (absl::GetFlag(FLAGS_batch_size) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch-size ", absl::GetFlag(FLAGS_batch_size), " must not be negative"));
  }
  // Halide's thread pool (Halide 14 runtime, thread_pool_common.h) uses at most 256 threads.
  const int threads = absl::GetFlag(FLAGS_threads);
  if (threads < 0 || threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads ", threads, " must be in [0, 256] (0 uses all cores)"));
  }
  const std::optional<double> noise = absl::GetFlag(FLAGS_noise);
  if (noise.has_value() && !(std::isfinite(*noise) && *noise >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--noise ", *noise, " must be finite and not negative"));
  }
  return absl::OkStatus();
}

// Returns the SGD options of the flags, with `lr` when --lr is not given.
kiln::SgdOptions SgdFromFlags(float lr) {
  return kiln::SgdOptions{static_cast<float>(absl::GetFlag(FLAGS_lr).value_or(lr)),
                          static_cast<float>(absl::GetFlag(FLAGS_momentum)), 0.0f};
}

// Returns the compiled model `name`, or an error that lists the models in this binary.
absl::StatusOr<const kiln::CompiledModel*> FindModel(const std::string& name) {
  const kiln::CompiledModel* model = kiln::FindCompiledModel(name);
  if (model == nullptr) {
    return absl::NotFoundError(absl::StrCat("model '", name,
                                            "' is not compiled into this binary; "
                                            "compiled models: ",
                                            absl::StrJoin(kiln::CompiledModelNames(), ", ")));
  }
  return model;
}

int RunFit1dCommand() {
  // Flags and output paths are checked before training, so a bad one costs no time.
  kiln::regression::Fit1dOptions options;
  options.train_points = absl::GetFlag(FLAGS_train_points);
  options.test_points = absl::GetFlag(FLAGS_test_points);
  // The cap keeps the data and its predictions well below 1 GB of memory.
  constexpr int kMaxPoints = 10'000'000;
  if (options.train_points < 1 || options.test_points < 1 || options.train_points > kMaxPoints ||
      options.test_points > kMaxPoints) {
    return Usage(absl::StrCat("--train-points ", options.train_points, " and --test-points ",
                              options.test_points, " must be in [1, ", kMaxPoints, "]"));
  }
  options.noise = absl::GetFlag(FLAGS_noise).value_or(options.noise);
  options.epochs = absl::GetFlag(FLAGS_epochs).value_or(options.epochs);
  options.sgd = SgdFromFlags(options.sgd.lr);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.log_every = absl::GetFlag(FLAGS_log_every);
  if (options.log_every < 0) return Usage("--log-every must not be negative");
  const std::string csv = absl::GetFlag(FLAGS_csv);
  const std::string png = absl::GetFlag(FLAGS_plot).value_or("fit1d.png");
  if (csv == png) {
    return Usage(absl::StrCat("--csv and --plot both name '", csv, "'; give them different paths"));
  }
  for (const std::string& path : {csv, png}) {
    if (absl::Status status = kiln::CheckOutputPath(path); !status.ok()) return Fail(status);
  }
  absl::StatusOr<const kiln::CompiledModel*> model = FindModel("mlp_regression");
  if (!model.ok()) return Fail(model.status());

  kiln::Network net(**model);
  absl::StatusOr<kiln::regression::Fit1dResult> result = kiln::regression::RunFit1d(net, options);
  if (!result.ok()) return Fail(result.status());

  if (absl::Status status = kiln::regression::WriteFit1dCsv(csv, *result); !status.ok()) {
    return Fail(status);
  }
  const kiln::plot::Image image = kiln::regression::PlotFit1d(*result);
  if (absl::Status status = kiln::plot::WritePng(png, image); !status.ok()) return Fail(status);
  fmt::print(
      "fit1d: wrote {} ({} points: x, y_data, y_fit, y_true) and {} ({}x{}: data blue, "
      "true function green, fit red)\n",
      csv, result->train.x.size(), png, image.width(), image.height());
  return 0;
}

absl::StatusOr<kiln::Dataset> LoadSplit(const std::string& split, int64_t limit) {
  absl::StatusOr<kiln::Dataset> data = kiln::LoadIdxDataset(absl::GetFlag(FLAGS_data), split);
  if (!data.ok() || limit == 0 || limit >= data->count) return data;
  return kiln::TakeFirst(*data, limit);
}

int RunDenoiseCommand() {
  kiln::regression::DenoiseOptions options;
  options.noise = absl::GetFlag(FLAGS_noise).value_or(options.noise);
  options.epochs = absl::GetFlag(FLAGS_epochs).value_or(options.epochs);
  options.sgd = SgdFromFlags(options.sgd.lr);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.grid_images = absl::GetFlag(FLAGS_grid_images);
  if (options.grid_images < 1 || options.grid_images > 32) {
    return Usage(absl::StrCat("--grid-images ", options.grid_images, " must be in [1, 32]"));
  }
  const int64_t train_limit = absl::GetFlag(FLAGS_train_limit);
  const int64_t test_limit = absl::GetFlag(FLAGS_test_limit);
  if (train_limit < 0 || test_limit < 0) {
    return Usage("--train-limit and --test-limit must not be negative");
  }
  const std::string png = absl::GetFlag(FLAGS_plot).value_or("denoise.png");
  if (absl::Status status = kiln::CheckOutputPath(png); !status.ok()) return Fail(status);
  absl::StatusOr<const kiln::CompiledModel*> model = FindModel("denoising_autoencoder");
  if (!model.ok()) return Fail(model.status());

  absl::StatusOr<kiln::Dataset> train = LoadSplit("train", train_limit);
  if (!train.ok()) return Fail(train.status());
  absl::StatusOr<kiln::Dataset> test = LoadSplit("t10k", test_limit);
  if (!test.ok()) return Fail(test.status());

  kiln::Network net(**model);
  absl::StatusOr<kiln::regression::DenoiseResult> result =
      kiln::regression::RunDenoise(net, *train, *test, options);
  if (!result.ok()) return Fail(result.status());

  absl::StatusOr<kiln::plot::Image> image = kiln::regression::PlotDenoise(*result);
  if (!image.ok()) return Fail(image.status());
  if (absl::Status status = kiln::plot::WritePng(png, *image); !status.ok()) return Fail(status);
  const kiln::regression::EpochMse& last = result->history.back();
  fmt::print(
      "denoise: {} epochs in {:.1f} s; test MSE {:.5f} against {:.5f} for the noisy input "
      "({:.1f}% of it)\n",
      last.epoch, result->seconds, last.test, result->baseline_mse,
      100 * last.test / result->baseline_mse);
  fmt::print("denoise: wrote {} ({}x{}: rows of clean, noisy and denoised test images)\n", png,
             image->width(), image->height());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  // By default absl's --help lists only the flags of a file named after the program
  // (kiln-regression.cc, kiln-regression_main.cc and similar), which this file is not.
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view path) {
    return absl::EndsWith(path, "kiln_regression.cpp");
  };
  usage_config.version_string = [] { return std::string("kiln-regression 0.1 (Halide 14)\n"); };
  absl::SetFlagsUsageConfig(usage_config);
  std::vector<std::string> storage;
  std::set<std::string> given_flags;
  std::vector<char*> args = NormalizeFlagNames(argc, argv, storage, given_flags);
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());

  constexpr char kCommands[] = "use fit1d or denoise";
  if (positional.size() != 2) {
    return Usage(positional.size() < 2 ? absl::StrCat("missing command: ", kCommands)
                                       : absl::StrCat("unexpected argument '", positional[2], "'"));
  }
  const std::string command = positional[1];
  if (command != "fit1d" && command != "denoise") {
    return Usage(absl::StrCat("unknown command '", command, "': ", kCommands));
  }
  if (absl::Status status = ValidateCommonFlags(command, given_flags); !status.ok()) {
    return Usage(std::string(status.message()));
  }

  kiln::SetThreads(absl::GetFlag(FLAGS_threads));
  return command == "fit1d" ? RunFit1dCommand() : RunDenoiseCommand();
}
