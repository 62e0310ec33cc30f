/** \file
 * Ahead-of-time code generation: compiles the functions of every distinct segment of a Model
 * (compiler/lower.h) into one static library and header, and writes the model description the
 * runtime reads. The optimizers (compiler/optimizers.h) and the Halide runtime are compiled once,
 * into libraries of their own that every model links.
 *
 *   kiln::CodegenOptions options;
 *   options.output_dir = "generated/lenet5";
 *   absl::StatusOr<kiln::CodegenReport> report = kiln::GenerateModel(model, options);
 */
#ifndef KILN_COMPILER_CODEGEN_H_
#define KILN_COMPILER_CODEGEN_H_

#include <string>
#include <vector>

#include "Halide.h"
#include "absl/status/statusor.h"
#include "compiler/lower.h"
#include "compiler/model.h"
#include "compiler/schedule/schedule.h"

namespace kiln {

struct CodegenOptions {
  std::string output_dir;
  Scheduler scheduler = Scheduler::kManual;
  /// Halide target string, e.g. "host" or "x86-64-linux-avx2-fma". Kiln adds `no_runtime`: link
  /// one runtime from GenerateHalideRuntime.
  std::string target = "host";
  MachineOptions machine;
  /// Also write each function's lowered loop nest as <function>.stmt, for reading schedules.
  bool emit_stmt = false;
  /// The model's name in models/registry.h (kiln-gen --model), recorded in the generated
  /// CompiledModel::model so that variants of one model find each other; empty: model.name.
  std::string registry_name;
};

/// Compile time of one generated function.
struct ArtifactTiming {
  std::string function;         ///< e.g. "lenet5_s0_train_last"; "(code generation)" for LLVM.
  double schedule_seconds = 0;  ///< Lowering, autodiff and scheduling (autoschedulers search here).
  double compile_seconds = 0;   ///< Halide's lowering to a module, or LLVM code generation.
};

struct CodegenReport {
  std::vector<ArtifactTiming> timings;
  int segments = 0;           ///< Segments of the model.
  int distinct_segments = 0;  ///< Segments compiled (identical ones share code).
};

/// Returns the Halide target of this machine. Halide 14 reports AMD Zen 4 CPUs, which have
/// AVX512-VNNI but not AVX-VNNI, as Sapphire Rapids. Code for that target can contain
/// VEX-encoded VNNI instructions, which fault (SIGILL) there, so the feature is dropped on CPUs
/// without AVX-VNNI.
Halide::Target HostTarget();

/// Returns the target string Kiln compiles for when given `target` ("host" or a target string):
/// the resolved host target or `target` itself, with `no_runtime` as every generated library has.
absl::StatusOr<std::string> ResolveTarget(const std::string& target);

/// Schedules the pipeline of a lowered segment with `scheduler`. Under an autoscheduler, outputs
/// with a batch dimension are copied out by a final manual stage (see the NOTE in codegen.cpp).
absl::StatusOr<Halide::Pipeline> SegmentPipeline(const LoweredSegment& segment,
                                                 Scheduler scheduler, const Halide::Target& target,
                                                 const MachineOptions& machine = {},
                                                 ForwardBatch forward_batch = ForwardBatch::kAny);

/// Writes into options.output_dir: <name>_kernels.{a,h} with the functions of every distinct
/// segment (lower.h), and <name>_model.cpp, which defines and registers the
/// model's kiln::CompiledModel.
absl::StatusOr<CodegenReport> GenerateModel(const Model& model, const CodegenOptions& options);

/// Writes the optimizers of compiler/optimizers.h as `<path_prefix>.{a,h}`: the functions
/// kiln_sgd_update, kiln_adam_update and kiln_sum_of_squares, with the arguments in the order of
/// each Lowered*::arguments() followed by the outputs.
absl::Status GenerateOptimizers(const std::string& path_prefix, const std::string& target);

/// Writes the Halide runtime shared by all generated functions as `<path_prefix>.a`.
absl::Status GenerateHalideRuntime(const std::string& path_prefix, const std::string& target);

}  // namespace kiln

#endif  // KILN_COMPILER_CODEGEN_H_
