/** \file
 * Kiln checkpoints: a model's parameters, SGD momentum and running statistics in one
 * safetensors file, under PyTorch `state_dict` names.
 *
 *   kiln::ModelState state = kiln::ZeroState(model);
 *   ...  // train
 *   absl::Status saved =
 *       kiln::SaveCheckpoint("run.safetensors", model, state, {{"kiln.epoch", "3"}});
 *
 *   absl::StatusOr<std::map<std::string, std::string>> metadata =
 *       kiln::LoadCheckpoint("run.safetensors", model, state);
 *   if (!metadata.ok()) return metadata.status();  // `state` is unchanged
 *
 * File layout, all tensors F32 with the shape of their ParamInfo:
 *   <param name>                   each parameter, e.g. "conv1.weight"
 *   momentum_buffer.<param name>   its SGD momentum (torch.optim.SGD's "momentum_buffer")
 *   exp_avg.<param name>           Adam's moments (torch.optim.Adam's names), only when the
 *   exp_avg_sq.<param name>          state has them
 *   <buffer name>                  each running statistic, e.g. "bn1.running_mean"
 * and the metadata "kiln.model" (the model name) and "kiln.num_params", beside the caller's.
 */
#ifndef KILN_RUNTIME_CHECKPOINT_H_
#define KILN_RUNTIME_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "runtime/compiled_model.h"
#include "runtime/huge_pages.h"
#include "runtime/safetensors.h"

namespace kiln {

/// The state of one model in flat float arrays, laid out as its CompiledModel describes:
/// `params` and `velocity` (SGD momentum) have `num_params` values, and parameter p occupies
/// [p.offset, p.offset + p.numel). `buffers` has `num_buffer_values` values laid out by
/// CompiledModel::buffers.
struct ModelState {
  FloatArray params;
  FloatArray velocity;
  FloatArray buffers;
  /// Adam's moments: `num_params` values each, or empty when the run does not use Adam.
  FloatArray exp_avg;
  FloatArray exp_avg_sq;
};

/// The name prefixes of optimizer-state tensors in a checkpoint.
inline constexpr absl::string_view kMomentumPrefix = "momentum_buffer.";
inline constexpr absl::string_view kExpAvgPrefix = "exp_avg.";
inline constexpr absl::string_view kExpAvgSqPrefix = "exp_avg_sq.";

/// Returns a state with the sizes that `model` needs, every value zero.
ModelState ZeroState(const CompiledModel& model);

/// Checks that every ParamInfo of `model` lies inside its flat array and that its `numel` is the
/// product of its shape. Returns InvalidArgument naming the first inconsistent entry. The
/// functions here call it first, so a hand-built description cannot make them copy out of bounds.
absl::Status CheckLayout(const CompiledModel& model);

/// Writes `state` to `path` as a checkpoint (see the file comment), replacing any existing file
/// atomically (WriteSafetensors). The file's metadata is `metadata` plus "kiln.model" and
/// "kiln.num_params", which override keys of the same name in `metadata`.
/// Returns InvalidArgument when the sizes of `state` differ from what `model` needs, or when two
/// tensors of `model` would get the same name. Other errors are those of WriteSafetensors.
absl::Status SaveCheckpoint(const std::string& path, const CompiledModel& model,
                            const ModelState& state,
                            const std::map<std::string, std::string>& metadata);

/// Reads the checkpoint at `path` into `state` and returns its metadata.
///
/// Every parameter and every buffer of `model` is required, as an F32 tensor of its shape. A
/// momentum tensor may be absent, and the momentum of that parameter is then zero. Adam's moments
/// are loaded when the file has any (absent ones are zero); otherwise they come back empty. The
/// file must contain no other tensors, and its "kiln.model", when present, must be `model.name`
/// or a build of the same definition ("kiln.definition", CompiledModel::model). The file's
/// "kiln.checksum", when present, must match its tensors and metadata.
/// On success `state` has the sizes that `model` needs, whatever it held before. An array that
/// already had its size keeps its storage, so pointers into it (Halide buffers) stay valid.
/// On any error `state` is unchanged. A file that does not match returns InvalidArgument with one
/// message that names `path` and lists every difference; read errors are those of
/// ReadSafetensors.
/// `check_metadata`, when given, is called on the file's metadata once the tensors match. Its
/// error names a value it cannot use; it becomes DataLoss, and nothing is loaded.
using MetadataCheck = std::function<absl::Status(const std::map<std::string, std::string>&)>;
absl::StatusOr<std::map<std::string, std::string>> LoadCheckpoint(
    const std::string& path, const CompiledModel& model, ModelState& state,
    const MetadataCheck& check_metadata = nullptr);

/// Reads the checkpoint file at `path` without matching it to a model: errors are those of
/// ReadSafetensors, and DataLoss when its "kiln.checksum" is malformed or does not match or a
/// float tensor contains a NaN or an infinity. Checkpoints from before checksums have none.
absl::StatusOr<TensorFile> ReadCheckpointFile(const std::string& path);

/// Returns an error naming `source` and the first tensor of `infos` whose values in `values` (a
/// flat array laid out by `infos`) include a NaN or an infinity.
absl::Status CheckFiniteValues(const std::string& source, const std::vector<ParamInfo>& infos,
                               const FloatArray& values);

/// The tensors LoadPretrained copied from a checkpoint, and those it left alone.
struct PretrainedReport {
  std::vector<std::string> loaded;  ///< Parameters and buffers copied from the file.
  /// Parameters and buffers whose shape differs in the file (a classifier head for another
  /// number of classes): left as they were in the state, e.g. freshly initialized.
  std::vector<std::string> mismatched;
};

/// Transfer learning: copies into `state` the parameters and running statistics of the
/// checkpoint at `path` (saved by Kiln or converted by kiln import-weights) whose names and
/// shapes match `model`'s. Tensors of another shape are left alone and listed in `mismatched`,
/// optimizer state and tensors the model lacks are ignored. `state` must have the model's sizes.
/// Errors: InvalidArgument, changing nothing, when a parameter or buffer of the model is missing
/// from the file (the message lists them all) or when every parameter would be kept. Read errors
/// are those of ReadSafetensors.
absl::StatusOr<PretrainedReport> LoadPretrained(const std::string& path,
                                                const CompiledModel& model, ModelState& state);

// ---------------------------------------------------------------------------------------------
// Comparing a file with a model (shared by LoadCheckpoint and ImportTorchStateDict)
// ---------------------------------------------------------------------------------------------

/// A tensor that a model expects in a file.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  bool required = true;  ///< Whether its absence is a difference.
};

/// The differences between the tensors of a file and the tensors that a model expects.
struct TensorDifferences {
  std::vector<std::string> missing;     ///< Names of required tensors that the file lacks.
  std::vector<std::string> unexpected;  ///< Names of file tensors that the model does not expect.
  /// Wrong dtypes and shapes, by expected name: each entry has the file's shape.
  std::map<std::string, std::vector<int64_t>> wrong_shape;
  /// One sentence per difference, such as "tensor 'fc.bias' is missing (expected shape [10])":
  /// the missing tensors, then wrong dtypes, wrong shapes and unexpected tensors.
  std::vector<std::string> sentences;

  bool empty() const { return sentences.empty(); }
};

/// Compares `tensors` with `expected`. A required tensor that is absent, a tensor with a dtype
/// outside `dtypes` or with another shape, and a file tensor that is not in `expected` are
/// differences, except file tensors for which `ignored` (may be empty) returns true.
/// `model_name` appears in the sentences about unexpected tensors.
TensorDifferences CompareTensors(const std::map<std::string, TensorData>& tensors,
                                 const std::vector<ExpectedTensor>& expected,
                                 absl::Span<const DType> dtypes, absl::string_view model_name,
                                 const std::function<bool(const std::string&)>& ignored = {});

/// Returns "<summary> (N differences):", one indented line per entry of `sentences`, then
/// `advice` on its own line: the message of a mismatch error.
std::string FormatDifferences(absl::string_view summary,
                              const std::vector<std::string>& sentences, absl::string_view advice);

/// Returns "[d0, d1, ...]", the notation that Kiln's messages use for shapes.
std::string FormatShape(const std::vector<int64_t>& shape);

}  // namespace kiln

#endif  // KILN_RUNTIME_CHECKPOINT_H_
