/** \file
 * The training loop: shuffled mini-batches, SGD steps through the compiled functions, an
 * evaluation pass per epoch, progress output and per-epoch checkpoints with exact resume.
 *
 *   kiln::TrainOptions options;
 *   options.epochs = 5;
 *   absl::StatusOr<std::vector<kiln::EpochStats>> h = kiln::Train(net, train, &test, options);
 */
#ifndef KILN_RUNTIME_TRAINER_H_
#define KILN_RUNTIME_TRAINER_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/idx.h"
#include "runtime/network.h"

namespace kiln {

struct TrainOptions {
  int epochs = 10;
  SgdOptions sgd;
  uint64_t seed = 0;      ///< Initialization and shuffling.
  int batch_size = 0;     ///< 0: the batch the model was compiled for.
  std::string checkpoint; ///< Saved after every epoch when not empty.
  bool resume = false;    ///< Continue from `checkpoint` (parameters, momentum, epoch, seed).
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
};

/// Checks that `data` fits the model: image shape, and labels below the class count. `role`
/// ("training", "test") starts the error message.
absl::Status CheckDataset(const CompiledModel& model, const Dataset& data, const std::string& role);

/// Evaluates every sample of `data`, including the last partial batch.
absl::StatusOr<EvalResult> Evaluate(Network& net, const Dataset& data, int batch_size = 0);

/// Trains `net` on `train` and evaluates on `test` (may be null) after each epoch. Without
/// `resume`, parameters are initialized from options.seed first.
absl::StatusOr<std::vector<EpochStats>> Train(Network& net, const Dataset& train,
                                              const Dataset* test, const TrainOptions& options);

/// Returns the sample order of `epoch` for `seed`: a Fisher–Yates shuffle from a generator
/// seeded by both, so a resumed run trains on the same batches as an uninterrupted one.
std::vector<int64_t> EpochOrder(int64_t count, uint64_t seed, int epoch);

}  // namespace kiln

#endif  // KILN_RUNTIME_TRAINER_H_
