/** \file
 * The metrics of a training run as a file that grows while the run goes: one record per SGD step
 * and one per epoch, in JSON Lines (".jsonl") or CSV (".csv"), and a reader for both.
 *
 *   kiln::MetricsLogOptions options;
 *   options.layer_names = {"conv1.weight", "fc.weight"};  // CSV columns for per-layer norms
 *   absl::StatusOr<kiln::MetricsLog> log = kiln::MetricsLog::Open("run.jsonl", options);
 *   if (!log.ok()) return log.status();
 *   ...
 *   if (absl::Status s = log->AppendStep(step); !s.ok()) return s;    // buffered
 *   if (absl::Status s = log->AppendEpoch(epoch); !s.ok()) return s;  // flushed
 *   ...
 *   absl::StatusOr<std::vector<kiln::MetricsRecord>> records = kiln::ReadMetrics("run.jsonl");
 *
 * Step records are buffered and every epoch record flushes the file, so a crash loses at most
 * the records of the epoch in progress. A resumed run opens the log with
 * MetricsLogOptions::resume_after_epoch (or calls TruncateAfterEpoch), which drops every record
 * of later epochs first, so the finished file equals the one of an uninterrupted run.
 *
 * JSON Lines: one object per line, with "kind" either "step" or "epoch":
 *
 *   {"kind":"step","epoch":1,"step":7,"loss":2.1,"accuracy":0.25,"lr":0.01,"grad_norm":3.5,
 *    "layer_grad_norms":{"conv1.weight":0.8,"fc.weight":2.9}}
 *   {"kind":"epoch","epoch":1,"train_loss":0.6,"train_accuracy":0.78,"test_loss":0.5,
 *    "test_accuracy":0.81,"lr":0.01,"seconds":12.5,"images_per_second":4800}
 *
 * "grad_norm" and "layer_grad_norms" are left out when a step has none. JSON has no NaN or
 * infinity, so a non-finite value is written as null, and the reader returns null as NaN.
 *
 * CSV: steps and epochs share one table. The fixed header is
 *
 *   kind,epoch,step,loss,accuracy,lr,grad_norm,train_loss,train_accuracy,test_loss,
 *   test_accuracy,seconds,images_per_second,grad_norm/<layer>...
 *
 * with one "grad_norm/<layer>" column per entry of MetricsLogOptions::layer_names, in that order.
 * A step row leaves the epoch columns empty and an epoch row the step columns, and `lr` and
 * `epoch` are shared. A non-finite value is an empty cell, which the reader returns as NaN.
 * NOTE: in CSV an empty grad_norm cell also means "not measured", so a non-finite gradient norm
 * (total or per layer) written to CSV reads back as absent. JSON Lines keeps the difference.
 *
 * Numbers are written with the fewest digits that read back to the same double.
 */
#ifndef KILN_RUNTIME_METRICS_LOG_H_
#define KILN_RUNTIME_METRICS_LOG_H_

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln {

/// The metrics of one SGD step.
struct StepRecord {
  int epoch = 0;     ///< 1-based epoch the step belongs to.
  int64_t step = 0;  ///< Step number, counted by the caller (the trainer counts over the run).
  double loss = 0;
  double accuracy = 0;              ///< Top-1 accuracy of the step's batch, in [0, 1].
  double lr = 0;                    ///< Learning rate used by the step.
  std::optional<double> grad_norm;  ///< L2 norm of the whole gradient, when measured.
  /// L2 norm of each parameter's gradient, (parameter name, norm), in the network's order.
  std::vector<std::pair<std::string, double>> layer_grad_norms;
};

/// The metrics of one epoch. Test values are NaN when the run has no test set.
struct EpochRecord {
  int epoch = 0;  ///< 1-based.
  double train_loss = 0, train_accuracy = 0;
  double test_loss = 0, test_accuracy = 0;
  double lr = 0;  ///< Learning rate at the end of the epoch.
  double seconds = 0;
  double images_per_second = 0;
};

/// One line of a metrics log.
using MetricsRecord = std::variant<StepRecord, EpochRecord>;

/// The two file formats, chosen by the file name's extension.
enum class MetricsFormat { kJsonLines, kCsv };

/// Returns the format for `path`: ".jsonl" is JSON Lines and ".csv" is CSV (lowercase only).
/// Any other name is InvalidArgument, and the message names the path and both extensions.
absl::StatusOr<MetricsFormat> MetricsFormatForPath(const std::string& path);

struct MetricsLogOptions {
  /// Parameter names that get a "grad_norm/<name>" column in a CSV log. A step record that names
  /// a parameter outside this list is rejected. JSON Lines logs ignore the list.
  std::vector<std::string> layer_names;
  /// Unset: start a new file, replacing any file at the path. Set to k >= 0: keep the existing
  /// file's records of epochs 1..k, drop the rest (TruncateAfterEpoch) and append after them.
  std::optional<int> resume_after_epoch;
};

/// A metrics log open for appending. Records are written in the order they are appended.
/// Not thread-safe. Movable, not copyable. The destructor closes the file and ignores errors,
/// so call Close() to learn about a failed final write.
class MetricsLog {
 public:
  /// Opens `path` for writing (see MetricsLogOptions for new files and resumed runs) and writes
  /// the CSV header to a new CSV file. Errors, each naming the path: InvalidArgument for an
  /// unknown extension or an empty or duplicate layer name, the errno status of a failed open
  /// (for example NotFound when the directory is missing), and TruncateAfterEpoch's errors when
  /// resuming. Resuming a CSV log whose header differs from the one these options give is
  /// FailedPrecondition.
  static absl::StatusOr<MetricsLog> Open(const std::string& path,
                                         const MetricsLogOptions& options = {});

  MetricsLog(MetricsLog&& other) noexcept;
  MetricsLog& operator=(MetricsLog&& other) noexcept;
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  ~MetricsLog();

  /// Appends a step record to the file's buffer. InvalidArgument when a CSV log has no column
  /// for one of its layers, FailedPrecondition after Close(), and the errno status of a failed
  /// write.
  absl::Status AppendStep(const StepRecord& record);
  /// Appends an epoch record and flushes the file. Errors as for AppendStep.
  absl::Status AppendEpoch(const EpochRecord& record);
  /// Flushes and closes the file. Later appends fail, and a second Close() returns OK.
  absl::Status Close();

  const std::string& path() const { return path_; }
  MetricsFormat format() const { return format_; }

 private:
  MetricsLog(std::string path, MetricsFormat format, std::vector<std::string> layer_names,
             std::FILE* file);
  absl::Status WriteLine(const std::string& line);
  absl::Status Flush();

  std::string path_;
  MetricsFormat format_ = MetricsFormat::kJsonLines;
  std::vector<std::string> layer_names_;  // CSV per-layer columns, in header order.
  std::FILE* file_ = nullptr;             // Null once closed or moved from.
};

/// Reads every complete record of the log at `path`, in file order. A last line without a
/// newline is a record an interrupted run was writing, and is skipped. Errors: InvalidArgument
/// for an unknown extension, the errno status when the file cannot be read (NotFound when it is
/// missing), and DataLoss for a malformed line, naming the path and line number.
absl::StatusOr<std::vector<MetricsRecord>> ReadMetrics(const std::string& path);

/// Rewrites the log at `path` without the records of epochs after `epoch`, and without a last
/// line that lacks its newline. A CSV header stays. The file is replaced atomically
/// (WriteFileAtomically). `epoch` 0 keeps no records. Errors: InvalidArgument for a negative
/// `epoch`, ReadMetrics's errors, WriteFileAtomically's errors, and FailedPrecondition when `epoch`
/// > 0 and the log has no epoch record for `epoch`, because the resumed log would then miss that
/// epoch.
absl::Status TruncateAfterEpoch(const std::string& path, int epoch);

}  // namespace kiln

#endif  // KILN_RUNTIME_METRICS_LOG_H_
