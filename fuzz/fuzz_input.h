// Shared by the fuzz targets: the fuzzer's bytes as a file (the readers take paths), and a small
// model description for the checkpoint readers.
#ifndef KILN_FUZZ_FUZZ_INPUT_H_
#define KILN_FUZZ_FUZZ_INPUT_H_

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <set>
#include <string>

#include "runtime/compiled_model.h"

namespace kiln::fuzz {

/// Writes `data` to a file of this process (in /dev/shm when it exists) with `suffix` as its
/// extension, and returns the path. The files are removed when the process exits normally.
inline std::string WriteInput(const uint8_t* data, size_t size, const std::string& suffix) {
  static const std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  // Removes the files at exit, with the copies fuzz_safetensors writes beside them.
  struct Files {
    std::set<std::string> paths;
    ~Files() {
      for (const std::string& p : paths) {
        std::remove(p.c_str());
        std::remove((p + ".copy").c_str());
      }
    }
  };
  static Files files;
  const std::string path =
      dir + "/kiln_fuzz_" + std::to_string(getpid()) + suffix;
  files.paths.insert(path);
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, file) != size) std::abort();
  std::fclose(file);
  return path;
}

inline void AddEntry(std::vector<ParamInfo>& infos, int64_t& size, const std::string& name,
                     std::vector<int64_t> shape) {
  ParamInfo p;
  p.name = name;
  p.shape = std::move(shape);
  p.numel = 1;
  for (int64_t d : p.shape) p.numel *= d;
  p.offset = size;
  size += p.numel;
  infos.push_back(p);
}

/// Returns a model description with a convolution without bias, a BatchNorm with running
/// statistics and a 3-class classifier: the kinds of tensors checkpoints contain. It has no
/// compiled functions, which loading does not need.
inline const CompiledModel& SmallModel() {
  static const CompiledModel* model = [] {
    auto* m = new CompiledModel;
    m->name = "small";
    AddEntry(m->params, m->num_params, "conv1.weight", {2, 1, 3, 3});
    AddEntry(m->params, m->num_params, "bn1.weight", {2});
    AddEntry(m->params, m->num_params, "bn1.bias", {2});
    AddEntry(m->params, m->num_params, "fc.weight", {3, 8});
    AddEntry(m->params, m->num_params, "fc.bias", {3});
    AddEntry(m->buffers, m->num_buffer_values, "bn1.running_mean", {2});
    AddEntry(m->buffers, m->num_buffer_values, "bn1.running_var", {2});
    return m;
  }();
  return *model;
}

}  // namespace kiln::fuzz

#endif  // KILN_FUZZ_FUZZ_INPUT_H_
