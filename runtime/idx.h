/// \file
/// Reader for the IDX file format of MNIST and Fashion-MNIST, from plain or gzip-compressed files.
///
/// An IDX file is a big-endian header followed by the array data:
///
///     bytes 0-1  zero
///     byte  2    element type: 0x08 is unsigned byte, the only type read here
///     byte  3    number of dimensions
///     then one 4-byte unsigned size per dimension, then the elements in row-major order
///
/// so an image file starts with the magic number 0x00000803 (unsigned bytes, 3 dimensions:
/// count, rows, cols) and a label file with 0x00000801 (unsigned bytes, 1 dimension: count).
///
/// Example:
///
///     absl::StatusOr<kiln::Dataset> test = kiln::LoadIdxDataset(kiln::kDefaultDataDir, "t10k");
///     if (!test.ok()) return test.status();  // The message names the file and the fix.
///     absl::StatusOr<kiln::Dataset> quick = kiln::TakeFirst(*test, 1000);
///
/// Every reader opens its file with zlib's gzopen, which reads a gzip file as its decompressed
/// content and any other file as it is. So `path` may name either form, whatever its extension.
/// A file that fails to read yields an absl::Status whose message starts with its path:
///   - NotFound: the file does not exist.
///   - InvalidArgument: the file is not an IDX file of the expected kind, its header declares an
///     image size of zero, a size of 2^31 or more, or more elements than can be addressed, or the
///     file contains bytes beyond the data that its header declares.
///   - DataLoss: the file ends before the data that its header declares, or its gzip stream is
///     corrupt or truncated.
///   - Other codes: the operating system failed to open or read the file (permission denied, I/O
///     error), with the code that absl::ErrnoToStatus assigns to errno.

#ifndef KILN_RUNTIME_IDX_H_
#define KILN_RUNTIME_IDX_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln {

/// Images of one split as stored in an IDX image file.
struct IdxImages {
  /// Number of images.
  int64_t count = 0;
  /// Image height in pixels.
  int rows = 0;
  /// Image width in pixels.
  int cols = 0;
  /// count x rows x cols bytes in row-major order, unscaled (0 to 255).
  std::vector<uint8_t> pixels;
};

/// Reads an IDX image file (magic number 0x00000803, dimensions count x rows x cols).
///
/// Rows and cols must be at least 1. A count of 0 is accepted here and yields no pixels, but
/// LoadIdxDataset rejects it. Bytes after the pixels are an InvalidArgument error, because they
/// mean that the header does not describe the file.
absl::StatusOr<IdxImages> ReadIdxImages(const std::string& path);

/// Reads an IDX label file (magic number 0x00000801, one dimension: count) and returns one label
/// per sample, unchecked against any number of classes. As with ReadIdxImages, trailing bytes are
/// an InvalidArgument error and a count of 0 is accepted.
absl::StatusOr<std::vector<uint8_t>> ReadIdxLabels(const std::string& path);

/// A labelled split in memory, ready to feed to a model.
struct Dataset {
  /// Number of samples (images and labels alike).
  int64_t count = 0;
  /// Channels per image. IDX images are grayscale, so LoadIdxDataset sets 1.
  int channels = 1;
  /// Image height in pixels.
  int height = 0;
  /// Image width in pixels.
  int width = 0;
  /// count x channels x height x width pixel values in [0, 1] (the byte value divided by 255),
  /// laid out NCHW.
  std::vector<float> images;
  /// count class indices, each in [0, num_classes).
  std::vector<int32_t> labels;
  /// Number of classes. LoadIdxDataset sets it to the largest label plus one (10 for MNIST and
  /// Fashion-MNIST), so a split that lacks the highest class gets a smaller value.
  int num_classes = 10;
  /// The files the samples came from, for error messages; empty for data built in memory.
  std::string images_path, labels_path;
};

/// Loads the images and labels of one split from `dir`.
///
/// `split` is "train" or "t10k", the names that the MNIST and Fashion-MNIST distributions use.
/// The files read are "<dir>/<split>-images-idx3-ubyte" and "<dir>/<split>-labels-idx1-ubyte",
/// each with ".gz" appended when the uncompressed file does not exist. The uncompressed file is
/// preferred when both exist.
///
/// Errors, beyond those of ReadIdxImages and ReadIdxLabels:
///   - InvalidArgument if `split` is neither "train" nor "t10k", if the two files contain
///     different numbers of samples (the message names both files and both counts), or if they
///     contain no samples.
///   - NotFound if neither form of a file exists. The message lists the paths tried and suggests
///     installing the dataset-fashion-mnist package or pointing --data at the directory.
absl::StatusOr<Dataset> LoadIdxDataset(const std::string& dir, const std::string& split);

/// Returns a copy of the first `n` samples of `d`, for quick runs.
///
/// The copy keeps d.num_classes, even if its own labels do not reach the highest class, so that
/// a model sized for the full split still fits. Errors: InvalidArgument if n < 1, if n exceeds
/// d.count, or if the sizes of d.images and d.labels do not match its count and image shape.
absl::StatusOr<Dataset> TakeFirst(const Dataset& d, int64_t n);

/// Returns the samples of `d` whose labels are in `classes`, relabelled by their position there
/// (classes {5, 6, 7, 8, 9} become 0..4), in their original order, with at most `per_class`
/// samples of each class (the first ones; 0 keeps all). num_classes becomes classes.size().
/// Errors: InvalidArgument for an empty list, a repeated class, a class outside
/// [0, d.num_classes), a negative `per_class`, or a class without samples (each names the class).
absl::StatusOr<Dataset> SelectClasses(const Dataset& d, const std::vector<int>& classes,
                                      int64_t per_class = 0);

/// Parses a class list such as "0-4" or "5,6,7,8,9" (ranges and single classes, comma-separated).
absl::StatusOr<std::vector<int>> ParseClassList(const std::string& spec);

/// Directory into which the Debian package dataset-fashion-mnist installs the gzip-compressed
/// Fashion-MNIST IDX files.
inline constexpr char kDefaultDataDir[] = "/usr/share/datasets/fashion-mnist";

}  // namespace kiln

#endif  // KILN_RUNTIME_IDX_H_
