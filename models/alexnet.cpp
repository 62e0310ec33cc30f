// AlexNet as torchvision.models.alexnet (torchvision 0.15) defines it: the single-stream variant
// of Krizhevsky, "One weird trick for parallelizing convolutional neural networks" (2014), not the
// two-GPU network of Krizhevsky, Sutskever and Hinton (2012). Layer order and state_dict names are
// torchvision's. At the default 3×224×224 input and 1000 classes it has 61,100,840 parameters, as
// torchvision's.
#include "models/registry.h"

namespace kiln {
namespace {

absl::StatusOr<Model> Alexnet(const ModelOptions& options) {
  const int64_t classes = options.classes_or(1000);
  ModelBuilder net("alexnet", options);
  Tensor x = net.input(options.channels_or(3), options.height_or(224), options.width_or(224));

  // features
  x = net.conv2d("features.0", x, 64, 11, /*stride=*/4, /*padding=*/2);  // 64@55×55
  x = net.relu(x);
  x = net.max_pool2d(x, 3, 2);                                           // 64@27×27
  x = net.conv2d("features.3", x, 192, 5, 1, 2);                         // 192@27×27
  x = net.relu(x);
  x = net.max_pool2d(x, 3, 2);                                           // 192@13×13
  x = net.conv2d("features.6", x, 384, 3, 1, 1);                         // 384@13×13
  x = net.relu(x);
  x = net.conv2d("features.8", x, 256, 3, 1, 1);                         // 256@13×13
  x = net.relu(x);
  x = net.conv2d("features.10", x, 256, 3, 1, 1);                        // 256@13×13
  x = net.relu(x);
  x = net.max_pool2d(x, 3, 2);                                           // 256@6×6

  // torchvision's AdaptiveAvgPool2d((6, 6)) is left out because Kiln pools adaptively only to
  // 1×1. At 224×224 the features are already 6×6, where that pooling is the identity.
  // NOTE: At other input sizes classifier.1 takes the feature map as it is (256·H·W inputs),
  // where torchvision would pool it to 6×6 first and always take 9216.
  x = net.flatten(x);                                                    // 9216

  // classifier
  x = net.dropout(x, 0.5f);
  x = net.dense("classifier.1", x, 4096);
  x = net.relu(x);
  x = net.dropout(x, 0.5f);
  x = net.dense("classifier.4", x, 4096);
  x = net.relu(x);
  x = net.dense("classifier.6", x, classes);
  net.cross_entropy_loss(x, classes);
  return std::move(net).build();
}

}  // namespace
}  // namespace kiln

KILN_REGISTER_MODEL(alexnet, kiln::Alexnet);
