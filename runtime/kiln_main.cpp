// kiln: trains, evaluates and summarizes the models compiled into this binary.
//
//   kiln train --model lenet5 --epochs 10
//   kiln eval --model lenet5 --checkpoint lenet5.safetensors
//   kiln summary --model lenet5
//   kiln import-weights --model resnet18 --from torch.safetensors --checkpoint resnet18.safetensors
//   kiln bench --model lenet5 --batch-size 64 --threads 2 --csv bench.csv --png bench.png
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench.h"
#include "fmt/core.h"
#include "runtime/atomic_file.h"
#include "runtime/compiled_model.h"
#include "runtime/idx.h"
#include "runtime/import_weights.h"
#include "runtime/network.h"
#include "runtime/plot.h"
#include "runtime/safetensors.h"
#include "runtime/summary.h"
#include "runtime/trainer.h"

ABSL_FLAG(std::string, model, "lenet5", "Compiled model to use.");
ABSL_FLAG(std::string, data, kiln::kDefaultDataDir,
          "Directory with the IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].");
ABSL_FLAG(int, epochs, 10, "Training epochs (passes over the training set).");
ABSL_FLAG(double, lr, 0.01, "SGD learning rate.");
ABSL_FLAG(double, momentum, 0.9, "SGD momentum, in [0, 1).");
ABSL_FLAG(double, weight_decay, 0.0, "L2 weight decay added to each gradient (PyTorch's SGD).");
ABSL_FLAG(uint64_t, seed, 0, "Seed for parameter initialization and shuffling.");
ABSL_FLAG(int, threads, 0, "Worker threads; 0 uses all cores.");
ABSL_FLAG(int, batch_size, 0, "Images per step; 0 uses the batch the model was compiled for.");
ABSL_FLAG(std::string, checkpoint, "",
          "Safetensors checkpoint: written after every epoch by train, read by eval and --resume.");
ABSL_FLAG(bool, resume, false, "Continue training from --checkpoint.");
ABSL_FLAG(int64_t, train_limit, 0, "Use only the first N training images; 0 uses all.");
ABSL_FLAG(int64_t, test_limit, 0, "Use only the first N test images; 0 uses all.");
ABSL_FLAG(std::string, from, "",
          "import-weights: a PyTorch state_dict saved as safetensors (torchvision names).");
ABSL_FLAG(std::string, schedules, "",
          "bench: comma-separated schedules to measure (manual, li2018, mullapudi2016, "
          "adams2019, naive); empty measures every one compiled in.");
ABSL_FLAG(double, seconds, 2.0,
          "bench: measuring time per figure and runner in each round, in seconds.");
ABSL_FLAG(int, rounds, 3,
          "bench: passes over all runners, alternating; each figure is the best of them.");
ABSL_FLAG(std::string, python, "auto",
          "bench: the Python that runs the PyTorch peers: auto (python3, then /usr/bin/python3, "
          "whichever imports torch), off, or a path.");
ABSL_FLAG(std::string, csv, "", "bench: also write the results as CSV to this file.");
ABSL_FLAG(std::string, json, "", "bench: also write the results as JSON to this file.");
ABSL_FLAG(std::string, png, "", "bench: also draw training images/s per runner as a PNG chart.");

namespace {

constexpr char kUsage[] =
    "Trains and evaluates Kiln's compiled models.\n\n"
    "Usage:\n"
    "  kiln train   [--model lenet5] [--data DIR] [--epochs N] [--lr X] [--momentum X]\n"
    "               [--weight-decay X] [--batch-size N] [--seed N] [--threads N]\n"
    "               [--train-limit N] [--test-limit N] [--checkpoint PATH [--resume]]\n"
    "  kiln eval    --checkpoint PATH [--model lenet5] [--data DIR]\n"
    "  kiln summary [--model lenet5]\n"
    "  kiln import-weights --model NAME --from STATE_DICT.safetensors --checkpoint PATH\n"
    "  kiln bench   [--model lenet5] [--batch-size N] [--threads N] [--seconds S] [--rounds N]\n"
    "               [--schedules manual,naive,...] [--python auto|off|PATH]\n"
    "               [--csv FILE] [--json FILE] [--png FILE]\n\n"
    "Flags may be spelled with '-' or '_' (--weight-decay, --weight_decay).";

int Fail(const absl::Status& status) {
  fmt::print(stderr, "kiln: {}\n", std::string(status.message()));
  return 1;
}

int Usage(const std::string& message) {
  fmt::print(stderr, "kiln: {}\nRun 'kiln --help' for usage.\n", message);
  return 2;
}

// Names of the flags given on the command line (with '_'), filled by NormalizeFlagNames.
std::set<std::string>& GivenFlags() {
  static std::set<std::string> flags;
  return flags;
}

// absl flag names cannot contain '-', so "--weight-decay=1" is rewritten to "--weight_decay=1".
std::vector<char*> NormalizeFlagNames(int argc, char** argv, std::vector<std::string>& storage) {
  storage.assign(argv, argv + argc);
  for (std::string& arg : storage) {
    if (arg.rfind("--", 0) != 0) continue;
    const size_t end = std::min(arg.find('='), arg.size());
    for (size_t i = 2; i < end; ++i) {
      if (arg[i] == '-') arg[i] = '_';
    }
    GivenFlags().insert(arg.substr(2, end - 2));
  }
  std::vector<char*> pointers;
  for (std::string& arg : storage) pointers.push_back(arg.data());
  return pointers;
}

absl::Status ValidateFlags() {
  if (absl::GetFlag(FLAGS_epochs) <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("--epochs ", absl::GetFlag(FLAGS_epochs), " must be at least 1"));
  }

  if (!std::isfinite(absl::GetFlag(FLAGS_lr)) || !(absl::GetFlag(FLAGS_lr) > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--lr ", absl::GetFlag(FLAGS_lr), " must be positive and finite"));
  }

  const double momentum = absl::GetFlag(FLAGS_momentum);
  if (!(momentum >= 0 && momentum < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--momentum ", momentum, " must be in [0, 1)"));
  }

  if (!std::isfinite(absl::GetFlag(FLAGS_weight_decay)) || !(absl::GetFlag(FLAGS_weight_decay) >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--weight-decay ", absl::GetFlag(FLAGS_weight_decay), " must be finite and not negative"));
  }

  // Halide's thread pool (Halide 14 runtime, thread_pool_common.h) uses at most 256 threads.
  if (absl::GetFlag(FLAGS_threads) > 256) {
    return absl::InvalidArgumentError(absl::StrCat("--threads ", absl::GetFlag(FLAGS_threads),
                                                   " is above Halide's limit of 256"));
  }

  if (absl::GetFlag(FLAGS_threads) < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--threads ", absl::GetFlag(FLAGS_threads), " must not be negative (0 uses all cores)"));
  }

  if (absl::GetFlag(FLAGS_batch_size) < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--batch-size ", absl::GetFlag(FLAGS_batch_size), " must not be negative"));
  }

  if (absl::GetFlag(FLAGS_train_limit) < 0 || absl::GetFlag(FLAGS_test_limit) < 0) {
    return absl::InvalidArgumentError("--train-limit and --test-limit must not be negative");
  }

  if (absl::GetFlag(FLAGS_resume) && absl::GetFlag(FLAGS_checkpoint).empty()) {
    return absl::InvalidArgumentError("--resume needs --checkpoint PATH");
  }
  return absl::OkStatus();
}

absl::StatusOr<kiln::Dataset> LoadSplit(const std::string& split, int64_t limit) {
  absl::StatusOr<kiln::Dataset> data = kiln::LoadIdxDataset(absl::GetFlag(FLAGS_data), split);
  if (!data.ok() || limit == 0 || limit >= data->count) return data;
  return kiln::TakeFirst(*data, limit);
}

// On --resume, hyperparameters not given on the command line continue with the checkpoint's
// values, so a resumed run repeats the original one exactly.
absl::Status UseSavedHyperparameters(kiln::TrainOptions& options) {
  absl::StatusOr<kiln::TensorFile> file = kiln::ReadSafetensors(options.checkpoint);
  if (!file.ok()) return file.status();
  struct Saved {
    const char* flag;
    const char* key;
    float* value;
    const char* label;  // as the start line of kiln train names it
  };
  std::vector<std::string> used;
  for (const Saved& saved :
       {Saved{"lr", "kiln.lr", &options.sgd.lr, "lr"},
        Saved{"momentum", "kiln.momentum", &options.sgd.momentum, "momentum"},
        Saved{"weight_decay", "kiln.weight_decay", &options.sgd.weight_decay, "weight decay"}}) {
    auto it = file->metadata.find(saved.key);
    if (it == file->metadata.end() || GivenFlags().count(saved.flag) > 0) {
      continue;
    }
    if (!absl::SimpleAtof(it->second, saved.value) || !std::isfinite(*saved.value)) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint '", options.checkpoint, "' has an invalid ",
                                                     saved.key, " '", it->second,
                                                     "'; pass --", saved.flag, " explicitly"));
    }
    used.push_back(absl::StrCat(saved.label, " ", it->second));
  }
  auto batch = file->metadata.find("kiln.batch_size");
  if (batch != file->metadata.end() && GivenFlags().count("batch_size") == 0) {
    if (!absl::SimpleAtoi(batch->second, &options.batch_size) || options.batch_size <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint '", options.checkpoint,
                                                     "' has an invalid kiln.batch_size '", batch->second,
                                                     "'; pass --batch-size explicitly"));
    }
    used.push_back(absl::StrCat("batch size ", batch->second));
  }
  if (GivenFlags().count("seed") > 0) {
    fmt::print("kiln: --seed is ignored on --resume: the checkpoint's seed keeps the shuffles of the "
               "original run\n");
  }
  if (!used.empty()) {
    fmt::print("kiln: resuming with the checkpoint's {}\n", absl::StrJoin(used, ", "));
  }
  return absl::OkStatus();
}

int RunTrain(kiln::Network& net) {
  absl::StatusOr<kiln::Dataset> train = LoadSplit("train", absl::GetFlag(FLAGS_train_limit));
  if (!train.ok()) return Fail(train.status());
  absl::StatusOr<kiln::Dataset> test = LoadSplit("t10k", absl::GetFlag(FLAGS_test_limit));
  if (!test.ok()) return Fail(test.status());

  const int threads = absl::GetFlag(FLAGS_threads);
  fmt::print("kiln: data {}, {} threads{}\n", absl::GetFlag(FLAGS_data),
             threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()),
             threads > 0 ? "" : " (all cores)");
  kiln::TrainOptions options;
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.sgd.lr = static_cast<float>(absl::GetFlag(FLAGS_lr));
  options.sgd.momentum = static_cast<float>(absl::GetFlag(FLAGS_momentum));
  options.sgd.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  options.seed = absl::GetFlag(FLAGS_seed);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.checkpoint = absl::GetFlag(FLAGS_checkpoint);
  options.resume = absl::GetFlag(FLAGS_resume);
  if (options.resume) {
    if (absl::Status status = UseSavedHyperparameters(options); !status.ok()) return Fail(status);
  }
  absl::StatusOr<std::vector<kiln::EpochStats>> history = kiln::Train(net, *train, &*test, options);
  if (!history.ok()) return Fail(history.status());
  if (history->empty()) return 0;
  fmt::print("final test accuracy: {:.4f} ({} images)\n", history->back().test.accuracy,
             history->back().test.count);
  return 0;
}

int RunEval(kiln::Network& net) {
  if (absl::GetFlag(FLAGS_checkpoint).empty()) return Usage("eval needs --checkpoint PATH");
  absl::StatusOr<std::map<std::string, std::string>> loaded = net.LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
  if (!loaded.ok()) return Fail(loaded.status());
  absl::StatusOr<kiln::Dataset> test = LoadSplit("t10k", absl::GetFlag(FLAGS_test_limit));
  if (!test.ok()) return Fail(test.status());
  absl::StatusOr<kiln::EvalResult> result = kiln::Evaluate(net, *test, absl::GetFlag(FLAGS_batch_size));
  if (!result.ok()) return Fail(result.status());
  fmt::print("test loss {:.4f}  test accuracy {:.4f} ({} images)\n", result->loss, result->accuracy,
             result->count);
  return 0;
}

// kiln bench: every compiled schedule of --model beside PyTorch (bench/bench.h).
int RunBench() {
  kiln::bench::Options options;
  options.model = absl::GetFlag(FLAGS_model);
  options.batch = absl::GetFlag(FLAGS_batch_size);
  options.threads = absl::GetFlag(FLAGS_threads) > 0
                        ? absl::GetFlag(FLAGS_threads)
                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  options.seconds = absl::GetFlag(FLAGS_seconds);
  options.rounds = absl::GetFlag(FLAGS_rounds);
  options.python = absl::GetFlag(FLAGS_python);
  options.peer_script = std::string(KILN_SOURCE_DIR) + "/bench/pytorch_peer.py";
  if (!absl::GetFlag(FLAGS_schedules).empty()) {
    options.schedules = absl::StrSplit(absl::GetFlag(FLAGS_schedules), ',');
  }

  // Bad output paths fail before the minutes of measuring.
  const std::string csv = absl::GetFlag(FLAGS_csv), json = absl::GetFlag(FLAGS_json),
                    png = absl::GetFlag(FLAGS_png);
  std::set<std::string> outputs;
  for (const std::string& path : {csv, json, png}) {
    if (path.empty()) continue;
    if (!outputs.insert(path).second) {
      return Usage(absl::StrCat("--csv, --json and --png name the same file '", path,
                                "'; give each its own path"));
    }
    if (absl::Status status = kiln::CheckOutputPath(path); !status.ok()) {
      return Usage(std::string(status.message()));
    }
  }

  absl::StatusOr<kiln::bench::Report> report = kiln::bench::Run(options, stderr);
  if (!report.ok()) return Usage(std::string(report.status().message()));
  fmt::print("{}", kiln::bench::FormatTable(*report));
  const bool measured = std::any_of(report->rows.begin(), report->rows.end(),
                                    [](const kiln::bench::Row& row) { return row.error.empty(); });
  if (!measured) {
    return Fail(absl::FailedPreconditionError(
        "no runner was measured, so no files were written; the table lists the reason for "
        "each (check --model, --schedules and --batch-size)"));
  }

  if (!csv.empty()) {
    absl::Status status = kiln::WriteFileAtomically(csv, kiln::bench::FormatCsv(*report));
    if (!status.ok()) return Fail(status);
  }
  if (!json.empty()) {
    absl::Status status = kiln::WriteFileAtomically(json, kiln::bench::FormatJson(*report));
    if (!status.ok()) return Fail(status);
  }
  if (!png.empty()) {
    absl::Status status = kiln::plot::WritePng(png, kiln::bench::TrainingChart(*report));
    if (!status.ok()) return Fail(status);
    std::vector<std::string> bars;
    for (const kiln::bench::Row& row : report->rows) {
      if (row.error.empty()) bars.push_back(row.runner);
    }
    fmt::print("{}: training images/s, bars left to right: {}\n", png, absl::StrJoin(bars, ", "));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  absl::FlagsUsageConfig usage_config;
  usage_config.version_string = [] { return std::string("kiln 0.1 (Halide 14)\n"); };
  absl::SetFlagsUsageConfig(usage_config);
  std::vector<std::string> storage;
  std::vector<char*> args = NormalizeFlagNames(argc, argv, storage);
  std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  constexpr char kCommands[] = "use train, eval, summary, import-weights or bench";
  if (positional.size() != 2) {
    return Usage(positional.size() < 2 ? absl::StrCat("missing command: ", kCommands)
                                       : absl::StrCat("unexpected argument '", positional[2], "'"));
  }
  const std::string command = positional[1];
  if (command != "train" && command != "eval" && command != "summary" &&
      command != "import-weights" && command != "bench") {
    return Usage(absl::StrCat("unknown command '", command, "': ", kCommands));
  }
  if (absl::Status status = ValidateFlags(); !status.ok()) return Usage(std::string(status.message()));

  if (command == "bench") return RunBench();

  const std::string name = absl::GetFlag(FLAGS_model);
  const kiln::CompiledModel* model = kiln::FindCompiledModel(name);
  if (model == nullptr) {
    return Usage(absl::StrCat("unknown model '", name, "'; compiled models: ",
                              absl::StrJoin(kiln::CompiledModelNames(), ", ")));
  }
  if (command == "summary") {
    fmt::print("{}", kiln::FormatSummary(*model));
    return 0;
  }
  if (command == "import-weights") {
    if (absl::GetFlag(FLAGS_from).empty() || absl::GetFlag(FLAGS_checkpoint).empty()) {
      return Usage("import-weights needs --from STATE_DICT.safetensors and --checkpoint PATH");
    }
    absl::Status status =
        kiln::ImportWeightsCommand(*model, absl::GetFlag(FLAGS_from), absl::GetFlag(FLAGS_checkpoint));
    return status.ok() ? 0 : Fail(status);
  }

  kiln::SetThreads(absl::GetFlag(FLAGS_threads));
  kiln::Network net(*model);
  return command == "train" ? RunTrain(net) : RunEval(net);
}
