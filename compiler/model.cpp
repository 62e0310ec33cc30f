#include "compiler/model.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kiln {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// PyTorch's pooling output size (aten/src/ATen/native/Pool.h, pooling_output_shape): with
// ceil_mode the last window must still start inside the input or its left padding.
int64_t PooledSize(int64_t in, int64_t kernel, int64_t stride, int64_t padding, bool ceil_mode) {
  const int64_t span = in + 2 * padding - kernel;
  int64_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + padding) --out;
  return out;
}

}  // namespace

const char* OpName(OpKind kind) {
  switch (kind) {
    case OpKind::kInput: return "input";
    case OpKind::kConv2d: return "conv2d";
    case OpKind::kRelu: return "relu";
    case OpKind::kLeakyRelu: return "leaky_relu";
    case OpKind::kSigmoid: return "sigmoid";
    case OpKind::kTanh: return "tanh";
    case OpKind::kMaxPool2d: return "max_pool2d";
    case OpKind::kAvgPool2d: return "avg_pool2d";
    case OpKind::kAdaptiveAvgPool2d: return "adaptive_avg_pool2d";
    case OpKind::kFlatten: return "flatten";
    case OpKind::kDense: return "dense";
    case OpKind::kAdd: return "add";
    case OpKind::kConcat: return "concat";
    case OpKind::kDropout: return "dropout";
    case OpKind::kBatchNorm2d: return "batch_norm2d";
    case OpKind::kBatchNorm1d: return "batch_norm1d";
    case OpKind::kCrossEntropyLoss: return "cross_entropy_loss";
    case OpKind::kMseLoss: return "mse_loss";
    case OpKind::kL1Loss: return "l1_loss";
    case OpKind::kBceWithLogitsLoss: return "bce_with_logits_loss";
  }
  return "unknown";
}

bool IsLoss(OpKind kind) {
  return kind == OpKind::kCrossEntropyLoss || kind == OpKind::kMseLoss || kind == OpKind::kL1Loss ||
         kind == OpKind::kBceWithLogitsLoss;
}

int64_t Param::numel() const { return Product(shape); }

int64_t Model::num_params() const {
  int64_t n = 0;
  for (const Param& p : params) n += p.numel();
  return n;
}

int64_t Model::num_buffer_values() const {
  int64_t n = 0;
  for (const Param& b : buffers) n += b.numel();
  return n;
}

const Layer& Model::logits_layer() const { return layers[loss_layer().input()]; }

TargetKind Model::target_kind() const {
  const Layer& loss = loss_layer();
  if (loss.kind == OpKind::kCrossEntropyLoss) return TargetKind::kClassLabels;
  return loss.target_is_input ? TargetKind::kInput : TargetKind::kTensor;
}

int64_t Model::flops(const Layer& layer) const {
  const int64_t outputs = Product(layer.output_shape);
  const std::vector<int64_t>* in = layer.inputs.empty() ? nullptr : &layers[layer.input()].output_shape;
  switch (layer.kind) {
    case OpKind::kConv2d: {
      const int64_t in_channels = (*in)[0] / layer.groups;
      return outputs * (2 * in_channels * layer.kernel_size * layer.kernel_size + (layer.bias ? 1 : 0));
    }
    case OpKind::kDense: return outputs * (2 * (*in)[0] + (layer.bias ? 1 : 0));
    case OpKind::kMaxPool2d:
    case OpKind::kAvgPool2d: return outputs * layer.kernel_size * layer.kernel_size;
    case OpKind::kAdaptiveAvgPool2d: return Product(*in);
    case OpKind::kRelu:
    case OpKind::kLeakyRelu:
    case OpKind::kAdd:
    case OpKind::kDropout: return outputs;
    // exp, add and divide: an estimate of 4 FLOPs per element.
    case OpKind::kSigmoid:
    case OpKind::kTanh: return 4 * outputs;
    // Subtract the mean, scale, multiply and add.
    case OpKind::kBatchNorm2d:
    case OpKind::kBatchNorm1d: return 4 * outputs;
    // max, exp, sum, log and the label pick per class: an estimate of 4 FLOPs per value.
    case OpKind::kCrossEntropyLoss:
    case OpKind::kBceWithLogitsLoss: return 4 * Product(*in);
    case OpKind::kMseLoss:
    case OpKind::kL1Loss: return 3 * Product(*in);
    case OpKind::kInput:
    case OpKind::kFlatten:
    case OpKind::kConcat: return 0;
  }
  return 0;
}

ModelBuilder::ModelBuilder(std::string name, ModelOptions options) {
  model_.name = std::move(name);
  model_.batch_size = options.batch_size;
  if (options.batch_size <= 0) {
    fail(absl::InvalidArgumentError(absl::StrCat("model '", model_.name, "': batch_size ",
                                                 options.batch_size, " must be positive")));
  }
}

void ModelBuilder::fail(absl::Status status) {
  if (status_.ok()) status_ = std::move(status);
}

std::string ModelBuilder::auto_name(OpKind kind) {
  int count = 1;
  for (const Layer& l : model_.layers) count += l.kind == kind;
  return absl::StrCat(OpName(kind), count);
}

bool ModelBuilder::check_input(Tensor x, const std::string& layer_name) {
  if (!status_.ok()) return false;
  if (x.owner != this || x.layer < 0 || x.layer >= static_cast<int>(model_.layers.size())) {
    fail(absl::InvalidArgumentError(absl::StrCat(
        "layer '", layer_name, "': its input is not a tensor of model '", model_.name,
        "'; pass the output of an earlier layer of the same ModelBuilder")));
    return false;
  }
  if (IsLoss(model_.layers.back().kind)) {
    fail(absl::InvalidArgumentError(absl::StrCat("layer '", layer_name,
                                                 "' is defined after the loss; the loss must be "
                                                 "the last layer")));
    return false;
  }
  return true;
}

Tensor ModelBuilder::add_layer(Layer layer) {
  for (const Layer& l : model_.layers) {
    if (l.name == layer.name) {
      fail(absl::InvalidArgumentError(absl::StrCat("layer name '", layer.name,
                                                   "' is used twice; give each layer a unique name")));
      return {};
    }
  }
  layer.block = open_block_;
  model_.layers.push_back(std::move(layer));
  return Tensor{static_cast<int>(model_.layers.size()) - 1, this};
}

void ModelBuilder::add_param(Layer& layer, const std::string& suffix, std::vector<int64_t> shape,
                             int64_t fan_in, float initial_value) {
  Param p;
  p.name = absl::StrCat(layer.name, ".", suffix);
  p.offset = model_.num_params();
  p.shape = std::move(shape);
  p.fan_in = fan_in;
  p.initial_value = initial_value;
  layer.params.push_back(static_cast<int>(model_.params.size()));
  model_.params.push_back(std::move(p));
}

void ModelBuilder::add_buffer(Layer& layer, const std::string& suffix, std::vector<int64_t> shape,
                              float initial_value) {
  Param b;
  b.name = absl::StrCat(layer.name, ".", suffix);
  b.offset = model_.num_buffer_values();
  b.shape = std::move(shape);
  b.initial_value = initial_value;
  layer.buffers.push_back(static_cast<int>(model_.buffers.size()));
  model_.buffers.push_back(std::move(b));
}

Tensor ModelBuilder::input(int64_t channels, int64_t height, int64_t width) {
  if (!status_.ok()) return {};
  if (!model_.layers.empty()) {
    fail(absl::InvalidArgumentError(
        absl::StrCat("model '", model_.name, "' already has an input; define exactly one")));
    return {};
  }
  if (channels <= 0 || height <= 0 || width <= 0) {
    fail(absl::InvalidArgumentError(absl::StrCat(
        "input of model '", model_.name, "': channels, height and width must be positive, got ",
        ShapeString({channels, height, width}))));
    return {};
  }
  Layer layer;
  layer.name = "input";
  layer.kind = OpKind::kInput;
  layer.output_shape = {channels, height, width};
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::input(int64_t features) {
  if (!status_.ok()) return {};
  if (!model_.layers.empty()) {
    fail(absl::InvalidArgumentError(
        absl::StrCat("model '", model_.name, "' already has an input; define exactly one")));
    return {};
  }
  if (features <= 0) {
    fail(absl::InvalidArgumentError(absl::StrCat("input of model '", model_.name,
                                                 "': features must be positive, got ", features)));
    return {};
  }
  Layer layer;
  layer.name = "input";
  layer.kind = OpKind::kInput;
  layer.output_shape = {features};
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::conv2d(const std::string& name, Tensor x, int64_t out_channels,
                            int64_t kernel_size, int64_t stride, int64_t padding, bool bias,
                            int64_t dilation, int64_t groups) {
  if (!check_input(x, name)) return {};
  const std::vector<int64_t>& in = shape(x);
  auto error = [&](const std::string& what) {
    fail(absl::InvalidArgumentError(absl::StrCat("conv2d '", name, "': ", what)));
    return Tensor{};
  };
  if (in.size() != 3) {
    return error(absl::StrCat("input must be {C, H, W}, got ", ShapeString(in),
                              "; conv2d cannot follow flatten or dense"));
  }
  if (out_channels <= 0) return error(absl::StrCat("out_channels ", out_channels, " must be positive"));
  if (kernel_size <= 0) return error(absl::StrCat("kernel_size ", kernel_size, " must be positive"));
  if (stride <= 0) return error(absl::StrCat("stride ", stride, " must be positive"));
  if (padding < 0) return error(absl::StrCat("padding ", padding, " must not be negative"));
  if (dilation <= 0) return error(absl::StrCat("dilation ", dilation, " must be positive"));
  if (groups <= 0 || in[0] % groups != 0 || out_channels % groups != 0) {
    return error(absl::StrCat("groups ", groups, " must divide both in_channels ", in[0],
                              " and out_channels ", out_channels));
  }
  const int64_t extent = dilation * (kernel_size - 1) + 1;
  const int64_t padded_h = in[1] + 2 * padding, padded_w = in[2] + 2 * padding;
  if (extent > padded_h || extent > padded_w) {
    return error(absl::StrCat("kernel_size ", kernel_size, " (dilation ", dilation,
                              ") is larger than the padded input ", padded_h, "x", padded_w,
                              " (input ", in[1], "x", in[2], ", padding ", padding,
                              "); use a smaller kernel or more padding"));
  }

  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kConv2d;
  layer.inputs = {x.layer};
  layer.out_channels = out_channels;
  layer.kernel_size = kernel_size;
  layer.stride = stride;
  layer.padding = padding;
  layer.dilation = dilation;
  layer.groups = groups;
  layer.bias = bias;
  layer.output_shape = {out_channels, (padded_h - extent) / stride + 1,
                        (padded_w - extent) / stride + 1};
  const int64_t group_channels = in[0] / groups;
  const int64_t fan_in = group_channels * kernel_size * kernel_size;
  add_param(layer, "weight", {out_channels, group_channels, kernel_size, kernel_size}, fan_in);
  if (bias) add_param(layer, "bias", {out_channels}, fan_in);
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::unary(OpKind kind, Tensor x) {
  const std::string name = auto_name(kind);
  if (!check_input(x, name)) return {};
  Layer layer;
  layer.name = name;
  layer.kind = kind;
  layer.inputs = {x.layer};
  layer.output_shape = shape(x);
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::relu(Tensor x) { return unary(OpKind::kRelu, x); }
Tensor ModelBuilder::sigmoid(Tensor x) { return unary(OpKind::kSigmoid, x); }
Tensor ModelBuilder::tanh(Tensor x) { return unary(OpKind::kTanh, x); }

Tensor ModelBuilder::leaky_relu(Tensor x, float negative_slope) {
  Tensor out = unary(OpKind::kLeakyRelu, x);
  if (out.layer >= 0) model_.layers[out.layer].negative_slope = negative_slope;
  return out;
}

Tensor ModelBuilder::dropout(Tensor x, float p) {
  if (!(p >= 0 && p < 1)) {
    fail(absl::InvalidArgumentError(absl::StrCat(
        "dropout '", auto_name(OpKind::kDropout), "': p ", p, " must be in [0, 1)")));
    return {};
  }
  Tensor out = unary(OpKind::kDropout, x);
  if (out.layer >= 0) model_.layers[out.layer].p = p;
  return out;
}

Tensor ModelBuilder::pool(OpKind kind, Tensor x, int64_t kernel_size, int64_t stride,
                          int64_t padding, bool ceil_mode, bool count_include_pad) {
  const std::string name = auto_name(kind);
  if (!check_input(x, name)) return {};
  if (stride == 0) stride = kernel_size;
  const std::vector<int64_t>& in = shape(x);
  auto error = [&](const std::string& what) {
    fail(absl::InvalidArgumentError(absl::StrCat(OpName(kind), " '", name, "': ", what)));
    return Tensor{};
  };
  if (in.size() != 3) return error(absl::StrCat("input must be {C, H, W}, got ", ShapeString(in)));
  if (kernel_size <= 0) return error(absl::StrCat("kernel_size ", kernel_size, " must be positive"));
  if (stride <= 0) return error(absl::StrCat("stride ", stride, " must be positive"));
  if (padding < 0 || 2 * padding > kernel_size) {
    return error(absl::StrCat("padding ", padding, " must be between 0 and half of kernel_size ",
                              kernel_size, ", as in PyTorch"));
  }
  if (kernel_size > in[1] + 2 * padding || kernel_size > in[2] + 2 * padding) {
    return error(absl::StrCat("kernel_size ", kernel_size, " is larger than the input ", in[1], "x",
                              in[2], " with padding ", padding, "; use a smaller kernel or pool earlier"));
  }

  Layer layer;
  layer.name = name;
  layer.kind = kind;
  layer.inputs = {x.layer};
  layer.kernel_size = kernel_size;
  layer.stride = stride;
  layer.padding = padding;
  layer.ceil_mode = ceil_mode;
  layer.count_include_pad = count_include_pad;
  layer.output_shape = {in[0], PooledSize(in[1], kernel_size, stride, padding, ceil_mode),
                        PooledSize(in[2], kernel_size, stride, padding, ceil_mode)};
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::max_pool2d(Tensor x, int64_t kernel_size, int64_t stride, int64_t padding,
                                bool ceil_mode) {
  return pool(OpKind::kMaxPool2d, x, kernel_size, stride, padding, ceil_mode, true);
}

Tensor ModelBuilder::avg_pool2d(Tensor x, int64_t kernel_size, int64_t stride, int64_t padding,
                                bool ceil_mode, bool count_include_pad) {
  return pool(OpKind::kAvgPool2d, x, kernel_size, stride, padding, ceil_mode, count_include_pad);
}

Tensor ModelBuilder::adaptive_avg_pool2d(Tensor x) {
  const std::string name = auto_name(OpKind::kAdaptiveAvgPool2d);
  if (!check_input(x, name)) return {};
  const std::vector<int64_t>& in = shape(x);
  if (in.size() != 3) {
    fail(absl::InvalidArgumentError(absl::StrCat("adaptive_avg_pool2d '", name,
                                                 "': input must be {C, H, W}, got ", ShapeString(in))));
    return {};
  }
  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kAdaptiveAvgPool2d;
  layer.inputs = {x.layer};
  layer.output_shape = {in[0], 1, 1};
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::flatten(Tensor x) {
  const std::string name = auto_name(OpKind::kFlatten);
  if (!check_input(x, name)) return {};
  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kFlatten;
  layer.inputs = {x.layer};
  layer.output_shape = {Product(shape(x))};
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::dense(const std::string& name, Tensor x, int64_t out_features, bool bias) {
  if (!check_input(x, name)) return {};
  const std::vector<int64_t>& in = shape(x);
  if (in.size() != 1) {
    fail(absl::InvalidArgumentError(absl::StrCat("dense '", name, "': input must be flat {F}, got ",
                                                 ShapeString(in), "; insert flatten() before it")));
    return {};
  }
  if (out_features <= 0) {
    fail(absl::InvalidArgumentError(
        absl::StrCat("dense '", name, "': out_features ", out_features, " must be positive")));
    return {};
  }

  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kDense;
  layer.inputs = {x.layer};
  layer.out_channels = out_features;
  layer.bias = bias;
  layer.output_shape = {out_features};
  add_param(layer, "weight", {out_features, in[0]}, in[0]);
  if (bias) add_param(layer, "bias", {out_features}, in[0]);
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::add(Tensor a, Tensor b) {
  const std::string name = auto_name(OpKind::kAdd);
  if (!check_input(a, name) || !check_input(b, name)) return {};
  if (shape(a) != shape(b)) {
    fail(absl::InvalidArgumentError(absl::StrCat(
        "add '", name, "': shapes differ: '", model_.layers[a.layer].name, "' is ",
        ShapeString(shape(a)), " and '", model_.layers[b.layer].name, "' is ", ShapeString(shape(b)),
        "; a residual connection needs a projection (1x1 conv2d) when they differ")));
    return {};
  }
  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kAdd;
  layer.inputs = {a.layer, b.layer};
  layer.output_shape = shape(a);
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::concat(const std::vector<Tensor>& xs) {
  const std::string name = auto_name(OpKind::kConcat);
  if (xs.empty()) {
    fail(absl::InvalidArgumentError(absl::StrCat("concat '", name, "': no inputs")));
    return {};
  }
  for (Tensor x : xs) {
    if (!check_input(x, name)) return {};
  }
  const std::vector<int64_t>& first = shape(xs[0]);
  int64_t channels = 0;
  for (Tensor x : xs) {
    const std::vector<int64_t>& s = shape(x);
    if (s.size() != 3 || first.size() != 3 || s[1] != first[1] || s[2] != first[2]) {
      fail(absl::InvalidArgumentError(absl::StrCat(
          "concat '", name, "': inputs must be {C, H, W} with equal H and W; '",
          model_.layers[xs[0].layer].name, "' is ", ShapeString(first), " and '",
          model_.layers[x.layer].name, "' is ", ShapeString(s))));
      return {};
    }
    channels += s[0];
  }
  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kConcat;
  for (Tensor x : xs) layer.inputs.push_back(x.layer);
  layer.output_shape = {channels, first[1], first[2]};
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::batch_norm(OpKind kind, const std::string& name, Tensor x, float eps,
                                float momentum) {
  if (!check_input(x, name)) return {};
  const std::vector<int64_t>& in = shape(x);
  const size_t rank = kind == OpKind::kBatchNorm2d ? 3 : 1;
  auto error = [&](const std::string& what) {
    fail(absl::InvalidArgumentError(absl::StrCat(OpName(kind), " '", name, "': ", what)));
    return Tensor{};
  };
  if (in.size() != rank) {
    return error(absl::StrCat("input must be ", rank == 3 ? "{C, H, W}" : "flat {F}", ", got ",
                              ShapeString(in), rank == 3 ? "; use batch_norm1d after flatten"
                                                         : "; use batch_norm2d on images"));
  }
  if (!(eps > 0)) return error(absl::StrCat("eps ", eps, " must be positive"));
  if (!(momentum >= 0 && momentum <= 1)) {
    return error(absl::StrCat("momentum ", momentum, " must be in [0, 1]"));
  }
  Layer layer;
  layer.name = name;
  layer.kind = kind;
  layer.inputs = {x.layer};
  layer.eps = eps;
  layer.momentum = momentum;
  layer.output_shape = in;
  add_param(layer, "weight", {in[0]}, 0, 1.0f);
  add_param(layer, "bias", {in[0]}, 0, 0.0f);
  add_buffer(layer, "running_mean", {in[0]}, 0.0f);
  add_buffer(layer, "running_var", {in[0]}, 1.0f);
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::batch_norm2d(const std::string& name, Tensor x, float eps, float momentum) {
  return batch_norm(OpKind::kBatchNorm2d, name, x, eps, momentum);
}

Tensor ModelBuilder::batch_norm1d(const std::string& name, Tensor x, float eps, float momentum) {
  return batch_norm(OpKind::kBatchNorm1d, name, x, eps, momentum);
}

void ModelBuilder::cross_entropy_loss(Tensor logits, int64_t num_classes, float label_smoothing) {
  const std::string name = "loss";
  if (!check_input(logits, name)) return;
  const std::vector<int64_t>& in = shape(logits);
  if (in.size() != 1 || in[0] != num_classes) {
    fail(absl::InvalidArgumentError(absl::StrCat(
        "cross_entropy_loss: logits of layer '", model_.layers[logits.layer].name, "' have shape ",
        ShapeString(in), " but num_classes is ", num_classes,
        "; the last dense layer needs out_features = num_classes")));
    return;
  }
  if (num_classes < 2) {
    fail(absl::InvalidArgumentError(
        absl::StrCat("cross_entropy_loss: num_classes ", num_classes, " must be at least 2")));
    return;
  }
  if (!(label_smoothing >= 0 && label_smoothing <= 1)) {
    fail(absl::InvalidArgumentError(absl::StrCat("cross_entropy_loss: label_smoothing ",
                                                 label_smoothing, " must be in [0, 1]")));
    return;
  }

  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kCrossEntropyLoss;
  layer.inputs = {logits.layer};
  layer.num_classes = num_classes;
  layer.label_smoothing = label_smoothing;
  layer.output_shape = {};
  add_layer(std::move(layer));
}

void ModelBuilder::regression_loss(OpKind kind, Tensor prediction, Tensor target) {
  const std::string name = "loss";
  if (!check_input(prediction, name)) return;
  Layer layer;
  layer.name = name;
  layer.kind = kind;
  layer.inputs = {prediction.layer};
  layer.output_shape = {};
  if (target.owner != nullptr || target.layer >= 0) {
    if (!check_input(target, name)) return;
    if (model_.layers[target.layer].kind != OpKind::kInput) {
      fail(absl::InvalidArgumentError(absl::StrCat(
          OpName(kind), ": the target must be the model input (an autoencoder) or omitted (targets "
          "come with the data), not layer '", model_.layers[target.layer].name, "'")));
      return;
    }
    if (shape(target) != shape(prediction)) {
      fail(absl::InvalidArgumentError(absl::StrCat(
          OpName(kind), ": prediction '", model_.layers[prediction.layer].name, "' has shape ",
          ShapeString(shape(prediction)), " but the input it reconstructs has ",
          ShapeString(shape(target)), "; the shapes must be equal")));
      return;
    }
    layer.target_is_input = true;
  }
  add_layer(std::move(layer));
}

void ModelBuilder::mse_loss(Tensor prediction, Tensor target) {
  regression_loss(OpKind::kMseLoss, prediction, target);
}

void ModelBuilder::l1_loss(Tensor prediction, Tensor target) {
  regression_loss(OpKind::kL1Loss, prediction, target);
}

void ModelBuilder::bce_with_logits_loss(Tensor logits, Tensor target) {
  regression_loss(OpKind::kBceWithLogitsLoss, logits, target);
}

void ModelBuilder::begin_block(const std::string& name) {
  if (!status_.ok()) return;
  if (open_block_ >= 0) {
    fail(absl::InvalidArgumentError(absl::StrCat("block '", name, "' begins inside block '",
                                                 model_.blocks[open_block_].name,
                                                 "'; call end_block() first (blocks do not nest)")));
    return;
  }
  for (const Block& b : model_.blocks) {
    if (b.name == name) {
      fail(absl::InvalidArgumentError(
          absl::StrCat("block name '", name, "' is used twice; give each block a unique name")));
      return;
    }
  }
  open_block_ = static_cast<int>(model_.blocks.size());
  model_.blocks.push_back({name, static_cast<int>(model_.layers.size()), -1});
}

void ModelBuilder::end_block() {
  if (!status_.ok()) return;
  if (open_block_ < 0) {
    fail(absl::InvalidArgumentError(absl::StrCat("model '", model_.name,
                                                 "': end_block() without begin_block()")));
    return;
  }
  Block& block = model_.blocks[open_block_];
  block.last = static_cast<int>(model_.layers.size()) - 1;
  if (block.last < block.first) {
    fail(absl::InvalidArgumentError(absl::StrCat("block '", block.name, "' has no layers")));
  }
  open_block_ = -1;
}

absl::StatusOr<Model> ModelBuilder::build() && {
  if (!status_.ok()) return status_;
  if (model_.layers.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", model_.name, "' is empty; start it with input(c, h, w)"));
  }
  if (open_block_ >= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block '", model_.blocks[open_block_].name, "' is not closed; call end_block()"));
  }
  if (!IsLoss(model_.layers.back().kind)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", model_.name, "' has no loss; end it with a loss such as "
        "cross_entropy_loss(logits, classes) or mse_loss(prediction)"));
  }

  // Every layer must feed the loss: an unused output is a definition mistake (a forgotten
  // residual add, say), and the compiled step would compute it for nothing.
  const int last = static_cast<int>(model_.layers.size()) - 1;
  std::vector<bool> reaches(model_.layers.size(), false);
  reaches[last] = true;
  for (int i = last; i >= 0; --i) {
    if (!reaches[i]) continue;
    for (int in : model_.layers[i].inputs) reaches[in] = true;
  }
  std::vector<std::string> unused;
  for (int i = 0; i < last; ++i) {
    if (!reaches[i]) unused.push_back(model_.layers[i].name);
  }
  if (!unused.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", model_.name, "': the output of ", absl::StrJoin(unused, ", "),
        " does not reach the loss; use it in a later layer or remove the layer"));
  }

  // Segments: each block, and each run of layers between blocks.
  const int count = static_cast<int>(model_.layers.size());
  for (int i = 1; i < count;) {
    Segment s;
    s.first = i;
    s.block = model_.layers[i].block;
    while (i + 1 < count && model_.layers[i + 1].block == s.block) ++i;
    s.last = i++;
    // The one tensor from before the segment that it reads.
    std::set<int> outside;
    for (int l = s.first; l <= s.last; ++l) {
      for (int in : model_.layers[l].inputs) {
        if (in < s.first) outside.insert(in);
      }
    }
    const std::string what =
        s.block >= 0 ? absl::StrCat("block '", model_.blocks[s.block].name, "'")
                     : absl::StrCat("the layers from '", model_.layers[s.first].name, "' to '",
                                    model_.layers[s.last].name, "'");
    const int previous = model_.segments.empty() ? 0 : model_.segments.back().last;
    if (outside.size() != 1 || *outside.begin() != previous) {
      std::vector<std::string> names;
      for (int in : outside) names.push_back(model_.layers[in].name);
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", model_.name, "': ", what, " must read exactly one tensor from before it, the "
          "output of '", model_.layers[previous].name, "', but reads ",
          absl::StrJoin(names, ", "), "; move the block boundary so the residual path stays inside"));
    }
    s.input = previous;
    model_.segments.push_back(s);
  }
  return std::move(model_);
}

absl::Status FreezeThrough(Model& model, const std::string& name) {
  // "layer2" names the blocks "layer2.0", "layer2.1", ... as well as a layer or block "layer2".
  auto named = [&](const std::string& n) {
    return n == name || (n.size() > name.size() && n.compare(0, name.size(), name) == 0 &&
                         n[name.size()] == '.');
  };
  int last = -1;
  for (size_t i = 0; i < model.layers.size(); ++i) {
    if (named(model.layers[i].name)) last = std::max(last, static_cast<int>(i));
  }
  for (const Block& block : model.blocks) {
    if (named(block.name)) last = std::max(last, block.last);
  }
  if (last < 0) {
    std::vector<std::string> names;
    for (const Layer& l : model.layers) {
      if (!l.params.empty()) names.push_back(l.name);
    }
    for (const Block& block : model.blocks) names.push_back(block.name);
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", model.name, "' has no layer or block '", name,
        "' to freeze through; layers with parameters and blocks: ", absl::StrJoin(names, ", ")));
  }
  bool trainable_left = false;
  for (int i = last + 1; i < static_cast<int>(model.layers.size()); ++i) {
    trainable_left = trainable_left || !model.layers[i].params.empty();
  }
  if (!trainable_left) {
    return absl::InvalidArgumentError(absl::StrCat(
        "freezing model '", model.name, "' through '", name,
        "' leaves no parameter to train; freeze through an earlier layer"));
  }
  for (int i = 0; i <= last; ++i) {
    for (int p : model.layers[i].params) model.params[p].trainable = false;
  }
  return absl::OkStatus();
}

bool NeedsBackward(const Model& model, int index) {
  return NeedsInputGrad(model, index + 1);
}

bool NeedsInputGrad(const Model& model, int index) {
  for (int k = 0; k < index && k < static_cast<int>(model.segments.size()); ++k) {
    const Segment& s = model.segments[k];
    for (int l = s.first; l <= s.last; ++l) {
      for (int p : model.layers[l].params) {
        if (model.params[p].trainable) return true;
      }
    }
  }
  return false;
}

}  // namespace kiln
