/** \file
 * One HTML page per training run that opens offline: the run's configuration, a table of the
 * epochs and the figures, with the PNG files embedded as base64 data URIs. The page has no
 * external CSS, scripts or fonts.
 *
 *   kiln::ReportInput input;
 *   input.title = "LeNet-5 on Fashion-MNIST";
 *   input.config = {{"model", "lenet5"}, {"epochs", "10"}, {"batch size", "64"}};
 *   input.epochs = epoch_records;  // from the trainer or kiln::ReadMetrics
 *   input.figures = {{"run/loss.png", "Loss per epoch"}};
 *   absl::Status s = kiln::WriteReport("run/report.html", input);
 */
#ifndef KILN_RUNTIME_REPORT_H_
#define KILN_RUNTIME_REPORT_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/metrics_log.h"

namespace kiln {

/// A PNG file to embed, with the caption shown under it.
struct ReportFigure {
  std::string path;
  std::string caption;
};

struct ReportInput {
  std::string title;
  /// The run's settings as (name, value) rows, in the order given.
  std::vector<std::pair<std::string, std::string>> config;
  /// One table row each, in the order given. Non-finite values show as "n/a".
  std::vector<EpochRecord> epochs;
  std::vector<ReportFigure> figures;
};

/// Returns `text` with &, <, >, " and ' replaced by character references, safe inside HTML
/// text and quoted attribute values.
std::string EscapeHtml(std::string_view text);

/// Builds the report page. Every text of `input` is HTML-escaped. Each epoch row is a
/// `<tr class="epoch">`, and each figure an `<img src="data:image/png;base64,...">` in a
/// `<figure>` with its caption. Errors, each naming the figure's path: the errno status when a
/// figure cannot be read (NotFound when it is missing), and InvalidArgument when it is not a PNG
/// file.
absl::StatusOr<std::string> BuildReport(const ReportInput& input);

/// Builds the report (BuildReport) and writes it to `path` atomically (WriteFileAtomically).
/// Errors: BuildReport's and WriteFileAtomically's, which name the path involved.
absl::Status WriteReport(const std::string& path, const ReportInput& input);

}  // namespace kiln

#endif  // KILN_RUNTIME_REPORT_H_
