// What a training run leaves behind to look at. The metrics log (runtime/metrics_log.h) is
// written, read back, truncated and resumed. The PLplot figures (runtime/figures.h) are read back
// as PNG, and the HTML report (runtime/report.h) is checked with its embedded figures.
#include <png.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/figures.h"
#include "runtime/metrics_log.h"
#include "runtime/report.h"

namespace kiln {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// A fresh directory under the system's temporary directory, removed with its files at the end.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           (std::string("kiln_report_test_") + info->test_suite_name() + "_" + info->name() + "_" +
            std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string PathOf(const std::string& name) const { return (dir_ / name).string(); }

  // The names of the files in the directory, sorted.
  std::vector<std::string> Files() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::filesystem::path dir_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream file(path, std::ios::binary);
  file << contents;
}

// ---- metrics log --------------------------------------------------------------------------------

// Doubles compare equal when both are NaN, so records with missing test values compare.
bool SameNumber(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

void ExpectSameRecord(const MetricsRecord& expected, const MetricsRecord& actual, size_t index) {
  SCOPED_TRACE("record " + std::to_string(index));
  ASSERT_EQ(expected.index(), actual.index()) << "step and epoch records are mixed up";

  if (const auto* e = std::get_if<EpochRecord>(&expected)) {
    const EpochRecord& a = std::get<EpochRecord>(actual);
    EXPECT_EQ(e->epoch, a.epoch);
    EXPECT_PRED2(SameNumber, e->train_loss, a.train_loss);
    EXPECT_PRED2(SameNumber, e->train_accuracy, a.train_accuracy);
    EXPECT_PRED2(SameNumber, e->test_loss, a.test_loss);
    EXPECT_PRED2(SameNumber, e->test_accuracy, a.test_accuracy);
    EXPECT_PRED2(SameNumber, e->lr, a.lr);
    EXPECT_PRED2(SameNumber, e->seconds, a.seconds);
    EXPECT_PRED2(SameNumber, e->images_per_second, a.images_per_second);
    return;
  }

  const StepRecord& e = std::get<StepRecord>(expected);
  const StepRecord& a = std::get<StepRecord>(actual);
  EXPECT_EQ(e.epoch, a.epoch);
  EXPECT_EQ(e.step, a.step);
  EXPECT_PRED2(SameNumber, e.loss, a.loss);
  EXPECT_PRED2(SameNumber, e.accuracy, a.accuracy);
  EXPECT_PRED2(SameNumber, e.lr, a.lr);
  ASSERT_EQ(e.grad_norm.has_value(), a.grad_norm.has_value());
  if (e.grad_norm.has_value()) {
    EXPECT_PRED2(SameNumber, *e.grad_norm, *a.grad_norm);
  }
  ASSERT_EQ(e.layer_grad_norms.size(), a.layer_grad_norms.size());
  for (size_t i = 0; i < e.layer_grad_norms.size(); ++i) {
    EXPECT_EQ(e.layer_grad_norms[i].first, a.layer_grad_norms[i].first);
    EXPECT_PRED2(SameNumber, e.layer_grad_norms[i].second, a.layer_grad_norms[i].second);
  }
}

void ExpectSameRecords(const std::vector<MetricsRecord>& expected,
                       const std::vector<MetricsRecord>& actual) {
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t i = 0; i < expected.size(); ++i) ExpectSameRecord(expected[i], actual[i], i);
}

StepRecord Step(int epoch, int64_t step, double loss) {
  StepRecord record;
  record.epoch = epoch;
  record.step = step;
  record.loss = loss;
  record.accuracy = 0.25 + 0.01 * static_cast<double>(step);
  record.lr = 0.1 / 3;  // Needs all 17 digits to read back exactly.
  if (step % 2 == 0) {
    record.grad_norm = 1.0 / static_cast<double>(step);
    record.layer_grad_norms = {{"conv1.weight", 0.5 * loss}, {"fc.bias", 1e-7}};
  }
  return record;
}

EpochRecord Epoch(int epoch) {
  EpochRecord record;
  record.epoch = epoch;
  record.train_loss = 1.0 / epoch;
  record.train_accuracy = 1 - 0.5 / epoch;
  record.test_loss = 1.1 / epoch;
  record.test_accuracy = 1 - 0.6 / epoch;
  record.lr = 0.01;
  record.seconds = 12.25 * epoch;
  record.images_per_second = 4800.5;
  return record;
}

// Three steps per epoch, then the epoch record.
std::vector<MetricsRecord> RunRecords(int first_epoch, int last_epoch) {
  std::vector<MetricsRecord> records;
  for (int epoch = first_epoch; epoch <= last_epoch; ++epoch) {
    for (int i = 1; i <= 3; ++i) {
      const int64_t step = (epoch - 1) * 3 + i;
      records.push_back(Step(epoch, step, 2.0 / static_cast<double>(step)));
    }
    records.push_back(Epoch(epoch));
  }
  return records;
}

MetricsLogOptions LayerOptions() {
  MetricsLogOptions options;
  options.layer_names = {"conv1.weight", "fc.bias"};
  return options;
}

absl::Status AppendAll(MetricsLog& log, const std::vector<MetricsRecord>& records) {
  for (const MetricsRecord& record : records) {
    absl::Status status = std::holds_alternative<StepRecord>(record)
                              ? log.AppendStep(std::get<StepRecord>(record))
                              : log.AppendEpoch(std::get<EpochRecord>(record));
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

class MetricsLogTest : public TempDirTest {};

TEST_F(MetricsLogTest, RoundTripInBothFormats) {
  for (const std::string name : {"run.jsonl", "run.csv"}) {
    SCOPED_TRACE(name);
    const std::string path = PathOf(name);
    const std::vector<MetricsRecord> records = RunRecords(1, 3);

    absl::StatusOr<MetricsLog> log = MetricsLog::Open(path, LayerOptions());
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE(AppendAll(*log, records).ok());
    ASSERT_TRUE(log->Close().ok());

    absl::StatusOr<std::vector<MetricsRecord>> read = ReadMetrics(path);
    ASSERT_TRUE(read.ok()) << read.status();
    ExpectSameRecords(records, *read);
  }
}

TEST_F(MetricsLogTest, EpochRecordFlushesFile) {
  const std::string path = PathOf("run.jsonl");
  absl::StatusOr<MetricsLog> log = MetricsLog::Open(path);
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_TRUE(log->AppendStep(Step(1, 1, 2.0)).ok());
  ASSERT_TRUE(log->AppendEpoch(Epoch(1)).ok());

  // Still open: what another reader sees is what a crash now would leave.
  absl::StatusOr<std::vector<MetricsRecord>> read = ReadMetrics(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->size(), 2u);
}

TEST_F(MetricsLogTest, JsonLinesFormat) {
  const std::string path = PathOf("run.jsonl");
  absl::StatusOr<MetricsLog> log = MetricsLog::Open(path);
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_TRUE(log->AppendStep(Step(1, 2, 0.5)).ok());
  ASSERT_TRUE(log->AppendEpoch(Epoch(1)).ok());
  ASSERT_TRUE(log->Close().ok());

  const std::string text = ReadFile(path);
  EXPECT_THAT(text, HasSubstr(R"({"kind":"step","epoch":1,"step":2,"loss":0.5,)"));
  EXPECT_THAT(text, HasSubstr(R"("layer_grad_norms":{"conv1.weight":0.25,"fc.bias":1e-07}})"));
  EXPECT_THAT(text, HasSubstr(R"({"kind":"epoch","epoch":1,"train_loss":1.0,)"));
}

TEST_F(MetricsLogTest, NonFiniteIsNullOrEmpty) {
  StepRecord step = Step(1, 2, kNaN);
  step.accuracy = kInf;
  step.grad_norm = -kInf;
  step.layer_grad_norms = {{"conv1.weight", kNaN}};
  EpochRecord epoch = Epoch(1);
  epoch.test_loss = kNaN;
  epoch.test_accuracy = kNaN;

  // JSON Lines: null, read back as NaN, and a non-finite grad_norm stays present.
  const std::string json_path = PathOf("run.jsonl");
  {
    absl::StatusOr<MetricsLog> log = MetricsLog::Open(json_path);
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE(log->AppendStep(step).ok());
    ASSERT_TRUE(log->AppendEpoch(epoch).ok());
  }
  const std::string json = ReadFile(json_path);
  EXPECT_THAT(json, HasSubstr(R"("loss":null,"accuracy":null,)"));
  EXPECT_THAT(json, HasSubstr(R"("grad_norm":null,"layer_grad_norms":{"conv1.weight":null})"));
  EXPECT_THAT(json, HasSubstr(R"("test_loss":null,"test_accuracy":null,)"));
  EXPECT_THAT(json, Not(HasSubstr("NaN")));
  absl::StatusOr<std::vector<MetricsRecord>> json_records = ReadMetrics(json_path);
  ASSERT_TRUE(json_records.ok()) << json_records.status();
  StepRecord json_step = step;
  json_step.accuracy = kNaN;
  json_step.grad_norm = kNaN;
  ExpectSameRecords({json_step, epoch}, *json_records);

  // CSV: empty cells, read back as NaN, and an empty grad_norm reads back as absent.
  const std::string csv_path = PathOf("run.csv");
  {
    absl::StatusOr<MetricsLog> log = MetricsLog::Open(csv_path, LayerOptions());
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE(log->AppendStep(step).ok());
    ASSERT_TRUE(log->AppendEpoch(epoch).ok());
  }
  const std::string csv = ReadFile(csv_path);
  EXPECT_THAT(csv, HasSubstr("\nstep,1,2,,,0.03333333333333333,,,,,,,,,\n"));
  EXPECT_THAT(csv, HasSubstr("\nepoch,1,,,,0.01,,1,0.5,,,12.25,4800.5,,\n"));
  absl::StatusOr<std::vector<MetricsRecord>> csv_records = ReadMetrics(csv_path);
  ASSERT_TRUE(csv_records.ok()) << csv_records.status();
  StepRecord csv_step = json_step;
  csv_step.grad_norm.reset();
  csv_step.layer_grad_norms.clear();
  ExpectSameRecords({csv_step, epoch}, *csv_records);
}

TEST_F(MetricsLogTest, CsvHeaderIsFixed) {
  const std::string path = PathOf("run.csv");
  absl::StatusOr<MetricsLog> log = MetricsLog::Open(path, LayerOptions());
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_TRUE(log->Close().ok());
  EXPECT_EQ(ReadFile(path),
            "kind,epoch,step,loss,accuracy,lr,grad_norm,train_loss,train_accuracy,test_loss,"
            "test_accuracy,seconds,images_per_second,grad_norm/conv1.weight,grad_norm/fc.bias\n");
}

TEST_F(MetricsLogTest, CsvRejectsUnknownLayer) {
  const std::string path = PathOf("run.csv");
  absl::StatusOr<MetricsLog> log = MetricsLog::Open(path);  // No layer columns.
  ASSERT_TRUE(log.ok()) << log.status();
  const absl::Status status = log->AppendStep(Step(1, 2, 1.0));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(path), HasSubstr("conv1.weight")));
}

TEST_F(MetricsLogTest, TruncateDropsLaterEpochsOnly) {
  for (const std::string name : {"run.jsonl", "run.csv"}) {
    SCOPED_TRACE(name);
    const std::string path = PathOf(name);
    {
      absl::StatusOr<MetricsLog> log = MetricsLog::Open(path, LayerOptions());
      ASSERT_TRUE(log.ok()) << log.status();
      ASSERT_TRUE(AppendAll(*log, RunRecords(1, 3)).ok());
      // Two steps of epoch 4, then a crash in the middle of a line.
      ASSERT_TRUE(AppendAll(*log, {Step(4, 10, 0.2), Step(4, 11, 0.2)}).ok());
    }
    WriteFile(path, ReadFile(path) + (name == "run.csv" ? "step,4,12,0.1" : "{\"kind\":\"st"));

    ASSERT_TRUE(TruncateAfterEpoch(path, 2).ok());
    absl::StatusOr<std::vector<MetricsRecord>> read = ReadMetrics(path);
    ASSERT_TRUE(read.ok()) << read.status();
    ExpectSameRecords(RunRecords(1, 2), *read);

    ASSERT_TRUE(TruncateAfterEpoch(path, 0).ok());
    read = ReadMetrics(path);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_TRUE(read->empty());
  }
}

TEST_F(MetricsLogTest, ResumedFileEqualsUninterrupted) {
  for (const std::string extension : {".jsonl", ".csv"}) {
    SCOPED_TRACE(extension);
    const std::string whole_path = PathOf("whole" + extension);
    const std::string resumed_path = PathOf("resumed" + extension);
    {
      absl::StatusOr<MetricsLog> whole = MetricsLog::Open(whole_path, LayerOptions());
      ASSERT_TRUE(whole.ok()) << whole.status();
      ASSERT_TRUE(AppendAll(*whole, RunRecords(1, 4)).ok());

      // The interrupted run gets through epoch 3 and two steps of epoch 4. Its checkpoint is
      // from epoch 2.
      absl::StatusOr<MetricsLog> first = MetricsLog::Open(resumed_path, LayerOptions());
      ASSERT_TRUE(first.ok()) << first.status();
      ASSERT_TRUE(AppendAll(*first, RunRecords(1, 3)).ok());
      ASSERT_TRUE(AppendAll(*first, {Step(4, 10, 0.9), Step(4, 11, 0.8)}).ok());
    }

    MetricsLogOptions options = LayerOptions();
    options.resume_after_epoch = 2;
    absl::StatusOr<MetricsLog> resumed = MetricsLog::Open(resumed_path, options);
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    ASSERT_TRUE(AppendAll(*resumed, RunRecords(3, 4)).ok());
    ASSERT_TRUE(resumed->Close().ok());

    EXPECT_EQ(ReadFile(resumed_path), ReadFile(whole_path));
  }
}

TEST_F(MetricsLogTest, ResumeNeedsTheEpochRecord) {
  const std::string path = PathOf("run.jsonl");
  {
    absl::StatusOr<MetricsLog> log = MetricsLog::Open(path);
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE(AppendAll(*log, RunRecords(1, 1)).ok());
  }
  const absl::Status status = TruncateAfterEpoch(path, 2);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(path), HasSubstr("epoch 2")));
}

TEST_F(MetricsLogTest, ResumeRejectsOtherCsvHeader) {
  const std::string path = PathOf("run.csv");
  {
    absl::StatusOr<MetricsLog> log = MetricsLog::Open(path, LayerOptions());
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE(AppendAll(*log, RunRecords(1, 1)).ok());
  }
  MetricsLogOptions options;
  options.layer_names = {"conv1.weight"};
  options.resume_after_epoch = 1;
  absl::StatusOr<MetricsLog> log = MetricsLog::Open(path, options);
  EXPECT_EQ(log.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(log.status().message(), HasSubstr(path));
}

TEST_F(MetricsLogTest, BadExtensionNamesPath) {
  const std::string path = PathOf("run.txt");
  absl::StatusOr<MetricsLog> log = MetricsLog::Open(path);
  EXPECT_EQ(log.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(log.status().message(),
              AllOf(HasSubstr(path), HasSubstr(".jsonl"), HasSubstr(".csv")));
  EXPECT_FALSE(std::filesystem::exists(path));

  absl::StatusOr<std::vector<MetricsRecord>> read = ReadMetrics(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(MetricsLogTest, UnwritablePathNamesPath) {
  const std::string missing = PathOf("missing/run.jsonl");
  absl::StatusOr<MetricsLog> log = MetricsLog::Open(missing);
  EXPECT_FALSE(log.ok());
  EXPECT_THAT(log.status().message(), HasSubstr(missing));

  // A directory where the file should be.
  std::filesystem::create_directory(PathOf("taken.csv"));
  log = MetricsLog::Open(PathOf("taken.csv"));
  EXPECT_FALSE(log.ok());
  EXPECT_THAT(log.status().message(), HasSubstr(PathOf("taken.csv")));
}

TEST_F(MetricsLogTest, MalformedLineNamesLine) {
  const std::string path = PathOf("run.jsonl");
  WriteFile(path, R"({"kind":"epoch","epoch":1,"train_loss":1,"train_accuracy":0.5,)"
                  R"("test_loss":1,"test_accuracy":0.5,"lr":0.1,"seconds":1,"images_per_second":1})"
                  "\n{\"kind\":\"step\",\"epoch\":\"one\"}\n");
  absl::StatusOr<std::vector<MetricsRecord>> read = ReadMetrics(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(read.status().message(),
              AllOf(HasSubstr(path), HasSubstr("line 2"), HasSubstr("'epoch'")));

  const absl::StatusOr<std::vector<MetricsRecord>> missing = ReadMetrics(PathOf("none.csv"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(PathOf("none.csv")));
}

// ---- confusion matrix ---------------------------------------------------------------------------

TEST(ConfusionMatrixTest, CountsPairs) {
  const std::vector<int> labels = {0, 0, 1, 2, 2, 2, 1};
  const std::vector<int> predictions = {0, 1, 1, 2, 0, 2, 1};
  absl::StatusOr<figures::CountMatrix> matrix = figures::ConfusionMatrix(labels, predictions, 3);
  ASSERT_TRUE(matrix.ok()) << matrix.status();
  const figures::CountMatrix expected = {{1, 1, 0}, {0, 2, 0}, {1, 0, 2}};
  EXPECT_EQ(*matrix, expected);
}

TEST(ConfusionMatrixTest, RejectsBadInput) {
  const auto out_of_range = figures::ConfusionMatrix({0, 3}, {0, 1}, 3);
  EXPECT_EQ(out_of_range.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out_of_range.status().message(), AllOf(HasSubstr("label 1"), HasSubstr("is 3")));

  const auto negative = figures::ConfusionMatrix({0, 1}, {0, -1}, 3);
  EXPECT_THAT(negative.status().message(), HasSubstr("prediction 1 is -1"));

  const auto lengths = figures::ConfusionMatrix({0, 1}, {0}, 3);
  EXPECT_EQ(lengths.status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- figures ------------------------------------------------------------------------------------

struct PngSize {
  uint32_t width = 0, height = 0;
};

uint32_t BigEndian32(const std::string& bytes, size_t offset) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) value = value << 8 | static_cast<uint8_t>(bytes[offset + i]);
  return value;
}

// Checks the PNG signature and returns the size stored in the IHDR chunk, which must come first.
::testing::AssertionResult ReadPngSize(const std::string& path, PngSize& size) {
  const std::string bytes = ReadFile(path);
  if (bytes.size() < 24) return ::testing::AssertionFailure() << path << " is too short for PNG";
  if (bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) {
    return ::testing::AssertionFailure() << path << " lacks the PNG signature";
  }
  if (bytes.compare(12, 4, "IHDR") != 0) {
    return ::testing::AssertionFailure() << path << " does not start with an IHDR chunk";
  }
  size.width = BigEndian32(bytes, 16);
  size.height = BigEndian32(bytes, 20);
  return ::testing::AssertionSuccess();
}

// Decodes a PNG file to 8-bit RGB with libpng.
std::vector<uint8_t> DecodeRgb(const std::string& path, PngSize& size) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  std::vector<uint8_t> pixels;
  if (!png_image_begin_read_from_file(&image, path.c_str())) return pixels;
  image.format = PNG_FORMAT_RGB;
  pixels.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr)) pixels.clear();
  size = {image.width, image.height};
  return pixels;
}

std::vector<figures::Series> LossSeries(double scale) {
  figures::Series train{"train", {}, {}}, test{"test #1", {}, {}};
  for (int epoch = 1; epoch <= 10; ++epoch) {
    train.xs.push_back(epoch);
    train.ys.push_back(scale / epoch);
    test.xs.push_back(epoch);
    test.ys.push_back(scale * 1.2 / epoch);
  }
  return {train, test};
}

class FiguresTest : public TempDirTest {};

TEST_F(FiguresTest, CurvesWritePng) {
  const std::string path = PathOf("loss.png");
  ASSERT_TRUE(figures::PlotCurves(path, "Loss", "epoch", "loss", LossSeries(2.0)).ok());
  PngSize size;
  ASSERT_TRUE(ReadPngSize(path, size));
  EXPECT_EQ(size.width, 900u);
  EXPECT_EQ(size.height, 540u);
  EXPECT_EQ(Files(), std::vector<std::string>{"loss.png"});
}

TEST_F(FiguresTest, CurvesDependOnData) {
  ASSERT_TRUE(figures::PlotCurves(PathOf("a.png"), "Loss", "epoch", "loss", LossSeries(2.0)).ok());
  ASSERT_TRUE(figures::PlotCurves(PathOf("b.png"), "Loss", "epoch", "loss", LossSeries(2.0)).ok());
  ASSERT_TRUE(figures::PlotCurves(PathOf("c.png"), "Loss", "epoch", "loss", LossSeries(3.0)).ok());
  PngSize size;
  const std::vector<uint8_t> a = DecodeRgb(PathOf("a.png"), size);
  const std::vector<uint8_t> b = DecodeRgb(PathOf("b.png"), size);
  const std::vector<uint8_t> c = DecodeRgb(PathOf("c.png"), size);
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a, b) << "the same data drew different images";
  EXPECT_NE(a, c) << "different data drew the same image";
}

TEST_F(FiguresTest, CurvesWithLogAxisAndGaps) {
  // Gradient norms over steps: a zero, a NaN and an infinity break the lines on a log axis.
  figures::Series conv{"conv1.weight", {1, 2, 3, 4, 5, 6}, {1e-3, 0, 1e-2, kNaN, 0.5, kInf}};
  figures::Series fc{"fc.weight", {1, 2, 3, 4, 5, 6}, {2, 1.5, 1, 0.8, 0.7, 0.6}};
  const std::string path = PathOf("grad_norms.png");
  const absl::Status status =
      figures::PlotCurves(path, "Gradient norms", "step", "L2 norm", {conv, fc}, true);
  ASSERT_TRUE(status.ok()) << status;
  PngSize size;
  EXPECT_TRUE(ReadPngSize(path, size));

  // Many series: colours repeat with other line styles.
  std::vector<figures::Series> layers;
  for (int i = 0; i < 14; ++i) {
    layers.push_back({"layer" + std::to_string(i), {1, 2, 3}, {1.0 + i, 2.0 + i, 1.5 + i}});
  }
  EXPECT_TRUE(figures::PlotCurves(PathOf("many.png"), "Layers", "step", "norm", layers).ok());
}

TEST_F(FiguresTest, CurvesRejectBadSeries) {
  figures::Series broken{"broken", {1, 2, 3}, {1, 2}};
  const absl::Status status = figures::PlotCurves(PathOf("x.png"), "t", "x", "y", {broken});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("'broken'"));

  EXPECT_EQ(figures::PlotCurves(PathOf("x.png"), "t", "x", "y", {}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Files().empty());
}

TEST_F(FiguresTest, MissingDirectoryLeavesNoFile) {
  const std::string path = PathOf("missing/loss.png");
  const absl::Status status = figures::PlotCurves(path, "Loss", "epoch", "loss", LossSeries(2));
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(path));
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(Files().empty()) << "a temporary file was left behind";

  // The destination is a directory: the error names it and nothing else appears beside it.
  std::filesystem::create_directory(PathOf("taken.png"));
  const absl::Status directory_status = figures::PlotConfusionMatrix(PathOf("taken.png"), {{1}});
  EXPECT_FALSE(directory_status.ok());
  EXPECT_THAT(directory_status.message(), HasSubstr(PathOf("taken.png")));
  EXPECT_EQ(Files(), std::vector<std::string>{"taken.png"});
  EXPECT_TRUE(std::filesystem::is_empty(PathOf("taken.png")));
}

TEST_F(FiguresTest, ConfusionMatrixWritesPng) {
  const std::vector<std::string> names = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                          "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                          "Bag",         "Ankle boot"};
  figures::CountMatrix matrix(10, std::vector<int64_t>(10, 3));
  for (int i = 0; i < 10; ++i) matrix[i][i] = 900 + i;
  matrix[9] = std::vector<int64_t>(10, 0);  // A class with no samples.
  const std::string path = PathOf("confusion.png");
  const absl::Status status = figures::PlotConfusionMatrix(path, matrix, names);
  ASSERT_TRUE(status.ok()) << status;
  PngSize size;
  ASSERT_TRUE(ReadPngSize(path, size));
  EXPECT_EQ(size.width, 800u);  // 200 + 60 per class.
  EXPECT_EQ(size.height, 800u);

  ASSERT_TRUE(figures::PlotConfusionMatrix(PathOf("small.png"), {{5, 1}, {2, 7}}).ok());
  ASSERT_TRUE(ReadPngSize(PathOf("small.png"), size));
  EXPECT_EQ(size.width, 480u);  // The minimum.
}

TEST_F(FiguresTest, ConfusionMatrixRejectsBadInput) {
  const std::string path = PathOf("confusion.png");
  EXPECT_EQ(figures::PlotConfusionMatrix(path, {}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(figures::PlotConfusionMatrix(path, {{1, 2}, {3}}).message(), HasSubstr("not square"));
  EXPECT_THAT(figures::PlotConfusionMatrix(path, {{1, -2}, {3, 4}}).message(),
              HasSubstr("negative"));
  EXPECT_THAT(figures::PlotConfusionMatrix(path, {{1, 2}, {3, 4}}, {"a"}).message(),
              HasSubstr("1 class names for 2 classes"));
  EXPECT_TRUE(Files().empty());
}

TEST_F(FiguresTest, FilterGridGrayscale) {
  // Six 1-channel 5 × 5 filters. Filter 0 rises from its first weight to its last.
  std::vector<float> weights(6 * 25);
  for (size_t i = 0; i < weights.size(); ++i) weights[i] = static_cast<float>(i % 25) - 3.0f;
  weights[25] = kNaN;                                           // Filter 1: one non-finite weight.
  std::fill(weights.begin() + 50, weights.begin() + 75, 0.7f);  // Filter 2: constant.
  const std::string path = PathOf("filters.png");
  const absl::Status status = figures::PlotFilterGrid(path, weights, {6, 1, 5, 5}, "conv1");
  ASSERT_TRUE(status.ok()) << status;

  // 3 columns × 2 rows of 40-pixel tiles (scale 8) with 4-pixel gaps, centred in 360 pixels
  // under a 44-pixel title band, 12 pixels of margin below.
  PngSize size;
  const std::vector<uint8_t> rgb = DecodeRgb(path, size);
  ASSERT_EQ(size.width, 360u);
  ASSERT_EQ(size.height, 44u + 84u + 12u);
  const auto pixel = [&](int x, int y) { return &rgb[(static_cast<size_t>(y) * 360 + x) * 3]; };
  const int left = (360 - 128) / 2, top = 44;
  EXPECT_EQ(pixel(left, top)[0], 0) << "filter 0's minimum is not black";
  EXPECT_EQ(pixel(left + 39, top + 39)[0], 255) << "filter 0's maximum is not white";
  EXPECT_EQ(pixel(left + 44, top)[0], 0) << "a non-finite weight is not black";
  EXPECT_EQ(pixel(left + 88, top)[0], 128) << "a constant filter is not mid-gray";
  EXPECT_EQ(pixel(left + 88, top)[1], pixel(left + 88, top)[2]);
  EXPECT_EQ(pixel(left - 2, top)[0], 255) << "the gap left of the grid is not white";
}

TEST_F(FiguresTest, FilterGridColourAndMean) {
  // Two 3-channel 3 × 3 filters: filter 0 is all red channel, filter 1 all blue.
  std::vector<float> rgb_weights(2 * 3 * 9, -1.0f);
  for (int p = 0; p < 9; ++p) {
    rgb_weights[0 * 27 + 0 * 9 + p] = 2.0f;
    rgb_weights[1 * 27 + 2 * 9 + p] = 2.0f;
  }
  const std::string path = PathOf("rgb.png");
  ASSERT_TRUE(figures::PlotFilterGrid(path, rgb_weights, {2, 3, 3, 3}, "RGB").ok());
  PngSize size;
  const std::vector<uint8_t> rgb = DecodeRgb(path, size);
  ASSERT_FALSE(rgb.empty());
  // scale 13: 39-pixel tiles, 2 columns, grid 82 wide, centred in 360.
  const int left = (360 - 82) / 2, top = 44;
  const uint8_t* red = &rgb[(static_cast<size_t>(top) * size.width + left) * 3];
  const uint8_t* blue = &rgb[(static_cast<size_t>(top) * size.width + left + 43) * 3];
  EXPECT_EQ((std::vector<int>{red[0], red[1], red[2]}), (std::vector<int>{255, 0, 0}));
  EXPECT_EQ((std::vector<int>{blue[0], blue[1], blue[2]}), (std::vector<int>{0, 0, 255}));

  // Four input channels: the tile shows their mean, so a filter whose channels cancel at one
  // position is darkest there.
  std::vector<float> weights(1 * 4 * 2 * 2, 1.0f);
  weights[0 * 4 + 0] = -3.0f;  // Channel 0, position 0: mean 0 there, 1 elsewhere.
  ASSERT_TRUE(figures::PlotFilterGrid(PathOf("mean.png"), weights, {1, 4, 2, 2}, "mean").ok());
  const std::vector<uint8_t> gray = DecodeRgb(PathOf("mean.png"), size);
  ASSERT_FALSE(gray.empty());
  const int mean_left = (360 - 40) / 2;  // scale 20: one 40-pixel tile.
  EXPECT_EQ(gray[(static_cast<size_t>(top) * size.width + mean_left) * 3], 0);
  EXPECT_EQ(gray[(static_cast<size_t>(top) * size.width + mean_left + 20) * 3], 255);
}

TEST_F(FiguresTest, FilterGridRejectsBadShape) {
  const absl::Status size =
      figures::PlotFilterGrid(PathOf("f.png"), std::vector<float>(10), {2, 1, 3, 3}, "conv1");
  EXPECT_EQ(size.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(size.message(), HasSubstr("needs 18"));
  const absl::Status zero = figures::PlotFilterGrid(PathOf("f.png"), {}, {0, 1, 3, 3}, "conv1");
  EXPECT_EQ(zero.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Files().empty());
}

// ---- report -------------------------------------------------------------------------------------

class ReportTest : public TempDirTest {};

// The number of times `needle` occurs in `text`.
size_t Count(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

TEST_F(ReportTest, EmbedsFiguresAndEscapesText) {
  const std::string loss = PathOf("loss.png"), confusion = PathOf("confusion.png");
  ASSERT_TRUE(figures::PlotCurves(loss, "Loss", "epoch", "loss", LossSeries(2)).ok());
  ASSERT_TRUE(figures::PlotConfusionMatrix(confusion, {{5, 1}, {2, 7}}, {"cat", "dog"}).ok());

  ReportInput input;
  input.title = "<script>alert('x')</script> & run";
  input.config = {{"model", "lenet5"}, {"data", "a<b>.idx"}};
  input.epochs = {Epoch(1), Epoch(2), Epoch(3)};
  input.epochs[2].test_loss = kNaN;
  input.figures = {{loss, "Loss per epoch"}, {confusion, "Confusion <test set>"}};
  const std::string path = PathOf("report.html");
  const absl::Status status = WriteReport(path, input);
  ASSERT_TRUE(status.ok()) << status;
  const std::string html = ReadFile(path);

  EXPECT_THAT(html, Not(HasSubstr("<script>")));
  EXPECT_THAT(html, HasSubstr("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; run"));
  EXPECT_THAT(html, HasSubstr("a&lt;b&gt;.idx"));
  EXPECT_THAT(html, HasSubstr("Confusion &lt;test set&gt;"));
  EXPECT_EQ(Count(html, "<tr class=\"epoch\">"), 3u);
  EXPECT_THAT(html, HasSubstr("n/a"));
  EXPECT_THAT(html, Not(HasSubstr("<link"))) << "the page loads external files";
  EXPECT_THAT(html, Not(HasSubstr("src=\"http"))) << "the page loads external files";

  // Both figures embedded, and the first decodes back to the PNG file's bytes.
  const std::string prefix = "src=\"data:image/png;base64,";
  ASSERT_EQ(Count(html, prefix), 2u);
  const size_t start = html.find(prefix) + prefix.size();
  const size_t end = html.find('"', start);
  std::string decoded;
  ASSERT_TRUE(absl::Base64Unescape(html.substr(start, end - start), &decoded));
  EXPECT_EQ(decoded, ReadFile(loss));
}

TEST_F(ReportTest, MissingFigureNamesPath) {
  ReportInput input;
  input.title = "run";
  input.figures = {{PathOf("absent.png"), "absent"}};
  const std::string path = PathOf("report.html");
  const absl::Status status = WriteReport(path, input);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(PathOf("absent.png")));
  EXPECT_FALSE(std::filesystem::exists(path));

  WriteFile(PathOf("fake.png"), "not a PNG file");
  input.figures = {{PathOf("fake.png"), "fake"}};
  const absl::Status fake = WriteReport(path, input);
  EXPECT_EQ(fake.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(fake.message(), HasSubstr(PathOf("fake.png")));
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(ReportTest, BadOutputPathNamesPath) {
  ReportInput input;
  input.title = "run";
  const std::string path = PathOf("missing/report.html");
  const absl::Status status = WriteReport(path, input);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(path));
  EXPECT_TRUE(Files().empty());
}

}  // namespace
}  // namespace kiln
