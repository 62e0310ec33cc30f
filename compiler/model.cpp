#include "compiler/model.h"

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

}  // namespace

const char* OpName(OpKind kind) {
  switch (kind) {
    case OpKind::kInput: return "input";
    case OpKind::kConv2d: return "conv2d";
    case OpKind::kRelu: return "relu";
    case OpKind::kMaxPool2d: return "max_pool2d";
    case OpKind::kFlatten: return "flatten";
    case OpKind::kDense: return "dense";
    case OpKind::kCrossEntropyLoss: return "cross_entropy_loss";
  }
  return "unknown";
}

int64_t Param::numel() const { return Product(shape); }

int64_t Model::num_params() const {
  int64_t n = 0;
  for (const Param& p : params) n += p.numel();
  return n;
}

const Layer& Model::logits_layer() const { return layers[loss_layer().input]; }

int64_t Model::flops(const Layer& layer) const {
  const int64_t outputs = Product(layer.output_shape);
  switch (layer.kind) {
    case OpKind::kConv2d: {
      const int64_t in_channels = layers[layer.input].output_shape[0];
      return outputs * (2 * in_channels * layer.kernel_size * layer.kernel_size + (layer.bias ? 1 : 0));
    }
    case OpKind::kDense: {
      const int64_t in_features = layers[layer.input].output_shape[0];
      return outputs * (2 * in_features + (layer.bias ? 1 : 0));
    }
    case OpKind::kRelu: return outputs;
    case OpKind::kMaxPool2d: return outputs * (layer.kernel_size * layer.kernel_size - 1);
    case OpKind::kCrossEntropyLoss: {
      // max, exp, sum, log and the label pick per class: an estimate of 4 FLOPs per logit.
      return 4 * layers[layer.input].output_shape[0];
    }
    case OpKind::kInput:
    case OpKind::kFlatten: return 0;
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
  if (model_.layers.back().kind == OpKind::kCrossEntropyLoss) {
    fail(absl::InvalidArgumentError(absl::StrCat("layer '", layer_name,
                                                 "' is defined after the loss; the loss must be "
                                                 "the last layer")));
    return false;
  }
  return true;
}

Tensor ModelBuilder::add_layer(Layer layer) {
  model_.layers.push_back(std::move(layer));
  return Tensor{static_cast<int>(model_.layers.size()) - 1, this};
}

void ModelBuilder::add_param(Layer& layer, const std::string& suffix, std::vector<int64_t> shape,
                             int64_t fan_in) {
  Param p;
  p.name = absl::StrCat(layer.name, ".", suffix);
  p.offset = model_.num_params();
  p.shape = std::move(shape);
  p.fan_in = fan_in;
  for (const Param& q : model_.params) {
    if (q.name == p.name) {
      fail(absl::InvalidArgumentError(absl::StrCat("layer name '", layer.name,
                                                   "' is used twice; give each layer a unique name")));
      return;
    }
  }
  layer.params.push_back(static_cast<int>(model_.params.size()));
  model_.params.push_back(std::move(p));
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

Tensor ModelBuilder::conv2d(const std::string& name, Tensor x, int64_t out_channels,
                            int64_t kernel_size, int64_t stride, int64_t padding, bool bias) {
  if (!check_input(x, name)) return {};
  const std::vector<int64_t>& in = model_.layers[x.layer].output_shape;
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
  const int64_t padded_h = in[1] + 2 * padding, padded_w = in[2] + 2 * padding;
  if (kernel_size > padded_h || kernel_size > padded_w) {
    return error(absl::StrCat("kernel_size ", kernel_size, " is larger than the padded input ",
                              padded_h, "x", padded_w, " (input ", in[1], "x", in[2], ", padding ",
                              padding, "); use a smaller kernel or more padding"));
  }

  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kConv2d;
  layer.input = x.layer;
  layer.out_channels = out_channels;
  layer.kernel_size = kernel_size;
  layer.stride = stride;
  layer.padding = padding;
  layer.bias = bias;
  layer.output_shape = {out_channels, (padded_h - kernel_size) / stride + 1,
                        (padded_w - kernel_size) / stride + 1};
  const int64_t fan_in = in[0] * kernel_size * kernel_size;
  add_param(layer, "weight", {out_channels, in[0], kernel_size, kernel_size}, fan_in);
  if (bias) add_param(layer, "bias", {out_channels}, fan_in);
  if (!status_.ok()) return {};
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::relu(Tensor x) {
  const std::string name = auto_name(OpKind::kRelu);
  if (!check_input(x, name)) return {};
  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kRelu;
  layer.input = x.layer;
  layer.output_shape = model_.layers[x.layer].output_shape;
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::max_pool2d(Tensor x, int64_t kernel_size, int64_t stride) {
  const std::string name = auto_name(OpKind::kMaxPool2d);
  if (!check_input(x, name)) return {};
  if (stride == 0) stride = kernel_size;
  const std::vector<int64_t>& in = model_.layers[x.layer].output_shape;
  auto error = [&](const std::string& what) {
    fail(absl::InvalidArgumentError(absl::StrCat("max_pool2d '", name, "': ", what)));
    return Tensor{};
  };
  if (in.size() != 3) return error(absl::StrCat("input must be {C, H, W}, got ", ShapeString(in)));
  if (kernel_size <= 0) return error(absl::StrCat("kernel_size ", kernel_size, " must be positive"));
  if (stride <= 0) return error(absl::StrCat("stride ", stride, " must be positive"));
  if (kernel_size > in[1] || kernel_size > in[2]) {
    return error(absl::StrCat("kernel_size ", kernel_size, " is larger than the input ", in[1], "x",
                              in[2], "; use a smaller kernel or pool earlier"));
  }

  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kMaxPool2d;
  layer.input = x.layer;
  layer.kernel_size = kernel_size;
  layer.stride = stride;
  layer.output_shape = {in[0], (in[1] - kernel_size) / stride + 1, (in[2] - kernel_size) / stride + 1};
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::flatten(Tensor x) {
  const std::string name = auto_name(OpKind::kFlatten);
  if (!check_input(x, name)) return {};
  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kFlatten;
  layer.input = x.layer;
  layer.output_shape = {Product(model_.layers[x.layer].output_shape)};
  return add_layer(std::move(layer));
}

Tensor ModelBuilder::dense(const std::string& name, Tensor x, int64_t out_features, bool bias) {
  if (!check_input(x, name)) return {};
  const std::vector<int64_t>& in = model_.layers[x.layer].output_shape;
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
  layer.input = x.layer;
  layer.out_channels = out_features;
  layer.bias = bias;
  layer.output_shape = {out_features};
  add_param(layer, "weight", {out_features, in[0]}, in[0]);
  if (bias) add_param(layer, "bias", {out_features}, in[0]);
  if (!status_.ok()) return {};
  return add_layer(std::move(layer));
}

void ModelBuilder::cross_entropy_loss(Tensor logits, int64_t num_classes) {
  const std::string name = "loss";
  if (!check_input(logits, name)) return;
  const std::vector<int64_t>& in = model_.layers[logits.layer].output_shape;
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

  Layer layer;
  layer.name = name;
  layer.kind = OpKind::kCrossEntropyLoss;
  layer.input = logits.layer;
  layer.num_classes = num_classes;
  layer.output_shape = {};
  add_layer(std::move(layer));
}

absl::StatusOr<Model> ModelBuilder::build() && {
  if (!status_.ok()) return status_;
  if (model_.layers.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", model_.name, "' is empty; start it with input(c, h, w)"));
  }
  if (model_.layers.back().kind != OpKind::kCrossEntropyLoss) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", model_.name, "' has no loss; end it with cross_entropy_loss(logits, classes)"));
  }
  return std::move(model_);
}

}  // namespace kiln
