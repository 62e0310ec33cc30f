#include "compiler/codegen.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "compiler/optimizers.h"

namespace kiln {
namespace {

absl::StatusOr<Halide::Target> ParseTarget(const std::string& target) {
  Halide::Target parsed;
  if (target == "host") {
    parsed = HostTarget();
  } else if (Halide::Target::validate_target_string(target)) {
    parsed = Halide::Target(target);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid Halide target '", target, "'; use 'host' or a string such as x86-64-linux-avx2-fma"));
  }
  return parsed.with_feature(Halide::Target::NoRuntime);
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string ShapeInitializer(const std::vector<int64_t>& shape) {
  return absl::StrCat("{", absl::StrJoin(shape, ", "), "}");
}

// A C++ float literal that reads back exactly ("%#" keeps the decimal point).
std::string FloatLiteral(float value) { return absl::StrFormat("%#.9gf", value); }

std::string IndexInitializer(const std::vector<int>& indices) {
  return absl::StrCat("{", absl::StrJoin(indices, ", "), "}");
}

// The facts about one distinct segment's compiled functions that the description needs.
struct CompiledSegment {
  std::string prefix;  ///< e.g. "lenet5_s0"; functions are <prefix>_forward, ...
  bool first = false, last = false;
  size_t params = 0, buffers = 0;
  size_t grads = 0;          ///< Trainable parameters: the gradients the training functions output.
  bool input_grad = false;   ///< Whether they output the input's gradient.
  bool backward = true;      ///< Whether it has a backward function (not below a frozen model's
                             ///< lowest trainable layer).
  /// Also <prefix>_forward_large_batch, for batches of at least kManualLargeBatch.
  bool large_batch_forward = false;
};

// "array[0], array[1], ..." for `count` entries, with a leading ", " when nonempty.
std::string ListArgs(const char* array, size_t count) {
  std::string out;
  for (size_t i = 0; i < count; ++i) absl::StrAppend(&out, ", ", array, "[", i, "]");
  return out;
}

// Adapters from the runtime's uniform function types (runtime/compiled_model.h) to the generated
// functions' argument lists (compiler/lower.h).
std::string Adapters(const CompiledSegment& c, int index) {
  const std::string& f = c.prefix;
  std::ostringstream out;
  const std::string forward_args =
      absl::StrCat("(input", ListArgs("params", c.params), ListArgs("buffers", c.buffers),
                   ", output)");
  out << "int Forward" << index << "(halide_buffer_t* input, int batch,\n"
      << "    halide_buffer_t* const* params, halide_buffer_t* const* buffers,\n"
      << "    halide_buffer_t* output) {\n"
      << "  (void)params; (void)buffers; (void)batch;\n";
  if (c.large_batch_forward) {
    out << "  if (batch >= " << kManualLargeBatch << ") {\n"
        << "    return " << f << "_forward_large_batch" << forward_args << ";\n  }\n";
  }
  out << "  return " << f << "_forward" << forward_args << ";\n}\n\n";
  const std::string input_grad = c.input_grad ? ", input_grad" : "";
  if (!c.last) {
    out << "int TrainForward" << index << "(halide_buffer_t* input, halide_buffer_t* const* params,\n"
        << "    halide_buffer_t* const* buffers, uint32_t seed, halide_buffer_t* output,\n"
        << "    halide_buffer_t* const* new_buffers) {\n"
        << "  (void)params; (void)buffers; (void)new_buffers;\n"
        << "  return " << f << "_train_forward(input" << ListArgs("params", c.params)
        << ListArgs("buffers", c.buffers) << ", seed, output" << ListArgs("new_buffers", c.buffers)
        << ");\n}\n\n";
  }
  if (!c.last && c.backward) {
    out << "int Backward" << index << "(halide_buffer_t* input, halide_buffer_t* const* params,\n"
        << "    uint32_t seed, halide_buffer_t* output_grad, halide_buffer_t* input_grad,\n"
        << "    halide_buffer_t* const* grads) {\n"
        << "  (void)params; (void)grads; (void)input_grad;\n"
        << "  return " << f << "_backward(input" << ListArgs("params", c.params)
        << ", seed, output_grad" << input_grad << ListArgs("grads", c.grads) << ");\n}\n\n";
  }
  if (c.last) {
    out << "int TrainLast" << index << "(halide_buffer_t* input, halide_buffer_t* targets,\n"
        << "    halide_buffer_t* const* params, halide_buffer_t* const* buffers, uint32_t seed,\n"
        << "    halide_buffer_t* loss, halide_buffer_t* correct, halide_buffer_t* input_grad,\n"
        << "    halide_buffer_t* const* grads, halide_buffer_t* const* new_buffers) {\n"
        << "  (void)params; (void)buffers; (void)grads; (void)new_buffers; (void)input_grad;\n"
        << "  return " << f << "_train_last(input, targets" << ListArgs("params", c.params)
        << ListArgs("buffers", c.buffers) << ", seed, loss, correct" << input_grad
        << ListArgs("grads", c.grads) << ListArgs("new_buffers", c.buffers) << ");\n}\n\n";
  }
  return out.str();
}

const char* TargetsName(TargetKind kind) {
  switch (kind) {
    case TargetKind::kClassLabels: return "kiln::Targets::kClassLabels";
    case TargetKind::kTensor: return "kiln::Targets::kTensor";
    case TargetKind::kInput: return "kiln::Targets::kInput";
  }
  return "";
}

// The generated C++ description: parameter, buffer, layer and segment tables, and adapters.
std::string DescriptionSource(const Model& model, const CodegenOptions& options,
                              const std::string& target, const std::vector<CompiledSegment>& compiled,
                              const std::vector<int>& segment_functions, double compile_seconds) {
  const std::string& name = model.name;
  std::ostringstream out;
  out << "// Generated by kiln-gen from model '" << name << "' with the "
      << SchedulerName(options.scheduler) << " schedule. Do not edit: rebuild instead.\n"
      << "#include \"" << name << "_trainer.h\"\n"
      << "#include \"runtime/compiled_model.h\"\n"
      << "#include \"" << name << "_kernels.h\"\n\n"
      << "namespace {\n\n";
  for (size_t i = 0; i < compiled.size(); ++i) out << Adapters(compiled[i], static_cast<int>(i));
  const Layer& loss = model.loss_layer();
  const std::vector<int64_t>& input = model.input_layer().output_shape;
  out << "kiln::CompiledModel MakeModel() {\n"
      << "  kiln::CompiledModel m;\n"
      << "  m.name = \"" << name << "\";\n"
      << "  m.model = \"" << (options.registry_name.empty() ? name : options.registry_name)
      << "\";\n"
      << "  m.schedule = \"" << SchedulerName(options.scheduler) << "\";\n"
      << "  m.compile_seconds = " << absl::StrFormat("%.3f", compile_seconds) << ";\n"
      << "  m.target = \"" << target << "\";\n"
      << "  m.batch_size = " << model.batch_size << ";\n"
      << "  m.input_shape = " << ShapeInitializer(model.input_layer().output_shape) << ";\n"
      << "  m.channels = " << input[0] << ";\n"
      << "  m.height = " << (input.size() == 3 ? input[1] : 1) << ";\n"
      << "  m.width = " << (input.size() == 3 ? input[2] : 1) << ";\n"
      << "  m.output_shape = " << ShapeInitializer(model.logits_layer().output_shape) << ";\n"
      << "  m.num_classes = " << loss.num_classes << ";\n"
      << "  m.targets = " << TargetsName(model.target_kind()) << ";\n"
      << "  m.loss = \"" << OpName(loss.kind) << "\";\n"
      << "  m.num_params = " << model.num_params() << ";\n"
      << "  m.num_buffer_values = " << model.num_buffer_values() << ";\n";
  for (const Param& p : model.params) {
    out << "  m.params.push_back({\"" << p.name << "\", " << ShapeInitializer(p.shape) << ", "
        << p.offset << ", " << p.numel() << ", " << p.fan_in << ", "
        << FloatLiteral(p.initial_value) << ", " << (p.trainable ? "true" : "false") << "});\n";
  }
  for (const Param& b : model.buffers) {
    out << "  m.buffers.push_back({\"" << b.name << "\", " << ShapeInitializer(b.shape) << ", "
        << b.offset << ", " << b.numel() << ", 0, " << FloatLiteral(b.initial_value) << "});\n";
  }
  for (const Layer& l : model.layers) {
    int64_t params = 0;
    for (int p : l.params) params += model.params[p].numel();
    out << "  m.layers.push_back({\"" << l.name << "\", \"" << OpName(l.kind) << "\", "
        << ShapeInitializer(l.output_shape) << ", " << params << ", " << model.flops(l) << ", "
        << IndexInitializer(l.inputs) << ", " << IndexInitializer(l.params) << ", "
        << IndexInitializer(l.buffers) << ", {" << l.kernel_size << ", " << l.stride << ", "
        << l.padding << ", " << l.dilation << ", " << l.groups << ", "
        << (l.ceil_mode ? "true" : "false") << ", " << (l.count_include_pad ? "true" : "false")
        << ", " << FloatLiteral(l.negative_slope) << ", " << FloatLiteral(l.p) << ", "
        << FloatLiteral(l.eps) << "}});\n";
  }
  for (size_t i = 0; i < compiled.size(); ++i) {
    out << "  m.functions.push_back({Forward" << i << ", "
        << (compiled[i].last ? "nullptr, nullptr, TrainLast" : "TrainForward") << i
        << (compiled[i].last ? ""
            : compiled[i].backward ? absl::StrCat(", Backward", i, ", nullptr")
                                   : ", nullptr, nullptr")
        << "});\n";
  }
  for (size_t i = 0; i < model.segments.size(); ++i) {
    const Segment& s = model.segments[i];
    std::vector<int> params, buffers;
    for (int l = s.first; l <= s.last; ++l) {
      params.insert(params.end(), model.layers[l].params.begin(), model.layers[l].params.end());
      buffers.insert(buffers.end(), model.layers[l].buffers.begin(), model.layers[l].buffers.end());
    }
    const Layer& last = model.layers[s.last];
    const int output = IsLoss(last.kind) ? last.input() : s.last;
    out << "  m.segments.push_back({" << segment_functions[i] << ", " << IndexInitializer(params)
        << ", " << IndexInitializer(buffers) << ", "
        << ShapeInitializer(model.layers[s.input].output_shape) << ", "
        << ShapeInitializer(model.layers[output].output_shape) << "});\n";
  }
  out << "  return m;\n}\n\n"
      << "const kiln::CompiledModelRegistration kRegistration(&kiln::models::" << name << "());\n\n"
      << "}  // namespace\n\n"
      << "namespace kiln::models {\n\n"
      << "const CompiledModel& " << name << "() {\n"
      << "  static const CompiledModel* model = new CompiledModel(MakeModel());\n"
      << "  return *model;\n}\n\n"
      << "}  // namespace kiln::models\n\n"
      << "kiln_status* kiln_" << name << "_trainer_create(kiln_trainer** trainer) {\n"
      << "  return kiln_trainer_create(\"" << name << "\", trainer);\n}\n";
  return out.str();
}

// "lenet5_c5" -> "Lenet5C5".
std::string CamelCase(const std::string& name) {
  std::string out;
  bool upper = true;
  for (char c : name) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    upper = false;
  }
  return out;
}

// The generated <name>_trainer.h: the model's trainer class and C constructor
// (runtime/api/trainer.h, runtime/api/trainer_c.h), and its sizes as constants.
std::string TrainerHeader(const Model& model, const CodegenOptions& options,
                          const std::string& target) {
  const std::string& name = model.name;
  const std::string guard = absl::AsciiStrToUpper(absl::StrCat("KILN_GENERATED_", name, "_TRAINER_H_"));
  const std::string type = CamelCase(name) + "Trainer";
  const std::vector<int64_t>& input = model.input_layer().output_shape;
  int64_t input_size = 1, output_size = 1;
  for (int64_t d : input) input_size *= d;
  for (int64_t d : model.logits_layer().output_shape) output_size *= d;
  std::ostringstream out;
  // C89 comments, so that C code of any standard includes it.
  out << "/* Generated by kiln-gen from model '"
      << (options.registry_name.empty() ? name : options.registry_name) << "' with the "
      << SchedulerName(options.scheduler) << " schedule for\n * " << target
      << ".\n * Do not edit: rebuild instead. Link the target kiln_model_" << name
      << " (CMake) or " << name << "_model.cpp,\n * " << name
      << "_kernels.a and the Kiln runtime libraries. */\n"
      << "#ifndef " << guard << "\n#define " << guard << "\n\n"
      << "#include \"runtime/api/trainer_c.h\"\n\n"
      << "#ifdef __cplusplus\n"
      << "#include \"runtime/api/trainer.h\"\n\n"
      << "namespace kiln {\n\nstruct CompiledModel;\n\nnamespace models {\n\n"
      << "/// The description of the compiled model " << name << " (runtime/compiled_model.h).\n"
      << "const CompiledModel& " << name << "();\n\n"
      << "/// A trainer of " << name << ": the kiln::Trainer API with this model's sizes.\n"
      << "class " << type << " : public Trainer {\n public:\n"
      << "  static constexpr int kBatchSize = " << model.batch_size
      << ";  ///< The batch it was tuned for; any batch runs.\n"
      << "  static constexpr int kChannels = " << input[0] << ", kHeight = "
      << (input.size() == 3 ? input[1] : 1) << ", kWidth = " << (input.size() == 3 ? input[2] : 1)
      << ";\n"
      << "  static constexpr long long kInputSize = " << input_size << ";  ///< Floats per sample.\n"
      << "  static constexpr long long kOutputSize = " << output_size << ";  ///< Floats per sample.\n"
      << "  static constexpr int kNumClasses = " << model.loss_layer().num_classes
      << ";  ///< 0 for regression.\n"
      << "  static constexpr long long kNumParameters = " << model.num_params() << ";\n\n"
      << "  /// Parameters are zero until InitParameters or LoadCheckpoint. Throws std::bad_alloc\n"
      << "  /// only when memory for the parameters runs out.\n"
      << "  " << type << "() : Trainer(" << name << "()) {}\n};\n\n"
      << "}  // namespace models\n}  // namespace kiln\n\n"
      << "extern \"C\" {\n#endif\n\n"
      << "/** Creates a trainer of " << name << " in *trainer; see kiln_trainer_create. */\n"
      << "kiln_status* kiln_" << name << "_trainer_create(kiln_trainer** trainer);\n\n"
      << "#ifdef __cplusplus\n}  /* extern \"C\" */\n#endif\n\n"
      << "#endif  /* " << guard << " */\n";
  return out.str();
}

// Writes `text` to `path` through a temporary file and a rename, so an interrupted generation
// never leaves a partial file under the final name.
absl::Status WriteGeneratedFile(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream file(temporary, std::ios::trunc);
    file << text;
    if (!file) return absl::DataLossError(absl::StrCat("failed to write '", temporary, "'"));
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    return absl::DataLossError(absl::StrCat("failed to rename '", temporary, "' to '", path,
                                            "': ", error.message()));
  }
  return absl::OkStatus();
}

// Lowers, schedules and lowers to a Halide module one function.
absl::Status AddFunction(Halide::Pipeline pipeline, const std::vector<Halide::Argument>& args,
                         const std::string& function, const Halide::Target& target,
                         const CodegenOptions& options,
                         std::chrono::steady_clock::time_point start,
                         std::vector<Halide::Module>& modules, CodegenReport& report) {
  const double schedule_seconds = SecondsSince(start);
  const auto lowering = std::chrono::steady_clock::now();
  try {
    modules.push_back(pipeline.compile_to_module(args, function, target));
    if (options.emit_stmt) {
      pipeline.compile_to_lowered_stmt(options.output_dir + "/" + function + ".stmt", args,
                                       Halide::Text, target);
    }
  } catch (const Halide::Error& e) {
    return absl::InternalError(absl::StrCat("Halide failed to compile ", function, ": ", e.what()));
  }
  report.timings.push_back({function, schedule_seconds, SecondsSince(lowering)});
  return absl::OkStatus();
}

// Lowers and schedules every distinct segment's functions, then generates code
// for all of them as one library.
absl::StatusOr<CodegenReport> GeneratePipelines(const Model& model, const CodegenOptions& options,
                                                const Halide::Target& target,
                                                std::vector<CompiledSegment>& compiled,
                                                std::vector<int>& segment_functions) {
  CodegenReport report;
  std::vector<Halide::Module> modules;
  std::map<std::string, int> distinct;
  report.segments = static_cast<int>(model.segments.size());
  for (int i = 0; i < report.segments; ++i) {
    auto [it, added] = distinct.emplace(SegmentSignature(model, i), static_cast<int>(compiled.size()));
    segment_functions.push_back(it->second);
    if (!added) continue;
    CompiledSegment c;
    c.prefix = absl::StrCat(model.name, "_s", compiled.size());
    std::vector<LowerMode> modes = {LowerMode::kForward};
    c.backward = NeedsBackward(model, i);
    if (i + 1 == report.segments) {
      modes.push_back(LowerMode::kTrainLast);
    } else {
      modes.push_back(LowerMode::kTrainForward);
      if (c.backward) modes.push_back(LowerMode::kBackward);
    }
    for (LowerMode mode : modes) {
      const auto start = std::chrono::steady_clock::now();
      LoweredSegment lowered = LowerSegment(model, i, mode);
      c.first = lowered.first;
      c.last = lowered.last;
      c.params = lowered.params.size();
      if (mode != LowerMode::kForward && mode != LowerMode::kTrainForward) {
        c.grads = lowered.grads.size();
        c.input_grad = lowered.needs_input_grad;
      }
      if (mode == LowerMode::kForward) c.buffers = lowered.buffer_indices.size();
      absl::StatusOr<Halide::Pipeline> pipeline =
          SegmentPipeline(lowered, options.scheduler, target, options.machine);
      if (!pipeline.ok()) return pipeline.status();
      absl::Status status = AddFunction(*pipeline, lowered.arguments(),
                                        absl::StrCat(c.prefix, "_", LowerModeName(mode)), target,
                                        options, start, modules, report);
      if (!status.ok()) return status;
    }
    if (options.scheduler == Scheduler::kManual) {
      const auto start = std::chrono::steady_clock::now();
      LoweredSegment lowered = LowerSegment(model, i, LowerMode::kForward);
      absl::StatusOr<Halide::Pipeline> pipeline = SegmentPipeline(
          lowered, options.scheduler, target, options.machine, ForwardBatch::kLarge);
      if (!pipeline.ok()) return pipeline.status();
      absl::Status status = AddFunction(*pipeline, lowered.arguments(),
                                        absl::StrCat(c.prefix, "_forward_large_batch"), target,
                                        options, start, modules, report);
      if (!status.ok()) return status;
      c.large_batch_forward = true;
    }
    compiled.push_back(c);
  }
  report.distinct_segments = static_cast<int>(compiled.size());

  const auto codegen = std::chrono::steady_clock::now();
  const std::string prefix = options.output_dir + "/" + model.name + "_kernels";
  try {
    Halide::Module linked = Halide::link_modules(model.name + "_kernels", modules);
    linked.compile({{Halide::OutputFileType::static_library, prefix + ".a"},
                    {Halide::OutputFileType::c_header, prefix + ".h"}});
  } catch (const Halide::Error& e) {
    return absl::InternalError(absl::StrCat("Halide failed to generate code for ", model.name, ": ", e.what()));
  }
  report.timings.push_back({"(code generation)", 0, SecondsSince(codegen)});
  return report;
}

}  // namespace

absl::StatusOr<Halide::Pipeline> SegmentPipeline(const LoweredSegment& segment,
                                                 Scheduler scheduler, const Halide::Target& target,
                                                 const MachineOptions& machine,
                                                 ForwardBatch forward_batch) {
  Halide::Pipeline pipeline(segment.outputs());
  absl::Status status =
      ScheduleSegment(segment, pipeline, scheduler, target, machine, forward_batch);
  if (!status.ok()) return status;
  if (scheduler == Scheduler::kManual || scheduler == Scheduler::kNaive) return pipeline;

  // NOTE: the autoschedulers split the batch of an output with ShiftInwards, tuned for the
  // compiled batch, and a batch of 1 then writes the output buffer at n = -1 (seen with Li2018).
  // Plain copies as the outputs keep those splits on intermediates, which Halide may compute
  // past the batch: the inputs clamp the sample index.
  std::vector<Halide::Func> outputs;
  for (Halide::Func f : segment.outputs()) {
    std::vector<Halide::Var> args = f.args();
    if (args.empty() || args.back().name() != ops::vars().n.name()) {
      outputs.push_back(f);
      continue;
    }
    Halide::Func copy(f.name() + "_copy");
    copy(args) = f(args);
    copy.compute_root().parallel(args.back());
    outputs.push_back(copy);
  }
  return Halide::Pipeline(outputs);
}

Halide::Target HostTarget() {
  Halide::Target target = Halide::get_host_target();
#if defined(__x86_64__) || defined(__i386__)
  if (!__builtin_cpu_supports("avxvnni")) {
    target = target.without_feature(Halide::Target::AVX512_SapphireRapids);
  }
#endif
  return target;
}

absl::StatusOr<std::string> ResolveTarget(const std::string& target) {
  absl::StatusOr<Halide::Target> parsed = ParseTarget(target);
  if (!parsed.ok()) return parsed.status();
  return parsed->to_string();
}

absl::StatusOr<CodegenReport> GenerateModel(const Model& model, const CodegenOptions& options) {
  absl::StatusOr<Halide::Target> target = ParseTarget(options.target);
  if (!target.ok()) return target.status();
  // The name becomes C and C++ identifiers (kiln::models::<name>, kiln_<name>_trainer_create).
  const bool identifier =
      !model.name.empty() && !std::isdigit(static_cast<unsigned char>(model.name[0])) &&
      std::all_of(model.name.begin(), model.name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
      });
  if (!identifier) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model name '", model.name, "' is not an identifier; use letters, digits and '_', "
        "starting with a letter (e.g. my_model)"));
  }
  std::error_code error;
  std::filesystem::create_directories(options.output_dir, error);
  if (error) {
    return absl::PermissionDeniedError(absl::StrCat("failed to create output directory '",
                                                    options.output_dir, "': ", error.message()));
  }
  absl::StatusOr<CodegenReport> report;
  std::vector<CompiledSegment> compiled;
  std::vector<int> segment_functions;
  try {
    report = GeneratePipelines(model, options, *target, compiled, segment_functions);
  } catch (const Halide::Error& e) {
    // Lowering and autodiff report unsupported definitions by throwing.
    return absl::InternalError(absl::StrCat("Halide failed on model '", model.name, "': ", e.what()));
  }
  if (!report.ok()) return report.status();

  // Written last, so an interrupted generation never leaves a description that names libraries
  // which were not written.
  double seconds = 0;
  for (const ArtifactTiming& t : report->timings) seconds += t.schedule_seconds + t.compile_seconds;
  const std::string prefix = options.output_dir + "/" + model.name;
  absl::Status written = WriteGeneratedFile(
      prefix + "_trainer.h", TrainerHeader(model, options, target->to_string()));
  if (written.ok()) {
    written = WriteGeneratedFile(prefix + "_model.cpp",
                                 DescriptionSource(model, options, target->to_string(), compiled,
                                                   segment_functions, seconds));
  }
  if (!written.ok()) return written;
  return report;
}


namespace {

// Creates the directory that will hold `path_prefix`.* files.
absl::Status CreateParentDirectory(const std::string& path_prefix) {
  const std::filesystem::path directory = std::filesystem::path(path_prefix).parent_path();
  std::error_code error;
  if (!directory.empty()) std::filesystem::create_directories(directory, error);
  if (error) {
    return absl::PermissionDeniedError(absl::StrCat("failed to create output directory '",
                                                    directory.string(), "': ", error.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status GenerateOptimizers(const std::string& path_prefix, const std::string& target) {
  absl::StatusOr<Halide::Target> parsed = ParseTarget(target);
  if (!parsed.ok()) return parsed.status();
  if (absl::Status s = CreateParentDirectory(path_prefix); !s.ok()) return s;
  try {
    std::vector<Halide::Module> modules;
    LoweredSgd sgd = LowerSgd();
    ScheduleOptimizer(sgd.updated, *parsed);
    modules.push_back(Halide::Pipeline(sgd.updated)
                          .compile_to_module(sgd.arguments(), "kiln_sgd_update", *parsed));
    LoweredAdam adam = LowerAdam();
    ScheduleOptimizer(adam.updated, *parsed);
    modules.push_back(Halide::Pipeline(adam.updated)
                          .compile_to_module(adam.arguments(), "kiln_adam_update", *parsed));
    LoweredSumOfSquares sum = LowerSumOfSquares();
    ScheduleSumOfSquares(sum, *parsed);
    modules.push_back(Halide::Pipeline(sum.sum).compile_to_module(sum.arguments(),
                                                                  "kiln_sum_of_squares", *parsed));
    Halide::Module linked = Halide::link_modules("kiln_optimizers", modules);
    linked.compile({{Halide::OutputFileType::static_library, path_prefix + ".a"},
                    {Halide::OutputFileType::c_header, path_prefix + ".h"}});
  } catch (const Halide::Error& e) {
    return absl::InternalError(absl::StrCat("Halide failed to compile the optimizers: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status GenerateHalideRuntime(const std::string& path_prefix, const std::string& target) {
  absl::StatusOr<Halide::Target> parsed = ParseTarget(target);
  if (!parsed.ok()) return parsed.status();
  if (absl::Status s = CreateParentDirectory(path_prefix); !s.ok()) return s;
  try {
    Halide::compile_standalone_runtime(path_prefix + ".a",
                                       parsed->without_feature(Halide::Target::NoRuntime));
  } catch (const Halide::Error& e) {
    return absl::InternalError(absl::StrCat("Halide failed to compile its runtime: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace kiln
