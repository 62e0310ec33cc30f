/** \file
 * The pictures of one training run, drawn from its metrics log and its final state into a run
 * directory: loss and accuracy curves, per-layer gradient norms, the test set's confusion matrix,
 * the first conv layer's filters, and report.html, which shows them all and opens offline.
 *
 *   kiln::RunReportInput input{"runs/lenet5", "runs/lenet5/metrics.jsonl", &net, &test, config};
 *   absl::Status s = kiln::WriteRunReport(input);  // runs/lenet5/report.html and *.png
 */
#ifndef KILN_RUNTIME_RUN_REPORT_H_
#define KILN_RUNTIME_RUN_REPORT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/idx.h"
#include "runtime/network.h"

namespace kiln {

struct RunReportInput {
  std::string dir;      ///< Existing directory that receives the files.
  std::string metrics;  ///< The run's metrics log (metrics_log.h).
  Network* net = nullptr;          ///< The trained network: filters and test predictions.
  const Dataset* test = nullptr;   ///< May be null: no confusion matrix then.
  /// The run's settings, shown as a table.
  std::vector<std::pair<std::string, std::string>> config;
};

/// Writes the figures and report.html into input.dir:
///   loss.png, accuracy.png  train and test per epoch
///   grad_norms.png          each weight's gradient norm per step, when the log has them
///   confusion.png           the test set; Fashion-MNIST's class names for 10 classes
///   filters.png             the first 4-D parameter (a conv weight)
/// Each file is replaced atomically. Errors name the file that failed.
absl::Status WriteRunReport(const RunReportInput& input);

/// The quantity PlotRuns compares.
enum class RunMetric {
  kAccuracy,    ///< Train and test accuracy per epoch.
  kLoss,        ///< Train and test loss per epoch.
  kLayerNorms,  ///< Each weight's gradient norm, averaged over the first epoch's steps, by layer.
};
/// Parses "accuracy", "loss" or "layer-norms".
absl::StatusOr<RunMetric> ParseRunMetric(const std::string& name);

/// Draws `metric` of several runs in one chart at `output` (PNG): `runs` lists (name, metrics
/// log) pairs. Errors: a log that cannot be read, or one without the records the metric needs
/// (layer-norms needs --log-grad-norms), each naming the file.
absl::Status PlotRuns(const std::vector<std::pair<std::string, std::string>>& runs,
                      RunMetric metric, const std::string& output);

}  // namespace kiln

#endif  // KILN_RUNTIME_RUN_REPORT_H_
