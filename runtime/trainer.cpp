#include "runtime/trainer.h"

#include <chrono>
#include <cmath>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "fmt/core.h"
#include "runtime/progress.h"
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

absl::StatusOr<EvalResult> Evaluate(Network& net, const Dataset& data, int batch_size) {
  const CompiledModel& model = net.model();
  if (absl::Status s = CheckDataset(model, data, "evaluation"); !s.ok()) return s;
  if (batch_size <= 0) batch_size = model.batch_size;
  batch_size = static_cast<int>(std::min<int64_t>(batch_size, data.count));

  const int64_t sample = static_cast<int64_t>(data.channels) * data.height * data.width;
  std::vector<float> logits(static_cast<size_t>(batch_size) * model.num_classes);
  EvalResult result;
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
    }
  }
  result.count = data.count;
  result.loss = loss_sum / data.count;
  result.accuracy = static_cast<double>(correct) / data.count;
  return result;
}

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
  if (!options.checkpoint.empty()) {
    // Checked now, so a bad path fails before an epoch of work rather than after it.
    if (absl::Status s = CheckSafetensorsDestination(options.checkpoint); !s.ok()) return s;
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
  }

  if (options.log != nullptr) {
    fmt::print(options.log,
               "kiln: training {} ({} schedule, {} parameters) on {} images, testing on {}; "
               "batch {}, lr {}, momentum {}, weight decay {}, seed {}{}\n",
               model.name, model.schedule, model.num_params, train.count,
               test != nullptr ? test->count : 0, batch_size, options.sgd.lr, options.sgd.momentum,
               options.sgd.weight_decay, seed,
               options.resume ? absl::StrCat(", resuming after epoch ", first_epoch) : "");
    std::fflush(options.log);
  }

  if (options.resume && first_epoch >= options.epochs && options.log != nullptr) {
    fmt::print(options.log, "kiln: the checkpoint already has {} epochs (--epochs {}); nothing to train\n",
               first_epoch, options.epochs);
  }

  std::vector<EpochStats> history;
  std::vector<float> images;
  std::vector<int32_t> labels;
  for (int epoch = first_epoch; epoch < options.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int64_t> order = EpochOrder(train.count, seed, epoch);
    ProgressBar bar(options.progress, fmt::format("epoch {}/{}", epoch + 1, options.epochs), train.count);
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t begin = 0; begin < train.count; begin += batch_size) {
      const int count = static_cast<int>(std::min<int64_t>(batch_size, train.count - begin));
      GatherBatch(train, order, begin, count, images, labels);
      absl::StatusOr<BatchResult> step = net.Backward(images.data(), labels.data(), count);
      if (!step.ok()) return step.status();
      if (absl::Status s = net.Update(options.sgd); !s.ok()) return s;
      loss_sum += static_cast<double>(step->loss) * count;
      correct += step->correct;
      bar.Update(begin + count, loss_sum / (begin + count));
    }
    bar.Finish();

    EpochStats stats;
    stats.epoch = epoch + 1;
    stats.seconds = Seconds(start);
    stats.images_per_second = train.count / stats.seconds;
    stats.train_loss = loss_sum / train.count;
    stats.train_accuracy = static_cast<double>(correct) / train.count;
    if (!std::isfinite(stats.train_loss)) {
      // NOTE: detected per epoch, not per step, and the checkpoint is not written, so the last
      // good one stays.
      return absl::FailedPreconditionError(absl::StrCat(
          "training diverged in epoch ", epoch + 1, ": the mean loss is ", stats.train_loss,
          "; lower the learning rate (now ", options.sgd.lr, ")"));
    }
    if (test != nullptr) {
      absl::StatusOr<EvalResult> result = Evaluate(net, *test, batch_size);
      if (!result.ok()) return result.status();
      stats.test = *result;
    }
    if (!options.checkpoint.empty()) {
      absl::Status saved = net.SaveCheckpoint(
          options.checkpoint, {{"kiln.epoch", absl::StrCat(epoch + 1)},
                               {"kiln.seed", absl::StrCat(seed)},
                               {"kiln.batch_size", absl::StrCat(batch_size)},
                               // fmt writes the shortest text that reads back to the same float.
                               {"kiln.lr", fmt::format("{}", options.sgd.lr)},
                               {"kiln.momentum", fmt::format("{}", options.sgd.momentum)},
                               {"kiln.weight_decay", fmt::format("{}", options.sgd.weight_decay)}});
      if (!saved.ok()) return saved;
    }
    if (options.log != nullptr) {
      fmt::print(options.log,
                 "epoch {:>3}/{}  train loss {:.4f}  train acc {:.4f}  test loss {:.4f}  test acc "
                 "{:.4f}  {:.1f} s  {:.0f} img/s\n",
                 stats.epoch, options.epochs, stats.train_loss, stats.train_accuracy,
                 stats.test.loss, stats.test.accuracy, stats.seconds, stats.images_per_second);
      std::fflush(options.log);
    }
    history.push_back(stats);
  }
  return history;
}

}  // namespace kiln
