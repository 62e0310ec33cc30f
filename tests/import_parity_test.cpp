// `kiln import-weights` end to end: a torchvision-layout ResNet-18 state_dict, written as
// PyTorch's safetensors.torch.save_file would (running statistics and num_batches_tracked
// included), imported into the compiled ResNet-18 and evaluated. Its logits must match PyTorch's
// for the same weights, stored by tools/make_parity_reference.py (case resnet18: 3×64×64, batch 2,
// 10 classes; the weights are regenerated from tests/reference_weights.h).
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "compiler/model.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint.h"
#include "runtime/compiled_model.h"
#include "runtime/import_weights.h"
#include "runtime/network.h"
#include "runtime/safetensors.h"
#include "tests/parity_compare.h"
#include "tests/reference_weights.h"

namespace kiln {
namespace {

std::string DataPath(const std::string& file) {
  const char* dir = std::getenv("KILN_TEST_DATA");
  return dir == nullptr ? "" : absl::StrCat(dir, "/", file);
}

TensorData F32(const std::vector<int64_t>& shape, const std::vector<float>& values) {
  TensorData t;
  t.dtype = DType::kF32;
  t.shape = shape;
  t.data.resize(values.size() * sizeof(float));
  std::memcpy(t.data.data(), values.data(), t.data.size());
  return t;
}

// The reference values of a parameter or running statistic of the compiled model.
std::vector<float> ReferenceValues(const ParamInfo& info) {
  Param p;
  p.name = info.name;
  p.shape = info.shape;
  p.fan_in = info.fan_in;
  return reference::InitialValues(p);
}

// A state_dict as torchvision's resnet18 saves it: parameters, running statistics, and an I64
// num_batches_tracked per BatchNorm.
TensorFile TorchStateDict(const CompiledModel& model) {
  TensorFile file;
  for (const ParamInfo& p : model.params) file.tensors[p.name] = F32(p.shape, ReferenceValues(p));
  for (const ParamInfo& b : model.buffers) {
    file.tensors[b.name] = F32(b.shape, ReferenceValues(b));
    const std::string bn = b.name.substr(0, b.name.rfind('.'));
    TensorData count;
    count.dtype = DType::kI64;
    count.data.assign(sizeof(int64_t), 0);
    file.tensors[bn + ".num_batches_tracked"] = count;
  }
  return file;
}

class ImportParity : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = FindCompiledModel("resnet18_parity");
    ASSERT_NE(model_, nullptr) << "resnet18_parity is not linked into this test";
    ASSERT_FALSE(DataPath("").empty()) << "KILN_TEST_DATA is not set; run through ctest";
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("kiln_import_parity_", ::getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  const CompiledModel* model_ = nullptr;
  std::filesystem::path dir_;
};

TEST_F(ImportParity, Resnet18LogitsMatchPyTorch) {
  const std::string state_dict = (dir_ / "resnet18_torch.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(state_dict, TorchStateDict(*model_)).ok());
  const std::string checkpoint = (dir_ / "resnet18_kiln.safetensors").string();
  absl::Status imported = ImportWeightsCommand(*model_, state_dict, checkpoint, nullptr);
  ASSERT_TRUE(imported.ok()) << imported;

  Network net(*model_);
  absl::StatusOr<std::map<std::string, std::string>> loaded = net.LoadCheckpoint(checkpoint);
  ASSERT_TRUE(loaded.ok()) << loaded.status();

  absl::StatusOr<TensorFile> reference = ReadSafetensors(DataPath("parity/resnet18.safetensors"));
  ASSERT_TRUE(reference.ok()) << reference.status();
  const TensorData& input = reference->tensors.at("input");
  const int batch = static_cast<int>(input.shape[0]);

  std::vector<float> logits(static_cast<size_t>(batch) * model_->num_classes);
  ASSERT_TRUE(net.Forward(input.f32(), batch, logits.data()).ok());
  // The bound of model_parity_test's evaluation step, which runs the same weights.
  parity::Tolerance tolerance;
  tolerance.row_max = parity::kLogitRowMax;
  EXPECT_TRUE(parity::MatchesTensor(*reference, "eval_output", logits.data(),
                                    static_cast<int64_t>(logits.size()), tolerance));
}

TEST_F(ImportParity, MismatchedShapeListsTheDifference) {
  TensorFile file = TorchStateDict(*model_);
  file.tensors["fc.weight"] = F32({1000, 512}, std::vector<float>(1000 * 512));
  file.tensors.erase("layer1.0.bn1.running_var");
  const std::string state_dict = (dir_ / "wrong.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(state_dict, file).ok());
  const std::string checkpoint = (dir_ / "never.safetensors").string();
  absl::Status status = ImportWeightsCommand(*model_, state_dict, checkpoint, nullptr);
  ASSERT_FALSE(status.ok());
  const std::string message(status.message());
  EXPECT_NE(message.find("fc.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("[1000, 512]"), std::string::npos) << message;
  EXPECT_NE(message.find("layer1.0.bn1.running_var"), std::string::npos) << message;
  EXPECT_FALSE(std::filesystem::exists(checkpoint));
}

}  // namespace
}  // namespace kiln
