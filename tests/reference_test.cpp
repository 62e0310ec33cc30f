// Kiln's compiled LeNet-5 against PyTorch: two SGD steps on the first 8 Fashion-MNIST test images,
// every logit, loss, gradient and updated parameter compared with the values that
// tools/make_reference.py stored in $KILN_TEST_DATA/lenet5_step.safetensors.
//
// Kiln starts from PyTorch's initial parameters and runs the same steps: Forward, Backward and
// Update, twice. Each test then compares one group of values element by element, and a failure
// names the worst element and its values. Each group also prints its largest error, to show how
// much of the tolerance it uses.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "runtime/compiled_model.h"
#include "runtime/idx.h"
#include "runtime/network.h"
#include "runtime/safetensors.h"
#include "tests/parity_compare.h"

namespace kiln {
namespace {

constexpr char kFileName[] = "lenet5_step.safetensors";
constexpr int kBatch = 8;

// An element passes when |kiln − torch| ≤ kRelTol·|torch| + kAbsTol. The absolute part is for
// values near zero. Most gradients here lie between 1e-5 and 5e-2 (conv3.weight's median is 3e-5),
// so a floor of 1e-6 would hide relative errors of several percent. Measured with the manual
// schedule: the worst element of any group uses 3% of this tolerance. PyTorch itself in float32
// uses up to 4% against the float64 values stored in the file.
constexpr double kRelTol = 1e-4;
constexpr double kAbsTol = 1e-7;

// An SGD step passes when |kiln step − torch step| ≤ kRelTol·|torch step| + kStepUlps·2^-24·
// |parameter| + kStepAbsTol. The middle term allows for rounding: both sides round the new
// parameter to float32, and Kiln's float32 update rounds once more. Measured: the worst element
// uses 25% of this tolerance.
constexpr double kStepUlps = 8;
constexpr double kStepAbsTol = 1e-12;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// One element compared: Kiln's value, PyTorch's, and the absolute part of its tolerance.
struct Element {
  double kiln = 0, torch = 0, floor = 0;
};

// The worst element of one comparison or of a whole group. `score` is |kiln − torch| over the
// element's tolerance, so an element fails above 1.
struct Worst {
  double score = 0;
  double rel = 0;  // Largest |kiln − torch| / |torch| over elements with |torch| ≥ 1e-3.
  std::string where;
  Element element;
  int64_t failures = 0;
  int64_t compared = 0;

  void Add(const std::string& name, const std::vector<int64_t>& shape, int64_t index,
           const Element& e) {
    const double diff = std::fabs(e.kiln - e.torch);
    const double score = diff / (kRelTol * std::fabs(e.torch) + e.floor);
    ++compared;
    // A NaN fails and is always the worst element.
    if (!(score <= 1)) ++failures;
    if (!(score <= this->score)) {
      this->score = std::isnan(score) ? INFINITY : score;
      where = parity::ElementName(name, shape, index);
      element = e;
    }
    if (std::fabs(e.torch) >= 1e-3) rel = std::max(rel, diff / std::fabs(e.torch));
  }
};

// Prints the group's largest error and returns success, or a failure that names the worst
// element. `tolerance` describes the criterion in the message.
::testing::AssertionResult Verdict(const std::string& group, const Worst& worst,
                                   const std::string& tolerance) {
  std::cout << absl::StreamFormat(
      "[ reference] %-15s %6d values, max rel err %.2e, worst %s at %.3f of tolerance\n", group,
      worst.compared, worst.rel, worst.where, worst.score);
  if (worst.compared == 0) return ::testing::AssertionFailure() << group << ": nothing compared";
  if (worst.failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << absl::StreamFormat(
             "%s: %d of %d values differ from PyTorch by more than %s; the worst is %s: Kiln "
             "%.9g, PyTorch %.9g (%.1f times the tolerance)",
             group, worst.failures, worst.compared, tolerance, worst.where, worst.element.kiln,
             worst.element.torch, worst.score);
}

std::string ValueTolerance() { return absl::StrFormat("%g*|torch| + %g", kRelTol, kAbsTol); }

// Reads a float from the file's metadata, so that the test uses the hyperparameters that made it.
absl::StatusOr<float> MetadataFloat(const TensorFile& file, const std::string& key) {
  auto it = file.metadata.find(key);
  float value = 0;
  if (it == file.metadata.end() || !absl::SimpleAtof(it->second, &value)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metadata '", key, "' is missing or not a number; rerun tools/make_reference.py"));
  }
  return value;
}

// Counts the samples whose largest logit (the first on ties) is at the label.
int CountCorrect(const float* logits, const int32_t* labels, int batch, int classes) {
  int correct = 0;
  for (int n = 0; n < batch; ++n) {
    int best = 0;
    for (int k = 1; k < classes; ++k) {
      if (logits[n * classes + k] > logits[n * classes + best]) best = k;
    }
    correct += best == labels[n];
  }
  return correct;
}

// What Kiln computed in one training step. Gradients and parameters are flat arrays with the
// model's parameter offsets.
struct KilnStep {
  std::vector<float> logits;  // {batch, classes}, row-major.
  BatchResult result;
  FloatArray grads;
  FloatArray after;  // Parameters after the update.
};

// Kiln's initial parameters (PyTorch's) and its two steps from them.
struct KilnRun {
  FloatArray initial;
  KilnStep step[2];
};

class Reference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    error_ = new std::string;
    file_ = new TensorFile;
    run_ = new KilnRun;
    absl::Status status = Run();
    if (!status.ok()) *error_ = status.ToString();
  }

  static void TearDownTestSuite() {
    delete error_;
    delete file_;
    delete run_;
  }

  // Loads the file, checks its names, shapes and dtypes against the compiled model, and runs
  // Kiln's two steps from PyTorch's initial parameters.
  static absl::Status Run() {
    const char* dir = std::getenv("KILN_TEST_DATA");
    if (dir == nullptr || *dir == '\0') {
      return absl::FailedPreconditionError(
          "KILN_TEST_DATA is not set; run through ctest, or set it to the tests/data directory");
    }
    const std::string path = absl::StrCat(dir, "/", kFileName);
    absl::StatusOr<TensorFile> file = ReadSafetensors(path);
    if (!file.ok()) return file.status();
    *file_ = *std::move(file);

    spec_ = FindCompiledModel("lenet5");
    if (spec_ == nullptr) return absl::NotFoundError("model lenet5 is not linked into this test");
    absl::Status layout = CheckLayout(path);
    if (!layout.ok()) return layout;

    absl::StatusOr<float> lr = MetadataFloat(*file_, "lr");
    absl::StatusOr<float> momentum = MetadataFloat(*file_, "momentum");
    absl::StatusOr<float> weight_decay = MetadataFloat(*file_, "weight_decay");
    for (const auto* value : {&lr, &momentum, &weight_decay}) {
      if (!value->ok()) return value->status();
    }
    const SgdOptions sgd{*lr, *momentum, *weight_decay};

    // PyTorch's SGD starts without momentum buffers, the same as zero velocity.
    Network net(*spec_);
    std::fill(net.velocity().begin(), net.velocity().end(), 0.0f);
    for (const ParamInfo& p : spec_->params) {
      const float* values = file_->tensors.at("param." + p.name).f32();
      std::copy(values, values + p.numel, net.params().begin() + p.offset);
    }
    run_->initial = net.params();
    const float* images = file_->tensors.at("input").f32();
    const int32_t* labels = file_->tensors.at("labels").i32();

    for (KilnStep& step : run_->step) {
      step.logits.resize(kBatch * spec_->num_classes);
      absl::Status forward = net.Forward(images, kBatch, step.logits.data());
      if (!forward.ok()) return forward;

      absl::StatusOr<BatchResult> result = net.Backward(images, labels, kBatch);
      if (!result.ok()) return result.status();
      step.result = *result;
      step.grads = net.grads();

      absl::Status update = net.Update(sgd);
      if (!update.ok()) return update;
      step.after = net.params();
    }
    return absl::OkStatus();
  }

  // Checks that every tensor the test reads exists with the model's shape and the expected dtype.
  // grad2.*, after1.* and after2.* may keep only the rows listed in rows.<name>.
  static absl::Status CheckLayout(const std::string& path) {
    std::vector<std::string> problems;
    auto expect = [&](const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
      auto it = file_->tensors.find(name);
      if (it == file_->tensors.end()) {
        problems.push_back(absl::StrCat(name, " is missing"));
      } else if (it->second.dtype != dtype || it->second.shape != shape) {
        problems.push_back(absl::StrCat(name, " is ", DTypeName(it->second.dtype), " ",
                                        ShapeString(it->second.shape), ", expected ",
                                        DTypeName(dtype), " ", ShapeString(shape)));
      }
    };

    const CompiledModel& m = *spec_;
    expect("input", DType::kF32, {kBatch, m.channels, m.height, m.width});
    expect("labels", DType::kI32, {kBatch});
    expect("logits", DType::kF32, {kBatch, m.num_classes});
    expect("logits2", DType::kF32, {kBatch, m.num_classes});
    expect("loss", DType::kF32, {});
    expect("loss2", DType::kF32, {});

    for (const ParamInfo& p : m.params) {
      expect("param." + p.name, DType::kF32, p.shape);
      expect("grad." + p.name, DType::kF32, p.shape);

      auto rows = file_->tensors.find("rows." + p.name);
      std::vector<int64_t> kept_shape = p.shape;
      if (rows != file_->tensors.end()) {
        kept_shape[0] = rows->second.numel();
        expect("rows." + p.name, DType::kI32, {kept_shape[0]});
        for (int64_t i = 0; i < kept_shape[0] && rows->second.dtype == DType::kI32; ++i) {
          const int32_t row = rows->second.i32()[i];
          if (row < 0 || row >= p.shape[0]) {
            problems.push_back(absl::StrCat("rows.", p.name, " lists row ", row, ", but ", p.name,
                                            " has ", p.shape[0], " rows"));
          }
        }
      }
      for (const char* group : {"grad2.", "after1.", "after2."}) {
        expect(group + p.name, DType::kF32, kept_shape);
      }
    }

    if (problems.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(path, " does not fit the compiled lenet5: ", absl::StrJoin(problems, "; "),
                     ". Regenerate it with tools/make_reference.py."));
  }

  // A part of one parameter that the file stores in a group: all of it, or one of the rows
  // listed in rows.<name>.
  struct Segment {
    std::string name;  // For messages, as "after1.conv3.weight[112]".
    std::vector<int64_t> shape;
    int64_t start = 0;   // Position of the part in the parameter, in elements.
    int64_t stored = 0;  // Position of the part in the stored tensor, in elements.
    int64_t count = 0;
  };

  static std::vector<Segment> Segments(const std::string& group, const ParamInfo& p) {
    const std::string name = group + "." + p.name;
    if (file_->tensors.at(name).shape == p.shape) return {{name, p.shape, 0, 0, p.numel}};
    const TensorData& rows = file_->tensors.at("rows." + p.name);
    const int64_t row_size = p.numel / p.shape[0];
    std::vector<Segment> segments;
    for (int64_t i = 0; i < rows.numel(); ++i) {
      const int64_t row = rows.i32()[i];
      segments.push_back({absl::StrCat(name, "[", row, "]"),
                          std::vector<int64_t>(p.shape.begin() + 1, p.shape.end()), row * row_size,
                          i * row_size, row_size});
    }
    return segments;
  }

  // Returns PyTorch's values of `segment` in `<group>.<p.name>`, a tensor that contains the
  // whole parameter or only its kept rows.
  static const float* Stored(const std::string& group, const ParamInfo& p, const Segment& segment) {
    const TensorData& tensor = file_->tensors.at(group + "." + p.name);
    return tensor.f32() + (tensor.shape == p.shape ? segment.start : segment.stored);
  }

  // Compares the flat Kiln array `kiln` (model offsets) with the tensors `<group>.<name>`.
  static ::testing::AssertionResult ParamsMatch(const std::string& group,
                                                absl::Span<const float> kiln) {
    Worst worst;
    for (const ParamInfo& p : spec_->params) {
      for (const Segment& s : Segments(group, p)) {
        const float* torch = Stored(group, p, s);
        for (int64_t i = 0; i < s.count; ++i) {
          worst.Add(s.name, s.shape, i, {kiln[p.offset + s.start + i], torch[i], kAbsTol});
        }
      }
    }
    return Verdict(group, worst, ValueTolerance());
  }

  // Compares the SGD step that Kiln took, kiln_after − kiln_before, with PyTorch's,
  // <after>.<name> − <before>.<name>. A step is about lr·|grad|, far smaller than the parameter,
  // so this detects what ParamsMatch cannot: weight decay alone changes a parameter by
  // lr·weight_decay = 5e-5 of itself, below kRelTol.
  static ::testing::AssertionResult StepsMatch(const std::string& before, const std::string& after,
                                               absl::Span<const float> kiln_before,
                                               absl::Span<const float> kiln_after) {
    Worst worst;
    for (const ParamInfo& p : spec_->params) {
      for (const Segment& s : Segments(after, p)) {
        const float* torch_before = Stored(before, p, s);
        const float* torch_after = Stored(after, p, s);
        for (int64_t i = 0; i < s.count; ++i) {
          const int64_t k = p.offset + s.start + i;
          const double floor = kStepUlps * 0x1p-24 * std::fabs(torch_before[i]) + kStepAbsTol;
          worst.Add(s.name, s.shape, i,
                    {double{kiln_after[k]} - kiln_before[k],
                     double{torch_after[i]} - torch_before[i], floor});
        }
      }
    }
    return Verdict(absl::StrCat(after, " - ", before), worst,
                   absl::StrFormat("%g*|torch step| + %g*2^-24*|parameter| + %g", kRelTol,
                                   kStepUlps, kStepAbsTol));
  }

  static ::testing::AssertionResult TensorMatches(const std::string& name, const float* kiln) {
    const TensorData& torch = file_->tensors.at(name);
    Worst worst;
    for (int64_t i = 0; i < torch.numel(); ++i) {
      worst.Add(name, torch.shape, i, {kiln[i], torch.f32()[i], kAbsTol});
    }
    return Verdict(name, worst, ValueTolerance());
  }

  static int TorchCorrect(const std::string& logits) {
    return CountCorrect(file_->tensors.at(logits).f32(), file_->tensors.at("labels").i32(), kBatch,
                        spec_->num_classes);
  }

  void SetUp() override { ASSERT_TRUE(error_->empty()) << *error_; }

  static std::string* error_;
  static TensorFile* file_;
  static const CompiledModel* spec_;
  static KilnRun* run_;
};

std::string* Reference::error_ = nullptr;
TensorFile* Reference::file_ = nullptr;
const CompiledModel* Reference::spec_ = nullptr;
KilnRun* Reference::run_ = nullptr;

TEST_F(Reference, Logits) { EXPECT_TRUE(TensorMatches("logits", run_->step[0].logits.data())); }

TEST_F(Reference, Loss) { EXPECT_TRUE(TensorMatches("loss", &run_->step[0].result.loss)); }

TEST_F(Reference, Correct) {
  EXPECT_EQ(run_->step[0].result.correct, TorchCorrect("logits"))
      << "Kiln's correct count differs from the argmax of PyTorch's logits";
}

TEST_F(Reference, Grads) { EXPECT_TRUE(ParamsMatch("grad", run_->step[0].grads)); }

TEST_F(Reference, ParamsAfter1) { EXPECT_TRUE(ParamsMatch("after1", run_->step[0].after)); }

TEST_F(Reference, UpdateStep1) {
  EXPECT_TRUE(StepsMatch("param", "after1", run_->initial, run_->step[0].after));
}

TEST_F(Reference, Logits2) { EXPECT_TRUE(TensorMatches("logits2", run_->step[1].logits.data())); }

TEST_F(Reference, Loss2) { EXPECT_TRUE(TensorMatches("loss2", &run_->step[1].result.loss)); }

TEST_F(Reference, Correct2) {
  EXPECT_EQ(run_->step[1].result.correct, TorchCorrect("logits2"))
      << "Kiln's correct count after one step differs from the argmax of PyTorch's logits";
}

TEST_F(Reference, Grads2) { EXPECT_TRUE(ParamsMatch("grad2", run_->step[1].grads)); }

TEST_F(Reference, ParamsAfter2) { EXPECT_TRUE(ParamsMatch("after2", run_->step[1].after)); }

TEST_F(Reference, UpdateStep2) {
  EXPECT_TRUE(StepsMatch("after1", "after2", run_->step[0].after, run_->step[1].after));
}

// The stored batch is what Kiln's own reader gives for the first test images, so the reference
// and a Kiln training run see the same pixels.
TEST(ReferenceInput, MatchesIdxReader) {
  const char* dir = std::getenv("KILN_TEST_DATA");
  ASSERT_NE(dir, nullptr) << "KILN_TEST_DATA is not set; run through ctest";
  absl::StatusOr<TensorFile> file = ReadSafetensors(absl::StrCat(dir, "/", kFileName));
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<Dataset> test = LoadIdxDataset(kDefaultDataDir, "t10k");
  if (absl::IsNotFound(test.status())) GTEST_SKIP() << test.status();
  ASSERT_TRUE(test.ok()) << test.status();

  auto input_entry = file->tensors.find("input");
  auto labels_entry = file->tensors.find("labels");
  ASSERT_NE(input_entry, file->tensors.end()) << "the file has no tensor 'input'";
  ASSERT_NE(labels_entry, file->tensors.end()) << "the file has no tensor 'labels'";
  const TensorData& input = input_entry->second;
  const TensorData& labels = labels_entry->second;
  ASSERT_EQ(input.dtype, DType::kF32) << "dtype of 'input' is " << DTypeName(input.dtype);
  ASSERT_EQ(labels.dtype, DType::kI32) << "dtype of 'labels' is " << DTypeName(labels.dtype);

  const int64_t pixels = input.numel();
  ASSERT_EQ(labels.numel(), kBatch) << "labels in the file";
  ASSERT_EQ(pixels, kBatch * test->channels * test->height * test->width)
      << "the file's input " << ShapeString(input.shape) << " is not " << kBatch
      << " images of the dataset's size";

  int64_t first_pixel = -1, differing_pixels = 0;
  for (int64_t i = 0; i < pixels; ++i) {
    if (input.f32()[i] != test->images[i]) {
      ++differing_pixels;
      if (first_pixel < 0) first_pixel = i;
    }
  }
  EXPECT_EQ(differing_pixels, 0) << "first at " << parity::ElementName("input", input.shape, first_pixel)
                                 << ": file " << input.f32()[first_pixel] << ", reader "
                                 << test->images[first_pixel];
  for (int n = 0; n < kBatch; ++n) {
    EXPECT_EQ(labels.i32()[n], test->labels[n]) << "label of test image " << n;
  }
}

}  // namespace
}  // namespace kiln
