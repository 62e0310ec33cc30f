// Kiln checkpoints and PyTorch state_dicts for a small model (runtime/checkpoint.h,
// runtime/import_weights.h): loading, transfer loading and import.
#include "fuzz/fuzz_input.h"
#include "runtime/checkpoint.h"
#include "runtime/import_weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const kiln::CompiledModel& model = kiln::fuzz::SmallModel();
  const std::string path = kiln::fuzz::WriteInput(data, size, ".safetensors");
  kiln::ModelState state = kiln::ZeroState(model);
  absl::StatusOr<std::map<std::string, std::string>> loaded =
      kiln::LoadCheckpoint(path, model, state);
  if (loaded.ok() && state.params.size() != static_cast<size_t>(model.num_params)) std::abort();
  kiln::ModelState pretrained = kiln::ZeroState(model);
  (void)kiln::LoadPretrained(path, model, pretrained);
  (void)kiln::ImportTorchStateDict(path, model);
  return 0;
}
