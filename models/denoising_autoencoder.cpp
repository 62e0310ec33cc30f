// A convolutional denoising autoencoder for Fashion-MNIST: it maps a corrupted 1×28×28 image to
// the clean one, trained with mean squared error. The data supplies both, the noisy image as the
// input and the clean image as the target (Kiln adds no noise itself). 9,857 parameters.
//
// Every layer keeps the 28×28 resolution ("same" padding), because Kiln has no upsampling or
// transposed convolution to decode a downsampled code. The sigmoid keeps the output in [0, 1],
// the range of the pixels.
//
// ModelOptions: channels, height and width set the image size, and the output has the input's
// channels. num_classes does not apply and is ignored.
#include "models/registry.h"

namespace kiln {
namespace {

absl::StatusOr<Model> DenoisingAutoencoder(const ModelOptions& options) {
  const int64_t channels = options.channels_or(1);
  ModelBuilder net("denoising_autoencoder", options);
  Tensor x = net.input(channels, options.height_or(28), options.width_or(28));  // 1@28×28
  x = net.conv2d("conv1", x, 32, 3, /*stride=*/1, /*padding=*/1);               // 32@28×28
  x = net.relu(x);
  x = net.conv2d("conv2", x, 32, 3, 1, 1);                                      // 32@28×28
  x = net.relu(x);
  x = net.conv2d("conv3", x, channels, 3, 1, 1);                                // 1@28×28
  x = net.sigmoid(x);
  net.mse_loss(x);
  return std::move(net).build();
}

}  // namespace
}  // namespace kiln

KILN_REGISTER_MODEL(denoising_autoencoder, kiln::DenoisingAutoencoder);
