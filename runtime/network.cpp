#include "runtime/network.h"

#include <cmath>
#include <random>
#include <thread>

#include "HalideBuffer.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/checkpoint.h"
#include "runtime/halide_allocator.h"

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
  // Halide limits each buffer to 2^31 - 1 bytes, which a large batch's activations can exceed.
  const bool too_large = code == halide_error_code_buffer_allocation_too_large ||
                         code == halide_error_code_buffer_extents_too_large;
  return absl::InternalError(absl::StrCat(
      model.name, "_", function, " failed (Halide error ", code, "): ", message,
      too_large ? "; the batch is too large for one call, so split it into smaller batches" : ""));
}

// Halide buffer views of the per-tensor slices of a flat array, one per ParamInfo. The
// generated code reads and writes the array through them in place.
struct Views {
  Views(const std::vector<ParamInfo>& infos, float* storage) {
    buffers.reserve(infos.size());
    for (const ParamInfo& p : infos) {
      buffers.emplace_back(storage + p.offset, HalideShape(p.shape));
      all.push_back(buffers.back().raw_buffer());
    }
  }
  // The views of `indices`, in order.
  std::vector<halide_buffer_t*> of(const std::vector<int>& indices) const {
    std::vector<halide_buffer_t*> out;
    for (int i : indices) out.push_back(all[i]);
    return out;
  }
  std::vector<FloatBuffer> buffers;
  std::vector<halide_buffer_t*> all;
};

// A batch of per-sample tensors of `shape`, Halide-ordered.
FloatBuffer BatchBuffer(const float* data, const std::vector<int64_t>& shape, int batch) {
  std::vector<int> dims = HalideShape(shape);
  dims.push_back(batch);
  return FloatBuffer(const_cast<float*>(data), dims);
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The dropout seed of one segment in one step: a SplitMix64 finalizer of the three, so nearby
// steps and segments get unrelated masks.
uint32_t SegmentSeed(uint64_t seed, uint64_t step, size_t segment) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (step * 1024 + segment + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return static_cast<uint32_t>(z ^ (z >> 31));
}

}  // namespace

void SetThreads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  halide_set_num_threads(threads);
}

Network::Network(const CompiledModel& model)
    : model_(model),
      params_(model.num_params),
      grads_(model.num_params),
      buffers_(model.num_buffer_values) {
  optimizer_.momentum.assign(model.num_params, 0.0f);
  for (const ParamInfo& b : model.buffers) {
    std::fill_n(buffers_.begin() + b.offset, b.numel, b.initial_value);
  }
  halide_set_error_handler(KeepHalideError);
  InstallHalideAllocator();
}

void Network::InitParams(uint64_t seed) {
  std::mt19937_64 generator(seed);
  for (const ParamInfo& p : model_.params) {
    if (p.fan_in == 0) {
      std::fill_n(params_.begin() + p.offset, p.numel, p.initial_value);
      continue;
    }
    const double bound = 1.0 / std::sqrt(static_cast<double>(p.fan_in));
    for (int64_t i = 0; i < p.numel; ++i) {
      // 53 random bits to a double in [0, 1): portable, unlike std::uniform_real_distribution.
      const double unit = static_cast<double>(generator() >> 11) * 0x1.0p-53;
      params_[p.offset + i] = static_cast<float>((2 * unit - 1) * bound);
    }
  }
  optimizer_ = OptimizerState();
  optimizer_.momentum.assign(model_.num_params, 0.0f);
  for (const ParamInfo& b : model_.buffers) {
    std::fill_n(buffers_.begin() + b.offset, b.numel, b.initial_value);
  }
  dropout_seed_ = seed;
  steps_ = 0;
}

void Network::ReserveBoundaries(int batch) {
  if (batch <= boundary_batch_) return;
  const size_t boundaries = model_.segments.size() - 1;
  outputs_.resize(boundaries);
  output_grads_.resize(boundaries);
  for (size_t k = 0; k < boundaries; ++k) {
    const size_t size = static_cast<size_t>(Numel(model_.segments[k].output_shape)) * batch;
    outputs_[k].resize(size);
    output_grads_[k].resize(size);
  }
  boundary_batch_ = batch;
}

absl::Status Network::Forward(const float* images, int batch, float* logits) {
  ReserveBoundaries(batch);
  Views params(model_.params, params_.data()), buffers(model_.buffers, buffers_.data());
  const size_t count = model_.segments.size();
  for (size_t k = 0; k < count; ++k) {
    const SegmentInfo& segment = model_.segments[k];
    FloatBuffer input = BatchBuffer(k == 0 ? images : outputs_[k - 1].data(), segment.input_shape, batch);
    FloatBuffer output = BatchBuffer(k + 1 == count ? logits : outputs_[k].data(),
                                     segment.output_shape, batch);
    const int code = model_.functions[segment.functions].forward(
        input.raw_buffer(), batch, params.of(segment.params).data(),
        buffers.of(segment.buffers).data(), output.raw_buffer());
    absl::Status status = HalideStatus(code, absl::StrCat("forward (segment ", k, ")"), model_);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<BatchResult> Network::Backward(const float* images, const int32_t* labels, int batch) {
  Halide::Runtime::Buffer<int32_t> targets(const_cast<int32_t*>(labels), batch);
  return Train(images, targets.raw_buffer(), batch);
}

absl::StatusOr<BatchResult> Network::Backward(const float* images, const float* targets, int batch) {
  FloatBuffer buffer = BatchBuffer(targets, model_.output_shape, batch);
  return Train(images, buffer.raw_buffer(), batch);
}

absl::StatusOr<BatchResult> Network::Train(const float* images, halide_buffer_t* targets, int batch) {
  ReserveBoundaries(batch);
  Views params(model_.params, params_.data()), grads(model_.params, grads_.data()),
      buffers(model_.buffers, buffers_.data());
  const size_t count = model_.segments.size();
  const uint64_t step = steps_++;
  // The trainable parameters of segment k, whose gradients its functions write.
  auto trainable = [&](size_t k) {
    std::vector<int> indices;
    for (int p : model_.segments[k].params) {
      if (model_.params[p].trainable) indices.push_back(p);
    }
    return indices;
  };
  // Whether segment k's training functions write its input's gradient: only when the segment
  // before it has a backward function (a frozen model has none below its lowest trainable layer).
  auto writes_input_grad = [&](size_t k) {
    return k > 0 && model_.functions[model_.segments[k - 1].functions].backward != nullptr;
  };
  auto input_of = [&](size_t k) {
    return BatchBuffer(k == 0 ? images : outputs_[k - 1].data(), model_.segments[k].input_shape, batch);
  };

  // Forward through every segment but the last, storing each output and updating the running
  // statistics in place.
  for (size_t k = 0; k + 1 < count; ++k) {
    const SegmentInfo& segment = model_.segments[k];
    FloatBuffer input = input_of(k);
    FloatBuffer output = BatchBuffer(outputs_[k].data(), segment.output_shape, batch);
    std::vector<halide_buffer_t*> stats = buffers.of(segment.buffers);
    const int code = model_.functions[segment.functions].train_forward(
        input.raw_buffer(), params.of(segment.params).data(), stats.data(),
        SegmentSeed(dropout_seed_, step, k), output.raw_buffer(), stats.data());
    absl::Status status = HalideStatus(code, absl::StrCat("train_forward (segment ", k, ")"), model_);
    if (!status.ok()) return status;
  }

  // The loss and the gradients of the last segment.
  FloatBuffer loss = FloatBuffer::make_scalar();
  Halide::Runtime::Buffer<int32_t> correct = Halide::Runtime::Buffer<int32_t>::make_scalar();
  {
    const size_t k = count - 1;
    const SegmentInfo& segment = model_.segments[k];
    FloatBuffer input = input_of(k);
    FloatBuffer input_grad = writes_input_grad(k) ? BatchBuffer(output_grads_[k - 1].data(),
                                                                segment.input_shape, batch)
                                                    : FloatBuffer();
    std::vector<halide_buffer_t*> stats = buffers.of(segment.buffers);
    const int code = model_.functions[segment.functions].train_last(
        input.raw_buffer(), targets, params.of(segment.params).data(), stats.data(),
        SegmentSeed(dropout_seed_, step, k), loss.raw_buffer(), correct.raw_buffer(),
        writes_input_grad(k) ? input_grad.raw_buffer() : nullptr, grads.of(trainable(k)).data(),
        stats.data());
    absl::Status status = HalideStatus(code, absl::StrCat("train_last (segment ", k, ")"), model_);
    if (!status.ok()) return status;
  }

  // Backward through the other segments in reverse, down to the lowest trainable one.
  for (size_t k = count - 1; k-- > 0;) {
    const SegmentInfo& segment = model_.segments[k];
    SegmentBackwardFn backward = model_.functions[segment.functions].backward;
    if (backward == nullptr) break;
    FloatBuffer input = input_of(k);
    FloatBuffer output_grad = BatchBuffer(output_grads_[k].data(), segment.output_shape, batch);
    FloatBuffer input_grad = writes_input_grad(k) ? BatchBuffer(output_grads_[k - 1].data(),
                                                                segment.input_shape, batch)
                                                    : FloatBuffer();
    const int code = backward(
        input.raw_buffer(), params.of(segment.params).data(), SegmentSeed(dropout_seed_, step, k),
        output_grad.raw_buffer(), writes_input_grad(k) ? input_grad.raw_buffer() : nullptr,
        grads.of(trainable(k)).data());
    absl::Status status = HalideStatus(code, absl::StrCat("backward (segment ", k, ")"), model_);
    if (!status.ok()) return status;
  }
  return BatchResult{loss(), correct()};
}

absl::StatusOr<UpdateStats> Network::Update(const OptimizerOptions& options, float lr) {
  return ApplyUpdate(options, lr, model_.params, absl::MakeSpan(params_), grads_, optimizer_);
}

absl::Status Network::Update(const SgdOptions& sgd) {
  OptimizerOptions options;
  options.lr = sgd.lr;
  options.momentum = sgd.momentum;
  options.weight_decay = sgd.weight_decay;
  return Update(options, sgd.lr).status();
}

absl::StatusOr<std::vector<double>> Network::GradientNorms() const {
  return kiln::GradientNorms(model_.params, grads_);
}

absl::Status Network::CheckFinite(const BatchResult& result,
                                  const std::vector<double>* norms) const {
  absl::StatusOr<std::vector<double>> computed;
  if (norms == nullptr) {
    // One sum over the whole array when all is well, and each tensor's sum only to name the
    // tensor that is not finite. LeNet-5 at batch 64 (2 threads, Zen 4): 30 µs per step with
    // one call per tensor, 8 µs with one call.
    absl::StatusOr<bool> all_finite = TrainableSquaresFinite(model_.params, grads_);
    if (!all_finite.ok()) return all_finite.status();
    if (*all_finite && std::isfinite(result.loss)) return absl::OkStatus();
    computed = GradientNorms();
    if (!computed.ok()) return computed.status();
    norms = &*computed;
  }
  const std::string loss = std::isfinite(result.loss)
                               ? ""
                               : absl::StrCat("the loss is ", result.loss, " and ");
  for (size_t i = 0; i < model_.params.size(); ++i) {
    const ParamInfo& p = model_.params[i];
    if (!p.trainable || std::isfinite((*norms)[i])) continue;
    // The sum of squares is infinite for an infinite element and, rarely, for finite elements
    // above about 1e19; either way the step is unusable.
    return absl::DataLossError(absl::StrCat(
        "step ", steps_, ": ", loss, "the gradient of ", p.name, " is ",
        std::isnan((*norms)[i]) ? "NaN" : "infinite or overflows", "; layer ",
        p.name.substr(0, p.name.rfind('.')),
        " is the first layer affected. Check the inputs for NaN or infinite values, or lower "
        "the learning rate"));
  }
  if (!loss.empty()) {
    return absl::DataLossError(absl::StrCat(
        "step ", steps_, ": the loss is ", result.loss, " while every gradient is finite; "
        "check the targets for NaN or infinite values"));
  }
  return absl::OkStatus();
}

absl::Status Network::SaveCheckpoint(const std::string& path,
                                     const std::map<std::string, std::string>& metadata) const {
  ModelState state{params_, optimizer_.momentum, buffers_, optimizer_.exp_avg,
                   optimizer_.exp_avg_sq};
  std::map<std::string, std::string> all = metadata;
  all["kiln.optimizer_steps"] = absl::StrCat(optimizer_.steps);
  all["kiln.steps"] = absl::StrCat(steps_);
  all["kiln.dropout_seed"] = absl::StrCat(dropout_seed_);
  return kiln::SaveCheckpoint(path, model_, state, all);
}

absl::StatusOr<std::map<std::string, std::string>> Network::LoadCheckpoint(
    const std::string& path, const MetadataCheck& check_metadata) {
  // The step counts, checked before anything is loaded. Checkpoints from before these keys start
  // the counts afresh.
  const char* const kCounts[] = {"kiln.optimizer_steps", "kiln.steps", "kiln.dropout_seed"};
  auto check = [&](const std::map<std::string, std::string>& metadata) {
    for (const char* key : kCounts) {
      uint64_t value = 0;
      auto it = metadata.find(key);
      if (it != metadata.end() && !absl::SimpleAtoi(it->second, &value)) {
        return absl::InvalidArgumentError(
            absl::StrCat(key, " is '", it->second, "', not a count"));
      }
    }
    return check_metadata ? check_metadata(metadata) : absl::OkStatus();
  };
  // LoadCheckpoint keeps the arrays' storage when their sizes match, so the views the generated
  // functions read stay valid; it changes nothing on error.
  ModelState state{std::move(params_), std::move(optimizer_.momentum), std::move(buffers_),
                   std::move(optimizer_.exp_avg), std::move(optimizer_.exp_avg_sq)};
  absl::StatusOr<std::map<std::string, std::string>> metadata =
      kiln::LoadCheckpoint(path, model_, state, check);
  params_ = std::move(state.params);
  optimizer_.momentum = std::move(state.velocity);
  buffers_ = std::move(state.buffers);
  optimizer_.exp_avg = std::move(state.exp_avg);
  optimizer_.exp_avg_sq = std::move(state.exp_avg_sq);
  if (!metadata.ok()) return metadata;
  uint64_t value = 0;
  auto read = [&](const char* key, auto& field) {
    auto it = metadata->find(key);
    if (it != metadata->end() && absl::SimpleAtoi(it->second, &value)) field = value;
  };
  read("kiln.optimizer_steps", optimizer_.steps);
  read("kiln.steps", steps_);
  read("kiln.dropout_seed", dropout_seed_);
  return metadata;
}

absl::StatusOr<PretrainedReport> Network::LoadPretrained(const std::string& path) {
  ModelState state{std::move(params_), {}, std::move(buffers_), {}, {}};
  absl::StatusOr<PretrainedReport> report = kiln::LoadPretrained(path, model_, state);
  params_ = std::move(state.params);
  buffers_ = std::move(state.buffers);
  return report;
}

size_t Network::StateBytes() const {
  size_t floats = params_.size() + grads_.size() + buffers_.size() + optimizer_.momentum.size() +
                  optimizer_.exp_avg.size() + optimizer_.exp_avg_sq.size();
  for (const std::vector<float>& v : outputs_) floats += v.size();
  for (const std::vector<float>& v : output_grads_) floats += v.size();
  return floats * sizeof(float);
}

}  // namespace kiln
