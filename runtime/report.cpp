#include "runtime/report.h"

#include <cerrno>
#include <cmath>
#include <cstdio>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/atomic_file.h"

namespace kiln {
namespace {

constexpr char kPngSignature[] = "\x89PNG\r\n\x1a\n";

// The page's only styling, inline so the file needs nothing else to display.
constexpr char kStyle[] = R"(
body { font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.8em; }
th { background: #f0f0f0; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0 0 2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; margin-top: 0.4em; }
)";

absl::StatusOr<std::string> ReadPng(const std::string& path) {
  absl::StatusOr<std::string> read = ReadWholeFile(path, "report figure");
  if (!read.ok()) return read.status();
  const std::string& bytes = *read;

  if (bytes.compare(0, sizeof(kPngSignature) - 1, kPngSignature) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "report figure '", path, "' is not a PNG file; only PNG figures can be embedded"));
  }
  return bytes;
}

// A table cell with `value` printed by `format`, or "n/a" when it is not finite.
std::string NumberCell(double value, const absl::FormatSpec<double>& format) {
  const std::string text = std::isfinite(value) ? absl::StrFormat(format, value) : "n/a";
  return absl::StrCat("<td class=\"number\">", text, "</td>");
}

void AppendConfigTable(const ReportInput& input, std::string& html) {
  if (input.config.empty()) return;
  absl::StrAppend(&html, "<h2>Configuration</h2>\n<table>\n");
  for (const auto& [name, value] : input.config) {
    absl::StrAppend(&html, "<tr><th>", EscapeHtml(name), "</th><td>", EscapeHtml(value),
                    "</td></tr>\n");
  }
  absl::StrAppend(&html, "</table>\n");
}

void AppendEpochTable(const ReportInput& input, std::string& html) {
  if (input.epochs.empty()) return;
  absl::StrAppend(&html,
                  "<h2>Epochs</h2>\n<table>\n<tr><th>epoch</th><th>train loss</th>"
                  "<th>train accuracy (%)</th><th>test loss</th><th>test accuracy (%)</th>"
                  "<th>learning rate</th><th>seconds</th><th>images/s</th></tr>\n");
  for (const EpochRecord& epoch : input.epochs) {
    absl::StrAppend(
        &html, "<tr class=\"epoch\"><td class=\"number\">", epoch.epoch, "</td>",
        NumberCell(epoch.train_loss, "%.4f"), NumberCell(epoch.train_accuracy * 100, "%.2f"),
        NumberCell(epoch.test_loss, "%.4f"), NumberCell(epoch.test_accuracy * 100, "%.2f"),
        NumberCell(epoch.lr, "%g"), NumberCell(epoch.seconds, "%.1f"),
        NumberCell(epoch.images_per_second, "%.0f"), "</tr>\n");
  }
  absl::StrAppend(&html, "</table>\n");
}

absl::Status AppendFigures(const ReportInput& input, std::string& html) {
  if (input.figures.empty()) return absl::OkStatus();
  absl::StrAppend(&html, "<h2>Figures</h2>\n");
  for (const ReportFigure& figure : input.figures) {
    absl::StatusOr<std::string> png = ReadPng(figure.path);
    if (!png.ok()) return png.status();
    const std::string caption = EscapeHtml(figure.caption);
    absl::StrAppend(&html, "<figure>\n<img alt=\"", caption, "\" src=\"data:image/png;base64,",
                    absl::Base64Escape(*png), "\">\n<figcaption>", caption,
                    "</figcaption>\n</figure>\n");
  }
  return absl::OkStatus();
}

}  // namespace

std::string EscapeHtml(std::string_view text) {
  std::string escaped;
  escaped.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        escaped += "&amp;";
        break;
      case '<':
        escaped += "&lt;";
        break;
      case '>':
        escaped += "&gt;";
        break;
      case '"':
        escaped += "&quot;";
        break;
      case '\'':
        escaped += "&#39;";
        break;
      default:
        escaped += c;
    }
  }
  return escaped;
}

absl::StatusOr<std::string> BuildReport(const ReportInput& input) {
  const std::string title = EscapeHtml(input.title);
  std::string html = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>", title,
      "</title>\n<style>", kStyle, "</style>\n</head>\n<body>\n<h1>", title, "</h1>\n");

  AppendConfigTable(input, html);
  AppendEpochTable(input, html);
  if (absl::Status status = AppendFigures(input, html); !status.ok()) return status;

  absl::StrAppend(&html, "</body>\n</html>\n");
  return html;
}

absl::Status WriteReport(const std::string& path, const ReportInput& input) {
  absl::StatusOr<std::string> html = BuildReport(input);
  if (!html.ok()) return html.status();
  return WriteFileAtomically(path, *html);
}

}  // namespace kiln
