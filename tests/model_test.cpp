// The model DSL: shape inference, parameter naming and initialization facts, definition errors.
#include "compiler/model.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/registry.h"

namespace kiln {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(Lenet5, HasClassicParameterCount) {
  absl::StatusOr<Model> model = BuildModel("lenet5", {});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->num_params(), 61706);
}

TEST(Lenet5, InfersShapesLayerByLayer) {
  absl::StatusOr<Model> model = BuildModel("lenet5", {});
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::vector<int64_t>> shapes;
  for (const Layer& layer : model->layers) shapes.push_back(layer.output_shape);
  const std::vector<std::vector<int64_t>> expected = {
      {1, 28, 28}, {6, 28, 28}, {6, 28, 28}, {6, 14, 14}, {16, 10, 10}, {16, 10, 10}, {16, 5, 5},
      {120, 1, 1}, {120, 1, 1}, {120}, {84}, {84}, {10}, {}};
  EXPECT_EQ(shapes, expected);
}

TEST(Lenet5, NamesParametersLikeStateDict) {
  absl::StatusOr<Model> model = BuildModel("lenet5", {});
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::string> names;
  for (const Param& p : model->params) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"conv1.weight", "conv1.bias", "conv2.weight",
                                             "conv2.bias", "conv3.weight", "conv3.bias",
                                             "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}));
  EXPECT_EQ(model->params[2].shape, (std::vector<int64_t>{16, 6, 5, 5}));
  EXPECT_EQ(model->params[6].shape, (std::vector<int64_t>{84, 120}));
}

TEST(Params, OffsetsAreContiguous) {
  absl::StatusOr<Model> model = BuildModel("lenet5", {});
  ASSERT_TRUE(model.ok()) << model.status();
  int64_t offset = 0;
  for (const Param& p : model->params) {
    EXPECT_EQ(p.offset, offset) << p.name;
    offset += p.numel();
  }
  EXPECT_EQ(offset, model->num_params());
}

TEST(Params, FanInMatchesPytorchDefaultInit) {
  absl::StatusOr<Model> model = BuildModel("lenet5", {});
  ASSERT_TRUE(model.ok()) << model.status();
  // PyTorch's Conv2d and Linear bound both weight and bias by 1/sqrt(in_channels · k · k).
  EXPECT_EQ(model->params[0].fan_in, 1 * 5 * 5);   // conv1.weight
  EXPECT_EQ(model->params[1].fan_in, 1 * 5 * 5);   // conv1.bias
  EXPECT_EQ(model->params[4].fan_in, 16 * 5 * 5);  // conv3.weight
  EXPECT_EQ(model->params[9].fan_in, 84);          // fc2.bias
}

TEST(Conv2d, OutputShapeWithStrideAndPadding) {
  ModelBuilder net("strided", ModelOptions{4});
  Tensor x = net.input(3, 9, 8);
  x = net.conv2d("conv", x, 5, 3, /*stride=*/2, /*padding=*/1);
  x = net.flatten(x);
  x = net.dense("fc", x, 2);
  net.cross_entropy_loss(x, 2);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_TRUE(model.ok()) << model.status();
  // floor((9 + 2 - 3) / 2) + 1 = 5 and floor((8 + 2 - 3) / 2) + 1 = 4.
  EXPECT_EQ(model->layers[1].output_shape, (std::vector<int64_t>{5, 5, 4}));
  EXPECT_EQ(model->layers[2].output_shape, (std::vector<int64_t>{100}));
}

TEST(Conv2d, KernelLargerThanPaddedInputIsAnError) {
  ModelBuilder net("bad", ModelOptions{1});
  Tensor x = net.input(1, 4, 4);
  x = net.conv2d("conv9", x, 2, 7, 1, 1);
  net.cross_entropy_loss(net.dense("fc", net.flatten(x), 2), 2);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(),
              AllOf(HasSubstr("conv9"), HasSubstr("kernel_size 7"), HasSubstr("6x6")));
}

TEST(Conv2d, NonPositiveSizesAreErrors) {
  struct Case {
    int64_t out_channels, kernel, stride, padding;
    const char* expected;
  };
  for (const Case& c : {Case{0, 3, 1, 0, "out_channels 0"}, Case{4, -1, 1, 0, "kernel_size -1"},
                        Case{4, 3, 0, 0, "stride 0"}, Case{4, 3, 1, -2, "padding -2"}}) {
    ModelBuilder net("bad", ModelOptions{1});
    Tensor x = net.conv2d("convx", net.input(1, 8, 8), c.out_channels, c.kernel, c.stride, c.padding);
    net.cross_entropy_loss(net.dense("fc", net.flatten(x), 2), 2);
    absl::StatusOr<Model> model = std::move(net).build();
    ASSERT_FALSE(model.ok()) << c.expected;
    EXPECT_THAT(model.status().message(), AllOf(HasSubstr("convx"), HasSubstr(c.expected)));
  }
}

TEST(Input, NonPositiveSizeIsAnError) {
  ModelBuilder net("empty_input", ModelOptions{1});
  net.input(1, 0, 28);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("[1, 0, 28]"));
}

TEST(Model, NonPositiveBatchIsAnError) {
  ModelBuilder net("nobatch", ModelOptions{0});
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("batch_size 0"));
}

TEST(MaxPool2d, KernelLargerThanInputIsAnError) {
  ModelBuilder net("bad_pool", ModelOptions{1});
  Tensor x = net.max_pool2d(net.input(2, 3, 3), 4);
  net.cross_entropy_loss(net.dense("fc", net.flatten(x), 2), 2);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(),
              AllOf(HasSubstr("max_pool2d1"), HasSubstr("kernel_size 4"), HasSubstr("3x3")));
}

TEST(Dense, UnflattenedInputIsAnError) {
  ModelBuilder net("no_flatten", ModelOptions{1});
  Tensor x = net.dense("fc1", net.input(1, 4, 4), 3);
  net.cross_entropy_loss(x, 3);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), AllOf(HasSubstr("fc1"), HasSubstr("flatten")));
}

TEST(Loss, ClassCountMismatchIsAnError) {
  ModelBuilder net("mismatch", ModelOptions{1});
  Tensor x = net.dense("head", net.flatten(net.input(1, 4, 4)), 10);
  net.cross_entropy_loss(x, 5);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(),
              AllOf(HasSubstr("head"), HasSubstr("[10]"), HasSubstr("num_classes is 5")));
}

TEST(Loss, MissingLossIsAnError) {
  ModelBuilder net("headless", ModelOptions{1});
  net.dense("fc", net.flatten(net.input(1, 4, 4)), 10);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), AllOf(HasSubstr("headless"), HasSubstr("no loss")));
}

TEST(Loss, LayerAfterLossIsAnError) {
  ModelBuilder net("late", ModelOptions{1});
  Tensor x = net.dense("fc", net.flatten(net.input(1, 4, 4)), 2);
  net.cross_entropy_loss(x, 2);
  net.relu(x);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("after the loss"));
}

TEST(Builder, DuplicateLayerNameIsAnError) {
  ModelBuilder net("twice", ModelOptions{1});
  Tensor x = net.flatten(net.input(1, 4, 4));
  x = net.dense("fc", x, 8);
  x = net.dense("fc", x, 2);
  net.cross_entropy_loss(x, 2);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), AllOf(HasSubstr("'fc'"), HasSubstr("used twice")));
}

TEST(Builder, TensorOfAnotherModelIsAnError) {
  ModelBuilder first("first", ModelOptions{1});
  Tensor foreign = first.input(1, 4, 4);
  ModelBuilder second("second", ModelOptions{1});
  second.input(1, 4, 4);
  second.cross_entropy_loss(second.dense("fc", second.flatten(foreign), 2), 2);
  absl::StatusOr<Model> model = std::move(second).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), AllOf(HasSubstr("flatten1"), HasSubstr("second")));
}

TEST(Builder, LayerNotReachingLossIsAnError) {
  ModelBuilder net("dead", ModelOptions{1});
  Tensor x = net.flatten(net.input(1, 4, 4));
  Tensor branch = net.dense("side", x, 4);
  net.relu(branch);
  net.cross_entropy_loss(net.dense("fc", x, 2), 2);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(),
              AllOf(HasSubstr("side, relu1"), HasSubstr("does not reach the loss")));
}

// A residual block whose add was forgotten leaves the shortcut's convolution unused.
TEST(Builder, ForgottenResidualAddIsAnError) {
  ModelBuilder net("no_add", ModelOptions{1});
  Tensor x = net.input(2, 4, 4);
  Tensor shortcut = net.conv2d("downsample", x, 2, 1);
  x = net.relu(net.conv2d("conv", x, 2, 3, 1, 1));
  net.cross_entropy_loss(net.dense("fc", net.flatten(x), 2), 2);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("the output of downsample does not reach"));
  (void)shortcut;
}

TEST(Builder, FirstErrorIsKept) {
  ModelBuilder net("chain", ModelOptions{1});
  Tensor x = net.conv2d("conv1", net.input(1, 4, 4), 2, 9);  // the first error
  x = net.dense("fc", x, 2);                                   // would be a second one
  net.cross_entropy_loss(x, 2);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("conv1"));
}

TEST(Registry, UnknownModelListsKnownOnes) {
  absl::StatusOr<Model> model = BuildModel("lenet6", {});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(model.status().message(), AllOf(HasSubstr("lenet6"), HasSubstr("lenet5")));
}

TEST(Flops, CountsMultiplyAddsTwice) {
  absl::StatusOr<Model> model = BuildModel("lenet5", {});
  ASSERT_TRUE(model.ok()) << model.status();
  // conv1: 6·28·28 outputs, each 25 multiply-adds and one bias add.
  EXPECT_EQ(model->flops(model->layers[1]), 6 * 28 * 28 * (2 * 25 + 1));
  // fc2: 10 outputs, 84 multiply-adds and one bias add each.
  EXPECT_EQ(model->flops(model->layers[12]), 10 * (2 * 84 + 1));
}

// ---- The model zoo: torchvision's layouts and counts, input sizes, blocks ----------------------

using Shape = std::vector<int64_t>;

// Returns the shape of the tensor named `name` in `tensors` (params or buffers), or nullopt when
// there is none.
std::optional<Shape> ShapeOf(const std::vector<Param>& tensors, const std::string& name) {
  for (const Param& t : tensors) {
    if (t.name == name) return t.shape;
  }
  return std::nullopt;
}

// Returns the output shape of the layer named `name`, or nullopt when there is none.
std::optional<Shape> OutputShapeOf(const Model& model, const std::string& name) {
  for (const Layer& layer : model.layers) {
    if (layer.name == name) return layer.output_shape;
  }
  return std::nullopt;
}

// Returns options for `channels`×`height`×`width` inputs and `num_classes` classes. A 0 keeps the
// model's default.
ModelOptions ImageOptions(int64_t channels, int64_t height, int64_t width, int64_t num_classes) {
  ModelOptions options;
  options.channels = channels;
  options.height = height;
  options.width = width;
  options.num_classes = num_classes;
  return options;
}

// Returns the layer named `name`, or nullptr.
const Layer* FindLayer(const Model& model, const std::string& name) {
  for (const Layer& layer : model.layers) {
    if (layer.name == name) return &layer;
  }
  return nullptr;
}

TEST(ModelZoo, ParameterCountsAtDefaults) {
  // torchvision 0.15's counts at 3x224x224 and 1000 classes, and the counts of Kiln's own models.
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"alexnet", 61'100'840},   {"resnet18", 11'689'512},  {"resnet34", 21'797'672},
      {"resnet50", 25'557'032},  {"resnet101", 44'549'160}, {"resnet152", 60'192'808},
      {"resnet20", 272'186},     {"mlp_regression", 4'353}, {"denoising_autoencoder", 9'857},
      {"conv3x3", 256 * 256 * 9}};
  for (const auto& [name, count] : expected) {
    absl::StatusOr<Model> model = BuildModel(name, {});
    ASSERT_TRUE(model.ok()) << name << ": " << model.status();
    EXPECT_EQ(model->num_params(), count) << name;
  }
}

TEST(ModelZoo, BatchSizeFromOptions) {
  ModelOptions options;
  options.batch_size = 8;
  for (const std::string& name : RegisteredModels()) {
    absl::StatusOr<Model> model = BuildModel(name, options);
    ASSERT_TRUE(model.ok()) << name << ": " << model.status();
    EXPECT_EQ(model->batch_size, 8) << name;
  }
}

TEST(DeepMlp, TwelveDenseLayersInEachVariant) {
  for (const auto& [name, count] : {std::pair{"deep_sigmoid", 92490}, {"deep_relu", 92490},
                                    {"deep_relu_bn", 93770}, {"deep_residual", 92490}}) {
    absl::StatusOr<Model> model = BuildModel(name, {});
    ASSERT_TRUE(model.ok()) << name << ": " << model.status();
    EXPECT_EQ(model->num_params(), count) << name;
    int dense = 0;
    for (const Layer& l : model->layers) dense += l.kind == OpKind::kDense;
    EXPECT_EQ(dense, 12) << name;
    EXPECT_EQ(model->blocks.size(), 10u) << name;
  }
}

TEST(Freeze, FreezesThroughALayerOrAStage) {
  absl::StatusOr<Model> lenet = BuildModel("lenet5", {});
  ASSERT_TRUE(lenet.ok());
  ASSERT_TRUE(FreezeThrough(*lenet, "conv2").ok());
  std::vector<std::string> trainable;
  for (const Param& p : lenet->params) {
    if (p.trainable) trainable.push_back(p.name);
  }
  EXPECT_EQ(trainable, (std::vector<std::string>{"conv3.weight", "conv3.bias", "fc1.weight",
                                                 "fc1.bias", "fc2.weight", "fc2.bias"}));
  EXPECT_FALSE(NeedsInputGrad(*lenet, 0));

  absl::StatusOr<Model> resnet = BuildModel("resnet20", {});
  ASSERT_TRUE(resnet.ok());
  ASSERT_TRUE(FreezeThrough(*resnet, "layer2").ok());
  for (const Param& p : resnet->params) {
    EXPECT_EQ(p.trainable, p.name.rfind("layer3.", 0) == 0 || p.name.rfind("fc.", 0) == 0)
        << p.name;
  }
  // Segments: the stem, nine blocks, the head. Stage 3 starts at segment 7.
  EXPECT_FALSE(NeedsBackward(*resnet, 6));
  EXPECT_TRUE(NeedsBackward(*resnet, 7));
  EXPECT_FALSE(NeedsInputGrad(*resnet, 7));
  EXPECT_TRUE(NeedsInputGrad(*resnet, 8));
}

TEST(Freeze, BadNamesAndFreezingEverythingAreErrors) {
  absl::StatusOr<Model> lenet = BuildModel("lenet5", {});
  ASSERT_TRUE(lenet.ok());
  absl::Status unknown = FreezeThrough(*lenet, "conv9");
  EXPECT_THAT(unknown.message(), HasSubstr("no layer or block 'conv9'"));
  EXPECT_THAT(unknown.message(), HasSubstr("conv1, conv2, conv3, fc1, fc2"));
  EXPECT_THAT(FreezeThrough(*lenet, "fc2").message(), HasSubstr("leaves no parameter to train"));
  for (const Param& p : lenet->params) EXPECT_TRUE(p.trainable) << p.name;
}

TEST(Alexnet, NamesAndShapesLikeTorchvision) {
  absl::StatusOr<Model> model = BuildModel("alexnet", {});
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::string> names;
  for (const Param& p : model->params) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "features.0.weight", "features.0.bias", "features.3.weight",
                       "features.3.bias", "features.6.weight", "features.6.bias",
                       "features.8.weight", "features.8.bias", "features.10.weight",
                       "features.10.bias", "classifier.1.weight", "classifier.1.bias",
                       "classifier.4.weight", "classifier.4.bias", "classifier.6.weight",
                       "classifier.6.bias"}));
  EXPECT_EQ(ShapeOf(model->params, "features.0.weight"), (Shape{64, 3, 11, 11}));
  EXPECT_EQ(ShapeOf(model->params, "classifier.1.weight"), (Shape{4096, 9216}));
  EXPECT_EQ(ShapeOf(model->params, "classifier.6.weight"), (Shape{1000, 4096}));
}

TEST(Alexnet, DropoutBeforeFirstTwoDenseLayers) {
  absl::StatusOr<Model> model = BuildModel("alexnet", {});
  ASSERT_TRUE(model.ok()) << model.status();
  for (const char* name : {"classifier.1", "classifier.4"}) {
    const Layer* dense = FindLayer(*model, name);
    ASSERT_NE(dense, nullptr) << name;
    const Layer& before = model->layers[dense->input()];
    EXPECT_EQ(before.kind, OpKind::kDropout) << name;
    EXPECT_EQ(before.p, 0.5f) << name;
  }
  const Layer* last = FindLayer(*model, "classifier.6");
  ASSERT_NE(last, nullptr);
  EXPECT_EQ(model->layers[last->input()].kind, OpKind::kRelu);
}

TEST(Alexnet, ClassifierFollowsFeatureMapAtOtherSizes) {
  // At 256x256 the features are 256@7x7. torchvision would pool them to 6x6 (9216 inputs), but
  // Kiln has no 6x6 adaptive pooling, so classifier.1 takes all 256·7·7 values.
  absl::StatusOr<Model> model = BuildModel("alexnet", ImageOptions(0, 256, 256, 10));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(ShapeOf(model->params, "classifier.1.weight"), (Shape{4096, 256 * 7 * 7}));
  EXPECT_EQ(ShapeOf(model->params, "classifier.6.weight"), (Shape{10, 4096}));
}

TEST(Alexnet, TooSmallInputNamesLayer) {
  // 28x28: features.0 gives 6x6, the first pool 2x2, features.3 2x2, and the second 3x3 pool
  // (max_pool2d2, torchvision's features.5) does not fit.
  absl::StatusOr<Model> model = BuildModel("alexnet", ImageOptions(1, 28, 28, 10));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(),
              AllOf(HasSubstr("max_pool2d2"), HasSubstr("kernel_size 3"), HasSubstr("2x2")));
}

TEST(ResNet50, NamesAndShapesLikeTorchvision) {
  absl::StatusOr<Model> model = BuildModel("resnet50", {});
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<std::pair<std::string, Shape>> params = {
      {"conv1.weight", {64, 3, 7, 7}},
      {"bn1.weight", {64}},
      {"layer1.0.conv1.weight", {64, 64, 1, 1}},
      {"layer1.0.conv3.weight", {256, 64, 1, 1}},
      {"layer1.0.downsample.0.weight", {256, 64, 1, 1}},
      {"layer1.0.downsample.1.bias", {256}},
      {"layer2.0.conv2.weight", {128, 128, 3, 3}},
      {"layer3.5.bn3.weight", {1024}},
      {"layer4.2.conv3.weight", {2048, 512, 1, 1}},
      {"fc.weight", {1000, 2048}},
      {"fc.bias", {1000}}};
  for (const auto& [name, shape] : params) {
    EXPECT_EQ(ShapeOf(model->params, name), shape) << name;
  }
  // No convolution has a bias, as in torchvision.
  EXPECT_EQ(ShapeOf(model->params, "conv1.bias"), std::nullopt);
  EXPECT_EQ(ShapeOf(model->params, "layer4.2.conv3.bias"), std::nullopt);
  // Only the first block of a stage projects its shortcut.
  EXPECT_EQ(ShapeOf(model->params, "layer1.1.downsample.0.weight"), std::nullopt);
}

TEST(ResNet50, RunningStatisticsAreBuffers) {
  absl::StatusOr<Model> model = BuildModel("resnet50", {});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(ShapeOf(model->buffers, "layer1.0.downsample.1.running_mean"), (Shape{256}));
  EXPECT_EQ(ShapeOf(model->buffers, "bn1.running_var"), (Shape{64}));
  EXPECT_EQ(ShapeOf(model->params, "layer1.0.downsample.1.running_mean"), std::nullopt);
  // 53 batch norms, two buffers each (torchvision's num_batches_tracked has no counterpart).
  EXPECT_EQ(model->buffers.size(), 106u);
}

TEST(ResNet50, StrideOnBottleneck3x3Conv) {
  // torchvision's v1.5: conv2 (3x3) strides, conv1 (1x1) does not.
  absl::StatusOr<Model> model = BuildModel("resnet50", {});
  ASSERT_TRUE(model.ok()) << model.status();
  for (const char* stage : {"layer2.0", "layer3.0", "layer4.0"}) {
    const std::string prefix = stage;
    const Layer* conv1 = FindLayer(*model, prefix + ".conv1");
    const Layer* conv2 = FindLayer(*model, prefix + ".conv2");
    const Layer* downsample = FindLayer(*model, prefix + ".downsample.0");
    ASSERT_NE(conv1, nullptr) << stage;
    ASSERT_NE(conv2, nullptr) << stage;
    ASSERT_NE(downsample, nullptr) << stage;
    EXPECT_EQ(conv1->stride, 1) << stage;
    EXPECT_EQ(conv2->stride, 2) << stage;
    EXPECT_EQ(downsample->stride, 2) << stage;
  }
  EXPECT_EQ(OutputShapeOf(*model, "layer4.2.conv3"), (Shape{2048, 7, 7}));
}

TEST(ResNet18, ParametersInStateDictOrder) {
  absl::StatusOr<Model> model = BuildModel("resnet18", {});
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ(model->params.size(), 62u);  // As torchvision's named_parameters().
  std::vector<std::string> first;
  for (int i = 0; i < 9; ++i) first.push_back(model->params[i].name);
  EXPECT_EQ(first, (std::vector<std::string>{
                       "conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight",
                       "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.conv2.weight",
                       "layer1.0.bn2.weight", "layer1.0.bn2.bias"}));
  // In a projecting block the shortcut comes last, as torchvision registers it.
  std::vector<std::string> layer2;
  for (const Param& p : model->params) {
    if (p.name.rfind("layer2.0.", 0) == 0) layer2.push_back(p.name);
  }
  EXPECT_EQ(layer2, (std::vector<std::string>{
                        "layer2.0.conv1.weight", "layer2.0.bn1.weight", "layer2.0.bn1.bias",
                        "layer2.0.conv2.weight", "layer2.0.bn2.weight", "layer2.0.bn2.bias",
                        "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight",
                        "layer2.0.downsample.1.bias"}));
  EXPECT_EQ(model->params.back().name, "fc.bias");
}

TEST(ResNet18, EachResidualBlockIsOneBlock) {
  absl::StatusOr<Model> model = BuildModel("resnet18", {});
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::string> names;
  for (const Block& block : model->blocks) names.push_back(block.name);
  EXPECT_EQ(names, (std::vector<std::string>{"layer1.0", "layer1.1", "layer2.0", "layer2.1",
                                             "layer3.0", "layer3.1", "layer4.0", "layer4.1"}));

  // The stem, one segment per block, the head.
  ASSERT_EQ(model->segments.size(), 10u);
  EXPECT_EQ(model->segments.front().block, -1);
  EXPECT_EQ(model->segments.back().block, -1);
  for (size_t i = 1; i + 1 < model->segments.size(); ++i) {
    EXPECT_EQ(model->segments[i].block, static_cast<int>(i) - 1) << "segment " << i;
    EXPECT_EQ(model->segments[i].input, model->segments[i - 1].last) << "segment " << i;
  }
  EXPECT_EQ(model->layers[model->segments.front().last].kind, OpKind::kMaxPool2d);
  EXPECT_EQ(model->layers[model->segments.back().first].kind, OpKind::kAdaptiveAvgPool2d);

  // A block ends in the relu after the residual add.
  const Block& block = model->blocks[0];
  EXPECT_EQ(model->layers[block.last].kind, OpKind::kRelu);
  EXPECT_EQ(model->layers[block.last - 1].kind, OpKind::kAdd);
}

TEST(ResNet18, SmallInputAndTenClasses) {
  absl::StatusOr<Model> model = BuildModel("resnet18", ImageOptions(1, 28, 28, 10));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->input_layer().output_shape, (Shape{1, 28, 28}));
  EXPECT_EQ(ShapeOf(model->params, "conv1.weight"), (Shape{64, 1, 7, 7}));
  EXPECT_EQ(ShapeOf(model->params, "fc.weight"), (Shape{10, 512}));
  EXPECT_EQ(model->loss_layer().num_classes, 10);
  // 28 → 14 (conv1) → 7 (max pool) → 7, 4, 2, 1 through the stages.
  EXPECT_EQ(OutputShapeOf(*model, "layer4.1.conv2"), (Shape{512, 1, 1}));
}

TEST(ResNet20, ProjectsOnlyWhereShapeChanges) {
  absl::StatusOr<Model> model = BuildModel("resnet20", {});
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::string> projected;
  for (const Param& p : model->params) {
    if (p.name.find("downsample.0.weight") != std::string::npos) projected.push_back(p.name);
  }
  EXPECT_EQ(projected, (std::vector<std::string>{"layer2.0.downsample.0.weight",
                                                 "layer3.0.downsample.0.weight"}));
  EXPECT_EQ(ShapeOf(model->params, "layer2.0.downsample.0.weight"), (Shape{32, 16, 1, 1}));
  EXPECT_EQ(ShapeOf(model->params, "layer3.0.downsample.0.weight"), (Shape{64, 32, 1, 1}));
  const Layer* projection = FindLayer(*model, "layer3.0.downsample.0");
  ASSERT_NE(projection, nullptr);
  EXPECT_EQ(projection->stride, 2);
  EXPECT_FALSE(projection->bias);
}

TEST(ResNet20, StagesAndHead) {
  absl::StatusOr<Model> model = BuildModel("resnet20", {});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->input_layer().output_shape, (Shape{1, 28, 28}));
  EXPECT_EQ(ShapeOf(model->params, "conv1.weight"), (Shape{16, 1, 3, 3}));
  const std::vector<std::pair<std::string, Shape>> outputs = {
      {"layer1.2.conv2", {16, 28, 28}}, {"layer2.2.conv2", {32, 14, 14}},
      {"layer3.2.conv2", {64, 7, 7}}, {"fc", {10}}};
  for (const auto& [name, shape] : outputs) {
    EXPECT_EQ(OutputShapeOf(*model, name), shape) << name;
  }
  EXPECT_EQ(model->blocks.size(), 9u);
  EXPECT_EQ(model->segments.size(), 11u);
}

TEST(MlpRegression, ShapesAndTargets) {
  absl::StatusOr<Model> model = BuildModel("mlp_regression", {});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->input_layer().output_shape, (Shape{1}));
  EXPECT_EQ(model->logits_layer().output_shape, (Shape{1}));
  EXPECT_EQ(model->loss_layer().kind, OpKind::kMseLoss);
  EXPECT_EQ(model->target_kind(), TargetKind::kTensor);
  for (const char* name : {"fc2", "fc3"}) {
    const Layer* dense = FindLayer(*model, name);
    ASSERT_NE(dense, nullptr) << name;
    EXPECT_EQ(model->layers[dense->input()].kind, OpKind::kTanh) << name;
  }
}

TEST(MlpRegression, FeaturesAndOutputsFromOptions) {
  // The input has channels · height · width features, and fc3 has num_classes outputs.
  absl::StatusOr<Model> model = BuildModel("mlp_regression", ImageOptions(3, 0, 0, 2));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->input_layer().output_shape, (Shape{3}));
  EXPECT_EQ(ShapeOf(model->params, "fc1.weight"), (Shape{64, 3}));
  EXPECT_EQ(ShapeOf(model->params, "fc3.weight"), (Shape{2, 64}));
}

TEST(DenoisingAutoencoder, ReconstructsInputShape) {
  absl::StatusOr<Model> model = BuildModel("denoising_autoencoder", {});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->input_layer().output_shape, (Shape{1, 28, 28}));
  EXPECT_EQ(model->logits_layer().output_shape, (Shape{1, 28, 28}));
  EXPECT_EQ(model->logits_layer().kind, OpKind::kSigmoid);
  EXPECT_EQ(model->loss_layer().kind, OpKind::kMseLoss);
  // The clean images come with the data as targets, and the input is the noisy one.
  EXPECT_EQ(model->target_kind(), TargetKind::kTensor);
}

TEST(DenoisingAutoencoder, ImageSizeFromOptions) {
  absl::StatusOr<Model> model = BuildModel("denoising_autoencoder", ImageOptions(3, 32, 40, 0));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->logits_layer().output_shape, (Shape{3, 32, 40}));
  EXPECT_EQ(ShapeOf(model->params, "conv3.weight"), (Shape{3, 32, 3, 3}));
}

}  // namespace
}  // namespace kiln
