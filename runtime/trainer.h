/** \file
 * The training loop: shuffled mini-batches, optimizer steps through the compiled functions on a
 * learning-rate schedule, an evaluation pass per epoch, progress output and per-epoch checkpoints
 * with exact resume.
 *
 *   kiln::TrainOptions options;
 *   options.epochs = 5;
 *   absl::StatusOr<std::vector<kiln::EpochStats>> h = kiln::Train(net, train, &test, options);
 */
#ifndef KILN_RUNTIME_TRAINER_H_
#define KILN_RUNTIME_TRAINER_H_

#include <cstdint>
#include <cstdio>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/augment.h"
#include "runtime/idx.h"
#include "runtime/network.h"
#include "runtime/optimizer.h"

namespace kiln {

struct TrainOptions {
  int epochs = 10;
  OptimizerOptions optimizer;
  LrSchedule schedule;  ///< Per epoch, from optimizer.lr.
  uint64_t seed = 0;      ///< Initialization and shuffling.
  int batch_size = 0;     ///< 0: the batch the model was compiled for.
  std::string checkpoint; ///< Saved after every epoch when not empty.
  /// Transfer learning: after initializing from `seed`, copy the parameters and running
  /// statistics of this checkpoint whose names and shapes match (Network::LoadPretrained).
  std::string init_from;
  /// Continue from `checkpoint`: parameters, optimizer state, epoch, seed and step counts. The
  /// hyperparameters are those of `options` (kiln train takes them from the checkpoint).
  bool resume = false;
  /// Applied to each training batch (never to the test set), with draws from (seed, epoch,
  /// sample index); no transforms: none.
  Augmentation augmentation;
  /// Metrics file (.jsonl or .csv, metrics_log.h): one record per step and per epoch. On resume
  /// the records after the checkpoint's epoch are dropped first.
  std::string metrics;
  /// Records per step the gradient norm of each conv and dense weight and of all trainable
  /// parameters together in the metrics (computed by the compiled sum of squares).
  bool log_grad_norms = false;
  /// When set: metrics.jsonl (unless `metrics` names a file), the figures and report.html
  /// (run_report.h), rewritten after every epoch.
  std::string run_dir;
  /// A NaN or infinity in a step's loss or gradients stops training with an error naming the
  /// step and the first layer affected. When set, the batch is skipped instead (no update, its
  /// running statistics undone) and counted in EpochStats::skipped_batches.
  bool skip_nonfinite = false;
  std::FILE* log = stdout;     ///< Start line and one line per epoch; nullptr for none.
  std::FILE* progress = stderr;///< Progress bar, drawn only when this is a terminal.
};

/// Loss and top-1 accuracy over a whole dataset.
struct EvalResult {
  double loss = 0;
  double accuracy = 0;
  int64_t count = 0;
};

struct EpochStats {
  int epoch = 0;  ///< 1-based.
  double train_loss = 0, train_accuracy = 0;
  EvalResult test;  ///< count is 0 when no test set was given.
  double seconds = 0;
  double images_per_second = 0;
  int skipped_batches = 0;  ///< Batches skipped for NaN or infinite values (skip_nonfinite).
};

/// Checks that `data` fits the model: image shape, and labels below the class count. `role`
/// ("training", "test") starts the error message.
absl::Status CheckDataset(const CompiledModel& model, const Dataset& data, const std::string& role);

/// Evaluates every sample of `data`, including the last partial batch. Fills `predictions`
/// (when not null) with each sample's top-1 class.
absl::StatusOr<EvalResult> Evaluate(Network& net, const Dataset& data, int batch_size = 0,
                                    std::vector<int>* predictions = nullptr);

/// Trains `net` on `train` and evaluates on `test` (may be null) after each epoch. Without
/// `resume`, parameters are initialized from options.seed first.
absl::StatusOr<std::vector<EpochStats>> Train(Network& net, const Dataset& train,
                                              const Dataset* test, const TrainOptions& options);

/// One training batch: images {count, C, H, W} and their labels.
struct TrainingBatch {
  std::vector<float> images;
  std::vector<int32_t> labels;
  int count = 0;
};

/// The batches of one epoch in `order`, each gathered and augmented on a worker thread while the
/// caller trains on the one before. Augmentation draws come from (seed, epoch, sample index), so
/// the batches do not depend on timing. `data`, `order` and `augmentation` must outlive it.
class BatchPrefetcher {
 public:
  BatchPrefetcher(const Dataset& data, const std::vector<int64_t>& order, int batch_size,
                  const Augmentation& augmentation, uint64_t seed, int epoch);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  /// Whether Next has returned every batch.
  bool done() const { return begin_ >= static_cast<int64_t>(order_.size()); }
  /// The next batch, valid until the following call; InvalidArgument when augmentation failed.
  /// Must not be called when done().
  absl::StatusOr<const TrainingBatch*> Next();

 private:
  struct Prepared {
    TrainingBatch batch;
    absl::Status status;
  };
  Prepared Prepare(int64_t begin) const;

  const Dataset& data_;
  const std::vector<int64_t>& order_;
  const int batch_size_;
  const Augmentation& augmentation_;
  const uint64_t seed_;
  const int epoch_;
  int64_t begin_ = 0;      // Of the next batch Next returns.
  TrainingBatch current_;  // The batch Next returned last.

  // One worker thread for the epoch prepares the batch after the one being trained on: a thread
  // per batch cost 11 % of LeNet-5's training speed for a flip and a crop.
  void Work();
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<Prepared> ready_;  // The prepared batch, until Next takes it.
  bool stopping_ = false;
  std::thread worker_;
};

/// One line for the start of a run: "sgd lr 0.01, momentum 0.9, weight decay 0, ...".
std::string DescribeOptimizer(const OptimizerOptions& optimizer, const LrSchedule& schedule);

/// The checkpoint metadata that records `options`' hyperparameters ("kiln.optimizer", "kiln.lr",
/// ..., "kiln.epochs"), for resuming with the same ones.
std::map<std::string, std::string> TrainingMetadata(const TrainOptions& options);

/// Returns the sample order of `epoch` for `seed`: a Fisher–Yates shuffle from a generator
/// seeded by both, so a resumed run trains on the same batches as an uninterrupted one.
std::vector<int64_t> EpochOrder(int64_t count, uint64_t seed, int epoch);

}  // namespace kiln

#endif  // KILN_RUNTIME_TRAINER_H_
