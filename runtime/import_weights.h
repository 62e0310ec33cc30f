/** \file
 * Importing PyTorch weights: a `state_dict` saved as safetensors becomes a Kiln checkpoint.
 *
 * In Python, with a model whose layer names and shapes match the Kiln model (torchvision's
 * resnet18 to resnet152 and alexnet match Kiln's models of the same name, and
 * tools/export_torchvision.py writes their files):
 *
 *   from safetensors.torch import save_file
 *   save_file(model.state_dict(), "resnet18.safetensors")
 *
 * Then in C++ (or `kiln import-weights`):
 *
 *   absl::Status imported = kiln::ImportWeightsCommand(*model, "resnet18.safetensors",
 *                                                      "resnet18_kiln.safetensors");
 *
 * Kiln keeps parameters in PyTorch's own memory layout and under the `state_dict` names. So the
 * import maps names one to one and copies the values without transposing anything.
 */
#ifndef KILN_RUNTIME_IMPORT_WEIGHTS_H_
#define KILN_RUNTIME_IMPORT_WEIGHTS_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/checkpoint.h"
#include "runtime/compiled_model.h"

namespace kiln {

/// The changes that ImportTorchStateDict made besides copying values.
struct ImportSummary {
  int64_t num_tensors = 0;                    ///< Parameters and buffers imported.
  std::vector<std::string> converted_dtypes;  ///< Source dtypes converted to F32, e.g. {"F64"}.
  int64_t num_ignored = 0;                    ///< "num_batches_tracked" tensors skipped.
  std::vector<std::string> removed_prefixes;  ///< Wrapper prefixes removed, e.g. {"module."}.
};

/// Reads the safetensors file at `path`, written by
/// `safetensors.torch.save_file(model.state_dict(), path)`, into a state for `model`.
///
/// - Every parameter and buffer (BatchNorm running_mean and running_var) of `model` must be in
///   the file under its name, with its shape.
/// - F32 values are copied. F64, F16 and BF16 values are converted to F32, rounding to nearest.
///   An F64 value beyond the F32 range is an error rather than an infinity.
/// - Tensors named "num_batches_tracked" or "*.num_batches_tracked" (BatchNorm's I64 step
///   counter, which Kiln does not keep) are ignored.
/// - When every tensor name starts with "module." (torch.nn.DataParallel and
///   DistributedDataParallel) or "_orig_mod." (torch.compile), and no tensor of `model` does,
///   the prefix is removed. A file that mixes names with and without such a prefix is rejected,
///   because its origin is unclear.
/// - The velocity (SGD momentum) of the result is zero. The file's metadata is not read.
///
/// A file that does not match returns InvalidArgument with one message that names `path`, lists
/// every missing, unexpected, wrongly shaped and wrongly typed tensor, and adds hints where the
/// names suggest a cause (another architecture, a wrapper prefix, another number of classes, a
/// Kiln checkpoint). Errors reading the file are those of ReadSafetensors, with "cannot import
/// PyTorch weights" in front. `summary`, when not null, is filled on success.
absl::StatusOr<ModelState> ImportTorchStateDict(const std::string& path, const CompiledModel& model,
                                                ImportSummary* summary = nullptr);

/// Imports the state_dict at `from` (ImportTorchStateDict) and saves it as a Kiln checkpoint at
/// `output` with the metadata "kiln.imported_from" = `from`, then prints one line to `log` that
/// describes the import. The checkpoint has no "kiln.epoch", so `kiln eval` accepts it and
/// `kiln train --resume` does not.
///
/// Returns AlreadyExists, before reading `from`, when `output` exists: the command never
/// overwrites a file. Other errors are those of CheckSafetensorsDestination (checked before the
/// import), ImportTorchStateDict and SaveCheckpoint.
absl::Status ImportWeightsCommand(const CompiledModel& model, const std::string& from,
                                  const std::string& output, std::FILE* log = stdout);  // null: quiet

}  // namespace kiln

#endif  // KILN_RUNTIME_IMPORT_WEIGHTS_H_
