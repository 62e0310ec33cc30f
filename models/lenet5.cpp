// LeNet-5 (LeCun et al., "Gradient-based learning applied to document recognition", 1998) with
// ReLU activations and max pooling, on 28×28 inputs padded by 2 to the paper's 32×32.
// 61,706 parameters.
#include "models/registry.h"

namespace kiln {
namespace {

// With `dropout`, torch.nn.Dropout(0.5) before fc1 and fc2 (lenet5_dropout).
absl::StatusOr<Model> Lenet5Variant(const char* name, bool dropout, const ModelOptions& options) {
  ModelBuilder net(name, options);
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
  if (dropout) x = net.dropout(x, 0.5f);
  x = net.dense("fc1", x, 84);                                    // F6: 84
  x = net.relu(x);
  if (dropout) x = net.dropout(x, 0.5f);
  const int64_t classes = options.classes_or(10);
  x = net.dense("fc2", x, classes);                               // output: 10 by default
  net.cross_entropy_loss(x, classes);
  return std::move(net).build();
}

absl::StatusOr<Model> Lenet5(const ModelOptions& options) {
  return Lenet5Variant("lenet5", false, options);
}
absl::StatusOr<Model> Lenet5Dropout(const ModelOptions& options) {
  return Lenet5Variant("lenet5_dropout", true, options);
}

}  // namespace
}  // namespace kiln

KILN_REGISTER_MODEL(lenet5, kiln::Lenet5);
KILN_REGISTER_MODEL(lenet5_dropout, kiln::Lenet5Dropout);
