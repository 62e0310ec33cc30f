// Helpers of the tests that train compiled models on real Fashion-MNIST: the splits (loaded once
// per test program), subsets, quiet training options and a temporary directory.
#ifndef KILN_TESTS_TRAINING_HELPERS_H_
#define KILN_TESTS_TRAINING_HELPERS_H_

#include <stdlib.h>

#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "gtest/gtest.h"
#include "runtime/idx.h"
#include "runtime/trainer.h"

namespace kiln::test {

/// Returns a split of the installed Fashion-MNIST ("train" or "t10k"), loaded on first use.
inline const Dataset& Split(const std::string& split) {
  static auto* cache = new std::map<std::string, Dataset>();
  auto it = cache->find(split);
  if (it == cache->end()) {
    absl::StatusOr<Dataset> d = LoadIdxDataset(kDefaultDataDir, split);
    EXPECT_TRUE(d.ok()) << d.status();
    it = cache->emplace(split, d.ok() ? *d : Dataset{}).first;
  }
  return it->second;
}

/// Returns the compiled model `name` linked into the test.
inline const CompiledModel& Compiled(const std::string& name) {
  const CompiledModel* model = FindCompiledModel(name);
  EXPECT_NE(model, nullptr) << name;
  return *model;
}

/// Returns the first `n` samples of `data`.
inline Dataset First(const Dataset& data, int64_t n) {
  absl::StatusOr<Dataset> subset = TakeFirst(data, n);
  EXPECT_TRUE(subset.ok()) << subset.status();
  return subset.ok() ? *subset : Dataset{};
}

/// Returns a path named `name` in a temporary directory made once per test program.
inline std::string TempPath(const std::string& name) {
  static const std::string dir = [] {
    std::string pattern = ::testing::TempDir() + "/kiln_training_XXXXXX";
    return std::string(mkdtemp(pattern.data()));
  }();
  return dir + "/" + name;
}

/// Returns options for `epochs` epochs that print nothing.
inline TrainOptions QuietOptions(int epochs) {
  TrainOptions options;
  options.epochs = epochs;
  options.log = nullptr;
  options.progress = nullptr;
  return options;
}

/// Returns the bytes of the file at `path` (empty when it cannot be read).
inline std::string FileBytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

}  // namespace kiln::test

#endif  // KILN_TESTS_TRAINING_HELPERS_H_
