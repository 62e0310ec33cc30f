#include "runtime/run_report.h"

#include <cmath>
#include <map>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "runtime/figures.h"
#include "runtime/metrics_log.h"
#include "runtime/report.h"
#include "runtime/trainer.h"

namespace kiln {
namespace {

// Fashion-MNIST's class names, in label order (the dataset's README).
const char* const kFashionMnistClasses[] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                            "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                            "Bag",         "Ankle boot"};

// At most this many gradient-norm curves, because the legend has room for about 40 names.
constexpr size_t kMaxGradientCurves = 24;

}  // namespace

absl::Status WriteRunReport(const RunReportInput& input) {
  absl::StatusOr<std::vector<MetricsRecord>> records = ReadMetrics(input.metrics);
  if (!records.ok()) return records.status();
  std::vector<EpochRecord> epochs;
  std::map<std::string, figures::Series> norms;  // By tensor name.
  std::vector<std::string> order;                 // Tensor names in first-seen order.
  for (const MetricsRecord& record : *records) {
    if (const auto* e = std::get_if<EpochRecord>(&record)) {
      epochs.push_back(*e);
      continue;
    }
    const StepRecord& step = std::get<StepRecord>(record);
    for (const auto& [name, norm] : step.layer_grad_norms) {
      if (!absl::EndsWith(name, ".weight")) continue;
      auto [it, added] = norms.try_emplace(name, figures::Series{name, {}, {}});
      if (added) order.push_back(name);
      it->second.xs.push_back(static_cast<double>(step.step));
      it->second.ys.push_back(norm);
    }
  }

  const std::string dir = input.dir + "/";
  std::vector<ReportFigure> report_figures;
  figures::Series train_loss{"train", {}, {}}, test_loss{"test", {}, {}};
  figures::Series train_accuracy{"train", {}, {}}, test_accuracy{"test", {}, {}};
  for (const EpochRecord& e : epochs) {
    train_loss.xs.push_back(e.epoch);
    train_loss.ys.push_back(e.train_loss);
    test_loss.xs.push_back(e.epoch);
    test_loss.ys.push_back(e.test_loss);
    train_accuracy.xs.push_back(e.epoch);
    train_accuracy.ys.push_back(e.train_accuracy);
    test_accuracy.xs.push_back(e.epoch);
    test_accuracy.ys.push_back(e.test_accuracy);
  }
  if (!epochs.empty()) {
    absl::Status s = figures::PlotCurves(dir + "loss.png", "Loss per epoch", "epoch",
                                         "mean loss", {train_loss, test_loss});
    if (!s.ok()) return s;
    s = figures::PlotCurves(dir + "accuracy.png", "Top-1 accuracy per epoch", "epoch",
                            "accuracy", {train_accuracy, test_accuracy});
    if (!s.ok()) return s;
    report_figures.push_back({dir + "loss.png", "Mean training loss (during the epoch) and test loss "
                                       "(after it), per epoch."});
    report_figures.push_back({dir + "accuracy.png", "Training accuracy (during the epoch) and test "
                                           "accuracy (after it), per epoch."});
  }
  if (!order.empty()) {
    std::vector<figures::Series> curves;
    const size_t stride = (order.size() + kMaxGradientCurves - 1) / kMaxGradientCurves;
    for (size_t i = 0; i < order.size(); i += stride) curves.push_back(norms.at(order[i]));
    absl::Status s = figures::PlotCurves(dir + "grad_norms.png", "Gradient norm per layer",
                                         "step", "L2 norm of the weight gradient", curves,
                                         /*log_y=*/true);
    if (!s.ok()) return s;
    report_figures.push_back({dir + "grad_norms.png",
                     absl::StrCat("L2 norm of each weight's gradient per step, computed by the "
                                  "compiled step (--log-grad-norms)",
                                  stride > 1 ? absl::StrCat("; every ", stride, "th layer") : "",
                                  ".")});
  }

  const CompiledModel& model = input.net->model();
  if (input.test != nullptr && model.num_classes > 0) {
    std::vector<int> predictions;
    absl::StatusOr<EvalResult> result = Evaluate(*input.net, *input.test, 0, &predictions);
    if (!result.ok()) return result.status();
    std::vector<int> labels(input.test->labels.begin(), input.test->labels.end());
    absl::StatusOr<figures::CountMatrix> matrix =
        figures::ConfusionMatrix(labels, predictions, model.num_classes);
    if (!matrix.ok()) return matrix.status();
    std::vector<std::string> names;
    for (int k = 0; k < model.num_classes; ++k) {
      names.push_back(model.num_classes == 10 ? kFashionMnistClasses[k] : absl::StrCat(k));
    }
    absl::Status s = figures::PlotConfusionMatrix(dir + "confusion.png", *matrix, names);
    if (!s.ok()) return s;
    report_figures.push_back({dir + "confusion.png",
                     absl::StrCat("Test-set confusion matrix after the last epoch (",
                                  input.test->count, " images; accuracy ", result->accuracy,
                                  ").")});
  }
  for (const ParamInfo& p : model.params) {
    if (p.shape.size() != 4) continue;
    std::vector<float> weights(input.net->params().begin() + p.offset,
                               input.net->params().begin() + p.offset + p.numel);
    figures::FilterShape shape{static_cast<int>(p.shape[0]), static_cast<int>(p.shape[1]),
                               static_cast<int>(p.shape[2]), static_cast<int>(p.shape[3])};
    absl::Status s = figures::PlotFilterGrid(dir + "filters.png", weights, shape,
                                             absl::StrCat(p.name, " after training"));
    if (!s.ok()) return s;
    report_figures.push_back({dir + "filters.png",
                     absl::StrCat("The filters of ", p.name, ", each scaled to its own range.")});
    break;
  }

  ReportInput report;
  report.title = absl::StrCat("Kiln training run: ", model.name);
  report.config = input.config;
  report.epochs = epochs;
  report.figures = report_figures;
  return WriteReport(dir + "report.html", report);
}

absl::StatusOr<RunMetric> ParseRunMetric(const std::string& name) {
  if (name == "accuracy") return RunMetric::kAccuracy;
  if (name == "loss") return RunMetric::kLoss;
  if (name == "layer-norms") return RunMetric::kLayerNorms;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown metric '", name, "'; use accuracy, loss or layer-norms"));
}

absl::Status PlotRuns(const std::vector<std::pair<std::string, std::string>>& runs,
                      RunMetric metric, const std::string& output) {
  std::vector<figures::Series> series;
  for (const auto& [name, path] : runs) {
    absl::StatusOr<std::vector<MetricsRecord>> records = ReadMetrics(path);
    if (!records.ok()) return records.status();
    if (metric == RunMetric::kLayerNorms) {
      // Mean norm of each weight over the first epoch, in the order the layers appear.
      std::vector<std::string> order;
      std::map<std::string, std::pair<double, int>> sums;
      for (const MetricsRecord& record : *records) {
        const auto* step = std::get_if<StepRecord>(&record);
        if (step == nullptr || step->epoch != 1) continue;
        for (const auto& [tensor, norm] : step->layer_grad_norms) {
          if (!absl::EndsWith(tensor, ".weight")) continue;
          auto [it, added] = sums.try_emplace(tensor, 0.0, 0);
          if (added) order.push_back(tensor);
          it->second.first += norm;
          it->second.second += 1;
        }
      }
      if (order.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "metrics log '", path, "' has no gradient norms in epoch 1; train with "
            "--log-grad-norms"));
      }
      figures::Series s{name, {}, {}};
      for (size_t i = 0; i < order.size(); ++i) {
        const auto& [sum, count] = sums.at(order[i]);
        s.xs.push_back(static_cast<double>(i + 1));
        s.ys.push_back(sum / count);
      }
      series.push_back(s);
      continue;
    }
    figures::Series train{name + " train", {}, {}}, test{name + " test", {}, {}};
    for (const MetricsRecord& record : *records) {
      const auto* e = std::get_if<EpochRecord>(&record);
      if (e == nullptr) continue;
      const bool accuracy = metric == RunMetric::kAccuracy;
      train.xs.push_back(e->epoch);
      train.ys.push_back(accuracy ? e->train_accuracy : e->train_loss);
      test.xs.push_back(e->epoch);
      test.ys.push_back(accuracy ? e->test_accuracy : e->test_loss);
    }
    if (train.xs.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics log '", path, "' has no epoch records; let a run finish an epoch"));
    }
    series.push_back(train);
    series.push_back(test);
  }
  switch (metric) {
    case RunMetric::kAccuracy:
      return figures::PlotCurves(output, "Accuracy per epoch", "epoch", "top-1 accuracy", series);
    case RunMetric::kLoss:
      return figures::PlotCurves(output, "Loss per epoch", "epoch", "mean loss", series);
    case RunMetric::kLayerNorms:
      return figures::PlotCurves(output, "Gradient norm by layer, first epoch",
                                 "layer (input side first)", "mean L2 norm of the weight gradient",
                                 series, /*log_y=*/true);
  }
  return absl::OkStatus();
}

}  // namespace kiln
