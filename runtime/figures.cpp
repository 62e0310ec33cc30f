#include "runtime/figures.h"

#include <plplot.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "runtime/plot.h"

namespace kiln::figures {
namespace {

// ---- PLplot sessions ----------------------------------------------------------------------------

// Colour map 0 as every figure sets it: background, ink, grid, then the series colours
// (matplotlib's "tab10" palette).
constexpr int kBackground = 0, kInk = 1, kGrid = 2, kFirstSeriesColor = 3, kSeriesColors = 10;
constexpr PLINT kPaletteRed[] = {255, 0, 220, 31, 255, 44, 214, 148, 140, 227, 127, 188, 23};
constexpr PLINT kPaletteGreen[] = {255, 0, 220, 119, 127, 160, 39, 103, 86, 119, 127, 189, 190};
constexpr PLINT kPaletteBlue[] = {255, 0, 220, 180, 14, 44, 40, 189, 75, 194, 127, 34, 207};
constexpr int kPaletteSize = sizeof(kPaletteRed) / sizeof(kPaletteRed[0]);

// Text metrics, estimated for DejaVu Sans: the mean width of a character in character heights
// (PLplot's unit for text offsets), generous so that labels do not overlap.
constexpr double kCharWidth = 0.8;
// The length of the line sample in a legend, as a fraction of the plot area's width.
constexpr double kLegendLineWidth = 0.08;

// PLplot's state is global: one figure at a time.
std::mutex& PlplotMutex() {
  static std::mutex mutex;
  return mutex;
}

// Checks that PLplot can load its "memcairo" device. plinit() with a missing device prints a
// menu and reads another device from stdin (PLplot 5.15), so this check must come first.
absl::Status CheckMemcairoDevice() {
  constexpr int kMaxDevices = 256;
  const char* menus[kMaxDevices];
  const char* names[kMaxDevices];
  const char** menu_list = menus;
  const char** name_list = names;
  int count = kMaxDevices;
  plgDevs(&menu_list, &name_list, &count);
  for (int i = 0; i < count; ++i) {
    if (std::string_view(names[i]) == "memcairo") return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      "PLplot has no 'memcairo' device, which figures need; install the Debian package "
      "plplot-driver-cairo (tools/install-deps.sh)");
}

// PLplot reads '#' as the start of an escape sequence ("#fr", "#gw"), and "##" prints one '#'.
std::string EscapeText(const std::string& text) { return absl::StrReplaceAll(text, {{"#", "##"}}); }

// Runs `draw` on a new PLplot stream that paints over `rgba` (width × height pixels, 4 bytes
// each) through the memcairo device, and returns the finished picture. `draw` starts on a new
// page with colour map 0 set to the palette above.
absl::StatusOr<plot::Image> Render(int width, int height, std::vector<uint8_t> rgba,
                                   const std::function<void()>& draw) {
  std::lock_guard<std::mutex> lock(PlplotMutex());
  if (absl::Status status = CheckMemcairoDevice(); !status.ok()) return status;

  PLINT previous_stream = 0, stream = 0;
  plgstrm(&previous_stream);
  plmkstrm(&stream);
  plsdev("memcairo");
  plsmema(width, height, rgba.data());
  plscmap0(kPaletteRed, kPaletteGreen, kPaletteBlue, kPaletteSize);
  plinit();
  pladv(0);
  draw();
  plend1();  // Ends `stream` and copies the picture into `rgba`.
  plsstrm(previous_stream);

  plot::Image image(width, height);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const uint8_t* pixel = &rgba[(static_cast<size_t>(y) * width + x) * 4];
      image.Set(x, y, plot::Rgb{pixel[0], pixel[1], pixel[2]});
    }
  }
  return image;
}

// A white canvas for Render.
std::vector<uint8_t> WhiteCanvas(int width, int height) {
  return std::vector<uint8_t>(static_cast<size_t>(width) * height * 4, 255);
}

absl::Status RenderAndWrite(const std::string& path, int width, int height,
                            std::vector<uint8_t> rgba, const std::function<void()>& draw) {
  absl::StatusOr<plot::Image> image = Render(width, height, std::move(rgba), draw);
  if (!image.ok()) return image.status();
  return plot::WritePng(path, *image);
}

// ---- line charts --------------------------------------------------------------------------------

struct Bounds {
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();

  void Add(double value) {
    min = std::min(min, value);
    max = std::max(max, value);
  }
  // The interval to show: [0, 1] when empty, one unit around a single value, and otherwise
  // the data plus `padding` times the span on each side.
  Bounds Shown(double padding) const {
    if (min > max) return Bounds{0, 1};
    if (min == max) return Bounds{min - 0.5, max + 0.5};
    const double margin = (max - min) * padding;
    return Bounds{min - margin, max + margin};
  }
};

// The drawable points of a series, with y as plotted (log10 y for a logarithmic axis). A point
// that cannot be drawn is a NaN, which splits the line.
void PlottedPoints(const Series& series, bool log_y, std::vector<double>& xs,
                   std::vector<double>& ys) {
  xs.clear();
  ys.clear();
  for (size_t i = 0; i < series.xs.size(); ++i) {
    const double x = series.xs[i];
    double y = series.ys[i];
    if (log_y) y = y > 0 ? std::log10(y) : std::nan("");
    if (!std::isfinite(x) || !std::isfinite(y)) {
      xs.push_back(std::nan(""));
      ys.push_back(std::nan(""));
      continue;
    }
    xs.push_back(x);
    ys.push_back(y);
  }
}

// Draws the runs of consecutive finite points as polylines. A lone point becomes a dot.
void DrawPolyline(const std::vector<double>& xs, const std::vector<double>& ys) {
  size_t start = 0;
  while (start < xs.size()) {
    while (start < xs.size() && std::isnan(xs[start])) ++start;
    size_t end = start;
    while (end < xs.size() && !std::isnan(xs[end])) ++end;
    if (end - start == 1) {
      plpoin(1, &xs[start], &ys[start], 17);  // Glyph 17 is a filled dot.
    } else if (end - start > 1) {
      plline(static_cast<PLINT>(end - start), &xs[start], &ys[start]);
    }
    start = end;
  }
}

// The legend's text size relative to the default: smaller for many series, so that up to about
// 40 entries fit beside the plot area.
double LegendTextScale(size_t series_count) {
  return series_count <= 20 ? 0.85 : 0.85 * 20.0 / static_cast<double>(series_count);
}

// Draws the legend right of the plot area, centred vertically.
void DrawLegend(const std::vector<Series>& series) {
  const PLINT count = static_cast<PLINT>(series.size());
  std::vector<std::string> names;
  std::vector<const char*> texts, symbols;
  std::vector<PLINT> options, text_colors, line_colors, line_styles, unused_ints;
  std::vector<PLFLT> line_widths, unused_floats;
  for (size_t i = 0; i < series.size(); ++i) names.push_back(EscapeText(series[i].name));
  for (size_t i = 0; i < series.size(); ++i) {
    texts.push_back(names[i].c_str());
    symbols.push_back("");
    options.push_back(PL_LEGEND_LINE);
    text_colors.push_back(kInk);
    line_colors.push_back(kFirstSeriesColor + static_cast<PLINT>(i % kSeriesColors));
    line_styles.push_back(1 + static_cast<PLINT>((i / kSeriesColors) % 8));
    line_widths.push_back(2);
    unused_ints.push_back(0);
    unused_floats.push_back(1);
  }

  PLFLT legend_width = 0, legend_height = 0;
  pllegend(&legend_width, &legend_height, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
           PL_POSITION_OUTSIDE | PL_POSITION_RIGHT, 0.02, 0, kLegendLineWidth, kBackground, kInk, 1,
           count, 1, count, options.data(), 0.8, LegendTextScale(series.size()), 2.0, 0,
           text_colors.data(), texts.data(), unused_ints.data(), unused_ints.data(),
           unused_floats.data(), unused_floats.data(), line_colors.data(), line_styles.data(),
           line_widths.data(), unused_ints.data(), unused_floats.data(), unused_ints.data(),
           symbols.data());
}

// ---- filter grids -------------------------------------------------------------------------------

// The tile of filter `index` as RGB values in [0, 1] (NaN for a non-finite weight),
// height × width × 3, before normalization.
std::vector<float> FilterTile(const std::vector<float>& weights, FilterShape shape, int index) {
  const size_t plane = static_cast<size_t>(shape.height) * shape.width;
  const float* filter = weights.data() + static_cast<size_t>(index) * shape.in_channels * plane;
  std::vector<float> tile(plane * 3);
  for (size_t p = 0; p < plane; ++p) {
    if (shape.in_channels == 3) {
      for (int c = 0; c < 3; ++c) tile[p * 3 + c] = filter[c * plane + p];
      continue;
    }
    float sum = 0;
    for (int c = 0; c < shape.in_channels; ++c) sum += filter[c * plane + p];
    const float mean = sum / static_cast<float>(shape.in_channels);
    for (int c = 0; c < 3; ++c) tile[p * 3 + c] = mean;
  }
  return tile;
}

// Scales `tile` from its own finite minimum..maximum to [0, 1]. A constant tile becomes 0.5, and a
// non-finite value becomes 0 (black).
void NormalizeTile(std::vector<float>& tile) {
  float min = std::numeric_limits<float>::infinity();
  float max = -std::numeric_limits<float>::infinity();
  for (float value : tile) {
    if (!std::isfinite(value)) continue;
    min = std::min(min, value);
    max = std::max(max, value);
  }
  for (float& value : tile) {
    if (!std::isfinite(value)) {
      value = 0;
    } else if (max > min) {
      value = (value - min) / (max - min);
    } else {
      value = 0.5f;
    }
  }
}

}  // namespace

absl::Status PlotCurves(const std::string& path, const std::string& title,
                        const std::string& x_label, const std::string& y_label,
                        const std::vector<Series>& series, bool log_y) {
  if (series.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("chart '", path, "' has no series to draw"));
  }
  for (const Series& s : series) {
    if (s.xs.size() != s.ys.size()) {
      return absl::InvalidArgumentError(absl::StrCat("chart '", path, "': series '", s.name,
                                                     "' has ", s.xs.size(), " x values but ",
                                                     s.ys.size(), " y values; give one x per y"));
    }
  }

  // The points as drawn, and the axis ranges that hold them.
  std::vector<std::vector<double>> xs(series.size()), ys(series.size());
  Bounds x_bounds, y_bounds;
  for (size_t i = 0; i < series.size(); ++i) {
    PlottedPoints(series[i], log_y, xs[i], ys[i]);
    for (size_t p = 0; p < xs[i].size(); ++p) {
      if (std::isnan(xs[i][p])) continue;
      x_bounds.Add(xs[i][p]);
      y_bounds.Add(ys[i][p]);
    }
  }
  const Bounds x_range = x_bounds.Shown(0.02);
  Bounds y_range = y_bounds.Shown(0.05);
  if (log_y && y_range.max - y_range.min < 1) {
    // PLplot labels a logarithmic axis at powers of ten only, so a range inside one decade would
    // show no numbers: widen it to the decades around it.
    y_range.min = std::floor(y_range.min);
    y_range.max = std::max(std::ceil(y_range.max), y_range.min + 1);
  }
  size_t longest_name = 1;
  for (const Series& s : series) longest_name = std::max(longest_name, s.name.size());

  constexpr int kWidth = 900, kHeight = 540;
  return RenderAndWrite(path, kWidth, kHeight, WhiteCanvas(kWidth, kHeight), [&] {
    // The plot area leaves room on the right for the legend: its line sample, the gaps around
    // the text and the longest name, using between 20% and 45% of the width.
    constexpr double kLeft = 0.09;
    PLFLT default_height = 0, char_height = 0;
    plgchr(&default_height, &char_height);
    PLFLT page_x_min = 0, page_x_max = 0, page_y_min = 0, page_y_max = 0;
    plgspa(&page_x_min, &page_x_max, &page_y_min, &page_y_max);
    const double text_chars =
        3.0 + kCharWidth * LegendTextScale(series.size()) * static_cast<double>(longest_name);
    const double text_width = text_chars * char_height / (page_x_max - page_x_min);
    // right = 1 - 0.03 - text_width - kLegendLineWidth * (right - kLeft), solved for right.
    double right = (0.97 - text_width + kLegendLineWidth * kLeft) / (1 + kLegendLineWidth);
    right = std::clamp(right, 0.55, 0.8);
    plvpor(kLeft, right, 0.11, 0.90);
    plwind(x_range.min, x_range.max, y_range.min, y_range.max);
    plcol0(kGrid);
    plbox("g", 0, 0, log_y ? "gl" : "g", 0, 0);
    plcol0(kInk);
    plbox("bcnst", 0, 0, log_y ? "bcnstlv" : "bcnstv", 0, 0);
    pllab(EscapeText(x_label).c_str(), EscapeText(y_label).c_str(), EscapeText(title).c_str());

    plwidth(2);
    for (size_t i = 0; i < series.size(); ++i) {
      plcol0(kFirstSeriesColor + static_cast<PLINT>(i % kSeriesColors));
      pllsty(1 + static_cast<PLINT>((i / kSeriesColors) % 8));
      DrawPolyline(xs[i], ys[i]);
    }
    pllsty(1);
    plwidth(1);
    DrawLegend(series);
  });
}

absl::StatusOr<CountMatrix> ConfusionMatrix(const std::vector<int>& labels,
                                            const std::vector<int>& predictions, int class_count) {
  if (labels.size() != predictions.size()) {
    return absl::InvalidArgumentError(absl::StrCat("confusion matrix: ", labels.size(),
                                                   " labels but ", predictions.size(),
                                                   " predictions; give one prediction per label"));
  }
  if (class_count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("confusion matrix: the class count is ", class_count, "; it must be >= 1"));
  }

  CountMatrix counts(class_count, std::vector<int64_t>(class_count, 0));
  for (size_t i = 0; i < labels.size(); ++i) {
    for (const auto& [role, value] :
         {std::pair{"label", labels[i]}, std::pair{"prediction", predictions[i]}}) {
      if (value < 0 || value >= class_count) {
        return absl::InvalidArgumentError(absl::StrCat("confusion matrix: ", role, " ", i, " is ",
                                                       value, ", outside the classes [0, ",
                                                       class_count, ")"));
      }
    }
    ++counts[labels[i]][predictions[i]];
  }
  return counts;
}

absl::Status PlotConfusionMatrix(const std::string& path, const CountMatrix& matrix,
                                 const std::vector<std::string>& class_names) {
  const int k = static_cast<int>(matrix.size());
  if (k == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("confusion matrix '", path, "' is empty; it needs at least one class"));
  }
  for (int i = 0; i < k; ++i) {
    if (static_cast<int>(matrix[i].size()) != k) {
      return absl::InvalidArgumentError(
          absl::StrCat("confusion matrix '", path, "' is not square: row ", i, " has ",
                       matrix[i].size(), " counts but there are ", k, " rows"));
    }
    for (int64_t count : matrix[i]) {
      if (count < 0) {
        return absl::InvalidArgumentError(absl::StrCat("confusion matrix '", path, "': row ", i,
                                                       " has the negative count ", count));
      }
    }
  }
  if (!class_names.empty() && static_cast<int>(class_names.size()) != k) {
    return absl::InvalidArgumentError(absl::StrCat("confusion matrix '", path,
                                                   "': ", class_names.size(), " class names for ",
                                                   k, " classes; give one name per class or none"));
  }

  std::vector<std::string> names;
  size_t longest_name = 1;
  for (int i = 0; i < k; ++i) {
    names.push_back(EscapeText(class_names.empty() ? absl::StrCat(i) : class_names[i]));
    longest_name = std::max(longest_name, names.back().size());
  }
  // Column labels are written across when they fit under their cells, and upright otherwise.
  const bool upright_columns = longest_name * k > 60;

  const int size = std::clamp(200 + 60 * k, 480, 1200);
  return RenderAndWrite(path, size, size, WhiteCanvas(size, size), [&] {
    // Margins in character heights: row labels on the left, column labels below, each followed
    // by an axis title.
    PLFLT default_height = 0, char_height = 0;
    plgchr(&default_height, &char_height);
    PLFLT page_x_min = 0, page_x_max = 0, page_y_min = 0, page_y_max = 0;
    plgspa(&page_x_min, &page_x_max, &page_y_min, &page_y_max);
    const double name_width = kCharWidth * static_cast<double>(longest_name);
    const double column_label_depth = upright_columns ? name_width + 1.0 : 1.5;
    const double left = (name_width + 3.5) * char_height / (page_x_max - page_x_min);
    const double bottom = (column_label_depth + 3.0) * char_height / (page_y_max - page_y_min);
    plvpor(std::min(left, 0.4), 0.95, std::min(bottom, 0.4), 0.90);
    plwind(0, k, 0, k);

    // Cells: colour by the row-normalized count, white (0) to dark blue (1).
    const PLFLT intensity[] = {0, 1};
    const PLFLT red[] = {1, 0.03}, green[] = {1, 0.19}, blue[] = {1, 0.42};
    plscmap1n(256);
    plscmap1l(/*itype=*/1, 2, intensity, red, green, blue, nullptr);
    plschr(0, k > 12 ? 0.7 : 1.0);
    for (int i = 0; i < k; ++i) {
      int64_t row_total = 0;
      for (int64_t count : matrix[i]) row_total += count;
      for (int j = 0; j < k; ++j) {
        const double share =
            row_total > 0 ? static_cast<double>(matrix[i][j]) / static_cast<double>(row_total) : 0;
        const double top = k - i, bottom_edge = k - i - 1;
        const PLFLT cell_x[] = {static_cast<PLFLT>(j), static_cast<PLFLT>(j + 1),
                                static_cast<PLFLT>(j + 1), static_cast<PLFLT>(j)};
        const PLFLT cell_y[] = {bottom_edge, bottom_edge, top, top};
        plcol1(share);
        plfill(4, cell_x, cell_y);
        plcol0(share > 0.5 ? kBackground : kInk);
        plptex(j + 0.5, bottom_edge + 0.5, 1, 0, 0.5, absl::StrCat(matrix[i][j]).c_str());
      }
    }
    plschr(0, 1.0);

    // Frame, class names and titles.
    plcol0(kInk);
    plbox("bc", 0, 0, "bc", 0, 0);
    for (int i = 0; i < k; ++i) {
      const double position = (i + 0.5) / k;
      plmtex("lv", 0.8, 1 - position, 1.0, names[i].c_str());
      if (upright_columns) {
        plmtex("bv", 0.8, position, 1.0, names[i].c_str());
      } else {
        plmtex("b", 1.5, position, 0.5, names[i].c_str());
      }
    }
    plmtex("b", column_label_depth + 1.8, 0.5, 0.5, "predicted");
    plmtex("l", name_width + 2.0, 0.5, 0.5, "true");
    plmtex("t", 1.5, 0.5, 0.5, "Confusion matrix (colour: fraction of the row)");
  });
}

absl::Status PlotFilterGrid(const std::string& path, const std::vector<float>& weights,
                            FilterShape shape, const std::string& title) {
  if (shape.out_channels < 1 || shape.in_channels < 1 || shape.height < 1 || shape.width < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "filter grid '", path, "': the filter shape (", shape.out_channels, ", ", shape.in_channels,
        ", ", shape.height, ", ", shape.width, ") has a dimension below 1"));
  }
  const size_t expected =
      static_cast<size_t>(shape.out_channels) * shape.in_channels * shape.height * shape.width;
  if (weights.size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("filter grid '", path, "': ", weights.size(),
                     " weights for the filter shape (", shape.out_channels, ", ", shape.in_channels,
                     ", ", shape.height, ", ", shape.width, "), which needs ", expected));
  }

  // Layout: square-ish grid of tiles under a title band, centred in an image >= 360 wide.
  const int scale = std::max(1, 40 / std::max(shape.height, shape.width));
  const int tile_width = shape.width * scale, tile_height = shape.height * scale;
  constexpr int kGap = 4, kMargin = 12, kTitleBand = 44;
  const int columns = static_cast<int>(std::ceil(std::sqrt(shape.out_channels)));
  const int rows = (shape.out_channels + columns - 1) / columns;
  const int grid_width = columns * (tile_width + kGap) - kGap;
  const int grid_height = rows * (tile_height + kGap) - kGap;
  const int width = std::max(360, grid_width + 2 * kMargin);
  const int height = kTitleBand + grid_height + kMargin;
  const int grid_left = (width - grid_width) / 2;

  // The tiles are painted into the canvas first, and PLplot adds the title on top.
  std::vector<uint8_t> canvas = WhiteCanvas(width, height);
  for (int f = 0; f < shape.out_channels; ++f) {
    std::vector<float> tile = FilterTile(weights, shape, f);
    NormalizeTile(tile);
    const int left = grid_left + (f % columns) * (tile_width + kGap);
    const int top = kTitleBand + (f / columns) * (tile_height + kGap);
    for (int y = 0; y < tile_height; ++y) {
      for (int x = 0; x < tile_width; ++x) {
        const float* value = &tile[((y / scale) * shape.width + x / scale) * 3];
        uint8_t* pixel = &canvas[(static_cast<size_t>(top + y) * width + left + x) * 4];
        for (int c = 0; c < 3; ++c) pixel[c] = static_cast<uint8_t>(std::lround(value[c] * 255));
      }
    }
  }

  return RenderAndWrite(path, width, height, std::move(canvas), [&] {
    plvpor(0, 1, 0, 1);
    plwind(0, width, height, 0);  // Pixel coordinates, y down.
    plcol0(kInk);
    plptex(width / 2.0, kTitleBand / 2.0, 1, 0, 0.5, EscapeText(title).c_str());
  });
}

}  // namespace kiln::figures
