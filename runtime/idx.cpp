#include "runtime/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "runtime/atomic_file.h"

namespace kiln {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;

// Bytes requested from zlib per gzread call while reading the data.
constexpr size_t kReadChunkBytes = size_t{1} << 20;

// Maximum bytes reserved before any data has been read. A corrupt header may declare terabytes,
// so beyond this size the buffer grows only as data arrives, and a short file then fails with a
// truncation error instead of an allocation failure. 64 MiB covers the largest Fashion-MNIST
// file (47,040,016 bytes of training images) with one allocation.
constexpr size_t kMaxReserveBytes = size_t{64} << 20;

// Maximum number of elements in one IDX file. This is an overflow guard, not a memory budget:
// LoadIdxDataset stores every element as a 4-byte float, and the byte count of that copy must
// fit in int64_t.
constexpr uint64_t kMaxElements = std::numeric_limits<int64_t>::max() / sizeof(float);

// The header and data of an IDX file with unsigned-byte elements.
struct IdxArray {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};

struct GzFileCloser {
  void operator()(gzFile file) const { gzclose(file); }
};
using GzFilePtr = std::unique_ptr<gzFile_s, GzFileCloser>;

// Sets *product to a * b and returns true, or returns false if the product exceeds `limit`.
bool MultiplyWithin(uint64_t a, uint64_t b, uint64_t limit, uint64_t* product) {
  if (a != 0 && b > limit / a) return false;
  *product = a * b;
  return true;
}

// Formats dimensions as "10000 x 28 x 28".
std::string FormatDims(const std::vector<uint32_t>& dims) { return absl::StrJoin(dims, " x "); }

uint32_t LoadBigEndian32(const uint8_t* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         uint32_t{bytes[3]};
}

// Names the kind of file that an IDX magic number denotes, for error messages.
std::string DescribeMagic(uint32_t magic) {
  if (magic == kImagesMagic) return "an IDX image file (unsigned bytes, 3 dimensions)";
  if (magic == kLabelsMagic) return "an IDX label file (unsigned bytes, 1 dimension)";
  if ((magic >> 16) != 0) return "not an IDX file, because an IDX magic number starts with 0x0000";
  return absl::StrFormat("an IDX file with element type 0x%02X and %d dimensions",
                         (magic >> 8) & 0xFF, magic & 0xFF);
}

// Opens `path` for reading. gzopen decompresses gzip files and reads other files unchanged.
absl::StatusOr<GzFilePtr> OpenIdxFile(const std::string& path) {
  if (absl::Status s = CheckNotSpecialFile(path, "IDX file"); !s.ok()) return s;
  errno = 0;
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    // A failed open(2) sets errno. gzopen can also fail before opening, for example when its
    // allocation fails, and then errno may still be 0.
    if (errno == 0) {
      return absl::InternalError(absl::StrCat(path, ": gzopen failed without setting errno"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": failed to open IDX file"));
  }

  return GzFilePtr(file);
}

// Converts the zlib error state of `file` after a short or failed read into a status, or returns
// OK if the read simply reached the end of the file.
absl::Status CheckGzError(gzFile file, const std::string& path, uint64_t bytes_read) {
  int zlib_error = Z_OK;
  absl::string_view zlib_message = gzerror(file, &zlib_error);
  // gzerror prefixes its message with the path, which the messages below already start with.
  absl::ConsumePrefix(&zlib_message, absl::StrCat(path, ": "));
  switch (zlib_error) {
    case Z_OK:
      return absl::OkStatus();
    case Z_BUF_ERROR:
      // zlib reports a gzip stream cut off before its end as Z_BUF_ERROR, not as a failed read.
      return absl::DataLossError(absl::StrFormat(
          "%s: gzip stream is truncated after %d decompressed bytes (zlib: %s). Download or "
          "copy the file again.",
          path, bytes_read, zlib_message));
    case Z_DATA_ERROR:
      return absl::DataLossError(absl::StrFormat(
          "%s: gzip stream is corrupt (zlib: %s). Download or copy the file again.", path,
          zlib_message));
    case Z_ERRNO: {
      const int saved_errno = errno;
      return absl::Status(
          saved_errno != 0 ? absl::ErrnoToStatusCode(saved_errno) : absl::StatusCode::kUnknown,
          absl::StrFormat("%s: read failed after %d bytes: %s", path, bytes_read, zlib_message));
    }
    case Z_MEM_ERROR:
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: zlib ran out of memory: %s", path, zlib_message));
    default:
      return absl::InternalError(absl::StrFormat("%s: zlib error %d after %d bytes: %s", path,
                                                 zlib_error, bytes_read, zlib_message));
  }
}

// Reads up to `size` bytes into `out` and returns the number read, which is less than `size`
// only at the end of the file. `offset` is the number of bytes already read from the file,
// for error messages.
absl::StatusOr<size_t> ReadUpTo(gzFile file, const std::string& path, uint64_t offset,
                                uint8_t* out, size_t size) {
  size_t total = 0;
  while (total < size) {
    const unsigned request =
        static_cast<unsigned>(std::min<size_t>(size - total, kReadChunkBytes));
    const int got = gzread(file, out + total, request);
    if (got < 0) {
      absl::Status status = CheckGzError(file, path, offset + total);
      if (status.ok()) status = absl::UnknownError(absl::StrCat(path, ": gzread failed"));
      return status;
    }
    total += static_cast<size_t>(got);
    if (static_cast<unsigned>(got) < request) {
      absl::Status status = CheckGzError(file, path, offset + total);
      if (!status.ok()) return status;
      break;
    }
  }
  return total;
}

// Reads and checks the magic number and dimension sizes.
absl::StatusOr<std::vector<uint32_t>> ReadIdxHeader(gzFile file, const std::string& path,
                                                     uint32_t expected_magic) {
  uint8_t magic_bytes[4];
  absl::StatusOr<size_t> got = ReadUpTo(file, path, 0, magic_bytes, sizeof(magic_bytes));
  if (!got.ok()) return got.status();
  if (*got < sizeof(magic_bytes)) {
    return absl::DataLossError(absl::StrFormat(
        "%s: file ends after %d bytes, inside the 4-byte IDX magic number. The file is "
        "truncated or is not an IDX file.",
        path, *got));
  }

  const uint32_t magic = LoadBigEndian32(magic_bytes);
  if (magic != expected_magic) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: invalid magic number 0x%08X, expected 0x%08X for %s. The file is %s. Check that "
        "the path names the right file.",
        path, magic, expected_magic, DescribeMagic(expected_magic), DescribeMagic(magic)));
  }

  // The low byte of the magic number is the number of dimensions, each stored as 4 bytes.
  const size_t rank = expected_magic & 0xFF;
  const size_t header_bytes = sizeof(magic_bytes) + 4 * rank;
  std::vector<uint8_t> size_bytes(4 * rank);
  got = ReadUpTo(file, path, sizeof(magic_bytes), size_bytes.data(), size_bytes.size());
  if (!got.ok()) return got.status();
  if (*got < size_bytes.size()) {
    return absl::DataLossError(absl::StrFormat(
        "%s: file ends after %d bytes, inside the %d-byte IDX header. The file is truncated.",
        path, sizeof(magic_bytes) + *got, header_bytes));
  }

  std::vector<uint32_t> dims(rank);
  for (size_t i = 0; i < rank; ++i) {
    dims[i] = LoadBigEndian32(&size_bytes[4 * i]);

    // The format stores sizes as 32-bit integers, which readers treat as signed, so a size with
    // the top bit set is negative and the header is corrupt.
    if (dims[i] > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: invalid size %d (%d as a signed 32-bit integer) in dimension %d of the IDX "
          "header. The header is corrupt.",
          path, dims[i], static_cast<int32_t>(dims[i]), i));
    }
  }
  return dims;
}

// Reads exactly the data that `dims` declares, then checks that the file ends there.
absl::StatusOr<std::vector<uint8_t>> ReadIdxData(gzFile file, const std::string& path,
                                                 const std::vector<uint32_t>& dims,
                                                 uint64_t header_bytes) {
  uint64_t expected_bytes = 1;
  for (uint32_t dim : dims) {
    if (!MultiplyWithin(expected_bytes, dim, kMaxElements, &expected_bytes)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: IDX header declares %s elements, more than the maximum of %d. The header is "
          "corrupt.",
          path, FormatDims(dims), kMaxElements));
    }
  }

  // Read in chunks and grow the buffer as data arrives, so that the amount allocated follows
  // the actual file size, not a header that may be corrupt.
  std::vector<uint8_t> data;
  data.reserve(static_cast<size_t>(std::min<uint64_t>(expected_bytes, kMaxReserveBytes)));
  while (data.size() < expected_bytes) {
    const size_t offset = data.size();
    const size_t chunk =
        static_cast<size_t>(std::min<uint64_t>(expected_bytes - offset, kReadChunkBytes));
    data.resize(offset + chunk);
    absl::StatusOr<size_t> got = ReadUpTo(file, path, header_bytes + offset, &data[offset], chunk);
    if (!got.ok()) return got.status();
    if (*got < chunk) {
      return absl::DataLossError(absl::StrFormat(
          "%s: file ends after %d of the %d data bytes that its header declares (%s). The file "
          "is truncated. Download or copy it again.",
          path, offset + *got, expected_bytes, FormatDims(dims)));
    }
  }

  // Read to the end of the file, even past the data, because zlib checks the CRC-32 and length
  // in the gzip trailer only when it reaches the end of the stream.
  uint64_t trailing_bytes = 0;
  std::vector<uint8_t> scratch(64 * 1024);
  while (true) {
    absl::StatusOr<size_t> got = ReadUpTo(file, path, header_bytes + expected_bytes + trailing_bytes,
                                          scratch.data(), scratch.size());
    if (!got.ok()) return got.status();
    trailing_bytes += *got;
    if (*got < scratch.size()) break;
  }
  if (trailing_bytes > 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: file has %d bytes after the %d data bytes that its header declares (%s). The "
        "header does not describe this file.",
        path, trailing_bytes, expected_bytes, FormatDims(dims)));
  }
  return data;
}

// Reads an IDX file whose magic number must be `expected_magic`.
absl::StatusOr<IdxArray> ReadIdxArray(const std::string& path, uint32_t expected_magic) {
  absl::StatusOr<GzFilePtr> file = OpenIdxFile(path);
  if (!file.ok()) return file.status();

  IdxArray array;
  absl::StatusOr<std::vector<uint32_t>> dims = ReadIdxHeader(file->get(), path, expected_magic);
  if (!dims.ok()) return dims.status();
  array.dims = *std::move(dims);

  const uint64_t header_bytes = 4 + 4 * array.dims.size();
  absl::StatusOr<std::vector<uint8_t>> data =
      ReadIdxData(file->get(), path, array.dims, header_bytes);
  if (!data.ok()) return data.status();
  array.data = *std::move(data);

  // Every read error has been reported above, so a failure here comes from close(2).
  const int close_result = gzclose(file->release());
  if (close_result != Z_OK) {
    return absl::UnknownError(
        absl::StrFormat("%s: closing the file failed (zlib error %d)", path, close_result));
  }
  return array;
}

// Returns "<dir>/<base>" if it exists, else "<dir>/<base>.gz" if that exists.
absl::StatusOr<std::string> FindIdxFile(const std::string& dir, const std::string& base) {
  const std::string plain = (std::filesystem::path(dir) / base).string();
  const std::string gzipped = plain + ".gz";
  for (const std::string& candidate : {plain, gzipped}) {
    std::error_code error;
    if (std::filesystem::exists(candidate, error)) return candidate;
  }
  return absl::NotFoundError(absl::StrFormat(
      "IDX file not found: tried %s and %s. Install Fashion-MNIST with `apt-get install "
      "dataset-fashion-mnist` (it installs to %s), or pass the directory that contains the "
      "files with --data.",
      plain, gzipped, kDefaultDataDir));
}

}  // namespace

absl::StatusOr<IdxImages> ReadIdxImages(const std::string& path) {
  absl::StatusOr<IdxArray> array = ReadIdxArray(path, kImagesMagic);
  if (!array.ok()) return array.status();

  const uint32_t rows = array->dims[1];
  const uint32_t cols = array->dims[2];
  if (rows == 0 || cols == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: invalid image size %d x %d in the IDX header. Rows and cols must be at least 1.",
        path, rows, cols));
  }

  IdxImages images;
  images.count = array->dims[0];
  images.rows = static_cast<int>(rows);
  images.cols = static_cast<int>(cols);
  images.pixels = std::move(array->data);
  return images;
}

absl::StatusOr<std::vector<uint8_t>> ReadIdxLabels(const std::string& path) {
  absl::StatusOr<IdxArray> array = ReadIdxArray(path, kLabelsMagic);
  if (!array.ok()) return array.status();
  return std::move(array->data);
}

absl::StatusOr<Dataset> LoadIdxDataset(const std::string& dir, const std::string& split) {
  if (split != "train" && split != "t10k") {
    return absl::InvalidArgumentError(absl::StrFormat(
        "invalid IDX split \"%s\" for directory %s. Expected \"train\" or \"t10k\".", split,
        dir));
  }

  std::error_code error;
  if (std::filesystem::exists(dir, error) && !std::filesystem::is_directory(dir, error)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "data directory %s is a file, not a directory; name the directory that contains the "
        "%s-images-idx3-ubyte and %s-labels-idx1-ubyte files",
        dir, split, split));
  }

  // Locate and read both files.
  absl::StatusOr<std::string> images_path = FindIdxFile(dir, split + "-images-idx3-ubyte");
  if (!images_path.ok()) return images_path.status();
  absl::StatusOr<std::string> labels_path = FindIdxFile(dir, split + "-labels-idx1-ubyte");
  if (!labels_path.ok()) return labels_path.status();

  absl::StatusOr<IdxImages> images = ReadIdxImages(*images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<std::vector<uint8_t>> labels = ReadIdxLabels(*labels_path);
  if (!labels.ok()) return labels.status();

  // Check that the files describe the same samples.
  const int64_t label_count = static_cast<int64_t>(labels->size());
  if (images->count != label_count) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s contains %d images, but %s contains %d labels. Both files must come from the same "
        "split of the same dataset.",
        *images_path, images->count, *labels_path, label_count));
  }
  if (images->count == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s and %s contain no samples, but a dataset needs at least one.", *images_path,
        *labels_path));
  }

  // Convert to the model's input types.
  Dataset dataset;
  dataset.count = images->count;
  dataset.channels = 1;
  dataset.height = images->rows;
  dataset.width = images->cols;

  dataset.images.resize(images->pixels.size());
  for (size_t i = 0; i < images->pixels.size(); ++i) {
    dataset.images[i] = static_cast<float>(images->pixels[i]) / 255.0f;
  }

  dataset.labels.assign(labels->begin(), labels->end());
  const uint8_t max_label = *std::max_element(labels->begin(), labels->end());
  dataset.num_classes = int{max_label} + 1;
  dataset.images_path = *images_path;
  dataset.labels_path = *labels_path;
  return dataset;
}

absl::StatusOr<Dataset> TakeFirst(const Dataset& d, int64_t n) {
  if (n < 1 || n > d.count) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "invalid sample count %d for TakeFirst. It must be between 1 and the dataset's count, "
        "%d.",
        n, d.count));
  }

  // Check the caller's dataset before slicing it.
  if (d.channels < 1 || d.height < 1 || d.width < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "invalid image shape %d x %d x %d (channels x height x width) in the dataset passed to "
        "TakeFirst. Each size must be at least 1.",
        d.channels, d.height, d.width));
  }
  uint64_t sample_elements = 0;
  uint64_t expected_elements = 0;
  const bool sizes_fit =
      MultiplyWithin(static_cast<uint64_t>(d.channels), static_cast<uint64_t>(d.height),
                     kMaxElements, &sample_elements) &&
      MultiplyWithin(sample_elements, static_cast<uint64_t>(d.width), kMaxElements,
                     &sample_elements) &&
      MultiplyWithin(sample_elements, static_cast<uint64_t>(d.count), kMaxElements,
                     &expected_elements);
  if (!sizes_fit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "invalid dataset passed to TakeFirst: %d samples of %d x %d x %d exceed the maximum of "
        "%d image values.",
        d.count, d.channels, d.height, d.width, kMaxElements));
  }
  if (d.images.size() != expected_elements ||
      d.labels.size() != static_cast<uint64_t>(d.count)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "inconsistent dataset passed to TakeFirst: %d samples of %d x %d x %d need %d image "
        "values and %d labels, but it has %d image values and %d labels.",
        d.count, d.channels, d.height, d.width, expected_elements, d.count, d.images.size(),
        d.labels.size()));
  }

  // Copy the shape and the first n samples.
  Dataset first;
  first.count = n;
  first.channels = d.channels;
  first.height = d.height;
  first.width = d.width;
  first.num_classes = d.num_classes;
  first.images_path = d.images_path;
  first.labels_path = d.labels_path;
  first.images.assign(d.images.begin(),
                      d.images.begin() + static_cast<std::ptrdiff_t>(sample_elements * n));
  first.labels.assign(d.labels.begin(), d.labels.begin() + static_cast<std::ptrdiff_t>(n));
  return first;
}

absl::StatusOr<Dataset> SelectClasses(const Dataset& d, const std::vector<int>& classes,
                                      int64_t per_class) {
  if (classes.empty()) return absl::InvalidArgumentError("the class list is empty; e.g. 0-4");
  if (per_class < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the per-class sample count %d is negative; use 0 for all samples", per_class));
  }
  std::vector<int> position(std::max(d.num_classes, 1), -1);
  for (size_t i = 0; i < classes.size(); ++i) {
    const int c = classes[i];
    if (c < 0 || c >= d.num_classes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "class %d is outside the dataset's %d classes (0 to %d)", c, d.num_classes,
          d.num_classes - 1));
    }
    if (position[c] >= 0) {
      return absl::InvalidArgumentError(absl::StrFormat("class %d is listed twice", c));
    }
    position[c] = static_cast<int>(i);
  }
  const int64_t sample = static_cast<int64_t>(d.channels) * d.height * d.width;
  Dataset out;
  out.channels = d.channels;
  out.height = d.height;
  out.width = d.width;
  out.num_classes = static_cast<int>(classes.size());
  out.images_path = d.images_path;
  out.labels_path = d.labels_path;
  std::vector<int64_t> taken(classes.size(), 0);
  for (int64_t i = 0; i < d.count; ++i) {
    const int label = d.labels[i];
    if (label < 0 || label >= d.num_classes || position[label] < 0) continue;
    const int k = position[label];
    if (per_class > 0 && taken[k] >= per_class) continue;
    ++taken[k];
    out.labels.push_back(k);
    out.images.insert(out.images.end(), d.images.begin() + i * sample,
                      d.images.begin() + (i + 1) * sample);
  }
  for (size_t k = 0; k < classes.size(); ++k) {
    if (taken[k] == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "class %d has no samples%s", classes[k],
          d.labels_path.empty() ? "" : absl::StrCat(" in ", d.labels_path)));
    }
  }
  out.count = static_cast<int64_t>(out.labels.size());
  return out;
}

absl::StatusOr<std::vector<int>> ParseClassList(const std::string& spec) {
  std::vector<int> classes;
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    part = absl::StripAsciiWhitespace(part);
    std::vector<absl::string_view> range = absl::StrSplit(part, absl::MaxSplits('-', 1));
    int first = 0, last = 0;
    const bool valid = absl::SimpleAtoi(range[0], &first) &&
                       (range.size() == 1 ? (last = first, true)
                                          : absl::SimpleAtoi(range[1], &last)) &&
                       first >= 0 && first <= last;
    if (!valid) {
      return absl::InvalidArgumentError(absl::StrCat(
          "class list entry '", part, "' is not a class or a range such as 0-4; e.g. 0-4 or "
          "5,6,7,8,9"));
    }
    // IDX labels are bytes. The bound also keeps a range such as 0-2000000000 from filling
    // memory before SelectClasses rejects it.
    constexpr int kLargestLabel = 255;
    if (last > kLargestLabel) {
      return absl::InvalidArgumentError(absl::StrCat(
          "class list entry '", part, "' names class ", last, ", above ", kLargestLabel,
          ", the largest label an IDX file can hold"));
    }
    for (int c = first; c <= last; ++c) classes.push_back(c);
  }
  return classes;
}

}  // namespace kiln
