/** \file
 * Kiln's model DSL: a static graph of layers with shapes inferred as it is defined.
 *
 * Example (LeNet-5's first block, names and argument order as in torch.nn):
 *
 *   kiln::ModelBuilder net("tiny", kiln::ModelOptions{64});
 *   kiln::Tensor x = net.input(1, 28, 28);
 *   x = net.conv2d("conv1", x, 6, 5, 1, 2);  // out_channels, kernel_size, stride, padding
 *   x = net.relu(x);
 *   x = net.max_pool2d(x, 2);
 *   x = net.flatten(x);
 *   x = net.dense("fc", x, 10);
 *   net.cross_entropy_loss(x, 10);
 *   absl::StatusOr<kiln::Model> model = std::move(net).build();
 *
 * The builder records the first error and returns invalid tensors after it, so a definition reads
 * straight through. `build()` returns that first error, which names the layer and the values.
 *
 * Layers between begin_block(name) and end_block() form a block: a unit the compiler generates
 * separately, and only once for all blocks of the same structure and shapes (a ResNet stage's
 * repeated residual blocks). Layers outside blocks are grouped between them. Each block reads
 * one tensor defined before it.
 */
#ifndef KILN_COMPILER_MODEL_H_
#define KILN_COMPILER_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln {

/// The operation a layer performs. Each has its algorithm in compiler/ops/.
enum class OpKind {
  kInput,
  kConv2d,
  kRelu,
  kLeakyRelu,
  kSigmoid,
  kTanh,
  kMaxPool2d,
  kAvgPool2d,
  kAdaptiveAvgPool2d,
  kFlatten,
  kDense,
  kAdd,
  kConcat,
  kDropout,
  kBatchNorm2d,
  kBatchNorm1d,
  kCrossEntropyLoss,
  kMseLoss,
  kL1Loss,
  kBceWithLogitsLoss,
};

/// Returns the torch.nn-style name of an op ("conv2d", "relu", ...).
const char* OpName(OpKind kind);
/// True for the four losses.
bool IsLoss(OpKind kind);

/// A learnable tensor, named and shaped as in a PyTorch `state_dict` (e.g. `conv1.weight`,
/// shape {out_channels, in_channels, kernel, kernel}). `offset` is its position, in floats, in the
/// model's flat parameter array. Conv and dense parameters are initialized uniform in
/// ±1/sqrt(fan_in) as PyTorch does by default; BatchNorm's weight is 1 and its bias 0
/// (`fan_in` 0, `initial_value` set).
struct Param {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;
  int64_t fan_in = 0;
  float initial_value = 0;  ///< The constant start when fan_in is 0.
  /// False when frozen (FreezeThrough): the training functions compute no gradient for it.
  bool trainable = true;

  int64_t numel() const;
};

/// One node of the graph. Shapes are per sample, in PyTorch order: {C, H, W} or {F}.
struct Layer {
  std::string name;
  OpKind kind = OpKind::kInput;
  std::vector<int> inputs;  ///< Indices of the producing layers; empty for the input layer.
  std::vector<int64_t> output_shape;

  // Attributes; which ones are used depends on `kind`.
  int64_t out_channels = 0;  ///< conv2d: output channels; dense: out_features.
  int64_t kernel_size = 0;   ///< conv2d and pooling.
  int64_t stride = 1;        ///< conv2d and pooling.
  int64_t padding = 0;       ///< conv2d and pooling.
  int64_t dilation = 1;      ///< conv2d.
  int64_t groups = 1;        ///< conv2d.
  bool bias = true;          ///< conv2d and dense.
  bool ceil_mode = false;    ///< Pooling: output size rounded up, as in PyTorch.
  bool count_include_pad = true;  ///< avg_pool2d: padded zeros count in the divisor.
  float negative_slope = 0;  ///< leaky_relu.
  float p = 0;               ///< dropout: probability of zeroing an element.
  float eps = 1e-5f;         ///< batch_norm.
  float momentum = 0.1f;     ///< batch_norm: weight of the batch in the running statistics.
  float label_smoothing = 0; ///< cross_entropy_loss.
  int64_t num_classes = 0;   ///< cross_entropy_loss.
  /// Regression losses: true when the target is the model's input (an autoencoder), false when
  /// it comes with the data as a tensor shaped like the prediction.
  bool target_is_input = false;

  std::vector<int> params;   ///< Indices into Model::params, weight first.
  std::vector<int> buffers;  ///< Indices into Model::buffers (batch_norm: mean, then variance).
  int block = -1;            ///< Index into Model::blocks, or -1 outside blocks.

  int input() const { return inputs.empty() ? -1 : inputs[0]; }
};

/// Layers [first, last] defined between begin_block() and end_block().
struct Block {
  std::string name;
  int first = 0;
  int last = 0;
};

/// A unit of code generation: layers [first, last] that read only each other and the output of
/// layer `input`, defined before them (0: the model's input). A block is one segment; the layers
/// between blocks form one segment per gap.
struct Segment {
  int first = 0;
  int last = 0;
  int input = -1;
  int block = -1;
};

/// Options fixed when a model is compiled. Zero sizes select the model's own defaults, so one
/// definition compiles for another input size or a new classifier head.
struct ModelOptions {
  int batch_size = 64;
  int64_t channels = 0, height = 0, width = 0;  ///< Input size of image models.
  int64_t num_classes = 0;

  int64_t channels_or(int64_t d) const { return channels > 0 ? channels : d; }
  int64_t height_or(int64_t d) const { return height > 0 ? height : d; }
  int64_t width_or(int64_t d) const { return width > 0 ? width : d; }
  int64_t classes_or(int64_t d) const { return num_classes > 0 ? num_classes : d; }
};

/// The kind of target the loss compares against, which the runtime supplies.
enum class TargetKind {
  kClassLabels,  ///< int32 class index per sample (cross_entropy_loss).
  kTensor,       ///< float tensor shaped like the prediction.
  kInput,        ///< the input batch itself (autoencoders).
};

/// A complete, validated model: layers in definition (topological) order, ending in a loss.
struct Model {
  std::string name;
  int batch_size = 0;
  std::vector<Layer> layers;
  std::vector<Param> params;
  /// Running statistics (`<bn>.running_mean`, `<bn>.running_var`): state that is not learned
  /// by gradients, laid out like `params` in a flat array of its own.
  std::vector<Param> buffers;
  std::vector<Block> blocks;
  std::vector<Segment> segments;  ///< In order; together they cover every layer but the input.

  /// Total number of learnable floats.
  int64_t num_params() const;
  int64_t num_buffer_values() const;
  /// The layer that produces the prediction (the loss's first input).
  const Layer& logits_layer() const;
  const Layer& loss_layer() const { return layers.back(); }
  const Layer& input_layer() const { return layers.front(); }
  TargetKind target_kind() const;
  /// Forward FLOPs of one sample in `layer` (a multiply-add counts as 2).
  int64_t flops(const Layer& layer) const;
};

/// A handle to a layer's output inside one ModelBuilder. Default-constructed handles are invalid.
struct Tensor {
  int layer = -1;
  const void* owner = nullptr;  ///< The builder that made it, to reject tensors of other graphs.
};

/// Defines a model layer by layer. Not thread-safe; use one builder per model.
/// Freezes the parameters of layer or block `name` and of every layer defined before it. `name`
/// may also name a group of blocks `name`.0, `name`.1, ..., such as the ResNet stage "layer2".
/// Freezing is a compile-time choice: the training functions compute no gradients for frozen
/// parameters, and none of the input gradients below the lowest trainable layer, so the backward
/// pass there is pruned. Running statistics still update in training mode.
/// Errors: InvalidArgument when `name` is neither a layer nor a block (the message lists those
/// with parameters), or when it would freeze every parameter.
absl::Status FreezeThrough(Model& model, const std::string& name);

/// Returns whether segment `index` or one before it has a trainable parameter, which is when the
/// segment needs a backward function.
bool NeedsBackward(const Model& model, int index);
/// Returns whether a segment before `index` has a trainable parameter, which is when segment
/// `index` must output its input's gradient.
bool NeedsInputGrad(const Model& model, int index);

class ModelBuilder {
 public:
  ModelBuilder(std::string name, ModelOptions options);

  /// The image input: one batch of `channels` x `height` x `width` floats (NCHW).
  Tensor input(int64_t channels, int64_t height, int64_t width);
  /// A flat input of `features` floats per sample (an MLP's input).
  Tensor input(int64_t features);

  /// 2-D convolution as torch.nn.Conv2d (square kernel, zero padding). Parameters
  /// `<name>.weight` {out_channels, C_in / groups, k, k} and `<name>.bias` {out_channels}.
  /// Shape: H_out = floor((H_in + 2·padding − dilation·(kernel_size − 1) − 1) / stride) + 1,
  /// likewise W. `groups` must divide C_in and out_channels; groups = C_in is depthwise.
  Tensor conv2d(const std::string& name, Tensor x, int64_t out_channels, int64_t kernel_size,
                int64_t stride = 1, int64_t padding = 0, bool bias = true, int64_t dilation = 1,
                int64_t groups = 1);

  /// max(x, 0), elementwise, as torch.nn.ReLU. Shape unchanged.
  Tensor relu(Tensor x);
  /// x if x > 0, else negative_slope · x, as torch.nn.LeakyReLU.
  Tensor leaky_relu(Tensor x, float negative_slope = 0.01f);
  /// 1 / (1 + exp(−x)), as torch.nn.Sigmoid.
  Tensor sigmoid(Tensor x);
  /// tanh(x), as torch.nn.Tanh.
  Tensor tanh(Tensor x);

  /// Max pooling as torch.nn.MaxPool2d; `stride` defaults to `kernel_size` (pass 0). Padding
  /// reads as −∞. Shape: H_out = floor((H_in + 2·padding − kernel_size) / stride) + 1 (ceil with
  /// `ceil_mode`, where a window must start inside the input or its left padding), likewise W.
  Tensor max_pool2d(Tensor x, int64_t kernel_size, int64_t stride = 0, int64_t padding = 0,
                    bool ceil_mode = false);
  /// Average pooling as torch.nn.AvgPool2d, shapes as max_pool2d. The divisor counts padded
  /// zeros with `count_include_pad` (PyTorch's default), never the positions past the padding
  /// that ceil_mode adds.
  Tensor avg_pool2d(Tensor x, int64_t kernel_size, int64_t stride = 0, int64_t padding = 0,
                    bool ceil_mode = false, bool count_include_pad = true);
  /// Global average pooling, torch.nn.AdaptiveAvgPool2d(1): {C, H, W} → {C, 1, 1}.
  Tensor adaptive_avg_pool2d(Tensor x);

  /// {C, H, W} → {C·H·W}, in PyTorch's order (W fastest).
  Tensor flatten(Tensor x);

  /// Fully connected layer as torch.nn.Linear on a flat input. Parameters `<name>.weight`
  /// {out_features, in_features} and `<name>.bias` {out_features}.
  Tensor dense(const std::string& name, Tensor x, int64_t out_features, bool bias = true);

  /// a + b, elementwise, for residual connections. The shapes must be equal.
  Tensor add(Tensor a, Tensor b);
  /// Concatenation along channels, torch.cat(dim=1). H and W must be equal.
  Tensor concat(const std::vector<Tensor>& xs);

  /// torch.nn.Dropout(p): in training, each element is zeroed with probability p and the rest
  /// scaled by 1/(1 − p); in evaluation, identity. The mask comes from a counter-based hash of
  /// the step's seed, the layer and the element, so a run is reproducible.
  Tensor dropout(Tensor x, float p = 0.5f);

  /// torch.nn.BatchNorm2d over {C, H, W}: normalized with the batch's mean and biased variance
  /// per channel in training, with the running statistics in evaluation, then scaled by
  /// `<name>.weight` and shifted by `<name>.bias`. Each training step updates
  /// `<name>.running_mean` and `<name>.running_var` (unbiased batch variance) by
  /// r = (1 − momentum)·r + momentum·batch_value.
  Tensor batch_norm2d(const std::string& name, Tensor x, float eps = 1e-5f, float momentum = 0.1f);
  /// torch.nn.BatchNorm1d over a flat {F} input, as batch_norm2d per feature.
  Tensor batch_norm1d(const std::string& name, Tensor x, float eps = 1e-5f, float momentum = 0.1f);

  /// Mean softmax cross-entropy of `logits` {num_classes} against integer labels, as
  /// torch.nn.CrossEntropyLoss(label_smoothing). Must be the last layer.
  void cross_entropy_loss(Tensor logits, int64_t num_classes, float label_smoothing = 0);
  /// Mean squared error, torch.nn.MSELoss. `target` is the model input (an autoencoder) or,
  /// when not given, a tensor shaped like `prediction` that comes with the data.
  void mse_loss(Tensor prediction, Tensor target = {});
  /// Mean absolute error, torch.nn.L1Loss; targets as mse_loss.
  void l1_loss(Tensor prediction, Tensor target = {});
  /// Mean binary cross-entropy of sigmoid(logits), torch.nn.BCEWithLogitsLoss; targets in [0, 1]
  /// as mse_loss.
  void bce_with_logits_loss(Tensor logits, Tensor target = {});

  /// Starts a block named `name` (see the file comment). Blocks do not nest.
  void begin_block(const std::string& name);
  /// Ends the current block; its last layer is its output.
  void end_block();

  /// Returns the model, or the first definition error.
  absl::StatusOr<Model> build() &&;

 private:
  bool check_input(Tensor x, const std::string& layer_name);
  const std::vector<int64_t>& shape(Tensor x) const { return model_.layers[x.layer].output_shape; }
  Tensor add_layer(Layer layer);
  void add_param(Layer& layer, const std::string& suffix, std::vector<int64_t> shape,
                 int64_t fan_in, float initial_value = 0);
  void add_buffer(Layer& layer, const std::string& suffix, std::vector<int64_t> shape,
                  float initial_value);
  Tensor unary(OpKind kind, Tensor x);
  Tensor pool(OpKind kind, Tensor x, int64_t kernel_size, int64_t stride, int64_t padding,
              bool ceil_mode, bool count_include_pad);
  Tensor batch_norm(OpKind kind, const std::string& name, Tensor x, float eps, float momentum);
  void regression_loss(OpKind kind, Tensor prediction, Tensor target);
  void fail(absl::Status status);
  std::string auto_name(OpKind kind);

  Model model_;
  absl::Status status_;
  int open_block_ = -1;
};

}  // namespace kiln

#endif  // KILN_COMPILER_MODEL_H_
