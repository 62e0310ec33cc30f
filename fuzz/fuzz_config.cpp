// The text options a user writes (augmentation specs, class lists, optimizer settings:
// runtime/augment.h, runtime/idx.h, runtime/hyperparameters.h) and the hyperparameters a
// checkpoint records, which kiln train --resume reads back.
#include <map>
#include <string>
#include <string_view>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "runtime/augment.h"
#include "runtime/hyperparameters.h"
#include "runtime/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view spec(reinterpret_cast<const char*>(data), size);
  (void)kiln::ParseAugmentation(spec, 1, 28, 28);
  (void)kiln::ParseAugmentation(spec, 3, 32, 32);
  (void)kiln::ParseClassList(std::string(spec));
  // Debian's Abseil has its own string_view.
  const absl::string_view text(spec.data(), spec.size());
  (void)kiln::ParseLrMultipliers(text);
  (void)kiln::ParseOptimizer(text);
  (void)kiln::ParseLrSchedule(text);

  // The same bytes as checkpoint metadata: one "key=value" per line, "kiln." before each key.
  std::map<std::string, std::string> metadata;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::pair<std::string, std::string> entry = absl::StrSplit(line, absl::MaxSplits('=', 1));
    metadata["kiln." + entry.first] = entry.second;
  }
  for (int epochs : {1, 10}) {
    kiln::OptimizerOptions optimizer;
    kiln::LrSchedule schedule;
    std::string invalid_key;
    (void)kiln::ReadHyperparameterMetadata(metadata, {"lr"}, epochs, optimizer, schedule,
                                           &invalid_key);
    (void)kiln::ReadHyperparameterMetadata(metadata, {}, epochs, optimizer, schedule);
  }
  return 0;
}
