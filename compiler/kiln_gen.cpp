// kiln-gen: compiles a model defined in the DSL to static libraries for the runtime.
//
//   kiln-gen --model lenet5 --schedule manual --output_dir generated/lenet5
//   kiln-gen --runtime generated/halide_runtime
//   kiln-gen --optimizers generated/kiln_optimizers
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "compiler/codegen.h"
#include "models/registry.h"

ABSL_FLAG(std::string, model, "", "Name of the model to compile (one registered in models/).");
ABSL_FLAG(std::string, schedule, "manual",
          "Schedule: manual (Kiln's hand-written), li2018, mullapudi2016 or adams2019 (Halide "
          "autoschedulers), or naive (every Func at root, serial: the baseline).");
ABSL_FLAG(std::string, output_dir, "", "Directory for the generated libraries, headers and description.");
ABSL_FLAG(std::string, target, "host",
          "Halide target, e.g. host or x86-64-linux-avx2-fma for CPUs older than this one.");
ABSL_FLAG(int, batch_size, 64, "Batch size the model is defined and tuned for (images).");
ABSL_FLAG(std::string, name, "",
          "Name of the compiled model (default: --model), for several builds of one definition.");
ABSL_FLAG(std::string, input, "",
          "Input size per sample instead of the model's default: CxHxW (e.g. 1x28x28) or F.");
ABSL_FLAG(int, classes, 0, "Number of classes (or outputs) instead of the model's default.");
ABSL_FLAG(std::string, freeze, "",
          "Freeze this layer or block and every one before it: no gradients, no backward pass "
          "below the lowest trainable layer (transfer learning).");
ABSL_FLAG(int, parallelism, 2, "Threads the autoschedulers tune for (the run-time count is free).");
ABSL_FLAG(bool, emit_stmt, false, "Also write each function's lowered loop nest (<function>.stmt).");
ABSL_FLAG(std::string, runtime, "",
          "Instead of a model, write the shared Halide runtime to <this path>.a.");
ABSL_FLAG(std::string, print_target, "",
          "Instead of a model, print the target string Kiln compiles for given this --target "
          "value (host resolves to this machine's).");
ABSL_FLAG(std::string, optimizers, "",
          "Instead of a model, write the optimizers (SGD, Adam, sums of squares) shared by all "
          "models to <this path>.{a,h}.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Compiles a Kiln model ahead of time. Example:\n"
                               "  kiln-gen --model lenet5 --output_dir generated/lenet5");
  absl::ParseCommandLine(argc, argv);

  if (!absl::GetFlag(FLAGS_print_target).empty()) {
    absl::StatusOr<std::string> target = kiln::ResolveTarget(absl::GetFlag(FLAGS_print_target));
    if (!target.ok()) {
      std::fprintf(stderr, "kiln-gen: %s\n", std::string(target.status().message()).c_str());
      return 2;
    }
    std::printf("%s\n", target->c_str());
    return 0;
  }
  if (!absl::GetFlag(FLAGS_runtime).empty() || !absl::GetFlag(FLAGS_optimizers).empty()) {
    const std::string target = absl::GetFlag(FLAGS_target);
    absl::Status status =
        absl::GetFlag(FLAGS_runtime).empty()
            ? kiln::GenerateOptimizers(absl::GetFlag(FLAGS_optimizers), target)
            : kiln::GenerateHalideRuntime(absl::GetFlag(FLAGS_runtime), target);
    if (!status.ok()) {
      std::fprintf(stderr, "kiln-gen: %s\n", std::string(status.message()).c_str());
      return 1;
    }
    return 0;
  }

  const std::string name = absl::GetFlag(FLAGS_model);
  if (name.empty() || absl::GetFlag(FLAGS_output_dir).empty()) {
    std::fprintf(stderr, "kiln-gen: --model and --output_dir are required; models here: %s\n",
                 absl::StrJoin(kiln::RegisteredModels(), ", ").c_str());
    return 2;
  }
  absl::StatusOr<kiln::Scheduler> scheduler = kiln::ParseScheduler(absl::GetFlag(FLAGS_schedule));
  if (!scheduler.ok()) {
    std::fprintf(stderr, "kiln-gen: --schedule: %s\n", std::string(scheduler.status().message()).c_str());
    return 2;
  }
  kiln::ModelOptions model_options;
  model_options.batch_size = absl::GetFlag(FLAGS_batch_size);
  model_options.num_classes = absl::GetFlag(FLAGS_classes);
  if (!absl::GetFlag(FLAGS_input).empty()) {
    std::vector<std::string> sizes = absl::StrSplit(absl::GetFlag(FLAGS_input), 'x');
    std::vector<int64_t> values;
    bool valid = true;
    for (const std::string& size : sizes) {
      int64_t value = 0;
      valid = valid && absl::SimpleAtoi(size, &value) && value > 0;
      values.push_back(value);
    }
    if (!valid || (values.size() != 1 && values.size() != 3)) {
      std::fprintf(stderr, "kiln-gen: --input '%s' is not CxHxW or F with positive sizes; "
                   "e.g. --input 1x28x28\n", absl::GetFlag(FLAGS_input).c_str());
      return 2;
    }
    model_options.channels = values[0];
    model_options.height = values.size() == 3 ? values[1] : 1;
    model_options.width = values.size() == 3 ? values[2] : 1;
  }
  absl::StatusOr<kiln::Model> model = kiln::BuildModel(name, model_options);
  if (!model.ok()) {
    const bool unknown = model.status().code() == absl::StatusCode::kNotFound;
    std::fprintf(stderr, "kiln-gen: %s%s\n", std::string(model.status().message()).c_str(),
                 unknown ? "; with kiln_add_model, MODEL names the definition when NAME differs"
                         : "");
    return 1;
  }
  // A definition may fix its input or output size; a request it ignored is an error, not a
  // model of another size than asked for.
  const std::vector<int64_t>& input = model->input_layer().output_shape;
  if (!absl::GetFlag(FLAGS_input).empty() &&
      (input[0] != model_options.channels ||
       (input.size() == 3 && (input[1] != model_options.height ||
                              input[2] != model_options.width)))) {
    std::fprintf(stderr, "kiln-gen: model '%s' does not take --input %s: its definition fixes the "
                 "input at %s; change the definition to read ModelOptions\n", name.c_str(),
                 absl::GetFlag(FLAGS_input).c_str(), absl::StrJoin(input, "x").c_str());
    return 2;
  }
  const std::vector<int64_t>& output = model->logits_layer().output_shape;
  if (model_options.num_classes > 0 &&
      (output.size() != 1 || output[0] != model_options.num_classes)) {
    std::fprintf(stderr, "kiln-gen: model '%s' does not take --classes %d: its definition fixes "
                 "the output at %s; change the definition to read ModelOptions\n", name.c_str(),
                 absl::GetFlag(FLAGS_classes), absl::StrJoin(output, "x").c_str());
    return 2;
  }
  if (!absl::GetFlag(FLAGS_name).empty()) model->name = absl::GetFlag(FLAGS_name);
  if (!absl::GetFlag(FLAGS_freeze).empty()) {
    absl::Status frozen = kiln::FreezeThrough(*model, absl::GetFlag(FLAGS_freeze));
    if (!frozen.ok()) {
      std::fprintf(stderr, "kiln-gen: --freeze: %s\n", std::string(frozen.message()).c_str());
      return 2;
    }
  }

  kiln::CodegenOptions options;
  options.output_dir = absl::GetFlag(FLAGS_output_dir);
  options.scheduler = *scheduler;
  options.target = absl::GetFlag(FLAGS_target);
  options.machine.parallelism = absl::GetFlag(FLAGS_parallelism);
  options.emit_stmt = absl::GetFlag(FLAGS_emit_stmt);
  options.registry_name = name;
  absl::StatusOr<kiln::CodegenReport> report = kiln::GenerateModel(*model, options);
  if (!report.ok()) {
    std::fprintf(stderr, "kiln-gen: model '%s': %s\n", name.c_str(), std::string(report.status().message()).c_str());
    return 1;
  }
  double total = 0;
  for (const kiln::ArtifactTiming& t : report->timings) {
    total += t.schedule_seconds + t.compile_seconds;
    std::printf("kiln-gen: %s (%s schedule): %.2f s (scheduling %.2f s, lowering %.2f s)\n",
                t.function.c_str(), kiln::SchedulerName(*scheduler),
                t.schedule_seconds + t.compile_seconds, t.schedule_seconds, t.compile_seconds);
  }
  std::printf("kiln-gen: %s: %d segments, %d compiled (identical blocks share code), %.1f s in all\n",
              name.c_str(), report->segments, report->distinct_segments, total);
  return 0;
}
