/// \file
/// Tests for Kiln checkpoints (runtime/checkpoint.h) and the PyTorch state_dict importer
/// (runtime/import_weights.h) on a small hand-built model description: round trips, every
/// mismatch a file can have, dtype conversion, and that a failed load changes nothing.

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint.h"
#include "runtime/compiled_model.h"
#include "runtime/import_weights.h"
#include "runtime/safetensors.h"

namespace kiln {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

// Appends a ParamInfo of `shape` to `infos` at the end of an array of `size` values.
void AddEntry(std::vector<ParamInfo>& infos, int64_t& size, const std::string& name,
              std::vector<int64_t> shape) {
  ParamInfo p;
  p.name = name;
  p.shape = std::move(shape);
  p.numel = 1;
  for (int64_t dim : p.shape) p.numel *= dim;
  p.offset = size;
  size += p.numel;
  infos.push_back(p);
}

// A model description in the shape of a small torchvision-style network: a convolution without
// bias, a batch norm with running statistics, and a classifier "fc" for 3 classes. It has no
// compiled functions, which checkpoints do not need.
CompiledModel TinyModel() {
  CompiledModel model;
  model.name = "tiny";
  AddEntry(model.params, model.num_params, "conv1.weight", {2, 1, 3, 3});
  AddEntry(model.params, model.num_params, "bn1.weight", {2});
  AddEntry(model.params, model.num_params, "bn1.bias", {2});
  AddEntry(model.params, model.num_params, "fc.weight", {3, 8});
  AddEntry(model.params, model.num_params, "fc.bias", {3});
  AddEntry(model.buffers, model.num_buffer_values, "bn1.running_mean", {2});
  AddEntry(model.buffers, model.num_buffer_values, "bn1.running_var", {2});
  return model;
}

// A state of `model` whose every value is distinct and depends on `seed`.
ModelState DistinctState(const CompiledModel& model, float seed) {
  ModelState state = ZeroState(model);
  for (size_t i = 0; i < state.params.size(); ++i) state.params[i] = seed + 0.25f * i;
  for (size_t i = 0; i < state.velocity.size(); ++i) state.velocity[i] = -seed - 0.5f * i;
  for (size_t i = 0; i < state.buffers.size(); ++i) state.buffers[i] = seed * 10 + i;
  return state;
}

// The values of entry `p` in `array`.
std::vector<float> Slice(absl::Span<const float> array, const ParamInfo& p) {
  return std::vector<float>(array.begin() + p.offset, array.begin() + p.offset + p.numel);
}

TensorData F32Tensor(std::vector<int64_t> shape, const std::vector<float>& values) {
  absl::StatusOr<TensorData> tensor = MakeF32(std::move(shape), values);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  return tensor.ok() ? *std::move(tensor) : TensorData{};
}

// Returns a tensor of `dtype` and `shape` whose data are the bytes of `elements`.
template <typename Element>
TensorData RawTensor(DType dtype, std::vector<int64_t> shape,
                     const std::vector<Element>& elements) {
  TensorData tensor;
  tensor.dtype = dtype;
  tensor.shape = std::move(shape);
  tensor.data.resize(elements.size() * sizeof(Element));
  std::memcpy(tensor.data.data(), elements.data(), tensor.data.size());
  return tensor;
}

// The tensors of `model.state_dict()` for the PyTorch twin of `model` with the values of `state`,
// as safetensors.torch.save_file writes them: F32 parameters and buffers, and an I64
// num_batches_tracked for the batch norm.
TensorFile TorchStateDict(const CompiledModel& model, const ModelState& state) {
  TensorFile file;
  for (const ParamInfo& p : model.params) {
    file.tensors[p.name] = F32Tensor(p.shape, Slice(state.params, p));
  }
  for (const ParamInfo& b : model.buffers) {
    file.tensors[b.name] = F32Tensor(b.shape, Slice(state.buffers, b));
  }
  file.tensors["bn1.num_batches_tracked"] = RawTensor<int64_t>(DType::kI64, {}, {1234});
  return file;
}

std::string TempPath(const std::string& name) {
  static const std::string directory = [] {
    std::string pattern = ::testing::TempDir() + "/kiln_checkpoint_XXXXXX";
    const char* created = mkdtemp(pattern.data());
    EXPECT_NE(created, nullptr) << "mkdtemp failed for " << pattern;
    return pattern;
  }();
  return directory + "/" + name;
}

// Writes a hand-made file. A saved checkpoint's checksum is dropped, as edited files and those
// of other programs have none.
std::string Write(const std::string& name, TensorFile file) {
  const std::string path = TempPath(name);
  file.metadata.erase("kiln.checksum");
  absl::Status written = WriteSafetensors(path, file);
  EXPECT_TRUE(written.ok()) << written;
  return path;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool Exists(const std::string& path) {
  struct stat info;
  return ::lstat(path.c_str(), &info) == 0;
}

bool StatesEqual(const ModelState& a, const ModelState& b) {
  return a.params == b.params && a.velocity == b.velocity && a.buffers == b.buffers;
}

// ---------------------------------------------------------------------------------------------
// SaveCheckpoint and LoadCheckpoint
// ---------------------------------------------------------------------------------------------

TEST(Checkpoint, RoundTripRestoresState) {
  const CompiledModel model = TinyModel();
  const ModelState saved = DistinctState(model, 1.0f);
  const std::string path = TempPath("round_trip.safetensors");
  ASSERT_TRUE(SaveCheckpoint(path, model, saved, {{"kiln.epoch", "3"}}).ok());

  ModelState loaded;  // Empty: LoadCheckpoint sizes it.
  absl::StatusOr<std::map<std::string, std::string>> metadata =
      LoadCheckpoint(path, model, loaded);
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  EXPECT_EQ(metadata->at("kiln.epoch"), "3");
  EXPECT_EQ(metadata->at("kiln.model"), "tiny");
  EXPECT_EQ(metadata->at("kiln.num_params"), absl::StrCat(model.num_params));
  EXPECT_EQ(loaded.params, saved.params);
  EXPECT_EQ(loaded.velocity, saved.velocity);
  EXPECT_EQ(loaded.buffers, saved.buffers);
}

TEST(Checkpoint, ChangedByteIsReportedAsCorruption) {
  const CompiledModel model = TinyModel();
  const std::string path = TempPath("corrupt.safetensors");
  ASSERT_TRUE(SaveCheckpoint(path, model, DistinctState(model, 1.0f), {}).ok());
  {
    // The last byte is tensor data; the header stays valid, so only the checksum catches it.
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(-1, std::ios::end);
    const char last = static_cast<char>(file.get());
    file.seekp(-1, std::ios::end);
    file.put(static_cast<char>(last ^ 0x10));
  }
  ModelState state = DistinctState(model, 5.0f);
  const ModelState before = state;
  absl::StatusOr<std::map<std::string, std::string>> loaded = LoadCheckpoint(path, model, state);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(),
              AllOf(HasSubstr("corrupt.safetensors' is corrupt"), HasSubstr("checksum (crc32:")));
  EXPECT_EQ(state.params, before.params);
}

TEST(Checkpoint, MalformedChecksumIsReportedAsCorruption) {
  const CompiledModel model = TinyModel();
  absl::StatusOr<TensorFile> file = [&] {
    const std::string saved = TempPath("checksum_source.safetensors");
    EXPECT_TRUE(SaveCheckpoint(saved, model, DistinctState(model, 1.0f), {}).ok());
    return ReadSafetensors(saved);
  }();
  ASSERT_TRUE(file.ok()) << file.status();
  file->metadata["kiln.checksum"] = "crc32:12345";
  const std::string path = TempPath("bad_checksum.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, *file).ok());
  ModelState state = DistinctState(model, 5.0f);
  absl::StatusOr<std::map<std::string, std::string>> loaded = LoadCheckpoint(path, model, state);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("its kiln.checksum 'crc32:12345' is not 'crc32:' and 8 hex digits"));
}

TEST(Checkpoint, SaveThroughSymlinkKeepsLinkAndMode) {
  const CompiledModel model = TinyModel();
  const std::string dir = TempPath("linked");
  std::filesystem::create_directories(dir + "/runs");
  const std::string target = dir + "/runs/run1.safetensors";
  const std::string link = dir + "/latest.safetensors";
  ASSERT_TRUE(SaveCheckpoint(target, model, DistinctState(model, 1.0f), {}).ok());
  ASSERT_EQ(::chmod(target.c_str(), 0640), 0);
  std::filesystem::create_symlink("runs/run1.safetensors", link);

  ASSERT_TRUE(SaveCheckpoint(link, model, DistinctState(model, 2.0f), {}).ok());
  EXPECT_TRUE(std::filesystem::is_symlink(link)) << "the save replaced the link with a file";
  struct stat info;
  ASSERT_EQ(::stat(target.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0640u);
  ModelState loaded;
  ASSERT_TRUE(LoadCheckpoint(target, model, loaded).ok());
  EXPECT_EQ(loaded.params, DistinctState(model, 2.0f).params);
}

TEST(Checkpoint, NonFiniteValueIsAnError) {
  const CompiledModel model = TinyModel();
  ModelState saved = DistinctState(model, 1.0f);
  saved.params[model.params[3].offset + 2] = std::numeric_limits<float>::quiet_NaN();
  const std::string path = TempPath("nan.safetensors");
  ASSERT_TRUE(SaveCheckpoint(path, model, saved, {}).ok());
  ModelState state = DistinctState(model, 5.0f);
  const ModelState before = state;
  absl::StatusOr<std::map<std::string, std::string>> loaded = LoadCheckpoint(path, model, state);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("has a NaN in tensor 'fc.weight' (element 2); parameters must be finite"));
  EXPECT_EQ(state.params, before.params);
}

// A process killed (SIGKILL) at random moments while it saves checkpoints over and over: after
// every kill the file at the path is a complete checkpoint, one of those saved.
TEST(Checkpoint, SigkillDuringSavesLeavesLastCompleteOne) {
  const CompiledModel model = TinyModel();
  const std::string dir = TempPath("sigkill");
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/run.safetensors";
  ASSERT_TRUE(SaveCheckpoint(path, model, DistinctState(model, 0.0f), {{"kiln.epoch", "0"}}).ok());
  std::mt19937 random(7);
  int interrupted = 0;  // Kills that left a temporary file: the save was under way.
  int last_epoch = 0;
  for (int kill = 0; kill < 100; ++kill) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      for (int epoch = last_epoch + 1;; ++epoch) {
        const ModelState state = DistinctState(model, static_cast<float>(epoch));
        if (!SaveCheckpoint(path, model, state, {{"kiln.epoch", absl::StrCat(epoch)}}).ok()) {
          _exit(1);
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 20000));
    ::kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the saving process failed on its own";

    ModelState loaded;
    absl::StatusOr<std::map<std::string, std::string>> metadata =
        LoadCheckpoint(path, model, loaded);
    ASSERT_TRUE(metadata.ok()) << "after kill " << kill << ": " << metadata.status();
    const int epoch = std::stoi(metadata->at("kiln.epoch"));
    EXPECT_GE(epoch, last_epoch);
    const ModelState expected = DistinctState(model, static_cast<float>(epoch));
    ASSERT_EQ(loaded.params, expected.params) << "after kill " << kill;
    ASSERT_EQ(loaded.velocity, expected.velocity);
    ASSERT_EQ(loaded.buffers, expected.buffers);
    last_epoch = epoch;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      if (entry.path() == path) continue;
      ++interrupted;
      std::filesystem::remove(entry.path());
    }
  }
  // Most kills land inside a save (its fsync takes most of the time), or the test proves little.
  EXPECT_GE(interrupted, 20);
  std::printf("100 kills, %d during a save, %d checkpoints saved\n", interrupted, last_epoch);
}

// A save removes the temporary files of saves killed before their rename, and only those.
TEST(Checkpoint, SaveRemovesTemporariesOfDeadProcesses) {
  const CompiledModel model = TinyModel();
  const std::string dir = TempPath("stale");
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/run.safetensors";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  ASSERT_EQ(waitpid(child, nullptr, 0), child);  // Its pid now names no process.
  const std::string dead = absl::StrCat(path, ".tmp-", child, "-0");
  const std::string alive = absl::StrCat(path, ".tmp-", getppid(), "-0");
  for (const std::string& file : {dead, alive}) std::ofstream(file) << "partial";
  ASSERT_TRUE(SaveCheckpoint(path, model, DistinctState(model, 1.0f), {}).ok());
  EXPECT_FALSE(std::filesystem::exists(dead));
  EXPECT_TRUE(std::filesystem::exists(alive));
}

// A write that fails part way (here the file size limit, as a full disk would with ENOSPC) is an
// error naming the file, and leaves the earlier checkpoint and no temporary file.
TEST(Checkpoint, FailedWriteKeepsEarlierCheckpoint) {
  const CompiledModel model = TinyModel();
  const std::string dir = TempPath("full");
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/run.safetensors";
  ASSERT_TRUE(SaveCheckpoint(path, model, DistinctState(model, 1.0f), {}).ok());
  const std::string before = ReadBytes(path);

  // The child saves under a 256-byte file size limit and reports the message through a pipe.
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG instead of killing the process.
    const rlimit limit = {256, 256};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    const absl::Status s = SaveCheckpoint(path, model, DistinctState(model, 2.0f), {});
    const std::string message(s.message());
    (void)!::write(pipe_fds[1], message.data(), message.size());
    _exit(s.ok() ? 0 : 1);
  }
  ::close(pipe_fds[1]);

  std::string message;
  char buffer[512];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof(buffer))) > 0;) message.append(buffer, n);
  ::close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_THAT(message, AllOf(HasSubstr("for '" + path + "': File too large"),
                             HasSubstr("was not changed; check free disk space")));
  EXPECT_EQ(ReadBytes(path), before);
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) files += !entry.is_directory();
  EXPECT_EQ(files, 1);
}

TEST(Checkpoint, SaveUsesStateDictNames) {
  const CompiledModel model = TinyModel();
  const ModelState state = DistinctState(model, 2.0f);
  const std::string path = TempPath("names.safetensors");
  ASSERT_TRUE(SaveCheckpoint(path, model, state, {{"kiln.model", "overridden"}}).ok());

  absl::StatusOr<TensorFile> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::string> names;
  for (const auto& entry : file->tensors) names.push_back(entry.first);
  EXPECT_THAT(names, ElementsAre("bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.weight",
                                 "conv1.weight", "fc.bias", "fc.weight",
                                 "momentum_buffer.bn1.bias", "momentum_buffer.bn1.weight",
                                 "momentum_buffer.conv1.weight", "momentum_buffer.fc.bias",
                                 "momentum_buffer.fc.weight"));
  EXPECT_EQ(file->metadata.at("kiln.model"), "tiny") << "the model name overrides the caller's";

  const ParamInfo& fc = model.params[3];
  const TensorData& weight = file->tensors.at("fc.weight");
  EXPECT_EQ(weight.dtype, DType::kF32);
  EXPECT_EQ(weight.shape, fc.shape);
  EXPECT_EQ(std::vector<float>(weight.f32(), weight.f32() + fc.numel), Slice(state.params, fc));
  const TensorData& momentum = file->tensors.at("momentum_buffer.fc.weight");
  EXPECT_EQ(std::vector<float>(momentum.f32(), momentum.f32() + fc.numel),
            Slice(state.velocity, fc));
  const ParamInfo& var = model.buffers[1];
  const TensorData& running_var = file->tensors.at("bn1.running_var");
  EXPECT_EQ(running_var.shape, var.shape);
  EXPECT_EQ(std::vector<float>(running_var.f32(), running_var.f32() + var.numel),
            Slice(state.buffers, var));
}

TEST(Checkpoint, SaveRejectsWrongStateSize) {
  const CompiledModel model = TinyModel();
  ModelState state = DistinctState(model, 1.0f);
  state.velocity.pop_back();
  const std::string path = TempPath("wrong_size.safetensors");

  absl::Status saved = SaveCheckpoint(path, model, state, {});
  EXPECT_EQ(saved.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(saved.message(),
              AllOf(HasSubstr("'tiny'"), HasSubstr(absl::StrCat(model.num_params - 1, " momentum")),
                    HasSubstr(absl::StrCat("has ", model.num_params))));
  EXPECT_FALSE(Exists(path));
}

TEST(Checkpoint, SaveRejectsInconsistentLayout) {
  CompiledModel model = TinyModel();
  model.buffers[1].numel = 4;  // Contradicts the shape [2] and runs past the 4 buffer values.
  const std::string path = TempPath("bad_layout.safetensors");

  absl::Status saved = SaveCheckpoint(path, model, ZeroState(model), {});
  EXPECT_EQ(saved.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(saved.message(), AllOf(HasSubstr("buffer 'bn1.running_var'"), HasSubstr("numel 4"),
                                     HasSubstr("regenerate")));
  EXPECT_FALSE(Exists(path));
}

TEST(Checkpoint, SaveRejectsRepeatedName) {
  CompiledModel model = TinyModel();
  model.buffers[0].name = "bn1.weight";  // Collides with a parameter.
  const std::string path = TempPath("repeated.safetensors");

  absl::Status saved = SaveCheckpoint(path, model, ZeroState(model), {});
  EXPECT_EQ(saved.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(saved.message(), HasSubstr("two tensors are named 'bn1.weight'"));
  EXPECT_FALSE(Exists(path));
}

TEST(Checkpoint, LoadKeepsStorageOfSizedState) {
  const CompiledModel model = TinyModel();
  const ModelState saved = DistinctState(model, 1.0f);
  const std::string path = TempPath("storage.safetensors");
  ASSERT_TRUE(SaveCheckpoint(path, model, saved, {}).ok());

  ModelState state = ZeroState(model);
  const float* params = state.params.data();
  const float* velocity = state.velocity.data();
  const float* buffers = state.buffers.data();
  ASSERT_TRUE(LoadCheckpoint(path, model, state).ok());
  EXPECT_EQ(state.params.data(), params);
  EXPECT_EQ(state.velocity.data(), velocity);
  EXPECT_EQ(state.buffers.data(), buffers);
  EXPECT_TRUE(StatesEqual(state, saved));
}

TEST(Checkpoint, LoadWithoutMomentumZeroesVelocity) {
  const CompiledModel model = TinyModel();
  const ModelState saved = DistinctState(model, 3.0f);
  TensorFile file = TorchStateDict(model, saved);
  file.tensors.erase("bn1.num_batches_tracked");
  const std::string path = Write("no_momentum.safetensors", file);

  ModelState loaded = DistinctState(model, 7.0f);
  absl::StatusOr<std::map<std::string, std::string>> metadata =
      LoadCheckpoint(path, model, loaded);
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  EXPECT_EQ(loaded.params, saved.params);
  EXPECT_EQ(loaded.buffers, saved.buffers);
  EXPECT_EQ(loaded.velocity, FloatArray(model.num_params, 0.0f));
}

TEST(Checkpoint, LoadListsEveryDifference) {
  const CompiledModel model = TinyModel();
  const std::string good = TempPath("good.safetensors");
  ASSERT_TRUE(SaveCheckpoint(good, model, DistinctState(model, 1.0f), {}).ok());
  absl::StatusOr<TensorFile> file = ReadSafetensors(good);
  ASSERT_TRUE(file.ok()) << file.status();
  file->tensors.erase("fc.bias");
  file->tensors.erase("bn1.running_var");
  file->tensors["fc.weight"] = F32Tensor({5, 8}, std::vector<float>(40, 0.0f));
  file->tensors["momentum_buffer.bn1.bias"] = F32Tensor({3}, {0, 0, 0});
  file->tensors["bn1.weight"] = RawTensor<int32_t>(DType::kI32, {2}, {1, 1});
  file->tensors["extra.weight"] = F32Tensor({2}, {0, 0});
  const std::string path = Write("differences.safetensors", *file);

  ModelState state = DistinctState(model, 5.0f);
  const ModelState before = state;
  absl::StatusOr<std::map<std::string, std::string>> loaded = LoadCheckpoint(path, model, state);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(loaded.status().message());
  EXPECT_THAT(message, HasSubstr(absl::StrCat("checkpoint '", path,
                                              "' does not match model 'tiny' (6 differences)")));
  EXPECT_THAT(message, HasSubstr("tensor 'fc.bias' is missing (expected shape [3])"));
  EXPECT_THAT(message, HasSubstr("tensor 'bn1.running_var' is missing (expected shape [2])"));
  EXPECT_THAT(message, HasSubstr("tensor 'fc.weight' has shape [5, 8], expected [3, 8]"));
  EXPECT_THAT(message,
              HasSubstr("tensor 'momentum_buffer.bn1.bias' has shape [3], expected [2]"));
  EXPECT_THAT(message, HasSubstr("tensor 'bn1.weight' has dtype I32, expected F32"));
  EXPECT_THAT(message,
              HasSubstr("tensor 'extra.weight' is not a parameter or buffer of model 'tiny'"));
  EXPECT_THAT(message, HasSubstr("kiln import-weights"));
  EXPECT_TRUE(StatesEqual(state, before)) << "a failed load must not change the state";
}

TEST(Checkpoint, SaveThroughDanglingOrLoopingLink) {
  const CompiledModel model = TinyModel();
  const std::string dir = TempPath("dangling");
  std::filesystem::create_directories(dir);
  // A link to a file not written yet: the save creates that file and the link stays.
  std::filesystem::create_symlink("later.safetensors", dir + "/latest.safetensors");
  ASSERT_TRUE(SaveCheckpoint(dir + "/latest.safetensors", model, DistinctState(model, 1.0f), {})
                  .ok());
  EXPECT_TRUE(std::filesystem::is_symlink(dir + "/latest.safetensors"));
  EXPECT_TRUE(std::filesystem::is_regular_file(dir + "/later.safetensors"));

  // A link to itself cannot be saved through; it stays as it was.
  const std::string loop = dir + "/loop.safetensors";
  std::filesystem::create_symlink("loop.safetensors", loop);
  absl::Status saved = SaveCheckpoint(loop, model, DistinctState(model, 1.0f), {});
  EXPECT_THAT(saved.message(), HasSubstr("its symbolic links form a loop"));
  EXPECT_TRUE(std::filesystem::is_symlink(loop));
}

TEST(Checkpoint, LongDifferenceListIsCut) {
  const CompiledModel model = TinyModel();
  TensorFile file;
  for (int i = 0; i < 30; ++i) file.tensors[absl::StrCat("extra", i)] = F32Tensor({1}, {0});
  const std::string path = Write("many_differences.safetensors", file);
  ModelState state = DistinctState(model, 5.0f);
  absl::StatusOr<std::map<std::string, std::string>> loaded = LoadCheckpoint(path, model, state);
  ASSERT_FALSE(loaded.ok());
  const std::string message(loaded.status().message());
  const size_t listed = std::count(message.begin(), message.end(), '\n');
  EXPECT_LE(listed, 22u) << message;
  EXPECT_THAT(message, HasSubstr(" more"));
}

TEST(Checkpoint, LoadRejectsOtherModel) {
  const CompiledModel model = TinyModel();
  CompiledModel other = TinyModel();
  other.name = "resnet18";
  const std::string path = TempPath("other_model.safetensors");
  ASSERT_TRUE(SaveCheckpoint(path, other, DistinctState(other, 1.0f), {}).ok());

  ModelState state = DistinctState(model, 5.0f);
  const ModelState before = state;
  absl::StatusOr<std::map<std::string, std::string>> loaded = LoadCheckpoint(path, model, state);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(),
              AllOf(HasSubstr(path), HasSubstr("(1 difference)"),
                    HasSubstr("the file is a checkpoint of model 'resnet18', not 'tiny'"),
                    HasSubstr("Use a checkpoint saved by model 'tiny'")));
  EXPECT_TRUE(StatesEqual(state, before));
}

TEST(Checkpoint, LoadRequiresBuffers) {
  // A checkpoint written before Kiln saved running statistics has only parameters and momentum.
  const CompiledModel model = TinyModel();
  const std::string path = TempPath("no_buffers.safetensors");
  ASSERT_TRUE(SaveCheckpoint(path, model, DistinctState(model, 1.0f), {}).ok());
  absl::StatusOr<TensorFile> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  file->tensors.erase("bn1.running_mean");
  file->tensors.erase("bn1.running_var");
  file->metadata.erase("kiln.checksum");  // Nor checksums.
  ASSERT_TRUE(WriteSafetensors(path, *file).ok());

  ModelState state = DistinctState(model, 5.0f);
  const ModelState before = state;
  absl::StatusOr<std::map<std::string, std::string>> loaded = LoadCheckpoint(path, model, state);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(),
              AllOf(HasSubstr("'bn1.running_mean' is missing"),
                    HasSubstr("'bn1.running_var' is missing")));
  EXPECT_TRUE(StatesEqual(state, before));
}

TEST(Checkpoint, LoadTruncatedFileKeepsState) {
  const CompiledModel model = TinyModel();
  const std::string path = TempPath("truncated.safetensors");
  ASSERT_TRUE(SaveCheckpoint(path, model, DistinctState(model, 1.0f), {}).ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 16);

  ModelState state = DistinctState(model, 5.0f);
  const ModelState before = state;
  absl::StatusOr<std::map<std::string, std::string>> loaded = LoadCheckpoint(path, model, state);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(), AllOf(HasSubstr(path), HasSubstr("truncated")));
  EXPECT_TRUE(StatesEqual(state, before));
}

TEST(Checkpoint, LoadMissingFileNamesPath) {
  const CompiledModel model = TinyModel();
  const std::string path = TempPath("does_not_exist.safetensors");
  ModelState state;
  absl::StatusOr<std::map<std::string, std::string>> loaded = LoadCheckpoint(path, model, state);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(loaded.status().message(), HasSubstr(path));
  EXPECT_TRUE(state.params.empty());
}

// ---------------------------------------------------------------------------------------------
// ImportTorchStateDict
// ---------------------------------------------------------------------------------------------

TEST(Import, StateDictWithBatchCounter) {
  const CompiledModel model = TinyModel();
  const ModelState source = DistinctState(model, 4.0f);
  const std::string path = Write("state_dict.safetensors", TorchStateDict(model, source));

  ImportSummary summary;
  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model, &summary);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->params, source.params);
  EXPECT_EQ(imported->buffers, source.buffers);
  EXPECT_EQ(imported->velocity, FloatArray(model.num_params, 0.0f));
  EXPECT_EQ(summary.num_tensors, 7);
  EXPECT_EQ(summary.num_ignored, 1);
  EXPECT_TRUE(summary.converted_dtypes.empty());
  EXPECT_TRUE(summary.removed_prefixes.empty());
}

TEST(Import, ConvertsF64F16AndBF16) {
  const CompiledModel model = TinyModel();
  const ModelState source = DistinctState(model, 1.0f);
  TensorFile file = TorchStateDict(model, source);

  // F64 rounds to the nearest float, and an underflow becomes zero.
  file.tensors["bn1.weight"] = RawTensor<double>(DType::kF64, {2}, {0.1, 1e-50});
  // F16: 1, -2, the smallest subnormal 2^-24 and the smallest normal 2^-14 are exact in float.
  file.tensors["bn1.running_mean"] = RawTensor<uint16_t>(DType::kF16, {2}, {0x3c00, 0xc000});
  file.tensors["bn1.running_var"] = RawTensor<uint16_t>(DType::kF16, {2}, {0x0001, 0x0400});
  // BF16: the upper 16 bits of the floats 1 and -3.
  file.tensors["fc.bias"] = RawTensor<uint16_t>(DType::kBF16, {3}, {0x3f80, 0xc040, 0x8000});
  const std::string path = Write("converted.safetensors", file);

  ImportSummary summary;
  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model, &summary);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_THAT(Slice(imported->params, model.params[1]), ElementsAre(0.1f, 0.0f));
  EXPECT_THAT(Slice(imported->buffers, model.buffers[0]), ElementsAre(1.0f, -2.0f));
  EXPECT_THAT(Slice(imported->buffers, model.buffers[1]),
              ElementsAre(std::ldexp(1.0f, -24), std::ldexp(1.0f, -14)));
  const std::vector<float> bias = Slice(imported->params, model.params[4]);
  EXPECT_THAT(bias, ElementsAre(1.0f, -3.0f, 0.0f));
  EXPECT_TRUE(std::signbit(bias[2])) << "BF16 0x8000 is -0";
  EXPECT_EQ(Slice(imported->params, model.params[0]), Slice(source.params, model.params[0]));
  EXPECT_THAT(summary.converted_dtypes, ElementsAre("BF16", "F16", "F64"));
}

TEST(Import, ConvertsF16SpecialValues) {
  const CompiledModel model = TinyModel();
  TensorFile file = TorchStateDict(model, DistinctState(model, 1.0f));
  // 65504 (the largest F16), 1/3 rounded to F16, -0 and 1.
  file.tensors["bn1.running_mean"] = RawTensor<uint16_t>(DType::kF16, {2}, {0x7bff, 0x3555});
  file.tensors["bn1.running_var"] = RawTensor<uint16_t>(DType::kF16, {2}, {0x8000, 0x3c00});
  const std::string path = Write("f16_special.safetensors", file);

  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_THAT(Slice(imported->buffers, model.buffers[0]), ElementsAre(65504.0f, 0.333251953125f));
  const std::vector<float> var = Slice(imported->buffers, model.buffers[1]);
  EXPECT_EQ(var[0], 0.0f);
  EXPECT_TRUE(std::signbit(var[0]));
  EXPECT_EQ(var[1], 1.0f);
}

// F16 NaN and infinity convert to float exactly, but parameters must be finite.
TEST(Import, RejectsNanAndInfinity) {
  const CompiledModel model = TinyModel();
  for (uint16_t special : {uint16_t{0x7e00}, uint16_t{0x7c00}}) {
    TensorFile file = TorchStateDict(model, DistinctState(model, 1.0f));
    file.tensors["bn1.running_var"] = RawTensor<uint16_t>(DType::kF16, {2}, {0x3c00, special});
    const std::string path = Write("f16_nonfinite.safetensors", file);
    absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model);
    ASSERT_FALSE(imported.ok());
    EXPECT_THAT(imported.status().message(),
                AllOf(HasSubstr("PyTorch state_dict '" + path + "' has"),
                      HasSubstr(special == 0x7e00 ? "a NaN" : "an infinite value"),
                      HasSubstr("in tensor 'bn1.running_var' (element 1)")));
  }
}

TEST(Import, RejectsF64BeyondFloatRange) {
  const CompiledModel model = TinyModel();
  TensorFile file = TorchStateDict(model, DistinctState(model, 1.0f));
  file.tensors["bn1.bias"] = RawTensor<double>(DType::kF64, {2}, {1e300, -1e39});
  const std::string path = Write("f64_range.safetensors", file);

  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model);
  ASSERT_FALSE(imported.ok());
  EXPECT_EQ(imported.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(imported.status().message(),
              AllOf(HasSubstr(path),
                    HasSubstr("tensor 'bn1.bias' has 2 F64 values beyond the float32 range")));
}

TEST(Import, ListsEveryDifference) {
  const CompiledModel model = TinyModel();
  TensorFile file = TorchStateDict(model, DistinctState(model, 1.0f));
  file.tensors.erase("conv1.weight");
  file.tensors.erase("bn1.running_var");
  file.tensors["bn1.weight"] = F32Tensor({4}, {1, 1, 1, 1});
  file.tensors["bn1.bias"] = RawTensor<int64_t>(DType::kI64, {2}, {0, 0});
  file.tensors["bn2.weight"] = F32Tensor({2}, {1, 1});
  const std::string path = Write("import_differences.safetensors", file);

  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model);
  ASSERT_FALSE(imported.ok());
  EXPECT_EQ(imported.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(imported.status().message());
  EXPECT_THAT(message, HasSubstr(absl::StrCat("cannot import PyTorch weights from '", path,
                                              "': the state_dict does not match model 'tiny' "
                                              "(5 differences)")));
  EXPECT_THAT(message, HasSubstr("tensor 'conv1.weight' is missing (expected shape [2, 1, 3, 3])"));
  EXPECT_THAT(message, HasSubstr("tensor 'bn1.running_var' is missing (expected shape [2])"));
  EXPECT_THAT(message, HasSubstr("tensor 'bn1.weight' has shape [4], expected [2]"));
  EXPECT_THAT(message,
              HasSubstr("tensor 'bn1.bias' has dtype I64, expected F32, F64, F16 or BF16"));
  EXPECT_THAT(message,
              HasSubstr("tensor 'bn2.weight' is not a parameter or buffer of model 'tiny'"));
  EXPECT_THAT(message, Not(HasSubstr("num_batches_tracked")));
  EXPECT_THAT(message, AllOf(HasSubstr("safetensors.torch.save_file(model.state_dict(), path)"),
                             HasSubstr("kiln summary --model tiny")));
}

TEST(Import, RemovesDataParallelPrefix) {
  const CompiledModel model = TinyModel();
  const ModelState source = DistinctState(model, 2.0f);
  TensorFile wrapped;
  for (auto& [name, tensor] : TorchStateDict(model, source).tensors) {
    wrapped.tensors["module." + name] = tensor;
  }
  const std::string path = Write("data_parallel.safetensors", wrapped);

  ImportSummary summary;
  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model, &summary);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->params, source.params);
  EXPECT_EQ(imported->buffers, source.buffers);
  EXPECT_THAT(summary.removed_prefixes, ElementsAre("module."));
  EXPECT_EQ(summary.num_ignored, 1);
}

TEST(Import, RemovesNestedWrapperPrefixes) {
  const CompiledModel model = TinyModel();
  const ModelState source = DistinctState(model, 2.0f);
  TensorFile wrapped;
  for (auto& [name, tensor] : TorchStateDict(model, source).tensors) {
    wrapped.tensors["_orig_mod.module." + name] = tensor;
  }
  const std::string path = Write("compiled_data_parallel.safetensors", wrapped);

  ImportSummary summary;
  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model, &summary);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->params, source.params);
  EXPECT_THAT(summary.removed_prefixes, ElementsAre("_orig_mod.", "module."));
}

TEST(Import, MixedPrefixIsRejectedWithHint) {
  const CompiledModel model = TinyModel();
  TensorFile file = TorchStateDict(model, DistinctState(model, 2.0f));
  file.tensors["module.fc.weight"] = file.tensors.at("fc.weight");
  file.tensors["module.fc.bias"] = file.tensors.at("fc.bias");
  file.tensors.erase("fc.weight");
  file.tensors.erase("fc.bias");
  const std::string path = Write("mixed_prefix.safetensors", file);

  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model);
  ASSERT_FALSE(imported.ok());
  EXPECT_THAT(imported.status().message(),
              AllOf(HasSubstr("tensor 'fc.weight' is missing"),
                    HasSubstr("tensor 'module.fc.weight' is not a parameter or buffer"),
                    HasSubstr("Hint: the file has 2 tensors of model 'tiny' under the prefix "
                              "'module.' (such as 'module.fc.bias')"),
                    HasSubstr("mixes names with and without it")));
}

TEST(Import, NestedModuleHint) {
  // A state_dict saved from a wrapper such as a Lightning module, whose model is `self.net`.
  const CompiledModel model = TinyModel();
  TensorFile wrapped;
  for (auto& [name, tensor] : TorchStateDict(model, DistinctState(model, 2.0f)).tensors) {
    wrapped.tensors["net." + name] = tensor;
  }
  const std::string path = Write("nested.safetensors", wrapped);

  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model);
  ASSERT_FALSE(imported.ok());
  EXPECT_THAT(imported.status().message(),
              AllOf(HasSubstr("Hint: the file has 7 tensors of model 'tiny' under the prefix "
                              "'net.'"),
                    HasSubstr("save the state_dict of the inner module"),
                    Not(HasSubstr("another architecture"))));
}

TEST(Import, OtherArchitectureHint) {
  const CompiledModel model = TinyModel();
  TensorFile alexnet;
  alexnet.tensors["features.0.weight"] = F32Tensor({2, 1, 3, 3}, std::vector<float>(18, 0.0f));
  alexnet.tensors["features.0.bias"] = F32Tensor({2}, {0, 0});
  alexnet.tensors["classifier.1.weight"] = F32Tensor({3, 8}, std::vector<float>(24, 0.0f));
  alexnet.tensors["classifier.1.bias"] = F32Tensor({3}, {0, 0, 0});
  const std::string path = Write("alexnet.safetensors", alexnet);

  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model);
  ASSERT_FALSE(imported.ok());
  EXPECT_THAT(imported.status().message(),
              AllOf(HasSubstr("(11 differences)"),
                    HasSubstr("Hint: only 0 of the 7 tensors of model 'tiny' are in the file, so "
                              "it is probably the state_dict of another architecture"),
                    HasSubstr("top-level modules are classifier, features, but model 'tiny' has "
                              "conv1, bn1, fc")));
}

TEST(Import, FinalLayerHint) {
  const CompiledModel model = TinyModel();
  TensorFile file = TorchStateDict(model, DistinctState(model, 2.0f));
  file.tensors["fc.weight"] = F32Tensor({1000, 8}, std::vector<float>(8000, 0.0f));
  file.tensors["fc.bias"] = F32Tensor({1000}, std::vector<float>(1000, 0.0f));
  const std::string path = Write("imagenet_head.safetensors", file);

  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model);
  ASSERT_FALSE(imported.ok());
  EXPECT_THAT(imported.status().message(),
              AllOf(HasSubstr("tensor 'fc.weight' has shape [1000, 8], expected [3, 8]"),
                    HasSubstr("Hint: only the final layer 'fc' differs"),
                    HasSubstr("it has 1000 outputs and model 'tiny' has 3"),
                    HasSubstr("Compile the Kiln model with 1000 classes")));
}

TEST(Import, KilnCheckpointHint) {
  const CompiledModel model = TinyModel();
  const std::string path = TempPath("already_kiln.safetensors");
  ASSERT_TRUE(SaveCheckpoint(path, model, DistinctState(model, 1.0f), {}).ok());

  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model);
  ASSERT_FALSE(imported.ok());
  EXPECT_THAT(imported.status().message(),
              AllOf(HasSubstr("'momentum_buffer.fc.weight' is not a parameter or buffer"),
                    HasSubstr("Hint: the file is already a Kiln checkpoint (of model 'tiny')"),
                    Not(HasSubstr("under the prefix"))));
}

TEST(Import, TruncatedFile) {
  const CompiledModel model = TinyModel();
  const std::string path = Write("truncated_state_dict.safetensors",
                                 TorchStateDict(model, DistinctState(model, 1.0f)));
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);

  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, model);
  ASSERT_FALSE(imported.ok());
  EXPECT_EQ(imported.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(imported.status().message(),
              AllOf(HasSubstr("cannot import PyTorch weights"), HasSubstr(path),
                    HasSubstr("truncated")));
}

TEST(Import, UnsupportedFileDtype) {
  // I8 is a safetensors dtype that Kiln cannot read at all, so the file is written by hand.
  const std::string header = R"({"fc.bias":{"dtype":"I8","shape":[3],"data_offsets":[0,3]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  bytes += header + std::string(3, '\1');
  const std::string path = TempPath("int8.safetensors");
  std::ofstream(path, std::ios::binary) << bytes;

  absl::StatusOr<ModelState> imported = ImportTorchStateDict(path, TinyModel());
  ASSERT_FALSE(imported.ok());
  EXPECT_EQ(imported.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(imported.status().message(),
              AllOf(HasSubstr("cannot import PyTorch weights"), HasSubstr(path),
                    HasSubstr("tensor 'fc.bias'"), HasSubstr("dtype 'I8'")));
}

// ---------------------------------------------------------------------------------------------
// ImportWeightsCommand
// ---------------------------------------------------------------------------------------------

// Runs ImportWeightsCommand with its log captured.
absl::Status RunImport(const CompiledModel& model, const std::string& from,
                       const std::string& output, std::string* log) {
  std::FILE* file = std::tmpfile();
  EXPECT_NE(file, nullptr);
  absl::Status status = ImportWeightsCommand(model, from, output, file);
  std::rewind(file);
  log->clear();
  for (int c = std::fgetc(file); c != EOF; c = std::fgetc(file)) {
    log->push_back(static_cast<char>(c));
  }
  std::fclose(file);
  return status;
}

TEST(ImportCommand, WritesLoadableCheckpoint) {
  const CompiledModel model = TinyModel();
  const ModelState source = DistinctState(model, 6.0f);
  TensorFile file = TorchStateDict(model, source);
  file.tensors["bn1.running_var"] = RawTensor<double>(DType::kF64, {2}, {0.5, 2.0});
  const std::string from = Write("command_from.safetensors", file);
  const std::string output = TempPath("command_output.safetensors");

  std::string log;
  absl::Status status = RunImport(model, from, output, &log);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(log, absl::StrCat("kiln: imported 7 tensors of model 'tiny' from '", from,
                              "' (F64 converted to F32; 1 num_batches_tracked tensor ignored) "
                              "into '", output, "'\n"));

  ModelState loaded;
  absl::StatusOr<std::map<std::string, std::string>> metadata =
      LoadCheckpoint(output, model, loaded);
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  EXPECT_EQ(metadata->at("kiln.imported_from"), from);
  EXPECT_EQ(metadata->at("kiln.model"), "tiny");
  EXPECT_EQ(loaded.params, source.params);
  EXPECT_THAT(Slice(loaded.buffers, model.buffers[1]), ElementsAre(0.5f, 2.0f));
  EXPECT_EQ(loaded.velocity, FloatArray(model.num_params, 0.0f));
}

TEST(ImportCommand, RefusesExistingOutput) {
  const CompiledModel model = TinyModel();
  const std::string from =
      Write("command_from2.safetensors", TorchStateDict(model, DistinctState(model, 1.0f)));
  const std::string output = TempPath("existing_output.safetensors");
  std::ofstream(output) << "keep me";

  std::string log;
  absl::Status status = RunImport(model, from, output, &log);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(output), HasSubstr("already exists"),
                                      HasSubstr("never overwrites")));
  EXPECT_EQ(ReadBytes(output), "keep me");
  EXPECT_TRUE(log.empty());
}

TEST(ImportCommand, MissingOutputDirectoryFailsFirst) {
  // The source does not exist either: the output is checked before any import work.
  const std::string output = TempPath("no_such_directory/out.safetensors");
  std::string log;
  absl::Status status =
      RunImport(TinyModel(), TempPath("no_such_source.safetensors"), output, &log);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(output), HasSubstr("not an existing directory")));
}

TEST(ImportCommand, MismatchWritesNothing) {
  const CompiledModel model = TinyModel();
  TensorFile file = TorchStateDict(model, DistinctState(model, 1.0f));
  file.tensors.erase("fc.bias");
  const std::string from = Write("command_mismatch.safetensors", file);
  const std::string output = TempPath("command_mismatch_output.safetensors");

  std::string log;
  absl::Status status = RunImport(model, from, output, &log);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(from), HasSubstr("'fc.bias' is missing")));
  EXPECT_FALSE(Exists(output));
  EXPECT_TRUE(log.empty());
}

}  // namespace
}  // namespace kiln
