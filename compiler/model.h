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
  kMaxPool2d,
  kFlatten,
  kDense,
  kCrossEntropyLoss,
};

/// Returns the torch.nn-style name of an op ("conv2d", "relu", ...).
const char* OpName(OpKind kind);

/// A learnable tensor, named and shaped as in a PyTorch `state_dict` (e.g. `conv1.weight`,
/// shape {out_channels, in_channels, kernel, kernel}). `offset` is its position, in floats, in the
/// model's flat parameter array. Initialized uniform in ±1/sqrt(fan_in), as PyTorch's Conv2d and
/// Linear do by default.
struct Param {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;
  int64_t fan_in = 0;

  int64_t numel() const;
};

/// One node of the graph. Shapes are per sample, in PyTorch order: {C, H, W} or {F}.
struct Layer {
  std::string name;
  OpKind kind = OpKind::kInput;
  int input = -1;  ///< Index of the producing layer; -1 for the input layer.
  std::vector<int64_t> output_shape;

  // Attributes; which ones are used depends on `kind`.
  int64_t out_channels = 0;  ///< conv2d: output channels; dense: out_features.
  int64_t kernel_size = 0;   ///< conv2d and max_pool2d.
  int64_t stride = 1;        ///< conv2d and max_pool2d.
  int64_t padding = 0;       ///< conv2d.
  bool bias = true;          ///< conv2d and dense.
  int64_t num_classes = 0;   ///< cross_entropy_loss.

  std::vector<int> params;  ///< Indices into Model::params, weight first.
};

/// Options fixed when a model is compiled.
struct ModelOptions {
  int batch_size = 64;
};

/// A complete, validated model: layers in definition (topological) order, ending in a loss.
struct Model {
  std::string name;
  int batch_size = 0;
  std::vector<Layer> layers;
  std::vector<Param> params;

  /// Total number of learnable floats.
  int64_t num_params() const;
  /// The layer that produces the logits (the loss's input).
  const Layer& logits_layer() const;
  const Layer& loss_layer() const { return layers.back(); }
  const Layer& input_layer() const { return layers.front(); }
  /// Forward FLOPs of one sample in `layer` (a multiply-add counts as 2).
  int64_t flops(const Layer& layer) const;
};

/// A handle to a layer's output inside one ModelBuilder. Default-constructed handles are invalid.
struct Tensor {
  int layer = -1;
  const void* owner = nullptr;  ///< The builder that made it, to reject tensors of other graphs.
};

/// Defines a model layer by layer. Not thread-safe; use one builder per model.
class ModelBuilder {
 public:
  ModelBuilder(std::string name, ModelOptions options);

  /// The image input: one batch of `channels` x `height` x `width` floats (NCHW).
  Tensor input(int64_t channels, int64_t height, int64_t width);

  /// 2-D convolution as torch.nn.Conv2d (square kernel, zero padding). Parameters
  /// `<name>.weight` {out_channels, C_in, k, k} and `<name>.bias` {out_channels}.
  /// Shape: H_out = floor((H_in + 2·padding − kernel_size) / stride) + 1, likewise W.
  Tensor conv2d(const std::string& name, Tensor x, int64_t out_channels, int64_t kernel_size,
                int64_t stride = 1, int64_t padding = 0, bool bias = true);

  /// max(x, 0), elementwise. Shape unchanged.
  Tensor relu(Tensor x);

  /// Max pooling as torch.nn.MaxPool2d; `stride` defaults to `kernel_size` (pass 0).
  /// Shape: H_out = floor((H_in − kernel_size) / stride) + 1, likewise W.
  Tensor max_pool2d(Tensor x, int64_t kernel_size, int64_t stride = 0);

  /// {C, H, W} → {C·H·W}, in PyTorch's order (W fastest).
  Tensor flatten(Tensor x);

  /// Fully connected layer as torch.nn.Linear on a flat input. Parameters `<name>.weight`
  /// {out_features, in_features} and `<name>.bias` {out_features}.
  Tensor dense(const std::string& name, Tensor x, int64_t out_features, bool bias = true);

  /// Mean softmax cross-entropy of `logits` {num_classes} against integer labels, as
  /// torch.nn.CrossEntropyLoss. Must be the last layer.
  void cross_entropy_loss(Tensor logits, int64_t num_classes);

  /// Returns the model, or the first definition error.
  absl::StatusOr<Model> build() &&;

 private:
  bool check_input(Tensor x, const std::string& layer_name);
  Tensor add_layer(Layer layer);
  void add_param(Layer& layer, const std::string& suffix, std::vector<int64_t> shape,
                 int64_t fan_in);
  void fail(absl::Status status);
  std::string auto_name(OpKind kind);

  Model model_;
  absl::Status status_;
};

}  // namespace kiln

#endif  // KILN_COMPILER_MODEL_H_
