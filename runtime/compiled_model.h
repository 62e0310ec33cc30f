/** \file
 * The interface between Kiln's generated code and its runtime: the description of a compiled
 * model (parameters, running statistics, layers, segments) and its compiled functions.
 *
 * Each generated `<model>_model.cpp` defines one CompiledModel and registers it:
 *
 *   const kiln::CompiledModel* m = kiln::FindCompiledModel("lenet5");
 *   m->functions[m->segments[0].functions].forward(images, batch, params, buffers, logits);
 */
#ifndef KILN_RUNTIME_COMPILED_MODEL_H_
#define KILN_RUNTIME_COMPILED_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

// Declared, not included: code that embeds a compiled model builds without Halide's headers.
// HalideRuntime.h defines it.
struct halide_buffer_t;

namespace kiln {

/// A learnable tensor: PyTorch `state_dict` name and shape, and its position (in floats) in the
/// model's flat parameter array. Initialized uniform in ±1/sqrt(fan_in).
struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;
  int64_t numel = 0;
  int64_t fan_in = 0;
  float initial_value = 0;  ///< The constant start when fan_in is 0 (BatchNorm, buffers).
  /// False for the parameters a model freezes: the compiled step computes no gradient for them
  /// and optimizers leave them alone.
  bool trainable = true;
};

/// The settings of a layer's op, as the DSL call gave them (compiler/model.h Layer); the ones an
/// op does not take keep these defaults.
struct LayerAttributes {
  int64_t kernel_size = 0;  ///< conv2d and pooling.
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t dilation = 1;     ///< conv2d.
  int64_t groups = 1;       ///< conv2d.
  bool ceil_mode = false;   ///< Pooling.
  bool count_include_pad = true;  ///< avg_pool2d.
  float negative_slope = 0; ///< leaky_relu.
  float p = 0;              ///< dropout.
  float eps = 1e-5f;        ///< batch_norm.
};

/// One layer: a row of the model summary and a node of the inference graph (for export).
struct LayerInfo {
  std::string name;
  std::string op;
  std::vector<int64_t> output_shape;  ///< Per sample, PyTorch order.
  int64_t num_params = 0;
  int64_t flops = 0;  ///< Forward FLOPs per sample; a multiply-add counts as 2.
  std::vector<int> inputs;   ///< Indices into CompiledModel::layers of the layers it reads.
  std::vector<int> params;   ///< Indices into CompiledModel::params, weight first.
  std::vector<int> buffers;  ///< Indices into CompiledModel::buffers (batch_norm: mean, variance).
  LayerAttributes attributes;
};

// The compiled functions of one distinct segment (see compiler/lower.h). Buffers follow PyTorch
// memory order with Halide dimensions reversed: images and activations (x, y, c, n) or (f, n),
// labels (n) int32, each parameter, gradient and running statistic with the shape of its
// ParamInfo reversed. `params`, `grads`, `buffers` and `new_buffers` point to one buffer per
// entry of the segment's lists, in order; `new_buffers` may alias `buffers`. Each returns 0 or a
// Halide error code.
/// `batch` is the input's last extent (a separate argument, so that the generated adapters
/// compile without HalideRuntime.h).
using SegmentForwardFn = int (*)(halide_buffer_t* input, int batch, halide_buffer_t* const* params,
                                 halide_buffer_t* const* buffers, halide_buffer_t* output);
using SegmentTrainForwardFn = int (*)(halide_buffer_t* input, halide_buffer_t* const* params,
                                      halide_buffer_t* const* buffers, uint32_t seed,
                                      halide_buffer_t* output, halide_buffer_t* const* new_buffers);
/// `grads` lists the segment's trainable parameters only (ParamInfo::trainable). `input_grad` is
/// ignored (may be null) in the first segment and when the segment before has no backward
/// function.
using SegmentBackwardFn = int (*)(halide_buffer_t* input, halide_buffer_t* const* params,
                                  uint32_t seed, halide_buffer_t* output_grad,
                                  halide_buffer_t* input_grad, halide_buffer_t* const* grads);
/// `targets`: labels (n) int32, or a float tensor shaped like the prediction (for autoencoders
/// the images). `loss` and `correct` are zero-dimensional float and int32 buffers.
using SegmentTrainLastFn = int (*)(halide_buffer_t* input, halide_buffer_t* targets,
                                   halide_buffer_t* const* params,
                                   halide_buffer_t* const* buffers, uint32_t seed,
                                   halide_buffer_t* loss, halide_buffer_t* correct,
                                   halide_buffer_t* input_grad, halide_buffer_t* const* grads,
                                   halide_buffer_t* const* new_buffers);
/// The compiled code of one distinct segment; identical blocks share one.
struct SegmentFunctions {
  SegmentForwardFn forward = nullptr;
  SegmentTrainForwardFn train_forward = nullptr;  ///< Null in the last segment.
  /// Null in the last segment, and below the lowest trainable layer of a frozen model.
  SegmentBackwardFn backward = nullptr;
  SegmentTrainLastFn train_last = nullptr;        ///< Only in the last segment.
};

/// One segment of the model, in execution order.
struct SegmentInfo {
  int functions = 0;                   ///< Index into CompiledModel::functions.
  std::vector<int> params;             ///< Indices into CompiledModel::params.
  std::vector<int> buffers;            ///< Indices into CompiledModel::buffers.
  std::vector<int64_t> input_shape;    ///< Per sample, PyTorch order.
  std::vector<int64_t> output_shape;   ///< Per sample; the prediction's in the last segment.
};

/// The kind of target the loss compares against (compiler/model.h TargetKind).
enum class Targets { kClassLabels, kTensor, kInput };

/// Everything the runtime needs about one compiled model.
struct CompiledModel {
  std::string name;
  std::string model;     ///< The model it was compiled from (models/registry.h), e.g. "lenet5".
  std::string schedule;  ///< manual, li2018, mullapudi2016, adams2019 or naive.
  double compile_seconds = 0;  ///< kiln-gen's time for scheduling, lowering and code generation.
  std::string target;    ///< The Halide target the functions were compiled for.
  int batch_size = 0;    ///< The batch the model was defined and tuned for.
  std::vector<int64_t> input_shape;  ///< Per sample: {C, H, W} or {F}.
  int channels = 0, height = 0, width = 0;  ///< input_shape as {C, H, W}; {F, 1, 1} when flat.
  std::vector<int64_t> output_shape; ///< The prediction per sample: {classes} for classifiers.
  int num_classes = 0;   ///< Cross-entropy models; 0 for regression.
  Targets targets = Targets::kClassLabels;
  std::string loss;      ///< The loss op, e.g. "cross_entropy_loss".
  int64_t num_params = 0;
  int64_t num_buffer_values = 0;
  std::vector<ParamInfo> params;
  std::vector<ParamInfo> buffers;  ///< Running statistics, in their own flat array.
  std::vector<LayerInfo> layers;
  std::vector<SegmentFunctions> functions;
  std::vector<SegmentInfo> segments;
};

/// Returns the registered compiled model `name`, or nullptr.
const CompiledModel* FindCompiledModel(const std::string& name);
/// Names of all compiled models linked into this program, sorted.
std::vector<std::string> CompiledModelNames();

/// Adds a model to the registry at static-initialization time (used by generated code).
struct CompiledModelRegistration {
  explicit CompiledModelRegistration(const CompiledModel* model);
};

}  // namespace kiln

#endif  // KILN_RUNTIME_COMPILED_MODEL_H_
