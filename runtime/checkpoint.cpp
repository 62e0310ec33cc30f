/// \file
/// Saving and loading Kiln checkpoints, and the comparison of a file's tensors with a model's.

#include "runtime/checkpoint.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace kiln {
namespace {

// Returns "A", "A or B", "A, B or C".
std::string JoinAlternatives(absl::Span<const DType> dtypes) {
  std::vector<std::string> names;
  for (DType dtype : dtypes) names.emplace_back(DTypeName(dtype));
  if (names.size() <= 1) return absl::StrJoin(names, "");
  const std::string last = names.back();
  names.pop_back();
  return absl::StrCat(absl::StrJoin(names, ", "), " or ", last);
}

// Returns an error unless each entry of `infos` lies inside an array of `size` floats and has
// `numel` equal to the product of its shape.
absl::Status CheckEntries(const CompiledModel& model, const std::vector<ParamInfo>& infos,
                          int64_t size, absl::string_view kind) {
  for (const ParamInfo& p : infos) {
    int64_t numel = 1;
    for (int64_t dim : p.shape) numel *= dim;
    if (numel != p.numel || p.offset < 0 || p.numel < 0 || p.offset > size - p.numel) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", model.name, "' has an inconsistent layout: ", kind, " '", p.name,
          "' of shape ", FormatShape(p.shape), " has numel ", p.numel, " at offset ", p.offset,
          " in an array of ", size, " values; regenerate the model's code"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSize(const CompiledModel& model, const FloatArray& values,
                       int64_t expected, absl::string_view what) {
  if (static_cast<int64_t>(values.size()) == expected) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("cannot save a checkpoint of model '", model.name,
                                                 "': the state has ", values.size(), " ", what,
                                                 " values, but the model has ", expected));
}

// Adds the F32 tensor `name` with the values of `p` in `array`. Fails when the name is taken.
absl::Status AddTensor(const std::string& path, const std::string& name, const ParamInfo& p,
                       const FloatArray& array, TensorFile& file) {
  absl::StatusOr<TensorData> tensor =
      MakeF32(p.shape, absl::MakeConstSpan(array).subspan(p.offset, p.numel));
  if (!tensor.ok()) return tensor.status();
  if (!file.tensors.emplace(name, *std::move(tensor)).second) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot write checkpoint '", path, "': two tensors are named '", name,
        "'; rename a parameter or buffer of the model"));
  }
  return absl::OkStatus();
}

void CopyF32(const TensorData& tensor, const ParamInfo& p, FloatArray& array) {
  if (p.numel == 0) return;
  std::copy(tensor.f32(), tensor.f32() + p.numel, array.begin() + p.offset);
}

// Moves `values` into `array`, copying when the sizes match so that `array` keeps its storage.
void Replace(FloatArray& array, FloatArray&& values) {
  if (array.size() == values.size()) {
    std::copy(values.begin(), values.end(), array.begin());
  } else {
    array = std::move(values);
  }
}

}  // namespace

std::string FormatShape(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

ModelState ZeroState(const CompiledModel& model) {
  ModelState state;
  state.params.assign(model.num_params, 0.0f);
  state.velocity.assign(model.num_params, 0.0f);
  state.buffers.assign(model.num_buffer_values, 0.0f);
  return state;
}

absl::Status CheckLayout(const CompiledModel& model) {
  absl::Status status = CheckEntries(model, model.params, model.num_params, "parameter");
  if (!status.ok()) return status;
  return CheckEntries(model, model.buffers, model.num_buffer_values, "buffer");
}

namespace {

// CRC-32 (zlib's) of every tensor's name, dtype, shape and bytes and of every metadata entry
// but the checksum itself, in name order: "kiln.checksum", which catches a file changed or
// damaged after it was written.
std::string Checksum(const TensorFile& file) {
  uLong crc = crc32(0L, Z_NULL, 0);
  auto add = [&crc](const void* bytes, size_t size) {
    // zlib takes at most 4 GB per call.
    const Bytef* p = static_cast<const Bytef*>(bytes);
    while (size > 0) {
      const uInt chunk = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
      crc = crc32(crc, p, chunk);
      p += chunk;
      size -= chunk;
    }
  };
  for (const auto& [key, value] : file.metadata) {
    if (key == "kiln.checksum") continue;
    add(key.data(), key.size() + 1);
    add(value.data(), value.size() + 1);
  }
  for (const auto& [name, tensor] : file.tensors) {
    add(name.data(), name.size() + 1);  // With the terminating zero, so names cannot run on.
    const int32_t dtype = static_cast<int32_t>(tensor.dtype);
    add(&dtype, sizeof(dtype));
    add(tensor.shape.data(), tensor.shape.size() * sizeof(int64_t));
    add(tensor.data.data(), tensor.data.size());
  }
  return absl::StrFormat("crc32:%08x", crc);
}

// Whether `text` has the form Checksum writes.
bool IsChecksum(absl::string_view text) {
  if (!absl::ConsumePrefix(&text, "crc32:") || text.size() != 8) return false;
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f'); });
}

// Returns the message for a NaN or infinity at element `index` of tensor `name` from `source`.
std::string NonFiniteMessage(const std::string& source, const std::string& name, int64_t index,
                             float value) {
  return absl::StrCat(source, " has ", std::isnan(value) ? "a NaN" : "an infinite value",
                      " in tensor '", name, "' (element ", index,
                      "); parameters must be finite, so use an earlier or other file");
}

}  // namespace

absl::StatusOr<TensorFile> ReadCheckpointFile(const std::string& path) {
  absl::StatusOr<TensorFile> file = ReadSafetensors(path);
  if (!file.ok()) return file.status();
  const auto checksum = file->metadata.find("kiln.checksum");
  if (checksum != file->metadata.end() && !IsChecksum(checksum->second)) {
    return absl::DataLossError(absl::StrCat(
        "checkpoint '", path, "' is corrupt: its kiln.checksum '", checksum->second,
        "' is not 'crc32:' and 8 hex digits, so its metadata was edited or damaged. Use an "
        "earlier checkpoint or a backup"));
  }
  if (checksum != file->metadata.end() && checksum->second != Checksum(*file)) {
    return absl::DataLossError(absl::StrCat(
        "checkpoint '", path, "' is corrupt: its contents do not match the checksum (",
        checksum->second, ") written with them, so the file was changed or damaged after it was "
        "saved. Use an earlier checkpoint or a backup"));
  }
  for (const auto& [name, tensor] : file->tensors) {
    const float* values = tensor.f32();
    if (values == nullptr) continue;
    for (int64_t i = 0; i < tensor.numel(); ++i) {
      if (!std::isfinite(values[i])) {
        return absl::DataLossError(NonFiniteMessage(absl::StrCat("checkpoint '", path, "'"),
                                                    name, i, values[i]));
      }
    }
  }
  return file;
}

absl::Status CheckFiniteValues(const std::string& source, const std::vector<ParamInfo>& infos,
                               const FloatArray& values) {
  for (const ParamInfo& p : infos) {
    for (int64_t i = 0; i < p.numel; ++i) {
      const float value = values[p.offset + i];
      if (!std::isfinite(value)) {
        return absl::DataLossError(NonFiniteMessage(source, p.name, i, value));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status SaveCheckpoint(const std::string& path, const CompiledModel& model,
                            const ModelState& state,
                            const std::map<std::string, std::string>& metadata) {
  absl::Status status = CheckLayout(model);
  if (status.ok()) status = CheckSize(model, state.params, model.num_params, "parameter");
  if (status.ok()) status = CheckSize(model, state.velocity, model.num_params, "momentum");
  if (status.ok()) status = CheckSize(model, state.buffers, model.num_buffer_values, "buffer");
  for (const FloatArray* moment : {&state.exp_avg, &state.exp_avg_sq}) {
    if (status.ok() && !moment->empty()) {
      status = CheckSize(model, *moment, model.num_params, "Adam moment");
    }
  }
  if (!status.ok()) return status;

  TensorFile file;
  file.metadata = metadata;
  file.metadata["kiln.model"] = model.name;
  file.metadata["kiln.definition"] = model.model.empty() ? model.name : model.model;
  file.metadata["kiln.num_params"] = absl::StrCat(model.num_params);

  for (const ParamInfo& p : model.params) {
    status = AddTensor(path, p.name, p, state.params, file);
    if (status.ok()) {
      status = AddTensor(path, absl::StrCat(kMomentumPrefix, p.name), p, state.velocity, file);
    }
    if (status.ok() && !state.exp_avg.empty()) {
      status = AddTensor(path, absl::StrCat(kExpAvgPrefix, p.name), p, state.exp_avg, file);
    }
    if (status.ok() && !state.exp_avg_sq.empty()) {
      status = AddTensor(path, absl::StrCat(kExpAvgSqPrefix, p.name), p, state.exp_avg_sq, file);
    }
    if (!status.ok()) return status;
  }
  for (const ParamInfo& b : model.buffers) {
    status = AddTensor(path, b.name, b, state.buffers, file);
    if (!status.ok()) return status;
  }
  file.metadata["kiln.checksum"] = Checksum(file);
  return WriteSafetensors(path, file);
}

absl::StatusOr<std::map<std::string, std::string>> LoadCheckpoint(
    const std::string& path, const CompiledModel& model, ModelState& state,
    const MetadataCheck& check_metadata) {
  absl::Status layout = CheckLayout(model);
  if (!layout.ok()) return layout;
  absl::StatusOr<TensorFile> file = ReadCheckpointFile(path);
  if (!file.ok()) return file.status();

  // Check everything before copying anything, so that a mismatched file changes nothing.
  std::vector<ExpectedTensor> expected;
  for (const ParamInfo& p : model.params) {
    expected.push_back({p.name, p.shape, /*required=*/true});
    for (absl::string_view prefix : {kMomentumPrefix, kExpAvgPrefix, kExpAvgSqPrefix}) {
      expected.push_back({absl::StrCat(prefix, p.name), p.shape, /*required=*/false});
    }
  }
  for (const ParamInfo& b : model.buffers) expected.push_back({b.name, b.shape, true});
  const DType kF32Only[] = {DType::kF32};
  TensorDifferences differences = CompareTensors(file->tensors, expected, kF32Only, model.name);

  // Builds of one definition under other names (a frozen variant, another target) load each
  // other's checkpoints; older checkpoints name only the build.
  const auto saved_model = file->metadata.find("kiln.model");
  const auto saved_definition = file->metadata.find("kiln.definition");
  const std::string definition = model.model.empty() ? model.name : model.model;
  if (saved_model != file->metadata.end() && saved_model->second != model.name &&
      (saved_definition != file->metadata.end() ? saved_definition->second
                                                : saved_model->second) != definition) {
    differences.sentences.insert(differences.sentences.begin(),
                                 absl::StrCat("the file is a checkpoint of model '",
                                              saved_model->second, "', not '", model.name, "'"));
  }
  if (differences.empty() && check_metadata) {
    if (absl::Status s = check_metadata(file->metadata); !s.ok()) {
      return absl::DataLossError(
          absl::StrCat("checkpoint '", path, "' has invalid metadata: ", s.message()));
    }
  }
  if (!differences.empty()) {
    return absl::InvalidArgumentError(FormatDifferences(
        absl::StrCat("checkpoint '", path, "' does not match model '", model.name, "'"),
        differences.sentences,
        absl::StrCat("Use a checkpoint saved by model '", model.name,
                     "'; for PyTorch weights, convert the state_dict with "
                     "'kiln import-weights' first.")));
  }

  ModelState loaded = ZeroState(model);
  // Copies the file's tensors named prefix + parameter name into `array`, which is first resized
  // to the model's size and zeroed, unless it is optional and the file has none of them.
  auto load_state = [&](absl::string_view prefix, FloatArray& array, bool optional) {
    bool any = false;
    for (const ParamInfo& p : model.params) {
      any = any || file->tensors.count(absl::StrCat(prefix, p.name)) > 0;
    }
    if (!any && optional) return;
    array.assign(model.num_params, 0.0f);
    for (const ParamInfo& p : model.params) {
      const auto found = file->tensors.find(absl::StrCat(prefix, p.name));
      if (found != file->tensors.end()) CopyF32(found->second, p, array);
    }
  };
  for (const ParamInfo& p : model.params) CopyF32(file->tensors.at(p.name), p, loaded.params);
  load_state(kMomentumPrefix, loaded.velocity, /*optional=*/false);
  load_state(kExpAvgPrefix, loaded.exp_avg, /*optional=*/true);
  load_state(kExpAvgSqPrefix, loaded.exp_avg_sq, /*optional=*/true);
  for (const ParamInfo& b : model.buffers) CopyF32(file->tensors.at(b.name), b, loaded.buffers);

  Replace(state.params, std::move(loaded.params));
  Replace(state.velocity, std::move(loaded.velocity));
  Replace(state.buffers, std::move(loaded.buffers));
  Replace(state.exp_avg, std::move(loaded.exp_avg));
  Replace(state.exp_avg_sq, std::move(loaded.exp_avg_sq));
  return std::move(file->metadata);
}

absl::StatusOr<PretrainedReport> LoadPretrained(const std::string& path,
                                                const CompiledModel& model, ModelState& state) {
  absl::Status status = CheckLayout(model);
  if (status.ok()) status = CheckSize(model, state.params, model.num_params, "parameter");
  if (status.ok()) status = CheckSize(model, state.buffers, model.num_buffer_values, "buffer");
  if (!status.ok()) return status;
  absl::StatusOr<TensorFile> file = ReadCheckpointFile(path);
  if (!file.ok()) return file.status();

  PretrainedReport report;
  std::vector<std::string> missing;
  // (tensor, its entry, its array) to copy once everything is checked.
  std::vector<std::tuple<const TensorData*, const ParamInfo*, FloatArray*>> copies;
  auto take = [&](const ParamInfo& p, FloatArray& array) {
    const auto found = file->tensors.find(p.name);
    if (found == file->tensors.end()) {
      missing.push_back(absl::StrCat("tensor '", p.name, "' is missing (expected shape ",
                                     FormatShape(p.shape), ")"));
    } else if (found->second.dtype != DType::kF32 || found->second.shape != p.shape) {
      report.mismatched.push_back(absl::StrCat(p.name, " ", FormatShape(p.shape), " (the file has ",
                                         DTypeName(found->second.dtype), " ",
                                         FormatShape(found->second.shape), ")"));
    } else {
      report.loaded.push_back(p.name);
      copies.emplace_back(&found->second, &p, &array);
    }
  };
  for (const ParamInfo& p : model.params) take(p, state.params);
  const size_t mismatched_params = report.mismatched.size();
  for (const ParamInfo& b : model.buffers) take(b, state.buffers);
  if (!missing.empty()) {
    return absl::InvalidArgumentError(FormatDifferences(
        absl::StrCat("checkpoint '", path, "' cannot initialize model '", model.name, "'"),
        missing,
        "Use a checkpoint of the same architecture (layer names must match; only shapes, such "
        "as a classifier head's, may differ)."));
  }
  if (mismatched_params == model.params.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint '", path, "' has no parameter of model '", model.name,
        "' with a matching shape; use a checkpoint of the same architecture"));
  }
  for (const auto& [tensor, p, array] : copies) CopyF32(*tensor, *p, *array);
  return report;
}

TensorDifferences CompareTensors(const std::map<std::string, TensorData>& tensors,
                                 const std::vector<ExpectedTensor>& expected,
                                 absl::Span<const DType> dtypes, absl::string_view model_name,
                                 const std::function<bool(const std::string&)>& ignored) {
  TensorDifferences differences;
  std::vector<std::string> dtype_sentences, shape_sentences;
  std::set<std::string> expected_names;

  for (const ExpectedTensor& want : expected) {
    expected_names.insert(want.name);
    const auto found = tensors.find(want.name);
    if (found == tensors.end()) {
      if (!want.required) continue;
      differences.missing.push_back(want.name);
      differences.sentences.push_back(absl::StrCat("tensor '", want.name,
                                                   "' is missing (expected shape ",
                                                   FormatShape(want.shape), ")"));
      continue;
    }

    const TensorData& tensor = found->second;
    if (std::find(dtypes.begin(), dtypes.end(), tensor.dtype) == dtypes.end()) {
      dtype_sentences.push_back(absl::StrCat("tensor '", want.name, "' has dtype ",
                                             DTypeName(tensor.dtype), ", expected ",
                                             JoinAlternatives(dtypes)));
    }
    if (tensor.shape != want.shape) {
      differences.wrong_shape[want.name] = tensor.shape;
      shape_sentences.push_back(absl::StrCat("tensor '", want.name, "' has shape ",
                                             FormatShape(tensor.shape), ", expected ",
                                             FormatShape(want.shape)));
    }
  }

  std::vector<std::string> unexpected_sentences;
  for (const auto& entry : tensors) {
    const std::string& name = entry.first;
    if (expected_names.count(name) > 0 || (ignored && ignored(name))) continue;
    differences.unexpected.push_back(name);
    unexpected_sentences.push_back(absl::StrCat(
        "tensor '", name, "' is not a parameter or buffer of model '", model_name, "'"));
  }

  for (std::vector<std::string>* group : {&dtype_sentences, &shape_sentences,
                                          &unexpected_sentences}) {
    differences.sentences.insert(differences.sentences.end(), group->begin(), group->end());
  }
  return differences;
}

std::string FormatDifferences(absl::string_view summary,
                              const std::vector<std::string>& sentences, absl::string_view advice) {
  std::string message = absl::StrCat(summary, " (", sentences.size(),
                                     sentences.size() == 1 ? " difference):" : " differences):");
  // A model of another family differs in every tensor, so the first lines are enough.
  constexpr size_t kShown = 20;
  for (size_t i = 0; i < sentences.size() && i < kShown; ++i) {
    absl::StrAppend(&message, "\n  - ", sentences[i]);
  }
  if (sentences.size() > kShown) {
    absl::StrAppend(&message, "\n  - and ", sentences.size() - kShown, " more");
  }
  absl::StrAppend(&message, "\n", advice);
  return message;
}

}  // namespace kiln
