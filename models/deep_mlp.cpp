// Deep fully connected classifiers for the vanishing-gradient experiment (docs/training.md):
// 784 → 64, ten hidden layers of 64 units, → 10: twelve dense layers, in four variants that
// differ only in what follows each hidden layer's dense map:
//   deep_sigmoid   sigmoid
//   deep_relu      ReLU
//   deep_relu_bn   BatchNorm1d, then ReLU
//   deep_residual  ReLU, added to the layer's input (x + relu(W x + b))
// Each hidden layer is a block ("hidden.<k>"), so the ten compile once. 92,490 parameters
// (93,770 with BatchNorm).
#include "models/registry.h"

namespace kiln {
namespace {

enum class Hidden { kSigmoid, kRelu, kReluBatchNorm, kResidual };

constexpr int64_t kWidth = 64;
constexpr int kHiddenLayers = 10;

absl::StatusOr<Model> DeepMlp(const char* name, Hidden hidden, const ModelOptions& options) {
  ModelBuilder net(name, options);
  Tensor x = net.input(options.channels_or(1), options.height_or(28), options.width_or(28));
  x = net.flatten(x);
  x = net.dense("fc_in", x, kWidth);
  x = hidden == Hidden::kSigmoid ? net.sigmoid(x) : net.relu(x);
  for (int k = 0; k < kHiddenLayers; ++k) {
    const std::string layer = "hidden." + std::to_string(k);
    net.begin_block(layer);
    Tensor y = net.dense(layer + ".fc", x, kWidth);
    switch (hidden) {
      case Hidden::kSigmoid: x = net.sigmoid(y); break;
      case Hidden::kRelu: x = net.relu(y); break;
      case Hidden::kReluBatchNorm: x = net.relu(net.batch_norm1d(layer + ".bn", y)); break;
      case Hidden::kResidual: x = net.add(x, net.relu(y)); break;
    }
    net.end_block();
  }
  x = net.dense("fc_out", x, options.classes_or(10));
  net.cross_entropy_loss(x, options.classes_or(10));
  return std::move(net).build();
}

absl::StatusOr<Model> DeepSigmoid(const ModelOptions& o) {
  return DeepMlp("deep_sigmoid", Hidden::kSigmoid, o);
}
absl::StatusOr<Model> DeepRelu(const ModelOptions& o) {
  return DeepMlp("deep_relu", Hidden::kRelu, o);
}
absl::StatusOr<Model> DeepReluBn(const ModelOptions& o) {
  return DeepMlp("deep_relu_bn", Hidden::kReluBatchNorm, o);
}
absl::StatusOr<Model> DeepResidual(const ModelOptions& o) {
  return DeepMlp("deep_residual", Hidden::kResidual, o);
}

}  // namespace
}  // namespace kiln

KILN_REGISTER_MODEL(deep_sigmoid, kiln::DeepSigmoid);
KILN_REGISTER_MODEL(deep_relu, kiln::DeepRelu);
KILN_REGISTER_MODEL(deep_relu_bn, kiln::DeepReluBn);
KILN_REGISTER_MODEL(deep_residual, kiln::DeepResidual);
