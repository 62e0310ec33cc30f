// A small multilayer perceptron for the textbook 1-D regression example: fit y = f(x) from
// noisy samples (x, y) with two tanh hidden layers of 64 units and mean squared error. The
// targets y come with the data, one float per output and sample. 4,353 parameters by default.
//
// ModelOptions: the input is flat, with channels · height · width features. Each defaults to 1,
// so there is one feature by default, and an image shape gives its flattened size. num_classes is
// read as the number of regression outputs (default 1).
#include "models/registry.h"

namespace kiln {
namespace {

absl::StatusOr<Model> MlpRegression(const ModelOptions& options) {
  const int64_t features = options.channels_or(1) * options.height_or(1) * options.width_or(1);
  const int64_t outputs = options.classes_or(1);
  ModelBuilder net("mlp_regression", options);
  Tensor x = net.input(features);      // x: 1
  x = net.dense("fc1", x, 64);         // 64
  x = net.tanh(x);
  x = net.dense("fc2", x, 64);         // 64
  x = net.tanh(x);
  x = net.dense("fc3", x, outputs);    // y: 1
  net.mse_loss(x);
  return std::move(net).build();
}

}  // namespace
}  // namespace kiln

KILN_REGISTER_MODEL(mlp_regression, kiln::MlpRegression);
