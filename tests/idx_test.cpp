// Tests for the IDX reader: small files written into a temporary directory, plain and gzipped,
// well-formed and broken, plus the Fashion-MNIST test split installed by dataset-fashion-mnist.

#include "runtime/idx.h"

#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;

void AppendBigEndian32(uint32_t value, std::vector<uint8_t>* bytes) {
  bytes->push_back(static_cast<uint8_t>(value >> 24));
  bytes->push_back(static_cast<uint8_t>(value >> 16));
  bytes->push_back(static_cast<uint8_t>(value >> 8));
  bytes->push_back(static_cast<uint8_t>(value));
}

// Builds an IDX file: magic number, one size per dimension, then `data` unchanged, so a test can
// declare sizes that do not match the data.
std::vector<uint8_t> IdxBytes(uint32_t magic, const std::vector<uint32_t>& dims,
                              const std::vector<uint8_t>& data) {
  std::vector<uint8_t> bytes;
  AppendBigEndian32(magic, &bytes);
  for (uint32_t dim : dims) AppendBigEndian32(dim, &bytes);
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

// Pixel values that differ between neighbours and cover the whole byte range.
std::vector<uint8_t> PatternPixels(size_t size) {
  std::vector<uint8_t> pixels(size);
  for (size_t i = 0; i < size; ++i) pixels[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  return pixels;
}

// Pseudo-random bytes, which deflate cannot compress, so that the gzip file is large enough to
// damage in the middle.
std::vector<uint8_t> NoisePixels(size_t size) {
  std::vector<uint8_t> pixels(size);
  uint32_t state = 12345;
  for (size_t i = 0; i < size; ++i) {
    state = state * 1664525u + 1013904223u;  // A linear congruential generator, fixed seed.
    pixels[i] = static_cast<uint8_t>(state >> 24);
  }
  return pixels;
}

void WritePlainFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "failed to write " << path;
}

void WriteGzipFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << "gzopen failed for " << path;
  const int written = gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size()));
  EXPECT_EQ(written, static_cast<int>(bytes.size())) << "gzwrite failed for " << path;
  ASSERT_EQ(gzclose(file), Z_OK) << "gzclose failed for " << path;
}

std::vector<uint8_t> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Gives each test its own empty directory under ::testing::TempDir() and removes it afterwards.
class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln_idx_test_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr) << "mkdtemp failed for " << pattern;
    dir_ = pattern;
  }

  void TearDown() override {
    std::error_code error;
    std::filesystem::remove_all(dir_, error);
  }

  std::string PathTo(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_;
};

TEST_F(IdxTest, ReadsPlainImages) {
  const std::vector<uint8_t> pixels = PatternPixels(3 * 4 * 5);
  const std::string path = PathTo("images-idx3-ubyte");
  WritePlainFile(path, IdxBytes(kImagesMagic, {3, 4, 5}, pixels));

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->count, 3);
  EXPECT_EQ(images->rows, 4);
  EXPECT_EQ(images->cols, 5);
  EXPECT_EQ(images->pixels, pixels);
}

TEST_F(IdxTest, ReadsGzippedImages) {
  const std::vector<uint8_t> pixels = PatternPixels(7 * 6 * 3);
  const std::string path = PathTo("images-idx3-ubyte.gz");
  WriteGzipFile(path, IdxBytes(kImagesMagic, {7, 6, 3}, pixels));

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->count, 7);
  EXPECT_EQ(images->rows, 6);
  EXPECT_EQ(images->cols, 3);
  EXPECT_EQ(images->pixels, pixels);
}

TEST_F(IdxTest, ReadsPlainAndGzippedLabels) {
  const std::vector<uint8_t> labels = {3, 0, 9, 1, 1, 255};
  const std::string plain_path = PathTo("labels-idx1-ubyte");
  const std::string gzip_path = PathTo("labels-idx1-ubyte.gz");
  WritePlainFile(plain_path, IdxBytes(kLabelsMagic, {6}, labels));
  WriteGzipFile(gzip_path, IdxBytes(kLabelsMagic, {6}, labels));

  absl::StatusOr<std::vector<uint8_t>> plain = ReadIdxLabels(plain_path);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(*plain, labels);

  absl::StatusOr<std::vector<uint8_t>> gzipped = ReadIdxLabels(gzip_path);
  ASSERT_TRUE(gzipped.ok()) << gzipped.status();
  EXPECT_EQ(*gzipped, labels);
}

TEST_F(IdxTest, ReadsEmptyLabelFile) {
  const std::string path = PathTo("labels-idx1-ubyte");
  WritePlainFile(path, IdxBytes(kLabelsMagic, {0}, {}));

  absl::StatusOr<std::vector<uint8_t>> labels = ReadIdxLabels(path);
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_TRUE(labels->empty());
}

TEST_F(IdxTest, LoadsPlainDataset) {
  const std::vector<uint8_t> pixels = {0, 255, 51, 102, 1, 2, 3, 4, 254, 128, 0, 0};
  const std::vector<uint8_t> labels = {2, 0, 4};
  WritePlainFile(PathTo("train-images-idx3-ubyte"), IdxBytes(kImagesMagic, {3, 2, 2}, pixels));
  WritePlainFile(PathTo("train-labels-idx1-ubyte"), IdxBytes(kLabelsMagic, {3}, labels));

  absl::StatusOr<Dataset> dataset = LoadIdxDataset(dir_, "train");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->count, 3);
  EXPECT_EQ(dataset->channels, 1);
  EXPECT_EQ(dataset->height, 2);
  EXPECT_EQ(dataset->width, 2);
  EXPECT_EQ(dataset->num_classes, 5);  // The largest label is 4.
  EXPECT_EQ(dataset->labels, (std::vector<int32_t>{2, 0, 4}));
  ASSERT_EQ(dataset->images.size(), pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) {
    EXPECT_FLOAT_EQ(dataset->images[i], pixels[i] / 255.0f) << "at pixel " << i;
  }
  EXPECT_EQ(dataset->images[0], 0.0f);
  EXPECT_EQ(dataset->images[1], 1.0f);
}

TEST_F(IdxTest, LoadsGzippedDataset) {
  const std::vector<uint8_t> pixels = PatternPixels(4 * 3 * 3);
  const std::vector<uint8_t> labels = {9, 0, 5, 9};
  WriteGzipFile(PathTo("t10k-images-idx3-ubyte.gz"), IdxBytes(kImagesMagic, {4, 3, 3}, pixels));
  WriteGzipFile(PathTo("t10k-labels-idx1-ubyte.gz"), IdxBytes(kLabelsMagic, {4}, labels));

  absl::StatusOr<Dataset> dataset = LoadIdxDataset(dir_, "t10k");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->count, 4);
  EXPECT_EQ(dataset->height, 3);
  EXPECT_EQ(dataset->width, 3);
  EXPECT_EQ(dataset->num_classes, 10);
  EXPECT_EQ(dataset->labels, (std::vector<int32_t>{9, 0, 5, 9}));
  ASSERT_EQ(dataset->images.size(), pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) {
    EXPECT_FLOAT_EQ(dataset->images[i], pixels[i] / 255.0f) << "at pixel " << i;
  }
}

TEST_F(IdxTest, LoadPrefersUncompressedFile) {
  WritePlainFile(PathTo("train-images-idx3-ubyte"), IdxBytes(kImagesMagic, {1, 1, 1}, {10}));
  WriteGzipFile(PathTo("train-images-idx3-ubyte.gz"), IdxBytes(kImagesMagic, {1, 1, 1}, {20}));
  WritePlainFile(PathTo("train-labels-idx1-ubyte"), IdxBytes(kLabelsMagic, {1}, {3}));
  WriteGzipFile(PathTo("train-labels-idx1-ubyte.gz"), IdxBytes(kLabelsMagic, {1}, {7}));

  absl::StatusOr<Dataset> dataset = LoadIdxDataset(dir_, "train");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  ASSERT_EQ(dataset->images.size(), 1u);
  EXPECT_FLOAT_EQ(dataset->images[0], 10 / 255.0f);
  EXPECT_EQ(dataset->labels, (std::vector<int32_t>{3}));
}

TEST_F(IdxTest, TruncatedImageData) {
  const std::string path = PathTo("images-idx3-ubyte");
  WritePlainFile(path, IdxBytes(kImagesMagic, {3, 2, 2}, PatternPixels(7)));

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(images.status().message(), HasSubstr(path));
  EXPECT_THAT(images.status().message(), HasSubstr("ends after 7 of the 12 data bytes"));
  EXPECT_THAT(images.status().message(), HasSubstr("3 x 2 x 2"));
}

TEST_F(IdxTest, TruncatedHeader) {
  const std::string path = PathTo("images-idx3-ubyte");
  std::vector<uint8_t> bytes = IdxBytes(kImagesMagic, {3, 2, 2}, {});
  bytes.resize(9);  // The magic number, one size and one byte of the next.
  WritePlainFile(path, bytes);

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(images.status().message(), HasSubstr(path));
  EXPECT_THAT(images.status().message(), HasSubstr("ends after 9 bytes, inside the 16-byte"));
}

TEST_F(IdxTest, EmptyFile) {
  const std::string path = PathTo("labels-idx1-ubyte");
  WritePlainFile(path, {});

  absl::StatusOr<std::vector<uint8_t>> labels = ReadIdxLabels(path);
  ASSERT_FALSE(labels.ok());
  EXPECT_EQ(labels.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(labels.status().message(), HasSubstr(path));
  EXPECT_THAT(labels.status().message(), HasSubstr("ends after 0 bytes"));
}

TEST_F(IdxTest, LabelFileReadAsImages) {
  const std::string path = PathTo("train-labels-idx1-ubyte");
  WritePlainFile(path, IdxBytes(kLabelsMagic, {2}, {1, 2}));

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(images.status().message(), HasSubstr(path));
  EXPECT_THAT(images.status().message(), HasSubstr("0x00000801, expected 0x00000803"));
  EXPECT_THAT(images.status().message(), HasSubstr("The file is an IDX label file"));
}

TEST_F(IdxTest, NonIdxFile) {
  const std::string path = PathTo("labels-idx1-ubyte");
  WritePlainFile(path, {'P', 'K', 3, 4, 0, 0, 0, 0});

  absl::StatusOr<std::vector<uint8_t>> labels = ReadIdxLabels(path);
  ASSERT_FALSE(labels.ok());
  EXPECT_EQ(labels.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(labels.status().message(), HasSubstr(path));
  EXPECT_THAT(labels.status().message(), HasSubstr("0x504B0304, expected 0x00000801"));
  EXPECT_THAT(labels.status().message(), HasSubstr("not an IDX file"));
}

TEST_F(IdxTest, FloatElementType) {
  const std::string path = PathTo("images-idx3-ubyte");
  WritePlainFile(path, IdxBytes(0x00000D03, {1, 1, 1}, {0, 0, 0, 0}));

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(images.status().message(), HasSubstr(path));
  EXPECT_THAT(images.status().message(), HasSubstr("element type 0x0D and 3 dimensions"));
}

TEST_F(IdxTest, TrailingBytes) {
  const std::string path = PathTo("labels-idx1-ubyte.gz");
  WriteGzipFile(path, IdxBytes(kLabelsMagic, {2}, {1, 2, 3, 4, 5}));

  absl::StatusOr<std::vector<uint8_t>> labels = ReadIdxLabels(path);
  ASSERT_FALSE(labels.ok());
  EXPECT_EQ(labels.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(labels.status().message(), HasSubstr(path));
  EXPECT_THAT(labels.status().message(), HasSubstr("3 bytes after the 2 data bytes"));
}

TEST_F(IdxTest, ZeroImageRows) {
  const std::string path = PathTo("images-idx3-ubyte");
  WritePlainFile(path, IdxBytes(kImagesMagic, {5, 0, 28}, {}));

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(images.status().message(), HasSubstr(path));
  EXPECT_THAT(images.status().message(), HasSubstr("invalid image size 0 x 28"));
}

TEST_F(IdxTest, NegativeDimension) {
  const std::string path = PathTo("images-idx3-ubyte");
  WritePlainFile(path, IdxBytes(kImagesMagic, {0x80000000u, 28, 28}, {}));

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(images.status().message(), HasSubstr(path));
  EXPECT_THAT(images.status().message(), HasSubstr("-2147483648 as a signed 32-bit integer"));
}

TEST_F(IdxTest, OverflowingDimensions) {
  const std::string path = PathTo("images-idx3-ubyte");
  WritePlainFile(path, IdxBytes(kImagesMagic, {0x7FFFFFFFu, 0x7FFFFFFFu, 0x7FFFFFFFu}, {}));

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(images.status().message(), HasSubstr(path));
  EXPECT_THAT(images.status().message(), HasSubstr("2147483647 x 2147483647 x 2147483647"));
}

// A header that declares 1.7 TB must fail as truncated, after reading the few bytes present,
// rather than by trying to allocate the declared size.
TEST_F(IdxTest, HugeHeaderOnShortFile) {
  const std::string path = PathTo("images-idx3-ubyte");
  WritePlainFile(path, IdxBytes(kImagesMagic, {0x7FFFFFFFu, 28, 28}, PatternPixels(100)));

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(images.status().message(), HasSubstr(path));
  EXPECT_THAT(images.status().message(), HasSubstr("ends after 100 of the 1683627179248 data"));
}

TEST_F(IdxTest, CountMismatch) {
  const std::string images_path = PathTo("train-images-idx3-ubyte");
  const std::string labels_path = PathTo("train-labels-idx1-ubyte.gz");
  WritePlainFile(images_path, IdxBytes(kImagesMagic, {3, 2, 2}, PatternPixels(12)));
  WriteGzipFile(labels_path, IdxBytes(kLabelsMagic, {2}, {1, 0}));

  absl::StatusOr<Dataset> dataset = LoadIdxDataset(dir_, "train");
  ASSERT_FALSE(dataset.ok());
  EXPECT_EQ(dataset.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dataset.status().message(), HasSubstr(images_path + " contains 3 images"));
  EXPECT_THAT(dataset.status().message(), HasSubstr(labels_path + " contains 2 labels"));
}

TEST_F(IdxTest, EmptyDataset) {
  const std::string images_path = PathTo("t10k-images-idx3-ubyte");
  const std::string labels_path = PathTo("t10k-labels-idx1-ubyte");
  WritePlainFile(images_path, IdxBytes(kImagesMagic, {0, 28, 28}, {}));
  WritePlainFile(labels_path, IdxBytes(kLabelsMagic, {0}, {}));

  absl::StatusOr<Dataset> dataset = LoadIdxDataset(dir_, "t10k");
  ASSERT_FALSE(dataset.ok());
  EXPECT_EQ(dataset.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dataset.status().message(), HasSubstr(images_path));
  EXPECT_THAT(dataset.status().message(), HasSubstr(labels_path));
  EXPECT_THAT(dataset.status().message(), HasSubstr("no samples"));
}

TEST_F(IdxTest, CorruptGzip) {
  const std::string path = PathTo("images-idx3-ubyte.gz");
  WriteGzipFile(path, IdxBytes(kImagesMagic, {16, 16, 16}, NoisePixels(16 * 16 * 16)));
  std::vector<uint8_t> compressed = ReadFileBytes(path);
  ASSERT_GT(compressed.size(), 1000u);
  for (size_t i = compressed.size() / 2; i < compressed.size() / 2 + 4; ++i) compressed[i] ^= 0xFF;
  WritePlainFile(path, compressed);

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(images.status().message(), HasSubstr(path));
  EXPECT_THAT(images.status().message(), HasSubstr("gzip stream is corrupt"));
}

TEST_F(IdxTest, TruncatedGzip) {
  const std::string path = PathTo("images-idx3-ubyte.gz");
  WriteGzipFile(path, IdxBytes(kImagesMagic, {16, 16, 16}, NoisePixels(16 * 16 * 16)));
  std::vector<uint8_t> compressed = ReadFileBytes(path);
  ASSERT_GT(compressed.size(), 1000u);
  compressed.resize(compressed.size() / 2);
  WritePlainFile(path, compressed);

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(images.status().message(), HasSubstr(path));
  EXPECT_THAT(images.status().message(), HasSubstr("gzip stream is truncated"));
}

// Only the 8-byte gzip trailer (CRC-32 and length) is missing, so all the IDX data decompresses
// and only the end-of-stream check can catch the damage.
TEST_F(IdxTest, GzipWithoutTrailer) {
  const std::string path = PathTo("labels-idx1-ubyte.gz");
  WriteGzipFile(path, IdxBytes(kLabelsMagic, {4}, {1, 2, 3, 4}));
  std::vector<uint8_t> compressed = ReadFileBytes(path);
  ASSERT_GT(compressed.size(), 8u);
  compressed.resize(compressed.size() - 8);
  WritePlainFile(path, compressed);

  absl::StatusOr<std::vector<uint8_t>> labels = ReadIdxLabels(path);
  ASSERT_FALSE(labels.ok());
  EXPECT_EQ(labels.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(labels.status().message(), HasSubstr(path));
  EXPECT_THAT(labels.status().message(), HasSubstr("gzip stream is truncated"));
}

TEST_F(IdxTest, MissingFile) {
  const std::string path = PathTo("no-such-images-idx3-ubyte");

  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(images.status().message(), HasSubstr(path));
}

TEST_F(IdxTest, MissingDatasetFiles) {
  const std::string plain_path = PathTo("train-images-idx3-ubyte");

  absl::StatusOr<Dataset> dataset = LoadIdxDataset(dir_, "train");
  ASSERT_FALSE(dataset.ok());
  EXPECT_EQ(dataset.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(dataset.status().message(), HasSubstr(plain_path + " and " + plain_path + ".gz"));
  EXPECT_THAT(dataset.status().message(), HasSubstr("apt-get install dataset-fashion-mnist"));
  EXPECT_THAT(dataset.status().message(), HasSubstr("--data"));
}

TEST_F(IdxTest, MissingLabelFile) {
  WritePlainFile(PathTo("t10k-images-idx3-ubyte"), IdxBytes(kImagesMagic, {1, 1, 1}, {0}));
  const std::string labels_path = PathTo("t10k-labels-idx1-ubyte");

  absl::StatusOr<Dataset> dataset = LoadIdxDataset(dir_, "t10k");
  ASSERT_FALSE(dataset.ok());
  EXPECT_EQ(dataset.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(dataset.status().message(), HasSubstr(labels_path));
}

TEST_F(IdxTest, InvalidSplit) {
  absl::StatusOr<Dataset> dataset = LoadIdxDataset(dir_, "test");
  ASSERT_FALSE(dataset.ok());
  EXPECT_EQ(dataset.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dataset.status().message(), HasSubstr("\"test\""));
  EXPECT_THAT(dataset.status().message(), HasSubstr("\"t10k\""));
}

Dataset MakeDataset(int64_t count, int height, int width) {
  Dataset dataset;
  dataset.count = count;
  dataset.height = height;
  dataset.width = width;
  dataset.num_classes = 10;
  for (int64_t i = 0; i < count * height * width; ++i) {
    dataset.images.push_back(static_cast<float>(i));
  }
  for (int64_t i = 0; i < count; ++i) dataset.labels.push_back(static_cast<int32_t>(i % 3));
  return dataset;
}

TEST(TakeFirstTest, KeepsLeadingSamples) {
  const Dataset full = MakeDataset(5, 2, 3);

  absl::StatusOr<Dataset> first = TakeFirst(full, 2);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->count, 2);
  EXPECT_EQ(first->channels, 1);
  EXPECT_EQ(first->height, 2);
  EXPECT_EQ(first->width, 3);
  EXPECT_EQ(first->num_classes, 10);  // Kept, although the labels kept are only 0 and 1.
  EXPECT_EQ(first->labels, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(first->images,
            std::vector<float>(full.images.begin(), full.images.begin() + 2 * 2 * 3));
}

TEST(TakeFirstTest, AllSamples) {
  const Dataset full = MakeDataset(4, 1, 1);

  absl::StatusOr<Dataset> all = TakeFirst(full, 4);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->count, 4);
  EXPECT_EQ(all->images, full.images);
  EXPECT_EQ(all->labels, full.labels);
}

TEST(TakeFirstTest, RejectsOutOfRangeCount) {
  const Dataset full = MakeDataset(5, 2, 3);

  for (int64_t n : {int64_t{6}, int64_t{0}, int64_t{-1}}) {
    absl::StatusOr<Dataset> first = TakeFirst(full, n);
    ASSERT_FALSE(first.ok()) << "n = " << n;
    EXPECT_EQ(first.status().code(), absl::StatusCode::kInvalidArgument) << "n = " << n;
    EXPECT_THAT(first.status().message(), HasSubstr("invalid sample count " + std::to_string(n)));
  }
}

TEST(TakeFirstTest, RejectsInconsistentDataset) {
  Dataset broken = MakeDataset(5, 2, 3);
  broken.images.pop_back();

  absl::StatusOr<Dataset> first = TakeFirst(broken, 2);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(first.status().message(), HasSubstr("has 29 image values"));
}

// Reads the real Fashion-MNIST test split, which the Debian package dataset-fashion-mnist installs
// to kDefaultDataDir. The expected class counts are those of the published test split: 1,000
// images for each of the 10 classes.
TEST(FashionMnistTest, LoadsTestSplit) {
  absl::StatusOr<Dataset> dataset = LoadIdxDataset(kDefaultDataDir, "t10k");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->count, 10000);
  EXPECT_EQ(dataset->channels, 1);
  EXPECT_EQ(dataset->height, 28);
  EXPECT_EQ(dataset->width, 28);
  EXPECT_EQ(dataset->num_classes, 10);
  ASSERT_EQ(dataset->images.size(), 10000u * 28 * 28);
  ASSERT_EQ(dataset->labels.size(), 10000u);

  std::vector<int> class_counts(10, 0);
  for (int32_t label : dataset->labels) {
    ASSERT_GE(label, 0);
    ASSERT_LT(label, 10);
    ++class_counts[label];
  }
  EXPECT_EQ(class_counts, std::vector<int>(10, 1000));
  EXPECT_EQ(dataset->labels[0], 9);  // The first test image is an ankle boot.

  float min_pixel = 1.0f;
  float max_pixel = 0.0f;
  for (float pixel : dataset->images) {
    min_pixel = std::min(min_pixel, pixel);
    max_pixel = std::max(max_pixel, pixel);
  }
  EXPECT_EQ(min_pixel, 0.0f);
  EXPECT_EQ(max_pixel, 1.0f);
}

}  // namespace
}  // namespace kiln
