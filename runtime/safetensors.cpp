/// \file
/// Safetensors reader and writer: header validation, data loading, and atomic replacement.

#include "runtime/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "runtime/atomic_file.h"

// TensorData data is stored little-endian, and the typed accessors and the writer copy it without
// byte swapping.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "kiln safetensors support assumes a little-endian host");

namespace kiln {
namespace {

using nlohmann::json;

constexpr uint64_t kLengthPrefixBytes = 8;
constexpr absl::string_view kMetadataKey = "__metadata__";

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

std::string FormatShape(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Returns the byte size of a tensor with `shape` and `dtype`, or std::nullopt when a dimension
// is negative, the dtype is invalid, or the size overflows int64_t.
std::optional<int64_t> CheckedByteSize(const std::vector<int64_t>& shape, DType dtype) {
  int64_t size = DTypeSize(dtype);
  if (size == 0) return std::nullopt;

  for (int64_t dim : shape) {
    if (dim < 0) return std::nullopt;
    if (__builtin_mul_overflow(size, dim, &size)) return std::nullopt;
  }
  return size;
}

// Returns a status with the code for `error_number` and the message
// "<action>: <strerror text>; <advice>".
absl::Status ErrnoStatus(int error_number, absl::string_view action, absl::string_view advice) {
  std::string message = absl::StrCat(action, ": ", std::strerror(error_number));
  if (!advice.empty()) absl::StrAppend(&message, "; ", advice);
  return absl::Status(absl::ErrnoToStatusCode(error_number), message);
}

// Owns a POSIX file descriptor and closes it on destruction. Release() hands it back so that
// the caller can check the result of close().
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }

  int get() const { return fd_; }
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

// One tensor entry of a header after validation. `begin` and `end` are offsets into the data
// part of the file.
struct EntryInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// Reads `size` bytes at `offset`. Returns the number of bytes read, which is less than `size`
// only at end of file.
absl::StatusOr<uint64_t> ReadAt(int fd, uint64_t offset, uint8_t* buffer, uint64_t size,
                                const std::string& path) {
  uint64_t done = 0;
  while (done < size) {
    const size_t chunk =
        static_cast<size_t>(std::min<uint64_t>(size - done, std::numeric_limits<int32_t>::max()));
    const ssize_t got = ::pread(fd, buffer + done, chunk, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(
          errno,
          absl::StrFormat("failed to read safetensors file '%s' at byte %d", path, offset + done),
          "check the disk and read the file again");
    }
    if (got == 0) break;
    done += static_cast<uint64_t>(got);
  }
  return done;
}

// Returns an nlohmann::json error message without its "[json.exception.parse_error.101] "
// prefix. Control characters and non-ASCII bytes become \xNN, because the message quotes the raw
// input, and that may be invalid UTF-8.
std::string CleanJsonErrorMessage(const std::string& exception_message) {
  size_t start = 0;
  if (!exception_message.empty() && exception_message[0] == '[') {
    const size_t prefix_end = exception_message.find("] ");
    if (prefix_end != std::string::npos) start = prefix_end + 2;
  }

  std::string message;
  for (size_t i = start; i < exception_message.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(exception_message[i]);
    if (c < 0x20 || c >= 0x7f) {
      absl::StrAppendFormat(&message, "\\x%02x", c);
    } else {
      message.push_back(static_cast<char>(c));
    }
  }
  return message;
}

absl::StatusOr<json> ParseHeaderJson(const std::string& path, const std::string& text) {
  // nlohmann::json keeps the last value of a repeated key. A repeated tensor name would hide a
  // tensor, so the callback records the first key that repeats within one object.
  std::vector<std::set<std::string>> keys_per_object;
  std::string repeated_key;
  auto find_repeated_keys = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      keys_per_object.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      keys_per_object.pop_back();
    } else if (event == json::parse_event_t::key && repeated_key.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!keys_per_object.back().insert(key).second) repeated_key = key;
    }
    return true;
  };

  json header;
  try {
    header = json::parse(text, find_repeated_keys);
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrFormat(
        "safetensors file '%s' has an invalid JSON header: %s; the file is corrupt or is not a "
        "safetensors file, re-export it",
        path, CleanJsonErrorMessage(e.what())));
  }

  if (!repeated_key.empty()) {
    return absl::DataLossError(absl::StrFormat(
        "safetensors file '%s' has the key '%s' twice in one JSON object of its header; the "
        "header is corrupt, re-export the file",
        path, repeated_key));
  }
  if (!header.is_object()) {
    return absl::DataLossError(absl::StrFormat(
        "safetensors file '%s' has a JSON header that is %s %s instead of an object that maps "
        "tensor names to entries; the file is corrupt or is not a safetensors file",
        path, header.is_array() || header.is_object() ? "an" : "a", header.type_name()));
  }
  return header;
}

// Stores the string pairs of the "__metadata__" entry in `metadata`. A null entry counts as
// absent, as in the reference reader.
absl::Status ParseMetadata(const std::string& path, const json& value,
                           std::map<std::string, std::string>* metadata) {
  if (value.is_null()) return absl::OkStatus();
  if (!value.is_object()) {
    return absl::DataLossError(absl::StrFormat(
        "safetensors file '%s' has a \"__metadata__\" entry of JSON type %s, but it must be an "
        "object of string values; the header is corrupt",
        path, value.type_name()));
  }

  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      return absl::DataLossError(absl::StrFormat(
          "safetensors file '%s' has metadata key '%s' with a value of JSON type %s, but "
          "safetensors metadata values must be strings; re-export the file with string metadata",
          path, key, item.type_name()));
    }
    (*metadata)[key] = item.get<std::string>();
  }
  return absl::OkStatus();
}

// Returns the field `key` of the tensor entry `entry`, or an error naming the missing field.
absl::StatusOr<const json*> GetEntryField(const std::string& path, const std::string& name,
                                          const json& entry, const char* key) {
  const auto it = entry.find(key);
  if (it == entry.end()) {
    return absl::DataLossError(absl::StrFormat(
        "tensor '%s' in safetensors file '%s' has no \"%s\" field in its header entry; the "
        "header is corrupt, re-export the file",
        name, path, key));
  }
  return &*it;
}

absl::StatusOr<DType> ParseEntryDType(const std::string& path, const std::string& name,
                                      const json& value) {
  if (!value.is_string()) {
    return absl::DataLossError(absl::StrFormat(
        "tensor '%s' in safetensors file '%s' has a \"dtype\" of JSON type %s, expected a string "
        "such as \"F32\"; the header is corrupt",
        name, path, value.type_name()));
  }

  const std::string& dtype_name = value.get_ref<const std::string&>();
  const std::optional<DType> dtype = ParseDType(dtype_name);
  if (!dtype.has_value()) {
    return absl::UnimplementedError(absl::StrFormat(
        "tensor '%s' in safetensors file '%s' has dtype '%s', which Kiln does not support; "
        "supported dtypes are F32, F64, F16, BF16, I32, I64 and U8, so convert the tensor before "
        "saving it",
        name, path, dtype_name));
  }
  return *dtype;
}

absl::StatusOr<std::vector<int64_t>> ParseEntryShape(const std::string& path,
                                                     const std::string& name, const json& value) {
  if (!value.is_array()) {
    return absl::DataLossError(absl::StrFormat(
        "tensor '%s' in safetensors file '%s' has a \"shape\" of JSON type %s, expected an array "
        "of non-negative integers; the header is corrupt",
        name, path, value.type_name()));
  }

  std::vector<int64_t> shape;
  shape.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    const json& dim = value[i];
    const bool fits =
        dim.is_number_unsigned() &&
        dim.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    if (!fits) {
      return absl::DataLossError(absl::StrFormat(
          "tensor '%s' in safetensors file '%s' has dimension %d of its shape equal to %s, "
          "expected a non-negative integer below 2^63; the header is corrupt",
          name, path, i, dim.dump()));
    }
    shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
  }
  return shape;
}

absl::Status ParseEntryOffsets(const std::string& path, const json& value, EntryInfo* info) {
  const bool is_pair = value.is_array() && value.size() == 2 && value[0].is_number_unsigned() &&
                       value[1].is_number_unsigned();
  if (!is_pair) {
    return absl::DataLossError(absl::StrFormat(
        "tensor '%s' in safetensors file '%s' has \"data_offsets\" %s, expected an array of two "
        "non-negative integers [begin, end]; the header is corrupt",
        info->name, path, value.dump()));
  }

  info->begin = value[0].get<uint64_t>();
  info->end = value[1].get<uint64_t>();
  if (info->begin > info->end) {
    return absl::DataLossError(absl::StrFormat(
        "tensor '%s' in safetensors file '%s' has data_offsets [%d, %d] whose begin is after its "
        "end; the header is corrupt",
        info->name, path, info->begin, info->end));
  }
  return absl::OkStatus();
}

absl::StatusOr<EntryInfo> ParseEntry(const std::string& path, const std::string& name,
                                     const json& entry) {
  if (!entry.is_object()) {
    return absl::DataLossError(absl::StrFormat(
        "tensor '%s' in safetensors file '%s' has a header entry of JSON type %s, expected an "
        "object with \"dtype\", \"shape\" and \"data_offsets\"; the header is corrupt",
        name, path, entry.type_name()));
  }

  EntryInfo info;
  info.name = name;

  absl::StatusOr<const json*> dtype_field = GetEntryField(path, name, entry, "dtype");
  if (!dtype_field.ok()) return dtype_field.status();
  absl::StatusOr<DType> dtype = ParseEntryDType(path, name, **dtype_field);
  if (!dtype.ok()) return dtype.status();
  info.dtype = *dtype;

  absl::StatusOr<const json*> shape_field = GetEntryField(path, name, entry, "shape");
  if (!shape_field.ok()) return shape_field.status();
  absl::StatusOr<std::vector<int64_t>> shape = ParseEntryShape(path, name, **shape_field);
  if (!shape.ok()) return shape.status();
  info.shape = *std::move(shape);

  absl::StatusOr<const json*> offsets_field = GetEntryField(path, name, entry, "data_offsets");
  if (!offsets_field.ok()) return offsets_field.status();
  absl::Status offsets = ParseEntryOffsets(path, **offsets_field, &info);
  if (!offsets.ok()) return offsets;

  // The offsets must span exactly the bytes that the shape and dtype need.
  const std::optional<int64_t> byte_size = CheckedByteSize(info.shape, info.dtype);
  if (!byte_size.has_value()) {
    return absl::DataLossError(absl::StrFormat(
        "tensor '%s' in safetensors file '%s' has shape %s whose size in bytes overflows a 64-bit "
        "integer; the header is corrupt",
        name, path, FormatShape(info.shape)));
  }
  const uint64_t span = info.end - info.begin;
  if (span != static_cast<uint64_t>(*byte_size)) {
    return absl::DataLossError(absl::StrFormat(
        "tensor '%s' in safetensors file '%s' has data_offsets [%d, %d] covering %d bytes, but "
        "shape %s with dtype %s needs %d bytes; the header is corrupt, re-export the file",
        name, path, info.begin, info.end, span, FormatShape(info.shape), DTypeName(info.dtype),
        *byte_size));
  }
  return info;
}

// Checks that the tensors cover bytes [0, data_bytes) of the data part exactly once.
// Sorts `entries` by offset.
absl::Status CheckDataCoverage(const std::string& path, uint64_t data_bytes,
                               std::vector<EntryInfo>* entries) {
  std::sort(entries->begin(), entries->end(), [](const EntryInfo& a, const EntryInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });

  // A data part shorter than the header promises is the usual sign of an interrupted write, so
  // it gets its own message before the gap and overlap checks.
  uint64_t max_end = 0;
  for (const EntryInfo& entry : *entries) max_end = std::max(max_end, entry.end);
  if (max_end > data_bytes) {
    return absl::DataLossError(absl::StrFormat(
        "safetensors file '%s' is truncated: its header says %d bytes of tensor data but the file "
        "has %d; the file was not written completely, use an earlier copy",
        path, max_end, data_bytes));
  }

  uint64_t covered_until = 0;
  const EntryInfo* previous = nullptr;
  for (const EntryInfo& entry : *entries) {
    if (entry.begin > covered_until) {
      const std::string after = previous == nullptr ? "the start of the data"
                                                    : absl::StrCat("tensor '", previous->name, "'");
      return absl::DataLossError(absl::StrFormat(
          "safetensors file '%s' has a gap of tensor data bytes [%d, %d) between %s and tensor "
          "'%s' that no tensor covers; the header is corrupt, re-export the file",
          path, covered_until, entry.begin, after, entry.name));
    }
    if (entry.begin < covered_until) {
      return absl::DataLossError(absl::StrFormat(
          "safetensors file '%s' has tensor '%s' at data_offsets [%d, %d] overlapping tensor '%s' "
          "at [%d, %d]; the header is corrupt, re-export the file",
          path, entry.name, entry.begin, entry.end, previous->name, previous->begin,
          previous->end));
    }
    covered_until = entry.end;
    previous = &entry;
  }

  if (covered_until < data_bytes) {
    return absl::DataLossError(absl::StrFormat(
        "safetensors file '%s' has %d bytes after the last tensor that no tensor covers; the file "
        "is corrupt or something was appended to it, re-export it",
        path, data_bytes - covered_until));
  }
  return absl::OkStatus();
}

// Returns the error for a file that ended before a read that its size promised could finish.
absl::Status ShorterWhileReadingError(const std::string& path) {
  return absl::DataLossError(
      absl::StrFormat("safetensors file '%s' became shorter while it was read; another process "
                      "may be writing it, so read it again once that finishes",
                      path));
}

// Reads the length prefix and returns the JSON header text that follows it, after checking the
// length against kMaxSafetensorsHeaderBytes and `file_size`.
absl::StatusOr<std::string> ReadHeaderText(int fd, const std::string& path, uint64_t file_size) {
  if (file_size < kLengthPrefixBytes) {
    return absl::DataLossError(absl::StrFormat(
        "safetensors file '%s' is truncated: it has %d bytes, fewer than the 8-byte header "
        "length; the file was not written completely or is not a safetensors file",
        path, file_size));
  }

  uint8_t prefix[kLengthPrefixBytes];
  absl::StatusOr<uint64_t> got = ReadAt(fd, 0, prefix, kLengthPrefixBytes, path);
  if (!got.ok()) return got.status();
  if (*got != kLengthPrefixBytes) return ShorterWhileReadingError(path);

  uint64_t header_size = 0;
  for (int i = static_cast<int>(kLengthPrefixBytes) - 1; i >= 0; --i) {
    header_size = (header_size << 8) | prefix[i];
  }
  if (header_size > kMaxSafetensorsHeaderBytes) {
    return absl::DataLossError(absl::StrFormat(
        "safetensors file '%s' declares a JSON header of %d bytes, more than the %d-byte limit; "
        "the file is corrupt or is not a safetensors file",
        path, header_size, kMaxSafetensorsHeaderBytes));
  }
  if (header_size > file_size - kLengthPrefixBytes) {
    return absl::DataLossError(absl::StrFormat(
        "safetensors file '%s' is truncated: its JSON header should have %d bytes but the file "
        "has only %d after the length prefix; the file was not written completely, use an "
        "earlier copy",
        path, header_size, file_size - kLengthPrefixBytes));
  }

  // The checks above bound this allocation by the limit and by the file size.
  std::string text(static_cast<size_t>(header_size), '\0');
  got = ReadAt(fd, kLengthPrefixBytes, reinterpret_cast<uint8_t*>(text.data()), header_size, path);
  if (!got.ok()) return got.status();
  if (*got != header_size) return ShorterWhileReadingError(path);
  return text;
}

// Splits the parsed header into the metadata strings and the validated tensor entries.
absl::Status ParseHeaderEntries(const std::string& path, const json& header,
                                std::map<std::string, std::string>* metadata,
                                std::vector<EntryInfo>* entries) {
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      absl::Status status = ParseMetadata(path, value, metadata);
      if (!status.ok()) return status;
      continue;
    }

    absl::StatusOr<EntryInfo> entry = ParseEntry(path, key, value);
    if (!entry.ok()) return entry.status();
    entries->push_back(*std::move(entry));
  }
  return absl::OkStatus();
}

// Reads and validates the length prefix and the JSON header, storing the metadata strings and
// the tensor entries. Returns the file offset where the tensor data starts. The header text and
// its JSON tree are freed before this returns, so they do not add to the memory of the data.
absl::StatusOr<uint64_t> ReadHeader(int fd, const std::string& path, uint64_t file_size,
                                    std::map<std::string, std::string>* metadata,
                                    std::vector<EntryInfo>* entries) {
  absl::StatusOr<std::string> text = ReadHeaderText(fd, path, file_size);
  if (!text.ok()) return text.status();
  absl::StatusOr<json> header = ParseHeaderJson(path, *text);
  if (!header.ok()) return header.status();

  absl::Status status = ParseHeaderEntries(path, *header, metadata, entries);
  if (!status.ok()) return status;
  return kLengthPrefixBytes + text->size();
}

// Reads the data of each entry into a TensorData. CheckDataCoverage must have accepted `entries`,
// so every allocation lies inside the file and together they add up to its data part.
absl::Status ReadTensorData(int fd, const std::string& path, uint64_t data_start,
                            std::vector<EntryInfo>* entries,
                            std::map<std::string, TensorData>* tensors) {
  for (EntryInfo& entry : *entries) {
    TensorData tensor;
    tensor.dtype = entry.dtype;
    tensor.shape = std::move(entry.shape);
    tensor.data.resize(static_cast<size_t>(entry.end - entry.begin));

    absl::StatusOr<uint64_t> got =
        ReadAt(fd, data_start + entry.begin, tensor.data.data(), tensor.data.size(), path);
    if (!got.ok()) return got.status();
    if (*got != tensor.data.size()) return ShorterWhileReadingError(path);
    tensors->emplace(std::move(entry.name), std::move(tensor));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

// Returns whether nlohmann::json can serialize `text`, which requires valid UTF-8.
bool IsValidUtf8(const std::string& text) {
  try {
    (void)json(text).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

absl::Status ValidateTensorForWrite(const std::string& path, const std::string& name,
                                    const TensorData& tensor) {
  if (name == kMetadataKey) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot write a tensor named '__metadata__' to '%s': safetensors reserves that key for "
        "the metadata object; rename the tensor",
        path));
  }
  if (!IsValidUtf8(name)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot write tensor '%s' to '%s': its name is not valid UTF-8, which the JSON header "
        "requires; rename the tensor",
        absl::CHexEscape(name), path));
  }
  if (DTypeSize(tensor.dtype) == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot write tensor '%s' to '%s': its dtype has the invalid value %d; use a DType "
        "enumerator",
        name, path, static_cast<int>(tensor.dtype)));
  }

  const std::optional<int64_t> byte_size = CheckedByteSize(tensor.shape, tensor.dtype);
  if (!byte_size.has_value()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot write tensor '%s' to '%s': shape %s has a negative dimension or a size in bytes "
        "that overflows int64_t; fix the shape",
        name, path, FormatShape(tensor.shape)));
  }
  if (static_cast<uint64_t>(*byte_size) != tensor.data.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot write tensor '%s' to '%s': it has %d bytes of data but shape %s with dtype %s "
        "needs %d bytes; fix the shape or the data",
        name, path, tensor.data.size(), FormatShape(tensor.shape), DTypeName(tensor.dtype),
        *byte_size));
  }
  return absl::OkStatus();
}

// Returns the JSON header of `file`, padded with spaces to a multiple of 8 bytes.
absl::StatusOr<std::string> BuildHeader(const std::string& path, const TensorFile& file) {
  // ordered_json keeps insertion order, which puts "__metadata__" first and the entry fields in
  // the order dtype, shape, data_offsets, as the reference writer emits them.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();

  if (!file.metadata.empty()) {
    nlohmann::ordered_json metadata = nlohmann::ordered_json::object();
    for (const auto& [key, value] : file.metadata) {
      if (!IsValidUtf8(key) || !IsValidUtf8(value)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "cannot write metadata key '%s' to '%s': the key or its value is not valid UTF-8, "
            "which the JSON header requires; fix the metadata",
            absl::CHexEscape(key), path));
      }
      metadata[key] = value;
    }
    header[std::string(kMetadataKey)] = std::move(metadata);
  }

  uint64_t offset = 0;
  for (const auto& [name, tensor] : file.tensors) {
    absl::Status valid = ValidateTensorForWrite(path, name, tensor);
    if (!valid.ok()) return valid;

    const uint64_t end = offset + tensor.data.size();
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(DTypeName(tensor.dtype));
    entry["shape"] = tensor.shape;
    entry["data_offsets"] = {offset, end};
    header[name] = std::move(entry);
    offset = end;
  }

  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot write '%s': its JSON header would have %d bytes, more than the %d-byte limit "
        "that readers enforce; split the tensors or the metadata over several files",
        path, text.size(), kMaxSafetensorsHeaderBytes));
  }
  return text;
}

absl::Status WriteAll(int fd, const uint8_t* data, size_t size, const std::string& temp_path,
                      const std::string& path) {
  size_t done = 0;
  while (done < size) {
    const size_t chunk = std::min<size_t>(size - done, std::numeric_limits<int32_t>::max());
    const ssize_t wrote = ::write(fd, data + done, chunk);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(
          errno, absl::StrFormat("failed to write temporary file '%s' for '%s'", temp_path, path),
          absl::StrFormat("'%s' was not changed; check free disk space and file size limits",
                          path));
    }
    done += static_cast<size_t>(wrote);
  }
  return absl::OkStatus();
}

// Returns the directory that contains `path`: "." for a bare file name and "/" for a file in
// the root directory.
std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Creates a new, empty temporary file next to `path`. The name combines the process id with a
// per-process counter, and O_EXCL guarantees that an existing file is never reused.
absl::Status CreateTempFile(const std::string& path, std::string* temp_path, int* fd) {
  static std::atomic<uint64_t> counter{0};
  constexpr int kMaxAttempts = 100;

  int last_errno = 0;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    *temp_path = absl::StrFormat("%s.tmp-%d-%d", path, ::getpid(), counter.fetch_add(1));
    *fd = ::open(temp_path->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (*fd >= 0) return absl::OkStatus();
    last_errno = errno;
    if (last_errno != EEXIST) break;
  }
  return ErrnoStatus(
      last_errno,
      absl::StrFormat("failed to create temporary file '%s' to write '%s'", *temp_path, path),
      absl::StrFormat("check that directory '%s' exists and is writable", DirectoryOf(path)));
}

// Writes the length prefix, `header` and the tensor data to `fd`, then fsyncs it.
absl::Status WriteContents(int fd, const std::string& header, const TensorFile& file,
                           const std::string& temp_path, const std::string& path) {
  uint8_t prefix[kLengthPrefixBytes];
  uint64_t header_size = header.size();
  for (uint8_t& byte : prefix) {
    byte = static_cast<uint8_t>(header_size & 0xff);
    header_size >>= 8;
  }

  absl::Status status = WriteAll(fd, prefix, sizeof(prefix), temp_path, path);
  if (!status.ok()) return status;
  status =
      WriteAll(fd, reinterpret_cast<const uint8_t*>(header.data()), header.size(), temp_path, path);
  if (!status.ok()) return status;

  // std::map iterates in name order, the same order BuildHeader assigned offsets in.
  for (const auto& [name, tensor] : file.tensors) {
    status = WriteAll(fd, tensor.data.data(), tensor.data.size(), temp_path, path);
    if (!status.ok()) return status;
  }

  if (::fsync(fd) != 0) {
    return ErrnoStatus(
        errno, absl::StrFormat("failed to fsync temporary file '%s' for '%s'", temp_path, path),
        absl::StrFormat("'%s' was not changed", path));
  }
  return absl::OkStatus();
}

absl::Status SyncDirectory(const std::string& directory, const std::string& path) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoStatus(errno,
                       absl::StrFormat("wrote '%s' but failed to open its directory '%s' to "
                                       "fsync it",
                                       path, directory),
                       "the new file may not survive a power loss");
  }
  FileDescriptor directory_fd(fd);

  // File systems that do not support fsync on a directory return EINVAL. They offer no other way
  // to make the rename durable, so EINVAL counts as success.
  if (::fsync(directory_fd.get()) != 0 && errno != EINVAL) {
    return ErrnoStatus(
        errno,
        absl::StrFormat("wrote '%s' but failed to fsync its directory '%s'", path, directory),
        "the new file may not survive a power loss");
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// DType and TensorData
// ---------------------------------------------------------------------------------------------

int64_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
    case DType::kU8:
      return 1;
    case DType::kF64:
      return 8;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kU8:
      return "U8";
    case DType::kF64:
      return "F64";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "invalid";
}

std::optional<DType> ParseDType(absl::string_view name) {
  for (DType dtype : {DType::kF32, DType::kI32, DType::kI64, DType::kU8, DType::kF64, DType::kF16,
                      DType::kBF16}) {
    if (name == DTypeName(dtype)) return dtype;
  }
  return std::nullopt;
}

int64_t TensorData::numel() const {
  // Unsigned arithmetic wraps instead of overflowing, so an invalid shape gives a wrong count
  // rather than undefined behavior.
  uint64_t count = 1;
  for (int64_t dim : shape) count *= static_cast<uint64_t>(dim);
  return static_cast<int64_t>(count);
}

const float* TensorData::f32() const {
  if (dtype != DType::kF32 || data.empty()) return nullptr;
  return reinterpret_cast<const float*>(data.data());
}

float* TensorData::mutable_f32() {
  if (dtype != DType::kF32 || data.empty()) return nullptr;
  return reinterpret_cast<float*>(data.data());
}

const int32_t* TensorData::i32() const {
  if (dtype != DType::kI32 || data.empty()) return nullptr;
  return reinterpret_cast<const int32_t*>(data.data());
}

int32_t* TensorData::mutable_i32() {
  if (dtype != DType::kI32 || data.empty()) return nullptr;
  return reinterpret_cast<int32_t*>(data.data());
}

const int64_t* TensorData::i64() const {
  if (dtype != DType::kI64 || data.empty()) return nullptr;
  return reinterpret_cast<const int64_t*>(data.data());
}

int64_t* TensorData::mutable_i64() {
  if (dtype != DType::kI64 || data.empty()) return nullptr;
  return reinterpret_cast<int64_t*>(data.data());
}

const uint8_t* TensorData::u8() const {
  if (dtype != DType::kU8 || data.empty()) return nullptr;
  return data.data();
}

uint8_t* TensorData::mutable_u8() {
  if (dtype != DType::kU8 || data.empty()) return nullptr;
  return data.data();
}

bool operator==(const TensorData& a, const TensorData& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.data == b.data;
}

bool operator!=(const TensorData& a, const TensorData& b) { return !(a == b); }

absl::StatusOr<TensorData> MakeF32(std::vector<int64_t> shape, absl::Span<const float> values) {
  const std::optional<int64_t> byte_size = CheckedByteSize(shape, DType::kF32);
  if (!byte_size.has_value()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot make an F32 tensor of shape %s: a dimension is negative or the size in bytes "
        "overflows int64_t",
        FormatShape(shape)));
  }
  const int64_t numel = *byte_size / static_cast<int64_t>(sizeof(float));
  if (static_cast<uint64_t>(numel) != values.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot make an F32 tensor of shape %s from %d values: the shape needs %d; pass "
        "matching values or fix the shape",
        FormatShape(shape), values.size(), numel));
  }

  TensorData tensor;
  tensor.dtype = DType::kF32;
  tensor.shape = std::move(shape);
  tensor.data.resize(static_cast<size_t>(*byte_size));
  if (!values.empty()) std::memcpy(tensor.data.data(), values.data(), tensor.data.size());
  return tensor;
}

TensorData MakeF32(std::vector<int64_t> shape, const float* values) {
  const std::optional<int64_t> byte_size = CheckedByteSize(shape, DType::kF32);
  if (!byte_size.has_value() || (values == nullptr && *byte_size > 0)) {
    std::fprintf(stderr,
                 "kiln::MakeF32: invalid arguments: shape %s must have non-negative dimensions "
                 "with a product that fits int64_t, and values must not be null\n",
                 FormatShape(shape).c_str());
    std::abort();
  }

  const size_t numel = static_cast<size_t>(*byte_size) / sizeof(float);
  absl::StatusOr<TensorData> tensor = MakeF32(std::move(shape), absl::Span<const float>(values, numel));
  return *std::move(tensor);
}

// ---------------------------------------------------------------------------------------------
// ReadSafetensors
// ---------------------------------------------------------------------------------------------

absl::StatusOr<TensorFile> ReadSafetensors(const std::string& path) {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer; the type check below rejects it.
  const int raw_fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (raw_fd < 0) {
    return ErrnoStatus(errno, absl::StrFormat("failed to open safetensors file '%s'", path),
                       "check that the path exists and is readable");
  }
  FileDescriptor fd(raw_fd);

  struct stat info;
  if (::fstat(fd.get(), &info) != 0) {
    return ErrnoStatus(errno, absl::StrFormat("failed to stat safetensors file '%s'", path), "");
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "safetensors file '%s' is not a regular file; pass the path of a .safetensors file", path));
  }
  const uint64_t file_size = static_cast<uint64_t>(info.st_size);

  TensorFile result;
  std::vector<EntryInfo> entries;
  absl::StatusOr<uint64_t> data_start =
      ReadHeader(fd.get(), path, file_size, &result.metadata, &entries);
  if (!data_start.ok()) return data_start.status();

  absl::Status status = CheckDataCoverage(path, file_size - *data_start, &entries);
  if (!status.ok()) return status;

  status = ReadTensorData(fd.get(), path, *data_start, &entries, &result.tensors);
  if (!status.ok()) return status;
  return result;
}

// ---------------------------------------------------------------------------------------------
// WriteSafetensors
// ---------------------------------------------------------------------------------------------

absl::Status CheckSafetensorsDestination(const std::string& link_or_path) {
  if (link_or_path.empty() || link_or_path.back() == '/') {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot write safetensors file '%s': the path must name a file, not a directory",
        link_or_path));
  }
  absl::StatusOr<std::string> followed = FollowLinks(link_or_path);
  if (!followed.ok()) return followed.status();
  const std::string& path = *followed;
  const std::string directory = DirectoryOf(path);
  struct stat info;
  if (::stat(directory.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    return absl::NotFoundError(absl::StrFormat(
        "cannot write safetensors file '%s': '%s' is not an existing directory; create it or choose "
        "another path",
        path, directory));
  }
  // A rename would replace a device, FIFO or socket at `path` with a regular file.
  if (::stat(path.c_str(), &info) == 0 && !S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot write safetensors file '%s': it is %s; name a file", path,
        S_ISDIR(info.st_mode) ? "a directory" : "not a regular file (a FIFO, socket or device)"));
  }
  return absl::OkStatus();
}

absl::Status WriteSafetensors(const std::string& link_or_path, const TensorFile& file) {
  // A symbolic link stays one: the file it points to is replaced.
  absl::StatusOr<std::string> followed = FollowLinks(link_or_path);
  if (!followed.ok()) return followed.status();
  const std::string& path = *followed;
  if (absl::Status status = CheckSafetensorsDestination(path); !status.ok()) return status;
  absl::StatusOr<std::string> header = BuildHeader(path, file);
  if (!header.ok()) return header.status();

  RemoveStaleTemporaries(path);
  std::string temp_path;
  int raw_fd = -1;
  absl::Status status = CreateTempFile(path, &temp_path, &raw_fd);
  if (!status.ok()) return status;
  FileDescriptor fd(raw_fd);

  // Up to the rename, every failure removes the temporary file and leaves `path` untouched.
  if (const int error = KeepPermissions(path, fd.get()); error != 0) {
    status = ErrnoStatus(
        error, absl::StrFormat("failed to set the permissions of '%s' for '%s'", temp_path, path),
        absl::StrFormat("'%s' was not changed", path));
  }
  if (status.ok()) status = WriteContents(fd.get(), *header, file, temp_path, path);
  if (status.ok() && ::close(fd.Release()) != 0) {
    status = ErrnoStatus(
        errno, absl::StrFormat("failed to close temporary file '%s' for '%s'", temp_path, path),
        absl::StrFormat("'%s' was not changed", path));
  }
  if (status.ok() && ::rename(temp_path.c_str(), path.c_str()) != 0) {
    status = ErrnoStatus(
        errno, absl::StrFormat("failed to rename temporary file '%s' to '%s'", temp_path, path),
        absl::StrFormat("'%s' was not changed", path));
  }
  if (!status.ok()) {
    ::unlink(temp_path.c_str());
    return status;
  }

  return SyncDirectory(DirectoryOf(path), path);
}

}  // namespace kiln
