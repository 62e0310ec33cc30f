// One 3×3 convolution, the building block of ResNet's later stages, as a model of its own so that
// `kiln bench` can measure a single convolution against the machine's peak and against
// torch.nn.Conv2d: C → C channels, stride 1, padding 1, no bias, followed by mean squared error
// against a target that comes with the data. 589,824 parameters at the default 256×28×28.
//
// ModelOptions: the input is channels × height × width, 256 × 28 × 28 unless given. num_classes
// is not used.
#include "models/registry.h"

namespace kiln {
namespace {

absl::StatusOr<Model> Conv3x3(const ModelOptions& options) {
  const int64_t channels = options.channels_or(256);
  ModelBuilder net("conv3x3", options);
  Tensor x = net.input(channels, options.height_or(28), options.width_or(28));
  x = net.conv2d("conv", x, channels, 3, /*stride=*/1, /*padding=*/1, /*bias=*/false);
  net.mse_loss(x);
  return std::move(net).build();
}

}  // namespace
}  // namespace kiln

KILN_REGISTER_MODEL(conv3x3, kiln::Conv3x3);
