#include "runtime/metrics_log.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/atomic_file.h"

namespace kiln {
namespace {

// Keeps the keys in the order they are written, so every line of a log reads the same way.
using Json = nlohmann::ordered_json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr char kLayerColumnPrefix[] = "grad_norm/";

// The fixed CSV columns, in header order.
enum CsvColumn {
  kKind,
  kEpoch,
  kStep,
  kLoss,
  kAccuracy,
  kLr,
  kGradNorm,
  kTrainLoss,
  kTrainAccuracy,
  kTestLoss,
  kTestAccuracy,
  kSeconds,
  kImagesPerSecond,
  kFixedColumnCount
};

// clang-format off
constexpr const char* kFixedColumnNames[kFixedColumnCount] = {
    "kind", "epoch", "step", "loss", "accuracy", "lr", "grad_norm", "train_loss", "train_accuracy",
    "test_loss", "test_accuracy", "seconds", "images_per_second"};
// clang-format on

// ---- numbers ----------------------------------------------------------------------------------

// The shortest decimal form that reads back to `value`, or an empty string for NaN and infinities.
std::string FormatNumber(double value) {
  if (!std::isfinite(value)) return "";
  char buffer[32];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

Json JsonNumber(double value) { return std::isfinite(value) ? Json(value) : Json(nullptr); }

// ---- CSV cells --------------------------------------------------------------------------------

// Quotes a cell as RFC 4180 does when it contains a comma or a double quote.
std::string QuoteCsvCell(const std::string& cell) {
  if (cell.find_first_of(",\"") == std::string::npos) return cell;
  std::string quoted = "\"";
  for (char c : cell) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  quoted += '"';
  return quoted;
}

std::string JoinCsvRow(const std::vector<std::string>& cells) {
  std::string row;
  for (size_t i = 0; i < cells.size(); ++i) {
    if (i > 0) row += ',';
    row += QuoteCsvCell(cells[i]);
  }
  return row;
}

// Splits one CSV line (no line breaks inside cells) into cells, undoing RFC 4180 quoting.
absl::StatusOr<std::vector<std::string>> SplitCsvRow(const std::string& line) {
  std::vector<std::string> cells(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c != '"') {
        cells.back() += c;
      } else if (i + 1 < line.size() && line[i + 1] == '"') {
        cells.back() += '"';
        ++i;
      } else {
        quoted = false;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      cells.emplace_back();
    } else {
      cells.back() += c;
    }
  }
  if (quoted) return absl::InvalidArgumentError("a quoted cell is not closed");
  return cells;
}

std::vector<std::string> CsvHeader(const std::vector<std::string>& layer_names) {
  std::vector<std::string> header(kFixedColumnNames, kFixedColumnNames + kFixedColumnCount);
  for (const std::string& name : layer_names) header.push_back(kLayerColumnPrefix + name);
  return header;
}

// ---- records to lines -------------------------------------------------------------------------

std::string StepToJson(const StepRecord& record) {
  Json json;
  json["kind"] = "step";
  json["epoch"] = record.epoch;
  json["step"] = record.step;
  json["loss"] = JsonNumber(record.loss);
  json["accuracy"] = JsonNumber(record.accuracy);
  json["lr"] = JsonNumber(record.lr);
  if (record.grad_norm.has_value()) json["grad_norm"] = JsonNumber(*record.grad_norm);
  if (!record.layer_grad_norms.empty()) {
    Json layers = Json::object();
    for (const auto& [name, norm] : record.layer_grad_norms) layers[name] = JsonNumber(norm);
    json["layer_grad_norms"] = std::move(layers);
  }
  return json.dump();
}

std::string EpochToJson(const EpochRecord& record) {
  Json json;
  json["kind"] = "epoch";
  json["epoch"] = record.epoch;
  json["train_loss"] = JsonNumber(record.train_loss);
  json["train_accuracy"] = JsonNumber(record.train_accuracy);
  json["test_loss"] = JsonNumber(record.test_loss);
  json["test_accuracy"] = JsonNumber(record.test_accuracy);
  json["lr"] = JsonNumber(record.lr);
  json["seconds"] = JsonNumber(record.seconds);
  json["images_per_second"] = JsonNumber(record.images_per_second);
  return json.dump();
}

absl::StatusOr<std::string> StepToCsv(const StepRecord& record,
                                      const std::vector<std::string>& layer_names,
                                      const std::string& path) {
  std::vector<std::string> cells(kFixedColumnCount + layer_names.size());
  cells[kKind] = "step";
  cells[kEpoch] = absl::StrCat(record.epoch);
  cells[kStep] = absl::StrCat(record.step);
  cells[kLoss] = FormatNumber(record.loss);
  cells[kAccuracy] = FormatNumber(record.accuracy);
  cells[kLr] = FormatNumber(record.lr);
  if (record.grad_norm.has_value()) cells[kGradNorm] = FormatNumber(*record.grad_norm);

  for (const auto& [name, norm] : record.layer_grad_norms) {
    size_t column = 0;
    while (column < layer_names.size() && layer_names[column] != name) ++column;
    if (column == layer_names.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics log '", path, "' has no column for the gradient norm of '", name,
                       "'; list it in MetricsLogOptions::layer_names when opening the log"));
    }
    cells[kFixedColumnCount + column] = FormatNumber(norm);
  }
  return JoinCsvRow(cells);
}

std::string EpochToCsv(const EpochRecord& record, size_t layer_count) {
  std::vector<std::string> cells(kFixedColumnCount + layer_count);
  cells[kKind] = "epoch";
  cells[kEpoch] = absl::StrCat(record.epoch);
  cells[kTrainLoss] = FormatNumber(record.train_loss);
  cells[kTrainAccuracy] = FormatNumber(record.train_accuracy);
  cells[kTestLoss] = FormatNumber(record.test_loss);
  cells[kTestAccuracy] = FormatNumber(record.test_accuracy);
  cells[kLr] = FormatNumber(record.lr);
  cells[kSeconds] = FormatNumber(record.seconds);
  cells[kImagesPerSecond] = FormatNumber(record.images_per_second);
  return JoinCsvRow(cells);
}

// ---- lines to records -------------------------------------------------------------------------

// A JSON number, or NaN for null. A missing key or another type is an error.
absl::StatusOr<double> JsonDouble(const Json& json, const char* key) {
  const auto it = json.find(key);
  if (it == json.end()) return absl::InvalidArgumentError(absl::StrCat("'", key, "' is missing"));
  if (it->is_null()) return kNaN;
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("'", key, "' is not a number or null"));
  }
  return it->get<double>();
}

absl::StatusOr<int64_t> JsonInteger(const Json& json, const char* key) {
  const auto it = json.find(key);
  if (it == json.end()) return absl::InvalidArgumentError(absl::StrCat("'", key, "' is missing"));
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat("'", key, "' is not an integer"));
  }
  return it->get<int64_t>();
}

// Assigns `out` from `value` or returns its error from the enclosing function.
#define KILN_ASSIGN_OR_RETURN(out, value)                 \
  do {                                                    \
    auto kiln_result_ = (value);                          \
    if (!kiln_result_.ok()) return kiln_result_.status(); \
    out = *kiln_result_;                                  \
  } while (0)

absl::StatusOr<MetricsRecord> ParseJsonLine(const std::string& line) {
  const Json json = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError("the line is not valid JSON");
  if (!json.is_object()) return absl::InvalidArgumentError("the line is not a JSON object");
  const auto kind = json.find("kind");
  if (kind == json.end() || !kind->is_string()) {
    return absl::InvalidArgumentError("'kind' is missing or not a string");
  }

  if (*kind == "epoch") {
    EpochRecord record;
    KILN_ASSIGN_OR_RETURN(record.epoch, JsonInteger(json, "epoch"));
    KILN_ASSIGN_OR_RETURN(record.train_loss, JsonDouble(json, "train_loss"));
    KILN_ASSIGN_OR_RETURN(record.train_accuracy, JsonDouble(json, "train_accuracy"));
    KILN_ASSIGN_OR_RETURN(record.test_loss, JsonDouble(json, "test_loss"));
    KILN_ASSIGN_OR_RETURN(record.test_accuracy, JsonDouble(json, "test_accuracy"));
    KILN_ASSIGN_OR_RETURN(record.lr, JsonDouble(json, "lr"));
    KILN_ASSIGN_OR_RETURN(record.seconds, JsonDouble(json, "seconds"));
    KILN_ASSIGN_OR_RETURN(record.images_per_second, JsonDouble(json, "images_per_second"));
    return record;
  }
  if (*kind != "step") {
    return absl::InvalidArgumentError(
        absl::StrCat("'kind' is '", kind->get<std::string>(), "', not 'step' or 'epoch'"));
  }

  StepRecord record;
  KILN_ASSIGN_OR_RETURN(record.epoch, JsonInteger(json, "epoch"));
  KILN_ASSIGN_OR_RETURN(record.step, JsonInteger(json, "step"));
  KILN_ASSIGN_OR_RETURN(record.loss, JsonDouble(json, "loss"));
  KILN_ASSIGN_OR_RETURN(record.accuracy, JsonDouble(json, "accuracy"));
  KILN_ASSIGN_OR_RETURN(record.lr, JsonDouble(json, "lr"));
  if (json.contains("grad_norm")) {
    KILN_ASSIGN_OR_RETURN(record.grad_norm, JsonDouble(json, "grad_norm"));
  }
  if (const auto layers = json.find("layer_grad_norms"); layers != json.end()) {
    if (!layers->is_object()) {
      return absl::InvalidArgumentError("'layer_grad_norms' is not an object");
    }
    for (const auto& [name, norm] : layers->items()) {
      double value = 0;
      KILN_ASSIGN_OR_RETURN(value, JsonDouble(*layers, name.c_str()));
      record.layer_grad_norms.emplace_back(name, value);
    }
  }
  return record;
}

// A number cell: empty is NaN.
absl::StatusOr<double> CsvDouble(const std::vector<std::string>& cells, CsvColumn column) {
  const std::string& cell = cells[column];
  if (cell.empty()) return kNaN;
  double value = 0;
  if (!absl::SimpleAtod(cell, &value)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "column '", kFixedColumnNames[column], "' contains '", cell, "', which is not a number"));
  }
  return value;
}

absl::StatusOr<int64_t> CsvInteger(const std::vector<std::string>& cells, CsvColumn column) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(cells[column], &value)) {
    return absl::InvalidArgumentError(absl::StrCat("column '", kFixedColumnNames[column],
                                                   "' contains '", cells[column],
                                                   "', which is not an integer"));
  }
  return value;
}

absl::StatusOr<MetricsRecord> ParseCsvLine(const std::string& line,
                                           const std::vector<std::string>& layer_names) {
  absl::StatusOr<std::vector<std::string>> split = SplitCsvRow(line);
  if (!split.ok()) return split.status();
  const std::vector<std::string>& cells = *split;
  if (cells.size() != kFixedColumnCount + layer_names.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the row has ", cells.size(), " cells but the header has ",
                     kFixedColumnCount + layer_names.size(), " columns"));
  }

  if (cells[kKind] == "epoch") {
    EpochRecord record;
    KILN_ASSIGN_OR_RETURN(record.epoch, CsvInteger(cells, kEpoch));
    KILN_ASSIGN_OR_RETURN(record.train_loss, CsvDouble(cells, kTrainLoss));
    KILN_ASSIGN_OR_RETURN(record.train_accuracy, CsvDouble(cells, kTrainAccuracy));
    KILN_ASSIGN_OR_RETURN(record.test_loss, CsvDouble(cells, kTestLoss));
    KILN_ASSIGN_OR_RETURN(record.test_accuracy, CsvDouble(cells, kTestAccuracy));
    KILN_ASSIGN_OR_RETURN(record.lr, CsvDouble(cells, kLr));
    KILN_ASSIGN_OR_RETURN(record.seconds, CsvDouble(cells, kSeconds));
    KILN_ASSIGN_OR_RETURN(record.images_per_second, CsvDouble(cells, kImagesPerSecond));
    return record;
  }
  if (cells[kKind] != "step") {
    return absl::InvalidArgumentError(
        absl::StrCat("column 'kind' contains '", cells[kKind], "', not 'step' or 'epoch'"));
  }

  StepRecord record;
  KILN_ASSIGN_OR_RETURN(record.epoch, CsvInteger(cells, kEpoch));
  KILN_ASSIGN_OR_RETURN(record.step, CsvInteger(cells, kStep));
  KILN_ASSIGN_OR_RETURN(record.loss, CsvDouble(cells, kLoss));
  KILN_ASSIGN_OR_RETURN(record.accuracy, CsvDouble(cells, kAccuracy));
  KILN_ASSIGN_OR_RETURN(record.lr, CsvDouble(cells, kLr));
  if (!cells[kGradNorm].empty()) {
    KILN_ASSIGN_OR_RETURN(record.grad_norm, CsvDouble(cells, kGradNorm));
  }
  for (size_t i = 0; i < layer_names.size(); ++i) {
    const size_t column = kFixedColumnCount + i;
    if (cells[column].empty()) continue;
    double norm = 0;
    if (!absl::SimpleAtod(cells[column], &norm)) {
      return absl::InvalidArgumentError(absl::StrCat("column '", kLayerColumnPrefix, layer_names[i],
                                                     "' contains '", cells[column],
                                                     "', which is not a number"));
    }
    record.layer_grad_norms.emplace_back(layer_names[i], norm);
  }
  return record;
}

#undef KILN_ASSIGN_OR_RETURN

// Reads the layer names from a CSV header line, checking the fixed columns.
absl::StatusOr<std::vector<std::string>> ParseCsvHeader(const std::string& line) {
  absl::StatusOr<std::vector<std::string>> cells = SplitCsvRow(line);
  if (!cells.ok()) return cells.status();
  const std::vector<std::string> fixed = CsvHeader({});
  if (cells->size() < fixed.size() || !std::equal(fixed.begin(), fixed.end(), cells->begin())) {
    return absl::InvalidArgumentError(
        absl::StrCat("the header does not start with '", absl::StrJoin(fixed, ","), "'"));
  }

  std::vector<std::string> layer_names;
  for (size_t i = fixed.size(); i < cells->size(); ++i) {
    const std::string& column = (*cells)[i];
    if (!absl::StartsWith(column, kLayerColumnPrefix)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "header column '", column, "' does not start with '", kLayerColumnPrefix, "'"));
    }
    layer_names.push_back(column.substr(sizeof(kLayerColumnPrefix) - 1));
  }
  return layer_names;
}

// ---- whole files ------------------------------------------------------------------------------

// The complete lines of a file, without their newlines. A last line without a newline is left
// out, because an interrupted writer may have stopped inside it.
absl::StatusOr<std::vector<std::string>> ReadCompleteLines(const std::string& path) {
  absl::StatusOr<std::string> read = ReadWholeFile(path, "metrics log");
  if (!read.ok()) return read.status();
  const std::string& contents = *read;

  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t end = contents.find('\n'); end != std::string::npos;
       end = contents.find('\n', start)) {
    lines.push_back(contents.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// A parsed log: its CSV header line (empty for JSON Lines or a CSV file without lines), and
// each record with the line it came from.
struct ParsedLog {
  std::string header;
  std::vector<std::string> lines;
  std::vector<MetricsRecord> records;
};

absl::StatusOr<ParsedLog> ParseLog(const std::string& path) {
  absl::StatusOr<MetricsFormat> format = MetricsFormatForPath(path);
  if (!format.ok()) return format.status();
  absl::StatusOr<std::vector<std::string>> lines = ReadCompleteLines(path);
  if (!lines.ok()) return lines.status();

  ParsedLog log;
  std::vector<std::string> layer_names;
  size_t first_record = 0;
  if (*format == MetricsFormat::kCsv && !lines->empty()) {
    absl::StatusOr<std::vector<std::string>> names = ParseCsvHeader(lines->front());
    if (!names.ok()) {
      return absl::DataLossError(
          absl::StrCat("metrics log '", path, "', line 1: ", names.status().message()));
    }
    layer_names = *std::move(names);
    log.header = lines->front();
    first_record = 1;
  }

  for (size_t i = first_record; i < lines->size(); ++i) {
    const std::string& line = (*lines)[i];
    absl::StatusOr<MetricsRecord> record =
        *format == MetricsFormat::kCsv ? ParseCsvLine(line, layer_names) : ParseJsonLine(line);
    if (!record.ok()) {
      return absl::DataLossError(
          absl::StrCat("metrics log '", path, "', line ", i + 1, ": ", record.status().message()));
    }
    log.lines.push_back(line);
    log.records.push_back(*std::move(record));
  }
  return log;
}

int EpochOf(const MetricsRecord& record) {
  return std::visit([](const auto& r) { return r.epoch; }, record);
}

absl::Status CheckLayerNames(const std::vector<std::string>& names, const std::string& path) {
  std::set<std::string> seen;
  for (const std::string& name : names) {
    if (name.empty() || name.find_first_of("\r\n") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("metrics log '", path, "': layer name '", name,
                                                     "' is empty or contains a line break"));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics log '", path, "': layer name '", name, "' is listed twice"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MetricsFormat> MetricsFormatForPath(const std::string& path) {
  if (absl::EndsWith(path, ".jsonl")) return MetricsFormat::kJsonLines;
  if (absl::EndsWith(path, ".csv")) return MetricsFormat::kCsv;
  return absl::InvalidArgumentError(absl::StrCat(
      "metrics log '", path, "' has an unknown extension; use .jsonl (JSON Lines) or .csv"));
}

absl::StatusOr<MetricsLog> MetricsLog::Open(const std::string& path,
                                            const MetricsLogOptions& options) {
  absl::StatusOr<MetricsFormat> format = MetricsFormatForPath(path);
  if (!format.ok()) return format.status();
  if (absl::Status status = CheckLayerNames(options.layer_names, path); !status.ok()) {
    return status;
  }
  const std::string header = JoinCsvRow(CsvHeader(options.layer_names));

  // A resumed run keeps the records up to its checkpoint's epoch and appends after them.
  bool write_header = *format == MetricsFormat::kCsv;
  if (options.resume_after_epoch.has_value()) {
    if (absl::Status status = TruncateAfterEpoch(path, *options.resume_after_epoch); !status.ok()) {
      return status;
    }
    absl::StatusOr<std::vector<std::string>> lines = ReadCompleteLines(path);
    if (!lines.ok()) return lines.status();
    if (*format == MetricsFormat::kCsv && !lines->empty()) {
      if (lines->front() != header) {
        return absl::FailedPreconditionError(absl::StrCat(
            "metrics log '", path, "' has the header '", lines->front(),
            "', but the resumed run writes '", header, "'; resume with the same layer names"));
      }
      write_header = false;
    }
  }

  if (absl::Status s = CheckNotSpecialFile(path, "metrics log"); !s.ok()) return s;
  std::FILE* file = std::fopen(path.c_str(), options.resume_after_epoch.has_value() ? "ab" : "wb");
  if (file == nullptr) {
    return absl::ErrnoToStatus(errno,
                               absl::StrCat("cannot open metrics log '", path, "' for writing"));
  }
  MetricsLog log(path, *format, options.layer_names, file);
  if (write_header) {
    if (absl::Status status = log.WriteLine(header); !status.ok()) return status;
    if (absl::Status status = log.Flush(); !status.ok()) return status;
  }
  return log;
}

MetricsLog::MetricsLog(std::string path, MetricsFormat format, std::vector<std::string> layer_names,
                       std::FILE* file)
    : path_(std::move(path)), format_(format), layer_names_(std::move(layer_names)), file_(file) {}

MetricsLog::MetricsLog(MetricsLog&& other) noexcept
    : path_(std::move(other.path_)),
      format_(other.format_),
      layer_names_(std::move(other.layer_names_)),
      file_(std::exchange(other.file_, nullptr)) {}

MetricsLog& MetricsLog::operator=(MetricsLog&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) std::fclose(file_);
    path_ = std::move(other.path_);
    format_ = other.format_;
    layer_names_ = std::move(other.layer_names_);
    file_ = std::exchange(other.file_, nullptr);
  }
  return *this;
}

MetricsLog::~MetricsLog() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status MetricsLog::WriteLine(const std::string& line) {
  if (file_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("metrics log '", path_, "' is closed; no more records can be appended"));
  }
  const std::string text = line + "\n";
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size()) {
    return absl::ErrnoToStatus(errno, absl::StrCat("failed to write metrics log '", path_, "'"));
  }
  return absl::OkStatus();
}

absl::Status MetricsLog::Flush() {
  // To the disk, so after a crash the log contains at least the epochs of the checkpoint.
  // --resume cuts it back to them.
  if (file_ != nullptr && (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)) {
    return absl::ErrnoToStatus(errno, absl::StrCat("failed to write metrics log '", path_, "'"));
  }
  return absl::OkStatus();
}

absl::Status MetricsLog::AppendStep(const StepRecord& record) {
  if (format_ == MetricsFormat::kJsonLines) return WriteLine(StepToJson(record));
  absl::StatusOr<std::string> row = StepToCsv(record, layer_names_, path_);
  if (!row.ok()) return row.status();
  return WriteLine(*row);
}

absl::Status MetricsLog::AppendEpoch(const EpochRecord& record) {
  const std::string line = format_ == MetricsFormat::kJsonLines
                               ? EpochToJson(record)
                               : EpochToCsv(record, layer_names_.size());
  if (absl::Status status = WriteLine(line); !status.ok()) return status;
  return Flush();
}

absl::Status MetricsLog::Close() {
  if (file_ == nullptr) return absl::OkStatus();
  std::FILE* file = std::exchange(file_, nullptr);
  if (std::fclose(file) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("failed to write metrics log '", path_, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<MetricsRecord>> ReadMetrics(const std::string& path) {
  absl::StatusOr<ParsedLog> log = ParseLog(path);
  if (!log.ok()) return log.status();
  return std::move(log->records);
}

absl::Status TruncateAfterEpoch(const std::string& path, int epoch) {
  if (epoch < 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot truncate metrics log '", path,
                                                   "' after epoch ", epoch, "; use an epoch >= 0"));
  }
  absl::StatusOr<ParsedLog> log = ParseLog(path);
  if (!log.ok()) return log.status();

  std::string contents;
  if (!log->header.empty()) absl::StrAppend(&contents, log->header, "\n");
  bool has_epoch_record = false;
  for (size_t i = 0; i < log->records.size(); ++i) {
    const MetricsRecord& record = log->records[i];
    if (EpochOf(record) > epoch) continue;
    if (std::holds_alternative<EpochRecord>(record) && EpochOf(record) == epoch) {
      has_epoch_record = true;
    }
    absl::StrAppend(&contents, log->lines[i], "\n");
  }
  if (epoch > 0 && !has_epoch_record) {
    return absl::FailedPreconditionError(absl::StrCat(
        "metrics log '", path, "' has no record of epoch ", epoch,
        ", so a run resumed after that epoch would leave a gap; start a new log instead"));
  }
  return WriteFileAtomically(path, contents);
}

}  // namespace kiln
