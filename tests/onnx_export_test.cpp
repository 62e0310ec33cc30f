// kiln export --format onnx's library side (runtime/onnx_export.h) on compiled LeNet-5 and
// ResNet-20: the files pass the ONNX checker and name every parameter, and, where onnxruntime is
// installed, run to Kiln's predictions.
#include "runtime/onnx_export.h"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"
#include "runtime/network.h"
#include "tests/training_helpers.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

// A network of `name` after two training steps on real images, so that BatchNorm's running
// statistics are not their starting values.
Network Trained(const std::string& name) {
  const CompiledModel* model = FindCompiledModel(name);
  EXPECT_NE(model, nullptr);
  Network net(*model);
  net.InitParams(4);
  const Dataset batch = test::First(test::Split("train"), 16);
  for (int step = 0; step < 2; ++step) {
    EXPECT_TRUE(net.Backward(batch.images.data(), batch.labels.data(), 16).ok());
    EXPECT_TRUE(net.Update(SgdOptions{0.05f, 0.9f, 0.0f}).ok());
  }
  return net;
}

onnx::ModelProto Read(const std::string& path) {
  onnx::ModelProto proto;
  std::ifstream file(path, std::ios::binary);
  EXPECT_TRUE(proto.ParseFromIstream(&file)) << path;
  return proto;
}

class OnnxExport : public ::testing::TestWithParam<std::string> {};

TEST_P(OnnxExport, FilePassesTheCheckerAndHoldsTheState) {
  Network net = Trained(GetParam());
  const std::string path = test::TempPath(GetParam() + ".onnx");
  absl::Status s = ExportOnnx(net.model(), net.params(), net.buffers(), path);
  ASSERT_TRUE(s.ok()) << s;

  EXPECT_NO_THROW(onnx::checker::check_model(path));
  const onnx::ModelProto proto = Read(path);
  EXPECT_EQ(proto.opset_import(0).version(), 13);
  const onnx::GraphProto& graph = proto.graph();
  ASSERT_EQ(graph.initializer_size(),
            static_cast<int>(net.model().params.size() + net.model().buffers.size()));
  // Every parameter and running statistic, by state_dict name, with its values.
  for (const onnx::TensorProto& tensor : graph.initializer()) {
    const std::vector<ParamInfo>* table = &net.model().params;
    const FloatArray* values = &net.params();
    if (tensor.name().find("running_") != std::string::npos) {
      table = &net.model().buffers;
      values = &net.buffers();
    }
    bool found = false;
    for (const ParamInfo& p : *table) {
      if (p.name != tensor.name()) continue;
      found = true;
      ASSERT_EQ(tensor.raw_data().size(), sizeof(float) * p.numel) << p.name;
      EXPECT_EQ(std::memcmp(tensor.raw_data().data(), values->data() + p.offset,
                            tensor.raw_data().size()),
                0)
          << p.name;
    }
    EXPECT_TRUE(found) << tensor.name();
  }

  ASSERT_EQ(graph.output_size(), 1);
  EXPECT_EQ(graph.output(0).type().tensor_type().shape().dim(0).dim_param(), "batch");
  EXPECT_EQ(graph.output(0).type().tensor_type().shape().dim(1).dim_value(),
            net.model().output_shape[0]);
}

// With onnxruntime, the exported graph predicts what Kiln predicts.
TEST_P(OnnxExport, OnnxRuntimeMatchesKiln) {
  const std::string python = std::getenv("KILN_ONNX_PYTHON") ? std::getenv("KILN_ONNX_PYTHON")
                                                             : "python3";
  Network net = Trained(GetParam());
  const std::string model = test::TempPath(GetParam() + "_ort.onnx");
  ASSERT_TRUE(ExportOnnx(net.model(), net.params(), net.buffers(), model).ok());

  const int batch = 8;
  const Dataset images = test::First(test::Split("t10k"), batch);
  const std::string input = test::TempPath("onnx_input.bin");
  const std::string output = test::TempPath("onnx_output.bin");
  {
    std::ofstream file(input, std::ios::binary);
    file.write(reinterpret_cast<const char*>(images.images.data()),
               sizeof(float) * images.images.size());
  }
  const std::string command = python + " " + KILN_SOURCE_DIR + "/tools/onnx_run.py " + model +
                              " " + input + " " + std::to_string(batch) + " " + output;
  const int status = std::system(command.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
    GTEST_SKIP() << "onnxruntime is not importable by '" << python
                 << "'; install it (pip install onnxruntime) or set KILN_ONNX_PYTHON";
  }
  ASSERT_EQ(status, 0) << command;

  const std::string bytes = test::FileBytes(output);
  const size_t classes = static_cast<size_t>(net.model().output_shape[0]);
  ASSERT_EQ(bytes.size(), sizeof(float) * batch * classes);
  std::vector<float> theirs(batch * classes), ours(batch * classes);
  std::memcpy(theirs.data(), bytes.data(), bytes.size());
  ASSERT_TRUE(net.Forward(images.images.data(), batch, ours.data()).ok());
  double worst = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_NEAR(theirs[i], ours[i], 1e-4 * (1 + std::abs(ours[i]))) << "value " << i;
    worst = std::max(worst, std::abs(static_cast<double>(theirs[i]) - ours[i]));
  }
  std::printf("largest |onnxruntime - kiln| over %zu outputs: %.3g\n", ours.size(), worst);
}

INSTANTIATE_TEST_SUITE_P(Models, OnnxExport, ::testing::Values("lenet5", "resnet20"));

TEST(OnnxExportErrors, BadArgumentsNameTheProblem) {
  const CompiledModel* model = FindCompiledModel("lenet5");
  ASSERT_NE(model, nullptr);
  Network net(*model);
  net.InitParams(0);
  absl::Status s = ExportOnnx(*model, net.params(), net.buffers(), "/nonexistent-dir/m.onnx");
  EXPECT_THAT(std::string(s.message()), HasSubstr("/nonexistent-dir/m.onnx"));
  std::vector<float> short_params(net.params().begin(), net.params().end() - 1);
  s = ExportOnnx(*model, short_params, net.buffers(), test::TempPath("short.onnx"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("61705 parameter values"));
  OnnxExportOptions negative;
  negative.batch = -2;
  s = ExportOnnx(*model, net.params(), net.buffers(), test::TempPath("neg.onnx"), negative);
  EXPECT_THAT(std::string(s.message()), HasSubstr("batch -2 is negative"));
  EXPECT_TRUE(test::FileBytes(test::TempPath("short.onnx")).empty());
}

// A fixed batch is written into the input and output shapes.
TEST(OnnxExportErrors, FixedBatch) {
  Network net = Trained("lenet5");
  OnnxExportOptions options;
  options.batch = 8;
  const std::string path = test::TempPath("fixed.onnx");
  ASSERT_TRUE(ExportOnnx(net.model(), net.params(), net.buffers(), path, options).ok());
  const onnx::ModelProto proto = Read(path);
  EXPECT_EQ(proto.graph().input(0).type().tensor_type().shape().dim(0).dim_value(), 8);
}

}  // namespace
}  // namespace kiln
