// Residual networks (He et al., "Deep residual learning for image recognition", CVPR 2016).
//
// resnet18, resnet34, resnet50, resnet101 and resnet152 follow torchvision.models.resnet
// (torchvision 0.15) layer for layer, with its state_dict names. The bottleneck networks are
// torchvision's "v1.5", which strides the 3×3 convolution of a bottleneck, not the first 1×1 as
// the paper does. At the default 3×224×224 input and 1000 classes they have 11,689,512,
// 21,797,672, 25,557,032, 44,549,160 and 60,192,808 parameters, as torchvision's.
//
// resnet20 is the paper's CIFAR-10 network for n = 3 (6n + 2 = 20 layers): a 3×3 stem of 16
// channels and three stages of three basic blocks with 16, 32 and 64 channels. It defaults to
// 1×28×28 inputs and 10 classes (MNIST, Fashion-MNIST), so the stages run at 28×28, 14×14 and
// 7×7 instead of 32, 16 and 8. The paper's CIFAR shortcuts pad the identity with zero channels
// (option A). Kiln has no such op, so the two blocks that change the shape project with a 1×1
// convolution and batch norm (option B), named like torchvision's `downsample`: 272,186
// parameters, where option A would have 269,434.
//
// Each residual block is one Kiln block, so the compiler generates the code of equal blocks once.
#include <array>
#include <string>

#include "absl/strings/str_cat.h"
#include "models/registry.h"

namespace kiln {
namespace {

// The residual blocks of torchvision.models.resnet.
enum class BlockType {
  kBasicBlock,  // 3×3 – 3×3, output channels = planes.
  kBottleneck,  // 1×1 – 3×3 – 1×1, output channels = 4 · planes.
};

// torchvision's `expansion`: a block's output channels per plane.
int64_t Expansion(BlockType type) { return type == BlockType::kBottleneck ? 4 : 1; }

// Adds convolution `<block>.conv<index>` (no bias, "same" padding for odd kernels) and its batch
// norm `<block>.bn<index>`.
Tensor ConvBn(ModelBuilder& net, const std::string& block, int index, Tensor x,
              int64_t out_channels, int64_t kernel_size, int64_t stride) {
  x = net.conv2d(absl::StrCat(block, ".conv", index), x, out_channels, kernel_size, stride,
                 /*padding=*/kernel_size / 2, /*bias=*/false);
  return net.batch_norm2d(absl::StrCat(block, ".bn", index), x);
}

// Returns x where the block keeps its shape, else torchvision's projection `downsample`: a 1×1
// convolution `<block>.downsample.0` with the block's stride and batch norm `<block>.downsample.1`.
Tensor Shortcut(ModelBuilder& net, const std::string& block, Tensor x, int64_t in_channels,
                int64_t out_channels, int64_t stride) {
  if (stride == 1 && in_channels == out_channels) return x;
  x = net.conv2d(block + ".downsample.0", x, out_channels, 1, stride, /*padding=*/0,
                 /*bias=*/false);
  return net.batch_norm2d(block + ".downsample.1", x);
}

// Adds residual block `name` (e.g. "layer2.0") on x, which has `in_channels` channels, as one
// Kiln block: relu(F(x) + Shortcut(x)), with `stride` on F's 3×3 convolution. The layers are
// defined in state_dict order (the main path, then the shortcut).
Tensor ResidualBlock(ModelBuilder& net, const std::string& name, BlockType type, Tensor x,
                     int64_t in_channels, int64_t planes, int64_t stride) {
  net.begin_block(name);
  Tensor y;
  if (type == BlockType::kBasicBlock) {
    y = net.relu(ConvBn(net, name, 1, x, planes, 3, stride));
    y = ConvBn(net, name, 2, y, planes, 3, 1);
  } else {
    y = net.relu(ConvBn(net, name, 1, x, planes, 1, 1));
    y = net.relu(ConvBn(net, name, 2, y, planes, 3, stride));
    y = ConvBn(net, name, 3, y, planes * Expansion(type), 1, 1);
  }
  y = net.add(y, Shortcut(net, name, x, in_channels, planes * Expansion(type), stride));
  y = net.relu(y);
  net.end_block();
  return y;
}

// Adds stage `layer<index>`: `depth` residual blocks, the first with `stride`. `channels` is x's
// channel count on entry and the stage's output channel count on return.
Tensor Stage(ModelBuilder& net, int index, BlockType type, Tensor x, int64_t& channels,
             int64_t planes, int depth, int64_t stride) {
  for (int i = 0; i < depth; ++i) {
    x = ResidualBlock(net, absl::StrCat("layer", index, ".", i), type, x, channels, planes,
                      i == 0 ? stride : 1);
    channels = planes * Expansion(type);
  }
  return x;
}

// Adds the head shared by all ResNets, global average pooling and dense layer "fc", and the loss,
// then builds the model.
absl::StatusOr<Model> ClassifierHeadAndBuild(ModelBuilder& net, Tensor x, int64_t classes) {
  x = net.adaptive_avg_pool2d(x);
  x = net.flatten(x);
  x = net.dense("fc", x, classes);
  net.cross_entropy_loss(x, classes);
  return std::move(net).build();
}

// torchvision.models.resnet.ResNet with `depths` blocks in its four stages. The shapes in the
// comments are those of the default 224×224 input.
absl::StatusOr<Model> TorchvisionResNet(const char* name, BlockType type,
                                        const std::array<int, 4>& depths,
                                        const ModelOptions& options) {
  ModelBuilder net(name, options);
  Tensor x = net.input(options.channels_or(3), options.height_or(224), options.width_or(224));
  x = net.conv2d("conv1", x, 64, 7, /*stride=*/2, /*padding=*/3, /*bias=*/false);  // 64@112×112
  x = net.batch_norm2d("bn1", x);
  x = net.relu(x);
  x = net.max_pool2d(x, 3, /*stride=*/2, /*padding=*/1);                        // 64@56×56

  int64_t channels = 64;
  x = Stage(net, 1, type, x, channels, 64, depths[0], 1);   // (64 · expansion)@56×56
  x = Stage(net, 2, type, x, channels, 128, depths[1], 2);  // (128 · expansion)@28×28
  x = Stage(net, 3, type, x, channels, 256, depths[2], 2);  // (256 · expansion)@14×14
  x = Stage(net, 4, type, x, channels, 512, depths[3], 2);  // (512 · expansion)@7×7
  return ClassifierHeadAndBuild(net, x, options.classes_or(1000));
}

absl::StatusOr<Model> ResNet18(const ModelOptions& options) {
  return TorchvisionResNet("resnet18", BlockType::kBasicBlock, {2, 2, 2, 2}, options);
}

absl::StatusOr<Model> ResNet34(const ModelOptions& options) {
  return TorchvisionResNet("resnet34", BlockType::kBasicBlock, {3, 4, 6, 3}, options);
}

absl::StatusOr<Model> ResNet50(const ModelOptions& options) {
  return TorchvisionResNet("resnet50", BlockType::kBottleneck, {3, 4, 6, 3}, options);
}

absl::StatusOr<Model> ResNet101(const ModelOptions& options) {
  return TorchvisionResNet("resnet101", BlockType::kBottleneck, {3, 4, 23, 3}, options);
}

absl::StatusOr<Model> ResNet152(const ModelOptions& options) {
  return TorchvisionResNet("resnet152", BlockType::kBottleneck, {3, 8, 36, 3}, options);
}

// The CIFAR-style ResNet-20. The shapes in the comments are those of the default 28×28 input.
absl::StatusOr<Model> ResNet20(const ModelOptions& options) {
  ModelBuilder net("resnet20", options);
  Tensor x = net.input(options.channels_or(1), options.height_or(28), options.width_or(28));
  x = net.conv2d("conv1", x, 16, 3, /*stride=*/1, /*padding=*/1, /*bias=*/false);  // 16@28×28
  x = net.batch_norm2d("bn1", x);
  x = net.relu(x);

  int64_t channels = 16;
  x = Stage(net, 1, BlockType::kBasicBlock, x, channels, 16, 3, 1);  // 16@28×28
  x = Stage(net, 2, BlockType::kBasicBlock, x, channels, 32, 3, 2);  // 32@14×14
  x = Stage(net, 3, BlockType::kBasicBlock, x, channels, 64, 3, 2);  // 64@7×7
  return ClassifierHeadAndBuild(net, x, options.classes_or(10));
}

}  // namespace
}  // namespace kiln

KILN_REGISTER_MODEL(resnet18, kiln::ResNet18);
KILN_REGISTER_MODEL(resnet34, kiln::ResNet34);
KILN_REGISTER_MODEL(resnet50, kiln::ResNet50);
KILN_REGISTER_MODEL(resnet101, kiln::ResNet101);
KILN_REGISTER_MODEL(resnet152, kiln::ResNet152);
KILN_REGISTER_MODEL(resnet20, kiln::ResNet20);
