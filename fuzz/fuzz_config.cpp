// The text options a user writes: augmentation specs and class lists (runtime/augment.h,
// runtime/idx.h).
#include <string_view>

#include "runtime/augment.h"
#include "runtime/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view spec(reinterpret_cast<const char*>(data), size);
  (void)kiln::ParseAugmentation(spec, 1, 28, 28);
  (void)kiln::ParseAugmentation(spec, 3, 32, 32);
  (void)kiln::ParseClassList(std::string(spec));
  return 0;
}
