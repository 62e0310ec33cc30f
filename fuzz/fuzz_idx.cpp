// IDX images and labels, plain or gzip-compressed (runtime/idx.h).
#include "fuzz/fuzz_input.h"
#include "runtime/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kiln::fuzz::WriteInput(data, size, ".idx");
  absl::StatusOr<kiln::IdxImages> images = kiln::ReadIdxImages(path);
  if (images.ok() && images->pixels.size() !=
                         static_cast<size_t>(images->count) * images->rows * images->cols) {
    std::abort();  // A reader that accepts a file must return what its header promises.
  }
  absl::StatusOr<std::vector<uint8_t>> labels = kiln::ReadIdxLabels(path);
  (void)labels;
  return 0;
}
