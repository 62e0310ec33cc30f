#include "examples/regression/fit1d.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/atomic_file.h"
#include "fmt/core.h"
#include "runtime/trainer.h"

namespace kiln::regression {
namespace {

constexpr double kPi = 3.141592653589793;
constexpr int kGridPoints = 401;
constexpr int kEvalBatch = 1024;

absl::Status CheckModel(const CompiledModel& model) {
  if (model.targets != Targets::kTensor || Numel(model.input_shape) != 1 ||
      Numel(model.output_shape) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fit1d needs a model with one input feature and one output trained against tensor "
        "targets (mlp_regression), but model '",
        model.name, "' has ", Numel(model.input_shape), " inputs, ", Numel(model.output_shape),
        " outputs and loss ", model.loss));
  }
  return absl::OkStatus();
}

absl::Status CheckOptions(const Fit1dOptions& options) {
  if (options.train_points < 1 || options.test_points < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the training and test sets need at least 1 "
                     "point each, not ",
                     options.train_points, " and ", options.test_points));
  }
  if (!std::isfinite(options.noise) || options.noise < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the noise σ ", options.noise, " must be finite and not negative"));
  }
  if (options.epochs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("epochs ", options.epochs, " must be at least 1"));
  }
  return absl::OkStatus();
}

double Variance(const std::vector<float>& values) {
  const double mean = std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  double sum = 0;
  for (float v : values) sum += (v - mean) * (v - mean);
  return sum / values.size();
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

double TrueFunction(double x) { return std::sin(2 * kPi * x) + 0.3 * x; }

Samples1d MakeNoisySamples(int count, double noise, uint64_t seed) {
  Random random(seed);
  Samples1d samples;
  for (int i = 0; i < count; ++i) {
    const double x = 2 * random.Uniform() - 1;
    samples.x.push_back(static_cast<float>(x));
    samples.y.push_back(static_cast<float>(TrueFunction(x) + noise * random.Normal()));
  }
  return samples;
}

absl::StatusOr<Fit1dResult> RunFit1d(Network& net, const Fit1dOptions& options) {
  if (absl::Status s = CheckModel(net.model()); !s.ok()) return s;
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  const CompiledModel& model = net.model();

  // The data and the network's starting point.
  Fit1dResult result;
  result.train = MakeNoisySamples(options.train_points, options.noise, DeriveSeed(options.seed, 1));
  result.test = MakeNoisySamples(options.test_points, options.noise, DeriveSeed(options.seed, 2));
  net.InitParams(options.seed);
  const int count = options.train_points;
  const int batch_size =
      std::min(options.batch_size > 0 ? options.batch_size : model.batch_size, count);
  if (options.log != nullptr) {
    fmt::print(options.log,
               "fit1d: {} ({} parameters, {} schedule) on {} training and {} test points of "
               "y = sin(2πx) + 0.3x + N(0, {}²); batch {}, lr {}, momentum {}, seed {}\n",
               model.name, model.num_params, model.schedule, count, options.test_points,
               options.noise, batch_size, options.sgd.lr, options.sgd.momentum, options.seed);
  }

  // SGD over shuffled mini-batches, with both risks measured after every epoch.
  const auto start = std::chrono::steady_clock::now();
  std::vector<float> x(batch_size), y(batch_size);
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    const auto epoch_start = std::chrono::steady_clock::now();
    const std::vector<int64_t> order = EpochOrder(count, options.seed, epoch);
    for (int begin = 0; begin < count; begin += batch_size) {
      const int n = std::min(batch_size, count - begin);
      for (int i = 0; i < n; ++i) {
        x[i] = result.train.x[order[begin + i]];
        y[i] = result.train.y[order[begin + i]];
      }
      absl::StatusOr<BatchResult> step = net.Backward(x.data(), y.data(), n);
      if (!step.ok()) return step.status();
      if (absl::Status s = net.Update(options.sgd); !s.ok()) return s;
    }

    absl::StatusOr<double> train_mse =
        EvaluateMse(net, result.train.x.data(), result.train.y.data(), count, kEvalBatch);
    if (!train_mse.ok()) return train_mse.status();
    absl::StatusOr<double> test_mse = EvaluateMse(net, result.test.x.data(), result.test.y.data(),
                                                  options.test_points, kEvalBatch);
    if (!test_mse.ok()) return test_mse.status();
    if (!std::isfinite(*train_mse)) {
      return absl::FailedPreconditionError(
          absl::StrCat("training diverged in epoch ", epoch + 1, ": the training MSE is ",
                       *train_mse, "; lower the learning rate (now ", options.sgd.lr, ")"));
    }
    result.history.push_back(EpochMse{epoch + 1, *train_mse, *test_mse, Seconds(epoch_start)});
    if (options.log != nullptr && ShouldLog(epoch + 1, options.epochs, options.log_every)) {
      fmt::print(options.log, "epoch {:>4}/{}: train MSE {:.5f}, test MSE {:.5f}\n", epoch + 1,
                 options.epochs, *train_mse, *test_mse);
    }
  }
  result.seconds = Seconds(start);

  // The fitted function at the training points and on an even grid.
  result.train_fit.resize(count);
  absl::Status status =
      Predict(net, result.train.x.data(), count, kEvalBatch, result.train_fit.data());
  if (!status.ok()) return status;
  for (int i = 0; i < kGridPoints; ++i) {
    result.grid_x.push_back(static_cast<float>(-1.0 + 2.0 * i / (kGridPoints - 1)));
  }
  result.grid_fit.resize(kGridPoints);
  status = Predict(net, result.grid_x.data(), kGridPoints, kEvalBatch, result.grid_fit.data());
  if (!status.ok()) return status;

  if (options.log != nullptr) {
    fmt::print(options.log,
               "fit1d: {} epochs ({} steps) in {:.2f} s; final train MSE {:.5f}, test MSE {:.5f}; "
               "noise variance σ² {:.5f} (the lowest expected test MSE), variance of the test y "
               "{:.5f} (the MSE of predicting their mean)\n",
               options.epochs, options.epochs * ((count + batch_size - 1) / batch_size),
               result.seconds, result.history.back().train, result.history.back().test,
               options.noise * options.noise, Variance(result.test.y));
  }
  return result;
}

absl::Status WriteFit1dCsv(const std::string& path, const Fit1dResult& result) {
  std::vector<size_t> order(result.train.x.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return result.train.x[a] < result.train.x[b]; });

  std::string csv = "x,y_data,y_fit,y_true\n";
  for (size_t i : order) {
    const float x = result.train.x[i];
    absl::StrAppendFormat(&csv, "%.6f,%.6f,%.6f,%.6f\n", x, result.train.y[i],
                          i < result.train_fit.size() ? result.train_fit[i] : NAN, TrueFunction(x));
  }
  return WriteFileAtomically(path, csv);
}

plot::Image PlotFit1d(const Fit1dResult& result) {
  std::vector<double> data_x(result.train.x.begin(), result.train.x.end());
  std::vector<double> data_y(result.train.y.begin(), result.train.y.end());
  std::vector<double> grid_x(result.grid_x.begin(), result.grid_x.end());
  std::vector<double> fit(result.grid_fit.begin(), result.grid_fit.end());
  std::vector<double> truth;
  for (double x : grid_x) truth.push_back(TrueFunction(x));

  // The y range covers the data and f with a margin. A diverged fit may leave it.
  double low = -1.5, high = 1.5;
  for (const std::vector<double>* values : {&truth, &data_y}) {
    for (double y : *values) {
      if (!std::isfinite(y)) continue;
      low = std::min(low, y);
      high = std::max(high, y);
    }
  }
  const double margin = 0.08 * (high - low);

  plot::Chart chart(720, 450, {-1.05, 1.05}, {low - margin, high + margin});
  chart.Line(grid_x, truth, plot::kGreen, 2);
  chart.Line(grid_x, fit, plot::kRed, 2);
  chart.Scatter(data_x, data_y, plot::kBlue, 3);
  return chart.Render();
}

}  // namespace kiln::regression
