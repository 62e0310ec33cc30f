// IDX images and labels, plain or gzip-compressed (runtime/idx.h), one file at a time and as a
// dataset directory: an image file and a label file paired, then restricted as --classes,
// --train-per-class and --train-limit do.
#include <sys/stat.h>

#include "fuzz/fuzz_input.h"
#include "runtime/idx.h"

namespace {

// Writes `size` bytes to `path`.
void WriteFile(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, file) != size) std::abort();
  std::fclose(file);
}

// The first byte sets where the image file ends and the label file begins, as a fraction of
// the rest.
void LoadAsDataset(const uint8_t* data, size_t size) {
  if (size == 0) return;
  const size_t rest = size - 1;
  const size_t images_size = rest * data[0] / 255;
  // Removed when the process exits normally.
  struct Directory {
    std::string path = (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") +
                       std::string("/kiln_fuzz_dataset_") + std::to_string(getpid());
    Directory() { ::mkdir(path.c_str(), 0700); }
    ~Directory() {
      std::remove((path + "/train-images-idx3-ubyte").c_str());
      std::remove((path + "/train-labels-idx1-ubyte").c_str());
      ::rmdir(path.c_str());
    }
  };
  static const Directory directory;
  const std::string& dir = directory.path;
  WriteFile(dir + "/train-images-idx3-ubyte", data + 1, images_size);
  WriteFile(dir + "/train-labels-idx1-ubyte", data + 1 + images_size, rest - images_size);
  absl::StatusOr<kiln::Dataset> dataset = kiln::LoadIdxDataset(dir, "train");
  if (!dataset.ok()) return;
  const size_t pixels = static_cast<size_t>(dataset->count) * dataset->height * dataset->width;
  if (dataset->images.size() != pixels ||
      dataset->labels.size() != static_cast<size_t>(dataset->count)) {
    std::abort();  // A dataset that loads must hold what its headers promise.
  }
  (void)kiln::TakeFirst(*dataset, 2);
  (void)kiln::SelectClasses(*dataset, {1, 0}, 1);
  (void)kiln::SelectClasses(*dataset, {dataset->num_classes - 1}, 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kiln::fuzz::WriteInput(data, size, ".idx");
  absl::StatusOr<kiln::IdxImages> images = kiln::ReadIdxImages(path);
  if (images.ok() && images->pixels.size() !=
                         static_cast<size_t>(images->count) * images->rows * images->cols) {
    std::abort();  // A reader that accepts a file must return what its header promises.
  }
  absl::StatusOr<std::vector<uint8_t>> labels = kiln::ReadIdxLabels(path);
  (void)labels;
  LoadAsDataset(data, size);
  return 0;
}
