/// \file
/// Reading and writing tensors in the safetensors file format.
///
/// A safetensors file (https://github.com/huggingface/safetensors) has three parts:
///   1. an unsigned 64-bit little-endian integer N,
///   2. N bytes of UTF-8 JSON: an object that maps each tensor name to
///      {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, plus an optional
///      "__metadata__" object of string keys and string values,
///   3. the tensor data as raw little-endian bytes. Each tensor occupies bytes
///      [begin, end) of this part, and together the tensors cover it with no gap or overlap.
///
/// Example:
///
///   kiln::TensorFile checkpoint;
///   checkpoint.metadata["epoch"] = "3";
///   const float bias[3] = {0.5f, -1.0f, 2.0f};
///   checkpoint.tensors["fc1.bias"] = kiln::MakeF32({3}, bias);
///   absl::Status written = kiln::WriteSafetensors("model.safetensors", checkpoint);
///   if (!written.ok()) return written;
///
///   absl::StatusOr<kiln::TensorFile> loaded = kiln::ReadSafetensors("model.safetensors");
///   if (!loaded.ok()) return loaded.status();
///   const kiln::TensorData& restored = loaded->tensors.at("fc1.bias");
///   float first = restored.f32()[0];  // 0.5f
///
/// Kiln supports the dtypes F32, F64, F16, BF16, I32, I64 and U8. Files with other dtypes (I8,
/// BOOL, F8_E4M3, ...) are rejected when read. TensorData has typed accessors only for F32, I32,
/// I64 and U8. F64, F16 and BF16 tensors are kept as raw bytes, which the PyTorch weight importer
/// (import_weights.h) converts to float32.
#ifndef KILN_RUNTIME_SAFETENSORS_H_
#define KILN_RUNTIME_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kiln {

/// Element type of a tensor. The comments give the dtype names used in safetensors headers.
enum class DType {
  kF32,  ///< "F32": IEEE 754 binary32.
  kI32,  ///< "I32": two's complement 32-bit integer.
  kI64,  ///< "I64": two's complement 64-bit integer.
  kU8,   ///< "U8": unsigned 8-bit integer.
  kF64,  ///< "F64": IEEE 754 binary64.
  kF16,  ///< "F16": IEEE 754 binary16.
  kBF16, ///< "BF16": bfloat16, the upper 16 bits of a binary32.
};

/// Returns the size of one element in bytes, or 0 for a value outside the enumerators.
int64_t DTypeSize(DType dtype);

/// Returns the safetensors name of `dtype` ("F32", ...), or "invalid" for a value outside the
/// enumerators.
absl::string_view DTypeName(DType dtype);

/// Returns the dtype whose safetensors name is `name` (case-sensitive), or std::nullopt when
/// Kiln does not support it.
std::optional<DType> ParseDType(absl::string_view name);

/// Dense tensor in row-major order whose elements are stored as raw little-endian bytes.
///
/// A valid tensor has non-negative dimensions, and `data.size()` equals
/// numel() * DTypeSize(dtype). An empty `shape` is a scalar with one element.
/// The typed accessors reinterpret `data` in place. This relies on a little-endian host, which
/// safetensors.cpp checks at compile time. It also relies on `std::vector` storage being aligned
/// for 8-byte types. The default allocator calls operator new, which returns memory aligned to
/// __STDCPP_DEFAULT_NEW_ALIGNMENT__ (16 bytes with GCC on x86-64).
struct TensorData {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;

  /// Returns the element count: the product of `shape`, or 1 for a scalar.
  /// The result is meaningless when a dimension is negative or the product overflows int64_t.
  int64_t numel() const;

  /// Returns the elements as floats, or nullptr unless `dtype` is kF32 and `data` is non-empty.
  const float* f32() const;
  float* mutable_f32();

  /// Returns the elements as int32_t, or nullptr unless `dtype` is kI32 and `data` is non-empty.
  const int32_t* i32() const;
  int32_t* mutable_i32();

  /// Returns the elements as int64_t, or nullptr unless `dtype` is kI64 and `data` is non-empty.
  const int64_t* i64() const;
  int64_t* mutable_i64();

  /// Returns the elements as uint8_t, or nullptr unless `dtype` is kU8 and `data` is non-empty.
  const uint8_t* u8() const;
  uint8_t* mutable_u8();
};

/// Compares dtype, shape and data bytes, so two F32 tensors holding NaNs with the same bit
/// pattern are equal.
bool operator==(const TensorData& a, const TensorData& b);
bool operator!=(const TensorData& a, const TensorData& b);

/// Contents of one safetensors file: the "__metadata__" strings and the tensors by name.
struct TensorFile {
  std::map<std::string, std::string> metadata;
  std::map<std::string, TensorData> tensors;
};

/// Maximum size of the JSON header in bytes that ReadSafetensors accepts and WriteSafetensors
/// produces. The reference implementation uses the same limit.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

/// Reads the whole safetensors file at `path` into memory.
///
/// The header is validated completely before tensor data is allocated, so even for hostile
/// input the tensor buffers add up to at most the size of the file. The header itself is limited
/// to kMaxSafetensorsHeaderBytes, and its parsed JSON tree may take several times that.
/// Every error message names the file, the tensor where one is involved, and what to do.
/// Error codes:
///   - NotFound, PermissionDenied and others from errno: the file cannot be opened or read.
///   - InvalidArgument: `path` is not a regular file.
///   - DataLoss: the file is truncated, or its header is corrupt. A corrupt header has an invalid
///     length prefix, invalid JSON, an invalid entry field, or data offsets that leave a gap,
///     overlap, or do not match the shape and dtype.
///   - Unimplemented: a tensor has a dtype that Kiln does not support, such as BF16.
/// As in the reference implementation, extra fields in a tensor entry beside "dtype", "shape"
/// and "data_offsets" are ignored, and a null "__metadata__" counts as no metadata. A key
/// repeated within one JSON object is rejected.
absl::StatusOr<TensorFile> ReadSafetensors(const std::string& path);

/// Writes `file` to `path` in the safetensors format, replacing any existing file atomically.
///
/// The tensors are stored sorted by name with contiguous data offsets, after "__metadata__"
/// (omitted when `file.metadata` is empty). The JSON header is padded with spaces to a multiple of
/// 8 bytes, as the reference implementation pads it.
///
/// The data goes to the temporary file `<path>.tmp-<pid>-<counter>`, which is fsynced and then
/// renamed over `path`, and finally the directory is fsynced. A process killed during the write
/// leaves the temporary file behind. If any step up to the rename
/// fails, the temporary file is removed and an existing file at `path` is left unchanged. If
/// only the final directory fsync fails, `path` already has the new contents, and the error
/// message warns that the rename may not survive a power loss. A file system that does not
/// support fsync on a directory (EINVAL) counts as success. When `path` is a symbolic link, the
/// file it points to is replaced and the link stays (a loop of links is InvalidArgument). A
/// replaced file keeps its permissions; a new one gets 0666 minus the umask.
///
/// Returns InvalidArgument, before touching the file system, for any of these inputs:
///   - `path` is empty or ends in '/',
///   - a tensor is invalid (see TensorData) or is named "__metadata__",
///   - a tensor name or metadata string is not valid UTF-8,
///   - the header would exceed kMaxSafetensorsHeaderBytes.
/// File system failures return the code that matches errno.
absl::Status WriteSafetensors(const std::string& path, const TensorFile& file);

/// Checks, without writing, that WriteSafetensors could create or replace `path`: its directory
/// exists, and `path` is absent or a regular file (never a device, FIFO or directory). Callers
/// that write at the end of a long job check first, so a bad path fails before the work.
absl::Status CheckSafetensorsDestination(const std::string& path);

/// Returns an F32 tensor of `shape` that copies its elements from `values`.
/// Returns InvalidArgument when a dimension is negative, the element count overflows, or
/// `values.size()` differs from the element count of `shape`.
absl::StatusOr<TensorData> MakeF32(std::vector<int64_t> shape, absl::Span<const float> values);

/// Returns an F32 tensor of `shape` that copies numel(shape) floats from `values`.
/// `values` must point to that many floats. This overload cannot check that, so prefer the
/// absl::Span overload where the caller has a size. Aborts the process with a message on stderr
/// when a dimension is negative, the element count overflows, or `values` is null for a
/// non-empty shape.
TensorData MakeF32(std::vector<int64_t> shape, const float* values);

}  // namespace kiln

#endif  // KILN_RUNTIME_SAFETENSORS_H_
