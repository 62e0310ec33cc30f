// safetensors files (runtime/safetensors.h): a file that reads writes back to the same tensors.
#include "fuzz/fuzz_input.h"
#include "runtime/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kiln::fuzz::WriteInput(data, size, ".safetensors");
  absl::StatusOr<kiln::TensorFile> file = kiln::ReadSafetensors(path);
  if (!file.ok()) return 0;
  const std::string copy = path + ".copy";
  if (!kiln::WriteSafetensors(copy, *file).ok()) return 0;
  absl::StatusOr<kiln::TensorFile> again = kiln::ReadSafetensors(copy);
  if (!again.ok() || again->tensors != file->tensors || again->metadata != file->metadata) {
    std::abort();
  }
  return 0;
}
