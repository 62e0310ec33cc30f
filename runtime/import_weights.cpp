/// \file
/// The PyTorch state_dict importer: name and shape checks with hints, dtype conversion to
/// float32, and the `kiln import-weights` command.

#include "runtime/import_weights.h"

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fmt/core.h"
#include "runtime/safetensors.h"

namespace kiln {
namespace {

// Prefixes that PyTorch wrappers put in front of every state_dict name: "module." from
// torch.nn.DataParallel and DistributedDataParallel, "_orig_mod." from torch.compile.
constexpr absl::string_view kWrapperPrefixes[] = {"module.", "_orig_mod."};

constexpr DType kFloatDTypes[] = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16};

bool IsBatchCounter(const std::string& name) {
  return name == "num_batches_tracked" || absl::EndsWith(name, ".num_batches_tracked");
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

// Removes each wrapper prefix that every name in `tensors` has and no expected name has, and
// records the removed prefixes.
void RemoveWrapperPrefixes(const std::set<std::string>& expected,
                           std::map<std::string, TensorData>& tensors,
                           std::vector<std::string>& removed) {
  bool changed = true;
  while (changed && !tensors.empty()) {
    changed = false;
    for (absl::string_view prefix : kWrapperPrefixes) {
      bool all_wrapped = true;
      for (const auto& entry : tensors) all_wrapped &= absl::StartsWith(entry.first, prefix);
      for (const std::string& name : expected) all_wrapped &= !absl::StartsWith(name, prefix);
      if (!all_wrapped) continue;

      std::map<std::string, TensorData> renamed;
      for (auto& [name, tensor] : tensors) {
        renamed.emplace(name.substr(prefix.size()), std::move(tensor));
      }
      tensors = std::move(renamed);
      removed.emplace_back(prefix);
      changed = true;
    }
  }
}

// Returns "1 tensor" or "2 tensors".
std::string CountOf(int64_t count, absl::string_view noun) {
  return absl::StrCat(count, " ", noun, count == 1 ? "" : "s");
}

// The prefix that turns names of one list into names of another, and how often it does.
struct PrefixMatch {
  std::string prefix;
  int count = 0;
  std::string example;  ///< The first name that has the prefix.
};

// Returns the prefix P for which most `names` are P + (a name in `targets`), or a match with
// count 0 when no name is.
PrefixMatch MostCommonPrefix(const std::vector<std::string>& names,
                             const std::set<std::string>& targets) {
  std::map<std::string, PrefixMatch> matches;
  for (const std::string& name : names) {
    for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1)) {
      if (targets.count(name.substr(dot + 1)) == 0) continue;
      PrefixMatch& match = matches[name.substr(0, dot + 1)];
      if (match.count++ == 0) match.example = name;
      break;
    }
  }

  PrefixMatch best;
  for (const auto& [prefix, match] : matches) {
    if (match.count > best.count) {
      best = match;
      best.prefix = prefix;
    }
  }
  return best;
}

// Returns the distinct first components of `names` ("layer1" of "layer1.0.conv1.weight"), in
// order of first appearance, at most `limit` of them followed by "..." when there are more.
std::string TopLevelModules(const std::vector<std::string>& names, size_t limit) {
  std::vector<std::string> modules;
  std::set<std::string> seen;
  bool more = false;
  for (const std::string& name : names) {
    const std::string module = name.substr(0, name.find('.'));
    if (!seen.insert(module).second) continue;
    if (modules.size() == limit) {
      more = true;
      break;
    }
    modules.push_back(module);
  }
  if (more) modules.push_back("...");
  return absl::StrJoin(modules, ", ");
}

// Returns "conv1" for "conv1.weight", the layer that a tensor belongs to.
std::string LayerOf(const std::string& name) { return name.substr(0, name.rfind('.')); }

// ---------------------------------------------------------------------------------------------
// Hints
// ---------------------------------------------------------------------------------------------

// Returns a hint when every shape difference lies in the model's final layer, the usual sign of
// weights trained for another number of classes.
std::string FinalLayerHint(const CompiledModel& model, const TensorDifferences& differences) {
  if (model.params.empty() || differences.wrong_shape.empty() || !differences.missing.empty() ||
      !differences.unexpected.empty()) {
    return "";
  }
  const ParamInfo& last = model.params.back();
  const std::string final_layer = LayerOf(last.name);
  for (const auto& [name, shape] : differences.wrong_shape) {
    if (LayerOf(name) != final_layer) return "";
  }

  const auto found = differences.wrong_shape.find(last.name);
  if (found == differences.wrong_shape.end() || found->second.empty() || last.shape.empty()) {
    return "";
  }
  return absl::StrCat("Hint: only the final layer '", final_layer,
                      "' differs, so the file was probably trained for another number of "
                      "classes: it has ", found->second[0], " outputs and model '", model.name,
                      "' has ", last.shape[0], ". Compile the Kiln model with ", found->second[0],
                      " classes to import these weights; importing all layers except the final "
                      "one is not supported.");
}

// Returns the hints, one per line, that the names and metadata of a mismatched file suggest.
std::vector<std::string> MismatchHints(const CompiledModel& model, const TensorFile& file,
                                       const std::vector<std::string>& expected_names,
                                       const TensorDifferences& differences) {
  std::vector<std::string> hints;

  const auto kiln_model = file.metadata.find("kiln.model");
  if (kiln_model != file.metadata.end()) {
    hints.push_back(absl::StrCat(
        "Hint: the file is already a Kiln checkpoint (of model '", kiln_model->second,
        "'); pass it to --checkpoint instead of importing it."));
    return hints;
  }

  const std::set<std::string> expected_set(expected_names.begin(), expected_names.end());
  const PrefixMatch extra = MostCommonPrefix(differences.unexpected, expected_set);
  if (extra.count > 0) {
    std::string hint = absl::StrCat(
        "Hint: the file has ", CountOf(extra.count, "tensor"), " of model '", model.name,
        "' under the prefix '", extra.prefix, "' (such as '", extra.example,
        "'); save the state_dict of the inner module, or remove the prefix from the names.");
    for (absl::string_view wrapper : kWrapperPrefixes) {
      if (extra.prefix != wrapper) continue;
      absl::StrAppend(&hint, " PyTorch wrappers add '", wrapper,
                      "' to every name, and Kiln removes it only when every name has it, but "
                      "this file mixes names with and without it.");
    }
    hints.push_back(std::move(hint));
  }

  // A prefix explains the missing names better than another architecture would.
  const size_t found = expected_names.size() - differences.missing.size();
  if (hints.empty() && !differences.unexpected.empty() && 2 * found < expected_names.size()) {
    hints.push_back(absl::StrCat(
        "Hint: only ", found, " of the ", expected_names.size(), " tensors of model '", model.name,
        "' are in the file, so it is probably the state_dict of another architecture: its "
        "top-level modules are ", TopLevelModules(differences.unexpected, 12), ", but model '",
        model.name, "' has ", TopLevelModules(expected_names, 12), "."));
  }

  const std::string final_layer = FinalLayerHint(model, differences);
  if (!final_layer.empty()) hints.push_back(final_layer);
  return hints;
}

// ---------------------------------------------------------------------------------------------
// Conversion to float32
// ---------------------------------------------------------------------------------------------

// Converts an IEEE 754 binary16 value to float, exactly: every binary16 value is a float.
float HalfToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1fu;
  const uint32_t mantissa = half & 0x3ffu;

  float value;
  if (exponent == 0) {
    // Zero or subnormal: mantissa · 2^-24.
    value = std::ldexp(static_cast<float>(mantissa), -24);
    return sign != 0 ? -value : value;
  }
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // Infinity or NaN, keeping the payload.
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Converts a bfloat16 value to float, exactly: bfloat16 is the upper half of a float.
float BFloat16ToFloat(uint16_t bfloat) {
  const uint32_t bits = static_cast<uint32_t>(bfloat) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

template <typename Element>
Element ElementAt(const TensorData& tensor, int64_t index) {
  Element element;
  std::memcpy(&element, tensor.data.data() + index * sizeof(Element), sizeof(Element));
  return element;
}

// Writes the values of `tensor` (F32, F64, F16 or BF16, `count` elements) to `out` as floats.
// Returns the number of finite F64 values that became infinities, which only F64 can have.
int64_t ConvertToFloat(const TensorData& tensor, int64_t count, float* out) {
  int64_t overflows = 0;
  for (int64_t i = 0; i < count; ++i) {
    switch (tensor.dtype) {
      case DType::kF32:
        out[i] = ElementAt<float>(tensor, i);
        break;
      case DType::kF64: {
        const double value = ElementAt<double>(tensor, i);
        out[i] = static_cast<float>(value);
        if (std::isfinite(value) && !std::isfinite(out[i])) ++overflows;
        break;
      }
      case DType::kF16:
        out[i] = HalfToFloat(ElementAt<uint16_t>(tensor, i));
        break;
      case DType::kBF16:
        out[i] = BFloat16ToFloat(ElementAt<uint16_t>(tensor, i));
        break;
      default:
        // CompareTensors accepted only the dtypes above.
        break;
    }
  }
  return overflows;
}

// Converts the tensor of each entry of `infos` into its slice of `array`. Adds a sentence to
// `problems` for each tensor with F64 values beyond the float32 range.
void ConvertAll(const std::map<std::string, TensorData>& tensors,
                const std::vector<ParamInfo>& infos, FloatArray& array,
                std::set<std::string>& converted, std::vector<std::string>& problems) {
  for (const ParamInfo& p : infos) {
    const TensorData& tensor = tensors.at(p.name);
    if (tensor.dtype != DType::kF32) converted.emplace(DTypeName(tensor.dtype));
    const int64_t overflows = ConvertToFloat(tensor, p.numel, array.data() + p.offset);
    if (overflows > 0) {
      problems.push_back(absl::StrCat("tensor '", p.name, "' has ", CountOf(overflows, "F64 value"),
                                      " beyond the float32 range (about ±3.4e38)"));
    }
  }
}

// Returns "F16 converted to F32; 20 num_batches_tracked tensors ignored; prefix 'module.'
// removed", or "" when the import only copied values.
std::string DescribeChanges(const ImportSummary& summary) {
  std::vector<std::string> changes;
  if (!summary.converted_dtypes.empty()) {
    changes.push_back(absl::StrCat(absl::StrJoin(summary.converted_dtypes, ", "),
                                   " converted to F32"));
  }
  if (summary.num_ignored > 0) {
    changes.push_back(
        absl::StrCat(CountOf(summary.num_ignored, "num_batches_tracked tensor"), " ignored"));
  }
  for (const std::string& prefix : summary.removed_prefixes) {
    changes.push_back(absl::StrCat("prefix '", prefix, "' removed"));
  }
  return absl::StrJoin(changes, "; ");
}

}  // namespace

absl::StatusOr<ModelState> ImportTorchStateDict(const std::string& path, const CompiledModel& model,
                                                ImportSummary* summary) {
  absl::Status layout = CheckLayout(model);
  if (!layout.ok()) return layout;
  absl::StatusOr<TensorFile> file = ReadSafetensors(path);
  if (!file.ok()) {
    return absl::Status(file.status().code(),
                        absl::StrCat("cannot import PyTorch weights: ", file.status().message()));
  }

  // Match the file's names with the model's.
  std::vector<ExpectedTensor> expected;
  std::vector<std::string> expected_names;
  for (const std::vector<ParamInfo>* infos : {&model.params, &model.buffers}) {
    for (const ParamInfo& p : *infos) {
      expected.push_back({p.name, p.shape, /*required=*/true});
      expected_names.push_back(p.name);
    }
  }
  ImportSummary done;
  RemoveWrapperPrefixes({expected_names.begin(), expected_names.end()}, file->tensors,
                        done.removed_prefixes);
  for (const auto& entry : file->tensors) {
    if (IsBatchCounter(entry.first)) ++done.num_ignored;
  }
  TensorDifferences differences =
      CompareTensors(file->tensors, expected, kFloatDTypes, model.name, IsBatchCounter);

  // Only a file whose names, shapes and dtypes match is converted, which can add range errors.
  ModelState state = ZeroState(model);
  std::set<std::string> converted;
  if (differences.empty()) {
    ConvertAll(file->tensors, model.params, state.params, converted, differences.sentences);
    ConvertAll(file->tensors, model.buffers, state.buffers, converted, differences.sentences);
  }
  if (!differences.empty()) {
    std::vector<std::string> advice =
        MismatchHints(model, *file, expected_names, differences);
    advice.push_back(absl::StrCat(
        "The file must be a PyTorch state_dict with the names and shapes of Kiln's '", model.name,
        "' ('kiln summary --model ", model.name,
        "' lists its layers), saved with safetensors.torch.save_file(model.state_dict(), "
        "path); tools/export_torchvision.py writes one from torchvision."));
    return absl::InvalidArgumentError(FormatDifferences(
        absl::StrCat("cannot import PyTorch weights from '", path, "': the state_dict does not "
                     "match model '", model.name, "'"),
        differences.sentences, absl::StrJoin(advice, "\n")));
  }

  const std::string source = absl::StrCat("PyTorch state_dict '", path, "'");
  if (absl::Status s = CheckFiniteValues(source, model.params, state.params); !s.ok()) return s;
  if (absl::Status s = CheckFiniteValues(source, model.buffers, state.buffers); !s.ok()) return s;
  done.num_tensors = static_cast<int64_t>(expected.size());
  done.converted_dtypes.assign(converted.begin(), converted.end());
  if (summary != nullptr) *summary = std::move(done);
  return state;
}

absl::Status ImportWeightsCommand(const CompiledModel& model, const std::string& from,
                                  const std::string& output, std::FILE* log) {
  // lstat, so that a dangling symbolic link also counts as an existing output.
  struct stat info;
  if (::lstat(output.c_str(), &info) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "output '", output, "' already exists; import-weights never overwrites a file, so choose "
        "another output path or delete '", output, "' first"));
  }
  // NOTE: a file created at `output` between this check and the final rename is replaced.
  absl::Status destination = CheckSafetensorsDestination(output);
  if (!destination.ok()) return destination;

  ImportSummary summary;
  absl::StatusOr<ModelState> state = ImportTorchStateDict(from, model, &summary);
  if (!state.ok()) return state.status();
  absl::Status saved = SaveCheckpoint(output, model, *state, {{"kiln.imported_from", from}});
  if (!saved.ok()) return saved;

  const std::string changes = DescribeChanges(summary);
  if (log != nullptr) {
    fmt::print(log, "kiln: imported {} tensors of model '{}' from '{}'{} into '{}'\n",
               summary.num_tensors, model.name, from,
               changes.empty() ? "" : absl::StrCat(" (", changes, ")"), output);
  }
  return absl::OkStatus();
}

}  // namespace kiln
