// kiln: trains, evaluates and summarizes the models compiled into this binary.
//
//   kiln train --model lenet5 --epochs 10
//   kiln eval --model lenet5 --checkpoint lenet5.safetensors
//   kiln summary --model lenet5
//   kiln import-weights --model resnet18 --from torch.safetensors --checkpoint resnet18.safetensors
//   kiln bench --model lenet5 --batch-size 64 --threads 2 --csv bench.csv --png bench.png
#include <algorithm>
#include <cctype>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench.h"
#include "fmt/core.h"
#include "runtime/atomic_file.h"
#include "runtime/augment.h"
#include "runtime/compiled_model.h"
#include "runtime/idx.h"
#include "runtime/import_weights.h"
#include "runtime/metrics_log.h"
#include "runtime/network.h"
#include "runtime/onnx_export.h"
#include "runtime/plot.h"
#include "runtime/run_report.h"
#include "runtime/safetensors.h"
#include "runtime/summary.h"
#include "runtime/trainer.h"

ABSL_FLAG(std::string, model, "lenet5", "Compiled model to use.");
ABSL_FLAG(std::string, data, kiln::kDefaultDataDir,
          "Directory with the IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].");
ABSL_FLAG(int, epochs, 10, "Training epochs (passes over the training set).");
ABSL_FLAG(std::string, optimizer, "sgd",
          "sgd, adam or adamw (torch.optim.SGD, Adam and AdamW).");
ABSL_FLAG(double, lr, 0.01, "Base learning rate (before --lr-schedule and --lr-mult).");
ABSL_FLAG(double, momentum, 0.9, "SGD momentum, in [0, 1).");
ABSL_FLAG(bool, nesterov, false, "SGD: Nesterov momentum.");
ABSL_FLAG(double, weight_decay, 0.0,
          "Weight decay: added to each gradient (sgd, adam) or decoupled (adamw).");
ABSL_FLAG(double, beta1, 0.9, "Adam/AdamW: decay of the first moment, in [0, 1).");
ABSL_FLAG(double, beta2, 0.999, "Adam/AdamW: decay of the second moment, in [0, 1).");
ABSL_FLAG(double, eps, 1e-8, "Adam/AdamW: term added to the denominator.");
ABSL_FLAG(double, max_grad_norm, 0.0,
          "Clip the gradients to this global L2 norm before each step (clip_grad_norm_); 0: off.");
ABSL_FLAG(std::string, lr_mult, "",
          "Per-layer learning-rate factors, e.g. conv1=0.1,conv2=0.5 (layer or block names).");
ABSL_FLAG(std::string, lr_schedule, "constant",
          "Learning rate per epoch: constant, step (x --lr-gamma every --lr-step-size epochs) or "
          "cosine (CosineAnnealingLR towards --min-lr over the epochs after the warm-up).");
ABSL_FLAG(int, lr_step_size, 30, "step schedule: epochs between decays.");
ABSL_FLAG(double, lr_gamma, 0.1, "step schedule: factor per decay.");
ABSL_FLAG(double, min_lr, 0.0, "cosine schedule: the final learning rate.");
ABSL_FLAG(int, warmup_epochs, 0,
          "Epochs of linear warm-up from --warmup-start-factor x lr before the schedule.");
ABSL_FLAG(double, warmup_start_factor, 0.1,
          "Learning-rate factor of the first warm-up epoch, in (0, 1].");
ABSL_FLAG(uint64_t, seed, 0, "Seed for parameter initialization and shuffling.");
ABSL_FLAG(int, threads, 0, "Worker threads; 0 uses all cores.");
ABSL_FLAG(int, batch_size, 0, "Images per step; 0 uses the batch the model was compiled for.");
ABSL_FLAG(std::string, checkpoint, "",
          "Safetensors checkpoint: written after every epoch by train, read by eval and --resume.");
ABSL_FLAG(bool, resume, false, "Continue training from --checkpoint.");
ABSL_FLAG(bool, overwrite, false,
          "train: replace an existing --checkpoint, --metrics log or --run-dir with a new run "
          "instead of refusing to.");
ABSL_FLAG(int64_t, train_limit, 0, "Use only the first N training images; 0 uses all.");
ABSL_FLAG(std::string, classes, "",
          "Train and test on these classes only, relabelled 0, 1, ... in the order listed: e.g. "
          "0-4 or 5,6,7,8,9 (at most as many classes as the model's outputs).");
ABSL_FLAG(int64_t, train_per_class, 0,
          "With --classes: the first N training images of each class; 0 uses all.");
ABSL_FLAG(std::string, augment, "",
          "Training-set augmentation, e.g. hflip(p=0.5),resized_crop(scale=0.08:1),"
          "perspective(distortion=0.5,p=0.5),jitter(brightness=0.4,contrast=0.4),"
          "erase(p=0.5); none by default. Never applied to the test set.");
ABSL_FLAG(std::string, init_from, "",
          "Transfer learning: start from this checkpoint's parameters where names and shapes "
          "match (a new classifier head keeps its fresh initialization).");
ABSL_FLAG(std::string, metrics, "",
          "Write per-step and per-epoch metrics to this .jsonl or .csv file.");
ABSL_FLAG(bool, skip_nonfinite, false,
          "Skip (and count) batches whose loss or gradients are NaN or infinite, instead "
          "of stopping with an error that names the step and the first layer affected.");
ABSL_FLAG(bool, log_grad_norms, false,
          "Record each conv and dense layer's weight-gradient norm per step in the metrics.");
ABSL_FLAG(std::string, run_dir, "",
          "Directory for metrics.jsonl, loss/accuracy/gradient/confusion/filter plots and "
          "report.html, rewritten after every epoch.");
ABSL_FLAG(std::string, output, "",
          "augment-preview and plot-runs: the PNG file to write; export: the model file.");
ABSL_FLAG(std::string, format, "onnx", "export: the file format; onnx (opset 13) is the one.");
ABSL_FLAG(std::string, runs, "",
          "plot-runs: NAME=METRICS_FILE pairs, comma-separated (e.g. plain=a/metrics.jsonl).");
ABSL_FLAG(std::string, metric, "accuracy", "plot-runs: accuracy, loss or layer-norms.");
ABSL_FLAG(int, images, 8, "augment-preview: rows (training images).");
ABSL_FLAG(int, variants, 7, "augment-preview: augmented draws per image.");
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
    "  kiln train   [--model lenet5] [--data DIR] [--epochs N] [--batch-size N] [--seed N]\n"
    "               [--optimizer sgd|adam|adamw] [--lr X] [--momentum X] [--nesterov]\n"
    "               [--weight-decay X] [--beta1 X] [--beta2 X] [--eps X] [--max-grad-norm X]\n"
    "               [--lr-mult LAYER=X,...] [--lr-schedule constant|step|cosine]\n"
    "               [--lr-step-size N] [--lr-gamma X] [--min-lr X] [--warmup-epochs N]\n"
    "               [--warmup-start-factor X] [--threads N] [--augment SPEC]\n"
    "               [--classes 0-4 [--train-per-class N]] [--init-from CHECKPOINT]\n"
    "               [--metrics FILE.jsonl|csv] [--log-grad-norms] [--run-dir DIR]\n"
    "               [--skip-nonfinite] [--overwrite]\n"
    "               [--train-limit N] [--test-limit N] [--checkpoint PATH [--resume]]\n"
    "  kiln eval    --checkpoint PATH [--model lenet5] [--data DIR] [--classes LIST]\n"
    "               [--test-limit N] [--batch-size N] [--threads N]\n"
    "  kiln summary [--model lenet5]\n"
    "  kiln augment-preview --augment SPEC --output GRID.png [--images N] [--variants N]\n"
    "  kiln plot-runs --runs NAME=METRICS,... --metric accuracy|loss|layer-norms --output F.png\n"
    "  kiln import-weights --model NAME --from STATE_DICT.safetensors --checkpoint PATH\n"
    "  kiln export  --checkpoint PATH --output MODEL.onnx [--model lenet5] [--format onnx]\n"
    "               [--batch-size N (0: symbolic)]\n"
    "  kiln bench   [--model lenet5] [--batch-size N] [--threads N] [--seconds S] [--rounds N]\n"
    "               [--schedules manual,naive,...] [--python auto|off|PATH]\n"
    "               [--csv FILE] [--json FILE] [--png FILE] [--augment SPEC]\n\n"
    "Flags may be spelled with '-' or '_' (--weight-decay, --weight_decay).\n"
    "Exit status: 0 on success, 2 for a bad command line (an unknown flag, a value out of\n"
    "range, an option of another command), 1 for any other error (a missing or damaged file,\n"
    "training stopped by a NaN).";

// Returns whether --help, -help, -h or --helpfull was given. kiln then prints PrintHelp's text
// and exits 0, because absl's own --help exits 1 and lists the flags under a build path.
bool HelpRequested(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (arg == "--help" || arg == "-help" || arg == "-h" || arg == "--helpfull") return true;
  }
  return false;
}

// Returns whether `flag` is defined in this file, not by absl itself.
bool IsKilnFlag(const absl::CommandLineFlag& flag) {
  return absl::EndsWith(flag.Filename(), "kiln_main.cpp");
}

// Returns `name` as users write it: "weight_decay" becomes "weight-decay".
std::string Dashed(std::string name) {
  std::replace(name.begin(), name.end(), '_', '-');
  return name;
}

void PrintHelp() {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (IsKilnFlag(*flag)) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(), [](const auto* a, const auto* b) {
    return a->Name() < b->Name();
  });
  fmt::print("{}\n\nFlags:\n", kUsage);
  for (const absl::CommandLineFlag* flag : flags) {
    const std::string value = flag->DefaultValue();
    fmt::print("  --{} (default: {})\n      {}\n", Dashed(std::string(flag->Name())),
               value.empty() ? "\"\"" : value, flag->Help());
  }
}

int Fail(const absl::Status& status) {
  std::fflush(stdout);  // so the lines printed before stay before the error when piped
  fmt::print(stderr, "kiln: {}\n", std::string(status.message()));
  return 1;
}

int Usage(const std::string& message) {
  std::fflush(stdout);
  fmt::print(stderr, "kiln: {}\nRun 'kiln --help' for usage.\n", message);
  return 2;
}

// Reports `status` as a usage error (exit 2) for InvalidArgument, or as a failure (exit 1).
int FailOrUsage(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kInvalidArgument) {
    return Usage(std::string(status.message()));
  }
  return Fail(status);
}

// Names of the flags given on the command line (with '_', and "nesterov" for --nonesterov),
// filled by NormalizeFlagNames.
std::set<std::string>& GivenFlags() {
  static std::set<std::string> flags;
  return flags;
}

// Returns where the flag name starts in `arg`: 2 for "--flag", 1 for "-flag" (absl takes both),
// 0 when `arg` is no flag ("train", "-1").
size_t FlagNameStart(const std::string& arg) {
  const size_t start = arg.rfind("--", 0) == 0 ? 2 : 1;
  const bool flag = arg.size() > start && arg[0] == '-' &&
                    std::isalpha(static_cast<unsigned char>(arg[start]));
  return flag ? start : 0;
}

// absl flag names cannot contain '-', so "--weight-decay=1" is rewritten to "--weight_decay=1".
std::vector<char*> NormalizeFlagNames(int argc, char** argv, std::vector<std::string>& storage) {
  storage.assign(argv, argv + argc);
  for (std::string& arg : storage) {
    if (arg == "--") break;  // the rest is positional
    const size_t start = FlagNameStart(arg);
    if (start == 0) continue;
    const size_t end = std::min(arg.find('='), arg.size());
    for (size_t i = start; i < end; ++i) {
      if (arg[i] == '-') arg[i] = '_';
    }
    std::string name = arg.substr(start, end - start);
    // --noresume gives the flag "resume" too.
    const absl::CommandLineFlag* negated =
        name.rfind("no", 0) == 0 ? absl::FindCommandLineFlag(name.substr(2)) : nullptr;
    if (absl::FindCommandLineFlag(name) == nullptr && negated != nullptr &&
        negated->IsOfType<bool>()) {
      name = name.substr(2);
    }
    GivenFlags().insert(name);
  }
  std::vector<char*> pointers;
  for (std::string& arg : storage) pointers.push_back(arg.data());
  return pointers;
}

// Returns the flag of this program named `name`, or null. absl's own flags (but --version) are
// left out, because --flagfile and --fromenv read values that no check here covers, and a FIFO
// given to --flagfile would block.
absl::CommandLineFlag* KilnFlag(const std::string& name) {
  absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  if (flag == nullptr || name == "version") return flag;
  return IsKilnFlag(*flag) ? flag : nullptr;
}

// Checks flag names and values before absl::ParseCommandLine, which exits with status 1 on an
// unknown flag or a bad value, so that these are usage errors (status 2) like the others.
// `args` have '_' in flag names (NormalizeFlagNames).
absl::Status CheckFlagSyntax(const std::vector<char*>& args) {
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string arg = args[i];
    if (arg == "--") break;
    const size_t start = FlagNameStart(arg);
    if (start == 0) continue;
    const std::string body = arg.substr(start);
    const size_t equals = body.find('=');
    const std::string name = body.substr(0, equals);
    absl::CommandLineFlag* flag = KilnFlag(name);
    // Boolean flags may be given as --noresume.
    absl::CommandLineFlag* negated = name.rfind("no", 0) == 0 ? KilnFlag(name.substr(2)) : nullptr;
    const std::string dashed = Dashed(name);
    if (flag == nullptr && (negated == nullptr || !negated->IsOfType<bool>())) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", dashed));
    }
    if (flag == nullptr || (flag->IsOfType<bool>() && equals == std::string::npos)) {
      continue;  // absl reads "--flag" as true and "--noflag" as false
    }
    std::string value;
    if (equals != std::string::npos) {
      value = body.substr(equals + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", dashed, " needs a value"));
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("--", dashed, " '", value, "': ", error));
    }
  }
  return absl::OkStatus();
}

// Returns the flags each command reads. Any other flag of this file given to it is an error.
const std::map<std::string, std::set<std::string>>& CommandFlags() {
  static const auto* flags = new std::map<std::string, std::set<std::string>>{
      {"train",
       {"model", "data", "epochs", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
        "beta1", "beta2", "eps", "max_grad_norm", "lr_mult", "lr_schedule", "lr_step_size",
        "lr_gamma", "min_lr", "warmup_epochs", "warmup_start_factor", "seed", "threads",
        "batch_size", "checkpoint", "resume", "overwrite", "train_limit", "test_limit", "classes",
        "train_per_class", "augment", "init_from", "metrics", "skip_nonfinite", "log_grad_norms",
        "run_dir"}},
      {"eval", {"model", "data", "checkpoint", "threads", "batch_size", "test_limit", "classes"}},
      {"summary", {"model"}},
      {"import-weights", {"model", "from", "checkpoint"}},
      {"export", {"model", "checkpoint", "output", "format", "batch_size", "threads"}},
      {"augment-preview",
       {"model", "data", "augment", "output", "images", "variants", "seed", "train_limit",
        "classes", "train_per_class"}},
      {"plot-runs", {"runs", "metric", "output"}},
      {"bench",
       {"model", "batch_size", "threads", "seconds", "rounds", "python", "augment", "schedules",
        "csv", "json", "png"}},
  };
  return *flags;
}

// Returns whether an empty value of `flag` means "none" rather than a forgotten argument.
bool MayBeEmpty(const std::string& flag) {
  return flag == "augment" || flag == "lr_mult" || flag == "classes" || flag == "schedules";
}

// Rejects flags given to `command` that it does not read, and empty file names and choices.
absl::Status CheckFlagsApply(const std::string& command) {
  const std::set<std::string>& reads = CommandFlags().at(command);
  for (const std::string& flag : GivenFlags()) {
    bool known = false;
    std::vector<std::string> users;
    for (const auto& [name, flags] : CommandFlags()) {
      if (flags.count(flag) == 0) continue;
      known = true;
      users.push_back(name);
    }
    const std::string dashed = Dashed(flag);
    if (known && reads.count(flag) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--", dashed, " does not apply to kiln ",
                                                     command, "; it is an option of kiln ",
                                                     absl::StrJoin(users, ", kiln ")));
    }
    const absl::CommandLineFlag* defined = absl::FindCommandLineFlag(flag);
    if (known && defined != nullptr && defined->IsOfType<std::string>() &&
        defined->CurrentValue().empty() && !MayBeEmpty(flag)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", dashed, " is empty; give it a value or leave it out"));
    }
  }
  return absl::OkStatus();
}

// Checks that each double flag kept as a 32-bit float stays a finite, non-zero float when it is
// one as a double: --lr 1e308 would become infinity and --eps 1e-320 zero.
absl::Status CheckFloatRange() {
  for (const auto& [name, value] :
       {std::pair{"--lr", absl::GetFlag(FLAGS_lr)},
        std::pair{"--momentum", absl::GetFlag(FLAGS_momentum)},
        std::pair{"--weight-decay", absl::GetFlag(FLAGS_weight_decay)},
        std::pair{"--eps", absl::GetFlag(FLAGS_eps)},
        std::pair{"--max-grad-norm", absl::GetFlag(FLAGS_max_grad_norm)},
        std::pair{"--lr-gamma", absl::GetFlag(FLAGS_lr_gamma)},
        std::pair{"--min-lr", absl::GetFlag(FLAGS_min_lr)},
        std::pair{"--warmup-start-factor", absl::GetFlag(FLAGS_warmup_start_factor)}}) {
    const float single = static_cast<float>(value);
    if (std::isfinite(value) && (!std::isfinite(single) || (value != 0 && single == 0))) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, " ", value, " is outside the range of 32-bit floats, which training uses; use a "
          "value between about 1.4e-45 and 3.4e38"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateFlags() {
  if (absl::Status status = CheckFloatRange(); !status.ok()) return status;
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

  for (const auto& [name, value] :
       {std::pair{"--weight-decay", absl::GetFlag(FLAGS_weight_decay)},
        std::pair{"--max-grad-norm", absl::GetFlag(FLAGS_max_grad_norm)},
        std::pair{"--min-lr", absl::GetFlag(FLAGS_min_lr)}}) {
    if (!std::isfinite(value) || !(value >= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " ", value, " must be finite and not negative"));
    }
  }
  for (const auto& [name, value] : {std::pair{"--beta1", absl::GetFlag(FLAGS_beta1)},
                                    std::pair{"--beta2", absl::GetFlag(FLAGS_beta2)}}) {
    if (!(value >= 0 && value < 1)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " ", value, " must be in [0, 1)"));
    }
  }
  // Checked whether or not the run uses them, so a checkpoint never records a bad value.
  if (!std::isfinite(absl::GetFlag(FLAGS_eps)) || !(absl::GetFlag(FLAGS_eps) > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--eps ", absl::GetFlag(FLAGS_eps), " must be positive and finite"));
  }
  if (!std::isfinite(absl::GetFlag(FLAGS_lr_gamma)) || !(absl::GetFlag(FLAGS_lr_gamma) > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lr-gamma ", absl::GetFlag(FLAGS_lr_gamma), " must be positive and finite"));
  }
  if (absl::GetFlag(FLAGS_lr_step_size) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lr-step-size ", absl::GetFlag(FLAGS_lr_step_size), " must be at least 1"));
  }
  const double start_factor = absl::GetFlag(FLAGS_warmup_start_factor);
  if (!(start_factor > 0 && start_factor <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--warmup-start-factor ", start_factor, " must be in (0, 1]"));
  }
  if (absl::GetFlag(FLAGS_warmup_epochs) < 0 ||
      absl::GetFlag(FLAGS_warmup_epochs) >= absl::GetFlag(FLAGS_epochs)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--warmup-epochs ", absl::GetFlag(FLAGS_warmup_epochs), " must be in [0, --epochs ",
        absl::GetFlag(FLAGS_epochs), ")"));
  }
  if (absl::GetFlag(FLAGS_nesterov) && absl::GetFlag(FLAGS_momentum) <= 0) {
    return absl::InvalidArgumentError("--nesterov needs a --momentum above 0");
  }
  if (absl::GetFlag(FLAGS_train_per_class) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--train-per-class ", absl::GetFlag(FLAGS_train_per_class), " must not be negative"));
  }
  if (absl::GetFlag(FLAGS_train_per_class) > 0 && absl::GetFlag(FLAGS_classes).empty()) {
    return absl::InvalidArgumentError("--train-per-class needs --classes, e.g. --classes 0-9");
  }
  if (absl::GetFlag(FLAGS_images) < 1 || absl::GetFlag(FLAGS_images) > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--images ", absl::GetFlag(FLAGS_images), " must be in [1, 1000]"));
  }
  if (absl::GetFlag(FLAGS_variants) < 0 || absl::GetFlag(FLAGS_variants) > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("--variants ", absl::GetFlag(FLAGS_variants), " must be in [0, 100]"));
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

  if (!absl::GetFlag(FLAGS_metrics).empty()) {
    absl::StatusOr<kiln::MetricsFormat> format =
        kiln::MetricsFormatForPath(absl::GetFlag(FLAGS_metrics));
    if (!format.ok()) return format.status();
  }
  if (absl::GetFlag(FLAGS_resume) && absl::GetFlag(FLAGS_checkpoint).empty()) {
    return absl::InvalidArgumentError("--resume needs --checkpoint PATH");
  }
  return absl::OkStatus();
}

// One split of --data, restricted by --classes (and --train-per-class for "train"), then by
// `limit`.
absl::StatusOr<kiln::Dataset> LoadSplit(const std::string& split, int64_t limit) {
  absl::StatusOr<kiln::Dataset> data = kiln::LoadIdxDataset(absl::GetFlag(FLAGS_data), split);
  if (!data.ok()) return data;
  if (!absl::GetFlag(FLAGS_classes).empty()) {
    absl::StatusOr<std::vector<int>> classes = kiln::ParseClassList(absl::GetFlag(FLAGS_classes));
    if (!classes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--classes: ", classes.status().message()));
    }
    data = kiln::SelectClasses(*data, *classes,
                               split == "train" ? absl::GetFlag(FLAGS_train_per_class) : 0);
    if (!data.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--classes: ", data.status().message()));
    }
  }
  if (limit == 0 || limit >= data->count) return data;
  return kiln::TakeFirst(*data, limit);
}

// Checks that the labels of `data` fit the outputs of `model`, naming --classes in the fix:
// InvalidArgument when --classes lists too many, FailedPrecondition when the data has a label
// the model has no output for.
absl::Status CheckClassesFit(const kiln::CompiledModel& model, const kiln::Dataset& data) {
  if (model.num_classes == 0 || data.num_classes <= model.num_classes) return absl::OkStatus();
  const std::string example = absl::StrCat("--classes 0-", model.num_classes - 1);
  if (!absl::GetFlag(FLAGS_classes).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--classes ", absl::GetFlag(FLAGS_classes), " lists ", data.num_classes,
        " classes but model '", model.name, "' has ", model.num_classes,
        " outputs; list at most ", model.num_classes, ", e.g. ", example));
  }
  // The first label that does not fit names the file and sample, because a damaged label file
  // has one stray value (200, say) rather than more classes. Labels past --train-limit are not
  // used, so they do not count.
  int64_t sample = 0;
  while (sample < data.count && data.labels[sample] < model.num_classes) ++sample;
  if (sample == data.count) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "label ", data.labels[sample], " of sample ", sample,
      data.labels_path.empty() ? "" : absl::StrCat(" in '", data.labels_path, "'"),
      " does not fit model '", model.name, "', which has ", model.num_classes,
      " outputs (the labels go up to ", data.num_classes - 1, "); pass --classes with at most ",
      model.num_classes, " classes, e.g. ", example, ", or use a dataset with fewer classes"));
}

// The options of kiln train from its flags.
absl::StatusOr<kiln::TrainOptions> TrainOptionsFromFlags() {
  kiln::TrainOptions options;
  options.epochs = absl::GetFlag(FLAGS_epochs);
  kiln::OptimizerOptions& o = options.optimizer;
  absl::StatusOr<kiln::OptimizerKind> kind = kiln::ParseOptimizer(absl::GetFlag(FLAGS_optimizer));
  if (!kind.ok()) return kind.status();
  o.kind = *kind;
  o.lr = static_cast<float>(absl::GetFlag(FLAGS_lr));
  o.momentum = static_cast<float>(absl::GetFlag(FLAGS_momentum));
  o.nesterov = absl::GetFlag(FLAGS_nesterov);
  o.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  o.beta1 = absl::GetFlag(FLAGS_beta1);
  o.beta2 = absl::GetFlag(FLAGS_beta2);
  o.eps = static_cast<float>(absl::GetFlag(FLAGS_eps));
  o.max_grad_norm = static_cast<float>(absl::GetFlag(FLAGS_max_grad_norm));

  absl::StatusOr<std::vector<kiln::LrMultiplier>> multipliers =
      kiln::ParseLrMultipliers(absl::GetFlag(FLAGS_lr_mult));
  if (!multipliers.ok()) return multipliers.status();
  o.lr_multipliers = *std::move(multipliers);

  kiln::LrSchedule& schedule = options.schedule;
  absl::StatusOr<kiln::LrSchedule::Kind> schedule_kind =
      kiln::ParseLrSchedule(absl::GetFlag(FLAGS_lr_schedule));
  if (!schedule_kind.ok()) return schedule_kind.status();
  schedule.kind = *schedule_kind;
  schedule.step_size = absl::GetFlag(FLAGS_lr_step_size);
  schedule.gamma = static_cast<float>(absl::GetFlag(FLAGS_lr_gamma));
  schedule.min_lr = static_cast<float>(absl::GetFlag(FLAGS_min_lr));
  schedule.warmup_epochs = absl::GetFlag(FLAGS_warmup_epochs);
  schedule.warmup_start_factor = static_cast<float>(absl::GetFlag(FLAGS_warmup_start_factor));

  options.seed = absl::GetFlag(FLAGS_seed);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.checkpoint = absl::GetFlag(FLAGS_checkpoint);
  options.resume = absl::GetFlag(FLAGS_resume);
  options.init_from = absl::GetFlag(FLAGS_init_from);
  options.metrics = absl::GetFlag(FLAGS_metrics);
  options.log_grad_norms = absl::GetFlag(FLAGS_log_grad_norms);
  options.skip_nonfinite = absl::GetFlag(FLAGS_skip_nonfinite);
  options.run_dir = absl::GetFlag(FLAGS_run_dir);
  return options;
}

// The --augment flag for images of `model`'s shape.
absl::StatusOr<kiln::Augmentation> AugmentationFromSpec(const std::string& spec,
                                                        const kiln::CompiledModel& model) {
  absl::StatusOr<kiln::Augmentation> augmentation =
      kiln::ParseAugmentation(spec, model.channels, model.height, model.width);
  if (!augmentation.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--augment: ", augmentation.status().message()));
  }
  return augmentation;
}

// On --resume, hyperparameters not given on the command line continue with the checkpoint's
// values (kiln::TrainingMetadata), so a resumed run repeats the original one exactly.
absl::Status UseSavedHyperparameters(kiln::TrainOptions& options) {
  // The checksum is checked first, because a damaged file's hyperparameters mean nothing.
  absl::StatusOr<kiln::TensorFile> file = kiln::ReadCheckpointFile(options.checkpoint);
  if (!file.ok()) return file.status();
  const std::map<std::string, std::string>& metadata = file->metadata;
  auto saved_optimizer = metadata.find("kiln.optimizer");
  if (saved_optimizer != metadata.end() && GivenFlags().count("optimizer") > 0 &&
      saved_optimizer->second != kiln::OptimizerName(options.optimizer.kind)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint '", options.checkpoint, "' was trained with ", saved_optimizer->second,
        ", and --resume cannot switch to ", kiln::OptimizerName(options.optimizer.kind),
        " (its state would start from zero); drop --optimizer, or start a new run with "
        "--init-from ", options.checkpoint));
  }
  auto invalid = [&](const std::string& key, absl::string_view problem) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint '", options.checkpoint,
                                                   "' records an invalid hyperparameter: ",
                                                   problem, "; pass --", Dashed(key),
                                                   " explicitly"));
  };
  std::string invalid_key;
  absl::StatusOr<std::vector<std::string>> read = kiln::ReadHyperparameterMetadata(
      metadata, GivenFlags(), options.epochs, options.optimizer, options.schedule, &invalid_key);
  if (!read.ok()) return invalid(invalid_key, read.status().message());
  std::vector<std::string> keys = *std::move(read);

  // The rest of kiln::TrainingMetadata that a resumed run continues with.
  for (const std::string key : {"augment", "log_grad_norms", "batch_size"}) {
    const auto it = metadata.find("kiln." + key);
    if (it == metadata.end() || GivenFlags().count(key) > 0) continue;
    bool valid = false;
    if (key == "augment") {
      const kiln::ImageShape& shape = options.augmentation.shape;
      absl::StatusOr<kiln::Augmentation> a =
          kiln::ParseAugmentation(it->second, shape.channels, shape.height, shape.width);
      valid = a.ok();
      if (valid) options.augmentation = *std::move(a);
    } else if (key == "log_grad_norms") {
      valid = it->second == "0" || it->second == "1";
      options.log_grad_norms = it->second == "1";
    } else {
      valid = absl::SimpleAtoi(it->second, &options.batch_size) && options.batch_size > 0;
    }
    if (!valid) {
      return invalid(key,
                     absl::StrCat(it->first, " is '", it->second, "': it is not a valid value"));
    }
    keys.push_back(key);
  }
  std::vector<std::string> used;
  for (const std::string& key : keys) {
    std::string label = key;
    std::replace(label.begin(), label.end(), '_', ' ');
    const std::string& value = metadata.at("kiln." + key);
    used.push_back(absl::StrCat(label, " ", value.empty() ? "(none)" : value));
  }
  auto epochs = metadata.find("kiln.epochs");
  if (epochs != metadata.end() && epochs->second != absl::StrCat(options.epochs) &&
      options.schedule.kind == kiln::LrSchedule::Kind::kCosine) {
    fmt::print("kiln: the checkpoint's run had --epochs {}; the cosine schedule now spans {}, so "
               "the learning rates differ from that run\n", epochs->second, options.epochs);
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
  for (const kiln::Dataset* data : {&*train, &*test}) {
    if (absl::Status s = CheckClassesFit(net.model(), *data); !s.ok()) return FailOrUsage(s);
  }

  const int threads = absl::GetFlag(FLAGS_threads);
  fmt::print("kiln: data {}, {} threads{}\n", absl::GetFlag(FLAGS_data),
             threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()),
             threads > 0 ? "" : " (all cores)");
  absl::StatusOr<kiln::TrainOptions> parsed = TrainOptionsFromFlags();
  if (!parsed.ok()) return Usage(std::string(parsed.status().message()));
  kiln::TrainOptions options = *std::move(parsed);
  absl::StatusOr<kiln::Augmentation> augmentation =
      AugmentationFromSpec(absl::GetFlag(FLAGS_augment), net.model());
  if (!augmentation.ok()) return Usage(std::string(augmentation.status().message()));
  options.augmentation = *std::move(augmentation);
  if (options.resume && !options.init_from.empty()) {
    return Usage("--init-from starts a new run; it cannot be combined with --resume");
  }
  if (options.resume) {
    if (absl::Status status = UseSavedHyperparameters(options); !status.ok()) return Fail(status);
  }
  // A new run over an existing checkpoint would destroy it after the first epoch: likely a
  // forgotten --resume.
  std::error_code exists_error;
  if (!options.resume && !absl::GetFlag(FLAGS_overwrite) && !options.checkpoint.empty() &&
      std::filesystem::is_regular_file(options.checkpoint, exists_error)) {
    return Usage(absl::StrCat("checkpoint '", options.checkpoint, "' already exists; pass "
                              "--resume to continue it, --overwrite to replace it with a new run, "
                              "or choose another --checkpoint"));
  }
  // A new run would also truncate an earlier run's metrics log.
  for (const std::string& log :
       {options.metrics, options.run_dir.empty() ? "" : options.run_dir + "/metrics.jsonl"}) {
    std::error_code size_error;
    if (options.resume || absl::GetFlag(FLAGS_overwrite) || log.empty() ||
        !std::filesystem::is_regular_file(log, exists_error) ||
        std::filesystem::file_size(log, size_error) == 0) {
      continue;
    }
    return Usage(absl::StrCat("metrics log '", log, "' already exists; pass --resume to continue "
                              "its run, --overwrite to replace it, or choose another path"));
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
  if (absl::Status s = CheckClassesFit(net.model(), *test); !s.ok()) return FailOrUsage(s);
  absl::StatusOr<kiln::EvalResult> result = kiln::Evaluate(net, *test, absl::GetFlag(FLAGS_batch_size));
  if (!result.ok()) return Fail(result.status());
  fmt::print("test loss {:.4f}  test accuracy {:.4f} ({} images)\n", result->loss, result->accuracy,
             result->count);
  return 0;
}

// kiln export: the inference graph of a checkpoint as ONNX.
int RunExport(kiln::Network& net) {
  if (absl::GetFlag(FLAGS_format) != "onnx") {
    return Usage(absl::StrCat("--format '", absl::GetFlag(FLAGS_format),
                              "' is not supported; use --format onnx"));
  }
  if (absl::GetFlag(FLAGS_checkpoint).empty() || absl::GetFlag(FLAGS_output).empty()) {
    return Usage("export needs --checkpoint PATH and --output MODEL.onnx");
  }
  if (absl::Status s = kiln::CheckOutputPath(absl::GetFlag(FLAGS_output)); !s.ok()) return Fail(s);
  absl::StatusOr<std::map<std::string, std::string>> loaded =
      net.LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
  if (!loaded.ok()) return Fail(loaded.status());
  kiln::OnnxExportOptions options;
  options.batch = absl::GetFlag(FLAGS_batch_size);
  absl::Status status = kiln::ExportOnnx(net.model(), net.params(), net.buffers(),
                                         absl::GetFlag(FLAGS_output), options);
  if (!status.ok()) return Fail(status);
  fmt::print("wrote {} (ONNX opset {}, batch {})\n", absl::GetFlag(FLAGS_output), options.opset,
             options.batch == 0 ? "symbolic" : std::to_string(options.batch));
  return 0;
}

// kiln augment-preview: --images training images, each beside --variants augmented draws.
int RunAugmentPreview(const kiln::CompiledModel& model) {
  if (absl::GetFlag(FLAGS_output).empty()) return Usage("augment-preview needs --output GRID.png");
  absl::StatusOr<kiln::Augmentation> augmentation =
      AugmentationFromSpec(absl::GetFlag(FLAGS_augment), model);
  if (!augmentation.ok()) return Usage(std::string(augmentation.status().message()));
  absl::StatusOr<kiln::Dataset> train = LoadSplit("train", absl::GetFlag(FLAGS_train_limit));
  if (!train.ok()) return Fail(train.status());
  if (absl::Status s = kiln::CheckDataset(model, *train, "training"); !s.ok()) return Fail(s);
  const int images = static_cast<int>(std::min<int64_t>(absl::GetFlag(FLAGS_images), train->count));
  absl::Status status = kiln::WriteAugmentationGrid(absl::GetFlag(FLAGS_output), *train,
                                                    *augmentation, absl::GetFlag(FLAGS_seed),
                                                    images, absl::GetFlag(FLAGS_variants));
  if (!status.ok()) return Fail(status);
  fmt::print("{}: {} image{} (rows), each as loaded and in {} augmented draws: {}\n",
             absl::GetFlag(FLAGS_output), images, images == 1 ? "" : "s",
             absl::GetFlag(FLAGS_variants), augmentation->Describe());
  return 0;
}

// kiln plot-runs: one metric of several runs' metrics logs in one chart.
int RunPlotRuns() {
  if (absl::GetFlag(FLAGS_output).empty() || absl::GetFlag(FLAGS_runs).empty()) {
    return Usage("plot-runs needs --runs NAME=METRICS_FILE,... and --output FILE.png");
  }
  absl::StatusOr<kiln::RunMetric> metric = kiln::ParseRunMetric(absl::GetFlag(FLAGS_metric));
  if (!metric.ok()) return Usage(absl::StrCat("--metric: ", metric.status().message()));
  std::vector<std::pair<std::string, std::string>> runs;
  for (absl::string_view entry : absl::StrSplit(absl::GetFlag(FLAGS_runs), ',')) {
    std::vector<std::string> parts = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return Usage(absl::StrCat("--runs entry '", entry,
                                "' is not NAME=METRICS_FILE; e.g. --runs plain=a/metrics.jsonl"));
    }
    runs.emplace_back(parts[0], parts[1]);
  }
  absl::Status status = kiln::PlotRuns(runs, *metric, absl::GetFlag(FLAGS_output));
  if (!status.ok()) return Fail(status);
  fmt::print("{}: {} of {} run{}\n", absl::GetFlag(FLAGS_output), absl::GetFlag(FLAGS_metric),
             runs.size(), runs.size() == 1 ? "" : "s");
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
  options.augment = absl::GetFlag(FLAGS_augment);
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
  // Past a file size limit (ulimit -f), write() then fails with EFBIG, which the writers report
  // with the file's name, instead of the signal ending the process without a message.
  std::signal(SIGXFSZ, SIG_IGN);
  absl::SetProgramUsageMessage(kUsage);
  absl::FlagsUsageConfig usage_config;
  usage_config.version_string = [] { return std::string("kiln 0.1 (Halide 14)\n"); };
  absl::SetFlagsUsageConfig(usage_config);
  if (HelpRequested(argc, argv)) {
    PrintHelp();
    return 0;
  }
  std::vector<std::string> storage;
  std::vector<char*> args = NormalizeFlagNames(argc, argv, storage);
  if (absl::Status status = CheckFlagSyntax(args); !status.ok()) {
    return Usage(std::string(status.message()));
  }
  std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  constexpr char kCommands[] =
      "use train, eval, summary, import-weights, export, augment-preview, plot-runs or bench";
  if (positional.size() != 2) {
    return Usage(positional.size() < 2 ? absl::StrCat("missing command: ", kCommands)
                                       : absl::StrCat("unexpected argument '", positional[2], "'"));
  }
  const std::string command = positional[1];
  if (command != "train" && command != "eval" && command != "summary" &&
      command != "import-weights" && command != "export" && command != "augment-preview" &&
      command != "plot-runs" && command != "bench") {
    return Usage(absl::StrCat("unknown command '", command, "': ", kCommands));
  }
  if (absl::Status status = CheckFlagsApply(command); !status.ok()) {
    return Usage(std::string(status.message()));
  }
  if (absl::Status status = ValidateFlags(); !status.ok()) return Usage(std::string(status.message()));

  if (command == "bench") return RunBench();
  if (command == "plot-runs") return RunPlotRuns();

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

  if (command == "augment-preview") return RunAugmentPreview(*model);

  kiln::SetThreads(absl::GetFlag(FLAGS_threads));
  kiln::Network net(*model);
  if (command == "export") return RunExport(net);
  return command == "train" ? RunTrain(net) : RunEval(net);
}
