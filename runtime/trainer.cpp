#include "runtime/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <future>
#include <limits>
#include <optional>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fmt/core.h"
#include "runtime/atomic_file.h"
#include "runtime/metrics_log.h"
#include "runtime/progress.h"
#include "runtime/run_report.h"
#include "runtime/safetensors.h"

namespace kiln {
namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Copies the samples order[begin, begin + count) into contiguous batch arrays.
void GatherBatch(const Dataset& data, const std::vector<int64_t>& order, int64_t begin, int count,
                 std::vector<float>& images, std::vector<int32_t>& labels) {
  const int64_t sample = static_cast<int64_t>(data.channels) * data.height * data.width;
  images.resize(count * sample);
  labels.resize(count);
  for (int i = 0; i < count; ++i) {
    const int64_t index = order[begin + i];
    std::copy_n(data.images.begin() + index * sample, sample, images.begin() + i * sample);
    labels[i] = data.labels[index];
  }
}

}  // namespace

BatchPrefetcher::BatchPrefetcher(const Dataset& data, const std::vector<int64_t>& order,
                                 int batch_size, const Augmentation& augmentation, uint64_t seed,
                                 int epoch)
    : data_(data), order_(order), batch_size_(batch_size), augmentation_(augmentation),
      seed_(seed), epoch_(epoch) {
  if (!done()) worker_ = std::thread(&BatchPrefetcher::Work, this);
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void BatchPrefetcher::Work() {
  for (int64_t begin = 0; begin < static_cast<int64_t>(order_.size());) {
    Prepared prepared = Prepare(begin);
    begin += prepared.batch.count;
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return stopping_ || !ready_.has_value(); });
    if (stopping_) return;
    ready_ = std::move(prepared);
    changed_.notify_all();
  }
}

BatchPrefetcher::Prepared BatchPrefetcher::Prepare(int64_t begin) const {
  Prepared p;
  p.batch.count =
      static_cast<int>(std::min<int64_t>(batch_size_, static_cast<int64_t>(order_.size()) - begin));
  GatherBatch(data_, order_, begin, p.batch.count, p.batch.images, p.batch.labels);
  if (augmentation_.transforms.empty()) return p;
  std::vector<float> augmented(p.batch.images.size());
  p.status = Augment(augmentation_, p.batch.images.data(), p.batch.count, data_.channels,
                     data_.height, data_.width, order_.data() + begin, seed_, epoch_,
                     augmented.data());
  p.batch.images.swap(augmented);
  return p;
}

absl::StatusOr<const TrainingBatch*> BatchPrefetcher::Next() {
  Prepared prepared;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return ready_.has_value(); });
    prepared = std::move(*ready_);
    ready_.reset();
  }
  changed_.notify_all();
  if (!prepared.status.ok()) return prepared.status;
  current_ = std::move(prepared.batch);
  begin_ += current_.count;
  return &current_;
}

std::string DescribeOptimizer(const OptimizerOptions& o, const LrSchedule& schedule) {
  std::string text = absl::StrCat(OptimizerName(o.kind), " lr ", fmt::format("{}", o.lr));
  if (o.kind == OptimizerKind::kSgd) {
    absl::StrAppend(&text, ", momentum ", fmt::format("{}", o.momentum),
                    o.nesterov ? " (Nesterov)" : "");
  } else {
    absl::StrAppend(&text, ", betas ", fmt::format("{}", o.beta1), "/",
                    fmt::format("{}", o.beta2), ", eps ", fmt::format("{}", o.eps));
  }
  absl::StrAppend(&text, ", weight decay ", fmt::format("{}", o.weight_decay));
  if (schedule.kind != LrSchedule::Kind::kConstant || schedule.warmup_epochs > 0) {
    absl::StrAppend(&text, ", ", LrScheduleName(schedule.kind), " schedule");
    if (schedule.warmup_epochs > 0) {
      absl::StrAppend(&text, " after ", schedule.warmup_epochs, " warm-up epoch",
                      schedule.warmup_epochs == 1 ? "" : "s");
    }
  }
  if (o.max_grad_norm > 0) {
    absl::StrAppend(&text, ", gradients clipped to norm ", fmt::format("{}", o.max_grad_norm));
  }
  if (!o.lr_multipliers.empty()) {
    absl::StrAppend(&text, ", lr multipliers ", FormatLrMultipliers(o.lr_multipliers));
  }
  return text;
}

std::map<std::string, std::string> TrainingMetadata(const TrainOptions& options) {
  std::map<std::string, std::string> metadata =
      HyperparameterMetadata(options.optimizer, options.schedule);
  metadata["kiln.augment"] = options.augmentation.Describe();
  metadata["kiln.log_grad_norms"] = options.log_grad_norms ? "1" : "0";
  metadata["kiln.epochs"] = absl::StrCat(options.epochs);
  return metadata;
}

std::vector<int64_t> EpochOrder(int64_t count, uint64_t seed, int epoch) {
  std::vector<int64_t> order(count);
  for (int64_t i = 0; i < count; ++i) order[i] = i;
  std::mt19937_64 generator(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) + 1);
  for (int64_t i = count - 1; i > 0; --i) {
    // Modulo bias is below 2^-40 for any dataset that fits in memory.
    const int64_t j = static_cast<int64_t>(generator() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

absl::Status CheckDataset(const CompiledModel& model, const Dataset& data, const std::string& role) {
  if (data.channels != model.channels || data.height != model.height || data.width != model.width) {
    return absl::InvalidArgumentError(absl::StrCat(
        role, " images",
        data.images_path.empty() ? "" : absl::StrCat(" in ", data.images_path), " are ",
        data.channels, "x", data.height, "x", data.width, " but model '",
        model.name, "' takes ", model.channels, "x", model.height, "x", model.width,
        "; use a dataset of that shape or a model compiled for it"));
  }
  for (int64_t i = 0; i < data.count; ++i) {
    if (data.labels[i] < 0 || data.labels[i] >= model.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          role, " label ", data.labels[i], " of sample ", i,
          data.labels_path.empty() ? "" : absl::StrCat(" in ", data.labels_path),
          " is outside the ", model.num_classes, " classes of model '", model.name,
          "'; use a dataset with at most ", model.num_classes, " classes"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<EvalResult> Evaluate(Network& net, const Dataset& data, int batch_size,
                                    std::vector<int>* predictions) {
  const CompiledModel& model = net.model();
  if (absl::Status s = CheckDataset(model, data, "evaluation"); !s.ok()) return s;
  if (batch_size <= 0) batch_size = model.batch_size;
  batch_size = static_cast<int>(std::min<int64_t>(batch_size, data.count));

  const int64_t sample = static_cast<int64_t>(data.channels) * data.height * data.width;
  std::vector<float> logits(static_cast<size_t>(batch_size) * model.num_classes);
  EvalResult result;
  if (predictions != nullptr) predictions->assign(data.count, 0);
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t begin = 0; begin < data.count; begin += batch_size) {
    const int count = static_cast<int>(std::min<int64_t>(batch_size, data.count - begin));
    absl::Status status = net.Forward(data.images.data() + begin * sample, count, logits.data());
    if (!status.ok()) return status;
    for (int i = 0; i < count; ++i) {
      const float* z = logits.data() + static_cast<size_t>(i) * model.num_classes;
      const int label = data.labels[begin + i];
      int best = 0;
      float max = z[0];
      for (int k = 1; k < model.num_classes; ++k) {
        if (z[k] > max) max = z[k], best = k;
      }
      double sum = 0;
      for (int k = 0; k < model.num_classes; ++k) sum += std::exp(static_cast<double>(z[k]) - max);
      loss_sum += max + std::log(sum) - z[label];
      correct += best == label;
      if (predictions != nullptr) (*predictions)[begin + i] = best;
    }
  }
  result.count = data.count;
  result.loss = loss_sum / data.count;
  result.accuracy = static_cast<double>(correct) / data.count;
  return result;
}

namespace {

// Returns the end of a message about a stopped run: what became of the checkpoint at `path`.
std::string CheckpointKept(const std::string& path) {
  if (path.empty()) return "";
  std::error_code error;
  return std::filesystem::exists(path, error)
             ? absl::StrCat("; the checkpoint '", path, "' is left as it was")
             : absl::StrCat("; no checkpoint was written to '", path, "'");
}

}  // namespace

absl::StatusOr<std::vector<EpochStats>> Train(Network& net, const Dataset& train,
                                              const Dataset* test, const TrainOptions& options) {
  const CompiledModel& model = net.model();
  if (absl::Status s = CheckDataset(model, train, "training"); !s.ok()) return s;
  if (test != nullptr) {
    if (absl::Status s = CheckDataset(model, *test, "test"); !s.ok()) return s;
  }
  const int batch_size = static_cast<int>(std::min<int64_t>(
      options.batch_size > 0 ? options.batch_size : model.batch_size, train.count));
  uint64_t seed = options.seed;
  int first_epoch = 0;
  if (options.batch_size > train.count && options.log != nullptr) {
    fmt::print(options.log, "kiln: batch size {} is larger than the {} training images; using {}\n",
               options.batch_size, train.count, batch_size);
  }
  if (absl::Status s = CheckOptimizerOptions(options.optimizer, model.params); !s.ok()) return s;
  if (absl::Status s = CheckLrSchedule(options.schedule, options.epochs); !s.ok()) return s;
  if (!options.checkpoint.empty()) {
    // Checked now, so a bad path fails before an epoch of work rather than after it.
    if (absl::Status s = CheckSafetensorsDestination(options.checkpoint); !s.ok()) return s;
    // Creates and removes a probe file: the static checks pass paths such as /proc/x.
    if (absl::Status s = CheckOutputPath(options.checkpoint); !s.ok()) return s;
  }

  if (options.resume) {
    if (options.checkpoint.empty()) {
      return absl::InvalidArgumentError("resume needs a checkpoint path; pass --checkpoint PATH");
    }
    absl::StatusOr<std::map<std::string, std::string>> metadata = net.LoadCheckpoint(options.checkpoint);
    if (!metadata.ok()) return metadata.status();
    // The run continues with the checkpoint's seed, so its shuffles match the original run.
    auto epoch = metadata->find("kiln.epoch");
    auto saved_seed = metadata->find("kiln.seed");
    if (epoch == metadata->end() || !absl::SimpleAtoi(epoch->second, &first_epoch) ||
        first_epoch < 0 || saved_seed == metadata->end() ||
        !absl::SimpleAtoi(saved_seed->second, &seed)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint '", options.checkpoint,
          "' has no valid kiln.epoch and kiln.seed metadata; resume needs a checkpoint saved by "
          "kiln train"));
    }
  } else {
    net.InitParams(seed);
    if (!options.init_from.empty()) {
      absl::StatusOr<PretrainedReport> report = net.LoadPretrained(options.init_from);
      if (!report.ok()) return report.status();
      if (options.log != nullptr) {
        fmt::print(options.log, "kiln: initialized {} tensors from {}{}\n", report->loaded.size(),
                   options.init_from,
                   report->mismatched.empty()
                       ? ""
                       : absl::StrCat("; newly initialized (shape differs): ",
                                      absl::StrJoin(report->mismatched, ", ")));
      }
    }
  }

  if (options.log != nullptr) {
    fmt::print(options.log,
               "kiln: training {} ({} schedule, {} parameters) on {} images, testing on {}; "
               "batch {}, {}, seed {}{}{}\n",
               model.name, model.schedule, model.num_params, train.count,
               test != nullptr ? test->count : 0, batch_size,
               DescribeOptimizer(options.optimizer, options.schedule), seed,
               options.augmentation.transforms.empty()
                   ? ""
                   : absl::StrCat(", augmentation ", options.augmentation.Describe()),
               options.resume ? absl::StrCat(", resuming after epoch ", first_epoch) : "");
    std::fflush(options.log);
  }

  if (options.resume && first_epoch >= options.epochs && options.log != nullptr) {
    fmt::print(options.log, "kiln: the checkpoint already has {} epochs (--epochs {}); nothing to train\n",
               first_epoch, options.epochs);
  }

  // Metrics and the run directory.
  std::string metrics_path = options.metrics;
  if (!options.run_dir.empty()) {
    std::error_code error;
    std::filesystem::create_directories(options.run_dir, error);
    if (error) {
      return absl::PermissionDeniedError(absl::StrCat("cannot create run directory '",
                                                      options.run_dir, "': ", error.message(),
                                                      "; choose another --run-dir"));
    }
    if (metrics_path.empty()) metrics_path = options.run_dir + "/metrics.jsonl";
  }
  std::optional<MetricsLog> metrics;
  if (!metrics_path.empty()) {
    MetricsLogOptions log_options;
    for (const ParamInfo& p : model.params) {
      if (p.shape.size() >= 2) log_options.layer_names.push_back(p.name);
    }
    if (options.resume && std::filesystem::exists(metrics_path)) {
      log_options.resume_after_epoch = first_epoch;
    }
    absl::StatusOr<MetricsLog> opened = MetricsLog::Open(metrics_path, log_options);
    if (!opened.ok()) return opened.status();
    metrics.emplace(*std::move(opened));
  }
  const std::vector<std::pair<std::string, std::string>> config = {
      {"model", absl::StrCat(model.name, " (", model.schedule, " schedule, ", model.num_params,
                             " parameters)")},
      {"training images", absl::StrCat(train.count)},
      {"test images", absl::StrCat(test != nullptr ? test->count : 0)},
      {"epochs", absl::StrCat(options.epochs)},
      {"batch size", absl::StrCat(batch_size)},
      {"optimizer", DescribeOptimizer(options.optimizer, options.schedule)},
      {"augmentation", options.augmentation.Describe()},
      {"seed", absl::StrCat(seed)}};

  std::vector<EpochStats> history;
  int64_t step_count = static_cast<int64_t>(first_epoch) *
                       ((train.count + batch_size - 1) / batch_size);
  for (int epoch = first_epoch; epoch < options.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    const float lr = static_cast<float>(
        ScheduledLr(options.schedule, options.optimizer.lr, epoch, options.epochs));
    const std::vector<int64_t> order = EpochOrder(train.count, seed, epoch);
    ProgressBar bar(options.progress, fmt::format("epoch {}/{}", epoch + 1, options.epochs), train.count);
    double loss_sum = 0;
    int64_t correct = 0;
    int64_t trained = 0;  // Images of the batches not skipped.
    int skipped = 0;
    FloatArray statistics;  // Running statistics before the step, to undo a skipped one.
    BatchPrefetcher batches(train, order, batch_size, options.augmentation, seed, epoch);
    for (int64_t begin = 0; begin < train.count; begin += batch_size) {
      absl::StatusOr<const TrainingBatch*> batch = batches.Next();
      if (!batch.ok()) return batch.status();
      const int count = (*batch)->count;
      if (options.skip_nonfinite) statistics = net.buffers();
      absl::StatusOr<BatchResult> step =
          net.Backward((*batch)->images.data(), (*batch)->labels.data(), count);
      if (!step.ok()) return step.status();
      StepRecord record;
      absl::StatusOr<std::vector<double>> norms;
      if (options.log_grad_norms) {
        norms = net.GradientNorms();
        if (!norms.ok()) return norms.status();
      }
      // A NaN or infinity stops the run before the update, so the parameters and the last
      // checkpoint stay as they were, or skips the batch.
      absl::Status finite = net.CheckFinite(*step, options.log_grad_norms ? &*norms : nullptr);
      if (!finite.ok() && !options.skip_nonfinite) {
        return absl::DataLossError(absl::StrCat(
            finite.message(), ", or pass --skip-nonfinite to skip such batches. Training stopped "
            "in epoch ", epoch + 1, " at learning rate ", lr, CheckpointKept(options.checkpoint),
            "."));
      }
      if (!finite.ok()) {
        net.buffers() = statistics;
        ++skipped;
        continue;
      }
      if (options.log_grad_norms) {
        double squares = 0;
        for (size_t i = 0; i < norms->size(); ++i) {
          const ParamInfo& p = model.params[i];
          if (!p.trainable) continue;
          squares += (*norms)[i] * (*norms)[i];
          // Per layer: the weights of conv and dense layers (2-D and up), not biases or
          // normalization scales.
          if (p.shape.size() >= 2) record.layer_grad_norms.emplace_back(p.name, (*norms)[i]);
        }
        record.grad_norm = std::sqrt(squares);
      }
      absl::StatusOr<UpdateStats> update = net.Update(options.optimizer, lr);
      if (!update.ok()) return update.status();
      if (options.optimizer.max_grad_norm > 0) record.grad_norm = update->grad_norm;
      loss_sum += static_cast<double>(step->loss) * count;
      correct += step->correct;
      trained += count;
      bar.Update(begin + count, loss_sum / trained);
      ++step_count;
      if (metrics) {
        record.epoch = epoch + 1;
        record.step = step_count;
        record.loss = step->loss;
        record.accuracy = static_cast<double>(step->correct) / count;
        record.lr = lr;
        if (absl::Status s = metrics->AppendStep(record); !s.ok()) return s;
      }
    }
    bar.Finish();

    EpochStats stats;
    stats.epoch = epoch + 1;
    stats.seconds = Seconds(start);
    stats.images_per_second = train.count / stats.seconds;
    stats.skipped_batches = skipped;
    if (trained == 0) {
      return absl::DataLossError(absl::StrCat(
          "every batch of epoch ", epoch + 1, " had NaN or infinite values and was skipped; check "
          "the inputs, or lower the learning rate (now ", lr, ")"));
    }
    stats.train_loss = loss_sum / trained;
    stats.train_accuracy = static_cast<double>(correct) / trained;
    if (test != nullptr) {
      absl::StatusOr<EvalResult> result = Evaluate(net, *test, batch_size);
      if (!result.ok()) return result.status();
      stats.test = *result;
    }
    // Finite steps can still end in parameters that overflow on the test set (with
    // skip_nonfinite, say). Such an epoch must not replace the last good checkpoint.
    if (!std::isfinite(stats.train_loss) || (test != nullptr && !std::isfinite(stats.test.loss))) {
      return absl::DataLossError(absl::StrCat(
          "epoch ", epoch + 1, " diverged: train loss ", stats.train_loss, ", test loss ",
          stats.test.loss, " at learning rate ", lr, "; lower the learning rate",
          CheckpointKept(options.checkpoint)));
    }
    if (metrics) {
      // Before the checkpoint: a resumed run keeps the records up to the checkpoint's epoch.
      EpochRecord record;
      record.epoch = stats.epoch;
      record.train_loss = stats.train_loss;
      record.train_accuracy = stats.train_accuracy;
      const double nan = std::numeric_limits<double>::quiet_NaN();
      record.test_loss = test != nullptr ? stats.test.loss : nan;
      record.test_accuracy = test != nullptr ? stats.test.accuracy : nan;
      record.lr = lr;
      record.seconds = stats.seconds;
      record.images_per_second = stats.images_per_second;
      if (absl::Status s = metrics->AppendEpoch(record); !s.ok()) return s;
    }
    if (!options.checkpoint.empty()) {
      std::map<std::string, std::string> metadata = TrainingMetadata(options);
      metadata["kiln.epoch"] = absl::StrCat(epoch + 1);
      metadata["kiln.seed"] = absl::StrCat(seed);
      metadata["kiln.batch_size"] = absl::StrCat(batch_size);
      absl::Status saved = net.SaveCheckpoint(options.checkpoint, metadata);
      if (!saved.ok()) return saved;
    }
    if (options.log != nullptr) {
      fmt::print(options.log,
                 "epoch {:>3}/{}  train loss {:.4f}  train acc {:.4f}  test loss {:.4f}  test acc "
                 "{:.4f}  {:.1f} s  {:.0f} img/s\n",
                 stats.epoch, options.epochs, stats.train_loss, stats.train_accuracy,
                 stats.test.loss, stats.test.accuracy, stats.seconds, stats.images_per_second);
      if (skipped > 0) {
        fmt::print(options.log, "           skipped {} batch{} with NaN or infinite values\n",
                   skipped, skipped == 1 ? "" : "es");
      }
      std::fflush(options.log);
    }
    history.push_back(stats);
    if (!options.run_dir.empty()) {
      absl::Status s = WriteRunReport({options.run_dir, metrics_path, &net, test, config});
      if (!s.ok()) return s;
    }
  }
  if (metrics) {
    if (absl::Status s = metrics->Close(); !s.ok()) return s;
  }
  return history;
}

}  // namespace kiln
