// The model DSL: shape inference, parameter naming and initialization facts, definition errors.
#include "compiler/model.h"

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

}  // namespace
}  // namespace kiln
