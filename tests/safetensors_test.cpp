/// \file
/// Tests for the safetensors reader and writer: round trips, the byte layout of the format,
/// rejection of truncated and corrupt files, and atomic replacement on write.

#include "runtime/safetensors.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

using Bytes = std::vector<uint8_t>;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

Bytes ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFileBytes(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "failed to write test file " << path;
}

// Returns the names in `directory`, sorted, without "." and "..".
std::vector<std::string> ListDirectory(const std::string& directory) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(directory)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

template <typename T>
Bytes ToBytes(const std::vector<T>& values) {
  Bytes bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

float FloatFromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Returns the bytes of a safetensors file: the 8-byte little-endian length of `header`, the
// header itself, then `data`. The header is used exactly as given, without padding.
Bytes BuildFileBytes(const std::string& header, const Bytes& data) {
  Bytes bytes;
  uint64_t size = header.size();
  for (int i = 0; i < 8; ++i) {
    bytes.push_back(static_cast<uint8_t>(size & 0xff));
    size >>= 8;
  }
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

// Returns `header` padded with spaces to a multiple of 8 bytes, as the reference writer pads it.
std::string PadHeader(std::string header) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return header;
}

TensorData MakeTensor(DType dtype, std::vector<int64_t> shape, Bytes data) {
  TensorData tensor;
  tensor.dtype = dtype;
  tensor.shape = std::move(shape);
  tensor.data = std::move(data);
  return tensor;
}

// Lowers RLIMIT_FSIZE for the lifetime of the object and ignores SIGXFSZ, so that a write past
// the limit fails with EFBIG instead of killing the process.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t max_bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_limit_);
    saved_handler_ = signal(SIGXFSZ, SIG_IGN);
    rlimit lowered = saved_limit_;
    lowered.rlim_cur = max_bytes;
    applied_ = setrlimit(RLIMIT_FSIZE, &lowered) == 0;
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_limit_);
    signal(SIGXFSZ, saved_handler_);
  }

  bool applied() const { return applied_; }

 private:
  rlimit saved_limit_{};
  sighandler_t saved_handler_ = SIG_DFL;
  bool applied_ = false;
};

// Gives each test a fresh directory and removes it afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "kiln_safetensors_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr) << "mkdtemp failed for " << pattern;
    dir_ = pattern;
  }

  void TearDown() override {
    // Tests may leave read-only directories behind, which remove_all could not empty.
    std::error_code ignored;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir_, ignored)) {
      if (entry.is_directory()) chmod(entry.path().c_str(), 0755);
    }
    chmod(dir_.c_str(), 0755);
    std::filesystem::remove_all(dir_, ignored);
  }

  std::string PathIn(const std::string& name) const { return dir_ + "/" + name; }

  // Returns a file with one tensor of each dtype, a scalar, an empty tensor and metadata.
  static TensorFile SampleFile() {
    TensorFile file;
    file.metadata["format"] = "pt";
    file.metadata["epoch"] = "12";
    file.metadata["note"] = "héllo, wörld";
    file.metadata["empty"] = "";

    // Values whose bits a lossy conversion would change: negative zero, a NaN with a payload,
    // infinity, the smallest subnormal, and the largest finite float.
    file.tensors["conv1.weight"] =
        MakeTensor(DType::kF32, {2, 3},
                   ToBytes(std::vector<float>{-0.0f, FloatFromBits(0x7fc12345u),
                                              std::numeric_limits<float>::infinity(),
                                              std::numeric_limits<float>::denorm_min(), 1.0f / 3.0f,
                                              std::numeric_limits<float>::max()}));
    file.tensors["labels"] =
        MakeTensor(DType::kI32, {4},
                   ToBytes(std::vector<int32_t>{std::numeric_limits<int32_t>::min(), -1, 0,
                                                std::numeric_limits<int32_t>::max()}));
    file.tensors["step"] = MakeTensor(
        DType::kI64, {}, ToBytes(std::vector<int64_t>{std::numeric_limits<int64_t>::min()}));
    file.tensors["mask"] = MakeTensor(DType::kU8, {3}, Bytes{0, 128, 255});
    file.tensors["empty"] = MakeTensor(DType::kF32, {0, 5}, Bytes{});
    return file;
  }

  std::string dir_;
};

// ---------------------------------------------------------------------------------------------
// Round trip and format
// ---------------------------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripIsBitExact) {
  const std::string path = PathIn("model.safetensors");
  const TensorFile written = SampleFile();
  ASSERT_TRUE(WriteSafetensors(path, written).ok());

  absl::StatusOr<TensorFile> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->metadata, written.metadata);
  ASSERT_EQ(read->tensors.size(), written.tensors.size());
  for (const auto& [name, tensor] : written.tensors) {
    SCOPED_TRACE(name);
    ASSERT_EQ(read->tensors.count(name), 1u);
    const TensorData& loaded = read->tensors.at(name);
    EXPECT_EQ(loaded.dtype, tensor.dtype);
    EXPECT_EQ(loaded.shape, tensor.shape);
    EXPECT_EQ(loaded.data, tensor.data);
  }

  // The typed accessors return the same values, including the NaN payload.
  const TensorData& weight = read->tensors.at("conv1.weight");
  ASSERT_NE(weight.f32(), nullptr);
  uint32_t nan_bits;
  std::memcpy(&nan_bits, &weight.f32()[1], sizeof(nan_bits));
  EXPECT_EQ(nan_bits, 0x7fc12345u);
  EXPECT_TRUE(std::signbit(weight.f32()[0]));
  EXPECT_EQ(weight.f32()[5], std::numeric_limits<float>::max());
  EXPECT_EQ(read->tensors.at("labels").i32()[0], std::numeric_limits<int32_t>::min());
  EXPECT_EQ(read->tensors.at("step").i64()[0], std::numeric_limits<int64_t>::min());
  EXPECT_EQ(read->tensors.at("step").numel(), 1);
  EXPECT_EQ(read->tensors.at("mask").u8()[2], 255);
  EXPECT_EQ(read->tensors.at("empty").numel(), 0);
}

TEST_F(SafetensorsTest, RoundTripWithoutTensorsOrMetadata) {
  const std::string path = PathIn("empty.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, TensorFile{}).ok());

  // An empty header is "{}" padded to 8 bytes, with no data after it.
  const Bytes expected = BuildFileBytes("{}      ", {});
  EXPECT_EQ(ReadFileBytes(path), expected);

  absl::StatusOr<TensorFile> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->metadata.empty());
  EXPECT_TRUE(read->tensors.empty());
}

TEST_F(SafetensorsTest, WriterProducesReferenceLayout) {
  TensorFile file;
  file.metadata["format"] = "pt";
  // Inserted out of name order: the writer stores them sorted by name.
  file.tensors["b"] = MakeTensor(DType::kF32, {1, 2}, ToBytes(std::vector<float>{3.0f, 4.0f}));
  file.tensors["a"] = MakeTensor(DType::kF32, {2}, ToBytes(std::vector<float>{1.0f, 2.0f}));
  const std::string path = PathIn("layout.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, file).ok());

  // The reference writer emits compact JSON with "__metadata__" first, the entry fields in the
  // order dtype, shape, data_offsets, and spaces up to a multiple of 8 bytes.
  const std::string json = R"({"__metadata__":{"format":"pt"},)"
                           R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[1,2],"data_offsets":[8,16]}})";
  const std::string header = PadHeader(json);
  ASSERT_EQ(header.size() % 8, 0u);
  ASSERT_GT(header.size(), json.size()) << "this case should exercise the padding";
  const Bytes expected =
      BuildFileBytes(header, ToBytes(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}));

  const Bytes actual = ReadFileBytes(path);
  ASSERT_EQ(actual.size(), expected.size());
  EXPECT_EQ(Bytes(actual.begin(), actual.begin() + 8),
            Bytes(expected.begin(), expected.begin() + 8))
      << "length prefix differs";
  EXPECT_EQ(std::string(actual.begin() + 8, actual.begin() + 8 + header.size()), header)
      << "JSON header differs";
  EXPECT_EQ(actual, expected);
}

TEST_F(SafetensorsTest, ReadsReferenceWriterFile) {
  // The reference writer orders data by descending dtype alignment, so here the I64 tensor
  // "weight" comes before the F32 tensor "bias" in the data even though "bias" sorts first.
  const std::string header =
      PadHeader(R"({"__metadata__":{"format":"pt"},)"
                R"("bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},)"
                R"("weight":{"dtype":"I64","shape":[2,1],"data_offsets":[0,16]}})");
  Bytes data = ToBytes(std::vector<int64_t>{-5, 1LL << 40});
  const Bytes bias = ToBytes(std::vector<float>{0.25f, -8.0f});
  data.insert(data.end(), bias.begin(), bias.end());
  const std::string path = PathIn("reference.safetensors");
  WriteFileBytes(path, BuildFileBytes(header, data));

  absl::StatusOr<TensorFile> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(read->tensors.size(), 2u);

  const TensorData& weight = read->tensors.at("weight");
  EXPECT_EQ(weight.dtype, DType::kI64);
  EXPECT_EQ(weight.shape, (std::vector<int64_t>{2, 1}));
  ASSERT_NE(weight.i64(), nullptr);
  EXPECT_EQ(weight.i64()[0], -5);
  EXPECT_EQ(weight.i64()[1], 1LL << 40);

  const TensorData& bias_tensor = read->tensors.at("bias");
  EXPECT_EQ(bias_tensor.dtype, DType::kF32);
  EXPECT_EQ(bias_tensor.shape, (std::vector<int64_t>{2}));
  ASSERT_NE(bias_tensor.f32(), nullptr);
  EXPECT_EQ(bias_tensor.f32()[0], 0.25f);
  EXPECT_EQ(bias_tensor.f32()[1], -8.0f);
}

TEST_F(SafetensorsTest, ReadAcceptsUnpaddedHeaderAndExtraFields) {
  // Writers other than the reference may skip the padding, add fields to an entry, or write a
  // null "__metadata__", which the reference reader treats as absent.
  const std::string header =
      R"({"__metadata__":null,)"
      R"("x":{"dtype":"U8","shape":[3],"data_offsets":[0,3],"origin":"converter"}})";
  const std::string path = PathIn("unpadded.safetensors");
  WriteFileBytes(path, BuildFileBytes(header, Bytes{7, 8, 9}));

  absl::StatusOr<TensorFile> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->metadata.empty());
  EXPECT_EQ(read->tensors.at("x").data, (Bytes{7, 8, 9}));
}

// ---------------------------------------------------------------------------------------------
// Truncated and corrupt files
// ---------------------------------------------------------------------------------------------

TEST_F(SafetensorsTest, TruncatedFileNamesFile) {
  const std::string full_path = PathIn("full.safetensors");
  ASSERT_TRUE(WriteSafetensors(full_path, SampleFile()).ok());
  const Bytes full = ReadFileBytes(full_path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, full.data(), sizeof(header_size));
  ASSERT_LT(8 + header_size, full.size());

  // Cuts inside the length prefix, inside the JSON header, at its end, and inside the data.
  const std::vector<size_t> cuts = {0,
                                    1,
                                    7,
                                    8,
                                    9,
                                    8 + header_size / 2,
                                    8 + header_size - 1,
                                    8 + header_size,
                                    8 + header_size + 1,
                                    full.size() - 1};
  for (size_t cut : cuts) {
    SCOPED_TRACE(absl::StrCat("file cut to ", cut, " of ", full.size(), " bytes"));
    const std::string path = PathIn(absl::StrCat("cut_", cut, ".safetensors"));
    WriteFileBytes(path, Bytes(full.begin(), full.begin() + cut));

    absl::StatusOr<TensorFile> read = ReadSafetensors(path);
    ASSERT_FALSE(read.ok());
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(read.status().message()), HasSubstr(path));
    EXPECT_THAT(std::string(read.status().message()), HasSubstr("truncated"));
  }
}

TEST_F(SafetensorsTest, TruncatedDataMessageGivesSizes) {
  const std::string header =
      PadHeader(R"({"w":{"dtype":"U8","shape":[1200],"data_offsets":[0,1200]}})");
  const std::string path = PathIn("x.safetensors");
  WriteFileBytes(path, BuildFileBytes(header, Bytes(800, 1)));

  absl::StatusOr<TensorFile> read = ReadSafetensors(path);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().message(),
            absl::StrCat("safetensors file '", path,
                         "' is truncated: its header says 1200 bytes of tensor data but the file "
                         "has 800; the file was not written completely, use an earlier copy"));
}

TEST_F(SafetensorsTest, CorruptHeaderJsonIsRejected) {
  const std::string full_path = PathIn("full.safetensors");
  ASSERT_TRUE(WriteSafetensors(full_path, SampleFile()).ok());
  const Bytes full = ReadFileBytes(full_path);

  // Overwrite a byte inside the JSON: the first '"' after the opening brace.
  Bytes corrupt = full;
  ASSERT_EQ(corrupt[8], '{');
  ASSERT_EQ(corrupt[9], '"');
  corrupt[9] = '#';
  const std::string path = PathIn("corrupt.safetensors");
  WriteFileBytes(path, corrupt);

  absl::StatusOr<TensorFile> read = ReadSafetensors(path);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("invalid JSON header"));
}

TEST_F(SafetensorsTest, HugeHeaderLengthIsRejectedWithoutAllocating) {
  for (uint64_t declared :
       {uint64_t{100'000'001}, uint64_t{1} << 40, std::numeric_limits<uint64_t>::max()}) {
    SCOPED_TRACE(absl::StrCat("declared header length ", declared));
    Bytes bytes(8);
    std::memcpy(bytes.data(), &declared, sizeof(declared));
    const std::string tail = "{}";
    bytes.insert(bytes.end(), tail.begin(), tail.end());
    const std::string path = PathIn("huge.safetensors");
    WriteFileBytes(path, bytes);

    absl::StatusOr<TensorFile> read = ReadSafetensors(path);
    ASSERT_FALSE(read.ok());
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(read.status().message()), HasSubstr(path));
    EXPECT_THAT(std::string(read.status().message()), HasSubstr("100000000-byte limit"));
  }
}

TEST_F(SafetensorsTest, DeeplyNestedJsonIsRejected) {
  // A recursive parser would overflow the stack on this header.
  const std::string header(1'000'000, '[');
  const std::string path = PathIn("nested.safetensors");
  WriteFileBytes(path, BuildFileBytes(header, {}));

  absl::StatusOr<TensorFile> read = ReadSafetensors(path);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr(path));
}

// One hostile or malformed header and the error it must produce.
struct BadHeaderCase {
  const char* label;
  std::string header;
  size_t data_bytes;
  absl::StatusCode code;
  const char* message_part;
};

TEST_F(SafetensorsTest, BadHeadersAreRejected) {
  const absl::StatusCode kDataLoss = absl::StatusCode::kDataLoss;
  const std::vector<BadHeaderCase> cases = {
      {"empty header", "", 0, kDataLoss, "invalid JSON header"},
      {"non-UTF-8 name", "{\"\xff\":{}}", 0, kDataLoss, "invalid JSON header"},
      {"array header", "[]", 0, kDataLoss, "instead of an object"},
      {"string header", R"("weights")", 0, kDataLoss, "instead of an object"},
      {"entry is a number", R"({"w":5})", 0, kDataLoss, "'w'"},
      {"missing dtype", R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4, kDataLoss,
       "no \"dtype\" field"},
      {"missing shape", R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4, kDataLoss,
       "no \"shape\" field"},
      {"missing offsets", R"({"w":{"dtype":"F32","shape":[1]}})", 4, kDataLoss,
       "no \"data_offsets\" field"},
      {"dtype not a string", R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4, kDataLoss,
       "\"dtype\" of JSON type number"},
      {"unsupported dtype", R"({"w":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}})", 4,
       absl::StatusCode::kUnimplemented, "dtype 'I16'"},
      {"unknown dtype", R"({"w":{"dtype":"float","shape":[1],"data_offsets":[0,4]}})", 4,
       absl::StatusCode::kUnimplemented, "dtype 'float'"},
      {"shape not an array", R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,4]}})", 4,
       kDataLoss, "\"shape\" of JSON type number"},
      {"negative dimension", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4,
       kDataLoss, "dimension 0 of its shape equal to -1"},
      {"fractional dimension", R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4,
       kDataLoss, "dimension 0"},
      {"dimension of 2^63",
       R"({"w":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,4]}})", 4, kDataLoss,
       "dimension 0"},
      {"byte size overflows",
       R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4,
       kDataLoss, "overflows"},
      {"one offset", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4, kDataLoss,
       "array of two non-negative integers"},
      {"string offsets", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":["0","4"]}})", 4,
       kDataLoss, "array of two non-negative integers"},
      {"negative offset", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4,
       kDataLoss, "array of two non-negative integers"},
      {"begin after end", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4, kDataLoss,
       "begin is after its end"},
      {"offsets disagree with shape",
       R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,12]}})", 12, kDataLoss,
       "covering 12 bytes, but shape [2, 3] with dtype F32 needs 24 bytes"},
      {"offsets past end of file",
       R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[1000000,1000008]}})", 8, kDataLoss,
       "truncated"},
      {"offsets near 2^64",
       R"({"w":{"dtype":"U8","shape":[8],)"
       R"("data_offsets":[18446744073709551607,18446744073709551615]}})",
       8, kDataLoss, "truncated"},
      {"gap at start", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, kDataLoss,
       "gap of tensor data bytes [0, 4) between the start of the data and tensor 'w'"},
      {"gap between tensors",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
       12, kDataLoss, "gap of tensor data bytes [4, 8) between tensor 'a' and tensor 'b'"},
      {"overlapping tensors",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       8, kDataLoss, "tensor 'b' at data_offsets [4, 8] overlapping tensor 'a' at [0, 8]"},
      {"same offsets twice",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
       4, kDataLoss, "overlapping"},
      {"bytes after last tensor", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8,
       kDataLoss, "4 bytes after the last tensor"},
      {"data without tensors", R"({})", 4, kDataLoss, "4 bytes after the last tensor"},
      {"repeated tensor name",
       R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
       R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       8, kDataLoss, "the key 'w' twice"},
      {"metadata not an object", R"({"__metadata__":"pt"})", 0, kDataLoss,
       "\"__metadata__\" entry of JSON type string"},
      {"metadata value not a string", R"({"__metadata__":{"epoch":3}})", 0, kDataLoss,
       "metadata key 'epoch' with a value of JSON type number"},
  };

  for (const BadHeaderCase& test_case : cases) {
    SCOPED_TRACE(test_case.label);
    const std::string path = PathIn("bad.safetensors");
    WriteFileBytes(path, BuildFileBytes(test_case.header, Bytes(test_case.data_bytes, 0)));

    absl::StatusOr<TensorFile> read = ReadSafetensors(path);
    ASSERT_FALSE(read.ok());
    EXPECT_EQ(read.status().code(), test_case.code) << read.status();
    EXPECT_THAT(std::string(read.status().message()), HasSubstr(path));
    EXPECT_THAT(std::string(read.status().message()), HasSubstr(test_case.message_part));
  }
}

TEST_F(SafetensorsTest, ZeroSizeTensorsMayShareOffsets) {
  const std::string header = PadHeader(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                                       R"("b":{"dtype":"I64","shape":[3,0],"data_offsets":[0,0]},)"
                                       R"("c":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                                       R"("d":{"dtype":"I32","shape":[0],"data_offsets":[2,2]}})");
  const std::string path = PathIn("zero.safetensors");
  WriteFileBytes(path, BuildFileBytes(header, Bytes{1, 2}));

  absl::StatusOr<TensorFile> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->tensors.size(), 4u);
  EXPECT_EQ(read->tensors.at("b").shape, (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(read->tensors.at("c").data, (Bytes{1, 2}));
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  const std::string path = PathIn("absent.safetensors");
  absl::StatusOr<TensorFile> read = ReadSafetensors(path);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr(path));
}

TEST_F(SafetensorsTest, DirectoryIsNotReadAsFile) {
  absl::StatusOr<TensorFile> read = ReadSafetensors(dir_);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("not a regular file"));
}

// ---------------------------------------------------------------------------------------------
// Writer validation and atomic replacement
// ---------------------------------------------------------------------------------------------

TEST_F(SafetensorsTest, InvalidTensorsAreRejectedBeforeWriting) {
  struct InvalidTensorCase {
    const char* label;
    std::string name;
    TensorData tensor;
    const char* message_part;
  };
  const std::vector<InvalidTensorCase> cases = {
      {"data too short", "w", MakeTensor(DType::kF32, {2, 2}, Bytes(12)),
       "has 12 bytes of data but shape [2, 2] with dtype F32 needs 16 bytes"},
      {"negative dimension", "w", MakeTensor(DType::kU8, {-1}, Bytes{}), "shape [-1]"},
      {"overflowing shape", "w", MakeTensor(DType::kI64, {int64_t{1} << 62, 4}, Bytes{}),
       "overflows"},
      {"invalid dtype value", "w", MakeTensor(static_cast<DType>(42), {1}, Bytes(4)),
       "invalid value 42"},
      {"reserved name", "__metadata__", MakeTensor(DType::kU8, {1}, Bytes(1)), "reserves that key"},
      {"name not UTF-8", "w\xff", MakeTensor(DType::kU8, {1}, Bytes(1)), "not valid UTF-8"},
  };

  const std::string path = PathIn("invalid.safetensors");
  for (const InvalidTensorCase& test_case : cases) {
    SCOPED_TRACE(test_case.label);
    TensorFile file;
    file.tensors[test_case.name] = test_case.tensor;

    absl::Status status = WriteSafetensors(path, file);
    ASSERT_FALSE(status.ok());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr(path));
    EXPECT_THAT(std::string(status.message()), HasSubstr(test_case.message_part));
    EXPECT_TRUE(ListDirectory(dir_).empty()) << "nothing may be created for an invalid tensor";
  }
}

TEST_F(SafetensorsTest, InvalidMetadataIsRejectedBeforeWriting) {
  TensorFile file;
  file.metadata["source"] = "bad \xc3 byte";
  const std::string path = PathIn("metadata.safetensors");

  absl::Status status = WriteSafetensors(path, file);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("metadata key 'source'"));
  EXPECT_TRUE(ListDirectory(dir_).empty());
}

TEST_F(SafetensorsTest, WriteIntoMissingDirectoryFails) {
  const std::string path = PathIn("missing/model.safetensors");
  absl::Status status = WriteSafetensors(path, SampleFile());
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr(path));
  EXPECT_TRUE(ListDirectory(dir_).empty());
}

TEST_F(SafetensorsTest, WriteUnderRegularFileFails) {
  const std::string blocker = PathIn("blocker");
  WriteFileBytes(blocker, Bytes{1, 2, 3});

  const std::string path = blocker + "/model.safetensors";
  absl::Status status = WriteSafetensors(path, SampleFile());
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr(path));
  EXPECT_EQ(ListDirectory(dir_), std::vector<std::string>{"blocker"});
  EXPECT_EQ(ReadFileBytes(blocker), (Bytes{1, 2, 3}));
}

TEST_F(SafetensorsTest, WriteIntoReadOnlyDirectoryKeepsOldFile) {
  if (geteuid() == 0) {
    GTEST_SKIP() << "root ignores directory permissions, so the write would succeed";
  }
  const std::string path = PathIn("model.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, SampleFile()).ok());
  const Bytes old_bytes = ReadFileBytes(path);
  ASSERT_EQ(chmod(dir_.c_str(), 0555), 0);

  TensorFile replacement;
  replacement.tensors["x"] = MakeTensor(DType::kU8, {1}, Bytes{9});
  absl::Status status = WriteSafetensors(path, replacement);
  chmod(dir_.c_str(), 0755);

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(status.message()), HasSubstr(path));
  EXPECT_EQ(ListDirectory(dir_), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(ReadFileBytes(path), old_bytes);
}

TEST_F(SafetensorsTest, WriteFailingMidwayKeepsOldFile) {
  const std::string path = PathIn("model.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, SampleFile()).ok());
  const Bytes old_bytes = ReadFileBytes(path);

  // A 1 MiB tensor under a 64 KiB file size limit: the temporary file is created and partly
  // written before write() fails with EFBIG.
  TensorFile replacement;
  replacement.tensors["big"] = MakeTensor(DType::kU8, {1 << 20}, Bytes(1 << 20, 0xab));
  absl::Status status;
  {
    FileSizeLimit limit(64 * 1024);
    ASSERT_TRUE(limit.applied()) << "setrlimit(RLIMIT_FSIZE) failed";
    status = WriteSafetensors(path, replacement);
  }

  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("failed to write temporary file"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("was not changed"));
  EXPECT_EQ(ListDirectory(dir_), std::vector<std::string>{"model.safetensors"})
      << "the temporary file must be removed";
  EXPECT_EQ(ReadFileBytes(path), old_bytes);
}

TEST_F(SafetensorsTest, DirectoryAtPathIsRejected) {
  const std::string path = PathIn("model.safetensors");
  ASSERT_EQ(mkdir(path.c_str(), 0755), 0);

  absl::Status status = WriteSafetensors(path, SampleFile());
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("it is a directory; name a file"));
  EXPECT_THAT(std::string(status.message()), HasSubstr(path));
  EXPECT_EQ(ListDirectory(dir_), std::vector<std::string>{"model.safetensors"});
  EXPECT_TRUE(std::filesystem::is_directory(path));
}

TEST_F(SafetensorsTest, FifoAtPathIsNotReplaced) {
  // A rename would turn a FIFO or a device such as /dev/null into a regular file.
  const std::string path = PathIn("pipe");
  ASSERT_EQ(mkfifo(path.c_str(), 0644), 0);

  absl::Status status = WriteSafetensors(path, SampleFile());
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("not a regular file"));
  EXPECT_TRUE(std::filesystem::is_fifo(path));
  EXPECT_EQ(ListDirectory(dir_), std::vector<std::string>{"pipe"});
}

TEST_F(SafetensorsTest, CheckDestinationRejectsMissingDirectory) {
  const std::string path = PathIn("missing/model.safetensors");
  absl::Status status = CheckSafetensorsDestination(path);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("not an existing directory"));
  EXPECT_THAT(std::string(status.message()), HasSubstr(PathIn("missing")));
  EXPECT_TRUE(CheckSafetensorsDestination(PathIn("new.safetensors")).ok());
}

TEST_F(SafetensorsTest, OverwriteReplacesFileAtomically) {
  const std::string path = PathIn("model.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, SampleFile()).ok());
  const Bytes old_bytes = ReadFileBytes(path);
  struct stat old_stat;
  ASSERT_EQ(stat(path.c_str(), &old_stat), 0);

  // A reader that opened the old file keeps seeing the old contents after the overwrite,
  // because the new file replaces the directory entry instead of being written in place.
  const int old_fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(old_fd, 0);

  TensorFile replacement;
  replacement.metadata["epoch"] = "13";
  replacement.tensors["x"] = MakeTensor(DType::kI32, {2}, ToBytes(std::vector<int32_t>{5, 6}));
  ASSERT_TRUE(WriteSafetensors(path, replacement).ok());

  Bytes seen_by_old_reader(old_bytes.size() + 1);
  const ssize_t got = pread(old_fd, seen_by_old_reader.data(), seen_by_old_reader.size(), 0);
  close(old_fd);
  ASSERT_EQ(got, static_cast<ssize_t>(old_bytes.size()));
  seen_by_old_reader.resize(static_cast<size_t>(got));
  EXPECT_EQ(seen_by_old_reader, old_bytes);

  struct stat new_stat;
  ASSERT_EQ(stat(path.c_str(), &new_stat), 0);
  EXPECT_NE(new_stat.st_ino, old_stat.st_ino) << "the file was rewritten in place";
  EXPECT_EQ(ListDirectory(dir_), std::vector<std::string>{"model.safetensors"});

  absl::StatusOr<TensorFile> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->metadata, replacement.metadata);
  ASSERT_EQ(read->tensors.size(), 1u);
  EXPECT_EQ(read->tensors.at("x"), replacement.tensors.at("x"));
}

TEST_F(SafetensorsTest, PathWithoutDirectoryWritesInWorkingDirectory) {
  char original[4096];
  ASSERT_NE(getcwd(original, sizeof(original)), nullptr);
  ASSERT_EQ(chdir(dir_.c_str()), 0);
  absl::Status status = WriteSafetensors("bare.safetensors", SampleFile());
  ASSERT_EQ(chdir(original), 0);

  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(ListDirectory(dir_), std::vector<std::string>{"bare.safetensors"});
}

TEST_F(SafetensorsTest, PathEndingInSlashIsRejected) {
  absl::Status status = WriteSafetensors(dir_ + "/", SampleFile());
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ListDirectory(dir_).empty());
}

// ---------------------------------------------------------------------------------------------
// TensorData helpers
// ---------------------------------------------------------------------------------------------

TEST(MakeF32Test, CopiesValuesFromSpan) {
  const std::vector<float> values = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  absl::StatusOr<TensorData> tensor = MakeF32({2, 3}, values);
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  EXPECT_EQ(tensor->dtype, DType::kF32);
  EXPECT_EQ(tensor->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(tensor->numel(), 6);
  EXPECT_EQ(tensor->data, ToBytes(values));
}

TEST(MakeF32Test, SizeMismatchIsError) {
  const std::vector<float> values = {1.0f, 2.0f, 3.0f};
  absl::StatusOr<TensorData> tensor = MakeF32({2, 2}, values);
  ASSERT_FALSE(tensor.ok());
  EXPECT_EQ(tensor.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tensor.status().message()), HasSubstr("from 3 values"));
  EXPECT_THAT(std::string(tensor.status().message()), HasSubstr("needs 4"));
}

TEST(MakeF32Test, NegativeDimensionIsError) {
  const std::vector<float> values;
  absl::StatusOr<TensorData> tensor = MakeF32({-2, 0}, values);
  ASSERT_FALSE(tensor.ok());
  EXPECT_EQ(tensor.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MakeF32Test, PointerOverloadCopiesValues) {
  const float values[4] = {0.5f, -0.5f, 1.5f, -1.5f};
  const TensorData tensor = MakeF32({4}, values);
  EXPECT_EQ(tensor.shape, (std::vector<int64_t>{4}));
  ASSERT_NE(tensor.f32(), nullptr);
  EXPECT_EQ(tensor.f32()[3], -1.5f);

  const TensorData scalar = MakeF32({}, values);
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.f32()[0], 0.5f);
}

TEST(MakeF32DeathTest, PointerOverloadAbortsOnNegativeShape) {
  const float value = 1.0f;
  EXPECT_DEATH(MakeF32({-1}, &value), "non-negative dimensions");
}

TEST(TensorTest, AccessorsCheckDType) {
  TensorData tensor = MakeTensor(DType::kI32, {2}, ToBytes(std::vector<int32_t>{1, 2}));
  EXPECT_EQ(tensor.f32(), nullptr);
  EXPECT_EQ(tensor.i64(), nullptr);
  EXPECT_EQ(tensor.u8(), nullptr);
  ASSERT_NE(tensor.mutable_i32(), nullptr);
  tensor.mutable_i32()[1] = 7;
  EXPECT_EQ(tensor.i32()[1], 7);
}

TEST(DTypeTest, NamesRoundTrip) {
  for (DType dtype : {DType::kF32, DType::kI32, DType::kI64, DType::kU8, DType::kF64, DType::kF16,
                      DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    EXPECT_EQ(ParseDType(DTypeName(dtype)), dtype);
  }
  EXPECT_EQ(DTypeSize(DType::kI64), 8);
  EXPECT_EQ(DTypeSize(DType::kF64), 8);
  EXPECT_EQ(DTypeSize(DType::kF16), 2);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2);
  EXPECT_EQ(ParseDType("f32"), std::nullopt) << "dtype names are case-sensitive";
  EXPECT_EQ(ParseDType("I16"), std::nullopt);
}

}  // namespace
}  // namespace kiln
