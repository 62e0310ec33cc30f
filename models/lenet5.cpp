// LeNet-5 (LeCun et al., "Gradient-based learning applied to document recognition", 1998) with
// ReLU activations and max pooling, on 28×28 inputs padded by 2 to the paper's 32×32.
// 61,706 parameters.
#include "models/registry.h"

namespace kiln {
namespace {

absl::StatusOr<Model> Lenet5(const ModelOptions& options) {
  ModelBuilder net("lenet5", options);
  Tensor x = net.input(1, 28, 28);
  x = net.conv2d("conv1", x, 6, 5, /*stride=*/1, /*padding=*/2);  // C1: 6@28×28
  x = net.relu(x);
  x = net.max_pool2d(x, 2);                                       // S2: 6@14×14
  x = net.conv2d("conv2", x, 16, 5);                              // C3: 16@10×10
  x = net.relu(x);
  x = net.max_pool2d(x, 2);                                       // S4: 16@5×5
  x = net.conv2d("conv3", x, 120, 5);                             // C5: 120@1×1
  x = net.relu(x);
  x = net.flatten(x);
  x = net.dense("fc1", x, 84);                                    // F6: 84
  x = net.relu(x);
  const int64_t classes = options.classes_or(10);
  x = net.dense("fc2", x, classes);                               // output: 10 by default
  net.cross_entropy_loss(x, classes);
  return std::move(net).build();
}

}  // namespace
}  // namespace kiln

KILN_REGISTER_MODEL(lenet5, kiln::Lenet5);
