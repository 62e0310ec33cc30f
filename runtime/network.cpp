#include "runtime/network.h"

#include <cmath>
#include <random>
#include <thread>

#include "HalideBuffer.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/halide_allocator.h"
#include "runtime/safetensors.h"

namespace kiln {
namespace {

using FloatBuffer = Halide::Runtime::Buffer<float>;

// Halide dimensions are PyTorch's reversed (x fastest).
std::vector<int> HalideShape(const std::vector<int64_t>& torch_shape) {
  return std::vector<int>(torch_shape.rbegin(), torch_shape.rend());
}

// The last message from the Halide runtime on this thread. Halide's default handler aborts the
// process; this one keeps the message so the failing call returns it as a Status.
thread_local std::string halide_message;

void KeepHalideError(void* /*user_context*/, const char* message) { halide_message = message; }

absl::Status HalideStatus(int code, const std::string& function, const CompiledModel& model) {
  if (code == 0) return absl::OkStatus();
  std::string message = std::move(halide_message);
  halide_message.clear();
  while (!message.empty() && message.back() == '\n') message.pop_back();
  return absl::InternalError(absl::StrCat(model.name, "_", function, " failed (Halide error ", code,
                                          "): ", message));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

constexpr char kMomentumPrefix[] = "momentum_buffer.";

// Halide buffer views of the per-parameter slices of a flat array, one per ParamInfo. The
// generated code reads and writes the array through them in place.
struct ParamViews {
  ParamViews(const CompiledModel& model, float* storage) {
    buffers.reserve(model.params.size());
    for (const ParamInfo& p : model.params) {
      buffers.emplace_back(storage + p.offset, HalideShape(p.shape));
      raw.push_back(buffers.back().raw_buffer());
    }
  }
  std::vector<FloatBuffer> buffers;
  std::vector<halide_buffer_t*> raw;
};

}  // namespace

void SetThreads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  halide_set_num_threads(threads);
}

Network::Network(const CompiledModel& model)
    : model_(model),
      params_(model.num_params),
      grads_(model.num_params),
      velocity_(model.num_params) {
  halide_set_error_handler(KeepHalideError);
  InstallHalideAllocator();
}

void Network::InitParams(uint64_t seed) {
  std::mt19937_64 generator(seed);
  for (const ParamInfo& p : model_.params) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(p.fan_in));
    for (int64_t i = 0; i < p.numel; ++i) {
      // 53 random bits to a double in [0, 1): portable, unlike std::uniform_real_distribution.
      const double unit = static_cast<double>(generator() >> 11) * 0x1.0p-53;
      params_[p.offset + i] = static_cast<float>((2 * unit - 1) * bound);
    }
  }
  std::fill(velocity_.begin(), velocity_.end(), 0.0f);
}

absl::Status Network::Forward(const float* images, int batch, float* logits) {
  FloatBuffer input(const_cast<float*>(images), {model_.width, model_.height, model_.channels, batch});
  FloatBuffer output(logits, {model_.num_classes, batch});
  ParamViews params(model_, params_.data());
  return HalideStatus(model_.forward(input.raw_buffer(), params.raw.data(), output.raw_buffer()),
                      "forward", model_);
}

absl::StatusOr<BatchResult> Network::Backward(const float* images, const int32_t* labels, int batch) {
  FloatBuffer input(const_cast<float*>(images), {model_.width, model_.height, model_.channels, batch});
  Halide::Runtime::Buffer<int32_t> label_buffer(const_cast<int32_t*>(labels), batch);
  FloatBuffer loss = FloatBuffer::make_scalar();
  Halide::Runtime::Buffer<int32_t> correct = Halide::Runtime::Buffer<int32_t>::make_scalar();

  ParamViews params(model_, params_.data()), grads(model_, grads_.data());
  const int code = model_.backward(input.raw_buffer(), label_buffer.raw_buffer(), params.raw.data(),
                                   loss.raw_buffer(), correct.raw_buffer(), grads.raw.data());
  absl::Status status = HalideStatus(code, "backward", model_);
  if (!status.ok()) return status;
  return BatchResult{loss(), correct()};
}

absl::Status Network::Update(const SgdOptions& options) {
  const int count = static_cast<int>(model_.num_params);
  FloatBuffer params(params_.data(), count), grads(grads_.data(), count),
      velocity(velocity_.data(), count);
  const int code = model_.update(options.lr, options.momentum, options.weight_decay,
                                 params.raw_buffer(), grads.raw_buffer(), velocity.raw_buffer(),
                                 params.raw_buffer(), velocity.raw_buffer());
  return HalideStatus(code, "update", model_);
}

absl::Status Network::SaveCheckpoint(const std::string& path,
                                     const std::map<std::string, std::string>& metadata) const {
  TensorFile file;
  file.metadata = metadata;
  file.metadata["kiln.model"] = model_.name;
  file.metadata["kiln.num_params"] = absl::StrCat(model_.num_params);
  for (const ParamInfo& p : model_.params) {
    file.tensors[p.name] = MakeF32(p.shape, params_.data() + p.offset);
    file.tensors[kMomentumPrefix + p.name] = MakeF32(p.shape, velocity_.data() + p.offset);
  }
  return WriteSafetensors(path, file);
}

absl::StatusOr<std::map<std::string, std::string>> Network::LoadCheckpoint(const std::string& path) {
  absl::StatusOr<TensorFile> file = ReadSafetensors(path);
  if (!file.ok()) return file.status();

  // Check everything first, so a mismatched file changes nothing.
  std::vector<std::string> problems;
  auto it = file->metadata.find("kiln.model");
  if (it != file->metadata.end() && it->second != model_.name) {
    problems.push_back(absl::StrCat("it is a checkpoint of model '", it->second, "', not '",
                                    model_.name, "'"));
  }
  auto check = [&](const std::string& name, const ParamInfo& p, bool required) {
    auto t = file->tensors.find(name);
    if (t == file->tensors.end()) {
      if (required) problems.push_back(absl::StrCat("tensor '", name, "' is missing"));
      return;
    }
    if (t->second.dtype != DType::kF32) {
      problems.push_back(absl::StrCat("tensor '", name, "' has dtype ", DTypeName(t->second.dtype),
                                      ", expected F32"));
    } else if (t->second.shape != p.shape) {
      problems.push_back(absl::StrCat("tensor '", name, "' has shape ", ShapeString(t->second.shape),
                                      ", expected ", ShapeString(p.shape)));
    }
  };
  for (const ParamInfo& p : model_.params) {
    check(p.name, p, /*required=*/true);
    check(kMomentumPrefix + p.name, p, /*required=*/false);
  }
  for (const auto& [name, tensor] : file->tensors) {
    std::string base = name.rfind(kMomentumPrefix, 0) == 0 ? name.substr(sizeof(kMomentumPrefix) - 1) : name;
    bool known = false;
    for (const ParamInfo& p : model_.params) known |= p.name == base;
    if (!known) problems.push_back(absl::StrCat("tensor '", name, "' is not a parameter of ", model_.name));
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint '", path, "' does not match model '", model_.name, "': ",
        absl::StrJoin(problems, "; "), ". Use a checkpoint saved by this model."));
  }

  for (const ParamInfo& p : model_.params) {
    const float* values = file->tensors.at(p.name).f32();
    std::copy(values, values + p.numel, params_.begin() + p.offset);
    auto momentum = file->tensors.find(kMomentumPrefix + p.name);
    if (momentum != file->tensors.end()) {
      std::copy(momentum->second.f32(), momentum->second.f32() + p.numel, velocity_.begin() + p.offset);
    } else {
      std::fill(velocity_.begin() + p.offset, velocity_.begin() + p.offset + p.numel, 0.0f);
    }
  }
  return file->metadata;
}

}  // namespace kiln
