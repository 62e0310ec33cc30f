#include "runtime/plot.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/atomic_file.h"

namespace kiln::plot {
namespace {

// The tick-label font: 3 × 5 pixels per glyph, one byte per row, bit 2 the leftmost pixel.
constexpr int kGlyphWidth = 3, kGlyphHeight = 5;

const uint8_t* Glyph(char c) {
  static constexpr uint8_t kDigits[10][kGlyphHeight] = {
      {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1},
      {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}};
  static constexpr uint8_t kMinus[kGlyphHeight] = {0, 0, 7, 0, 0};
  static constexpr uint8_t kPlus[kGlyphHeight] = {0, 2, 7, 2, 0};
  static constexpr uint8_t kPoint[kGlyphHeight] = {0, 0, 0, 0, 2};
  static constexpr uint8_t kE[kGlyphHeight] = {2, 5, 7, 4, 3};
  if (c >= '0' && c <= '9') return kDigits[c - '0'];
  switch (c) {
    case '-':
      return kMinus;
    case '+':
      return kPlus;
    case '.':
      return kPoint;
    case 'e':
      return kE;
    default:
      return nullptr;
  }
}

// Clips the segment (x0, y0)–(x1, y1) to the box [min_x, max_x] × [min_y, max_y] (Liang–Barsky).
// Returns false when no part of it lies inside.
bool ClipSegment(double& x0, double& y0, double& x1, double& y1, double min_x, double min_y,
                 double max_x, double max_y) {
  const double dx = x1 - x0, dy = y1 - y0;
  double enter = 0, leave = 1;
  const double p[4] = {-dx, dx, -dy, dy};
  const double q[4] = {x0 - min_x, max_x - x0, y0 - min_y, max_y - y0};
  for (int i = 0; i < 4; ++i) {
    if (p[i] == 0) {
      if (q[i] < 0) return false;
      continue;
    }
    const double t = q[i] / p[i];
    if (p[i] < 0) {
      enter = std::max(enter, t);
    } else {
      leave = std::min(leave, t);
    }
  }
  if (enter > leave) return false;
  x1 = x0 + leave * dx;
  y1 = y0 + leave * dy;
  x0 = x0 + enter * dx;
  y0 = y0 + enter * dy;
  return true;
}

std::string TickLabel(double value) {
  return absl::StrFormat("%g", value + 0.0);  // + 0.0 turns -0 into 0.
}

bool ValidRange(Range r) { return std::isfinite(r.min) && std::isfinite(r.max) && r.min < r.max; }

Range Repaired(Range r) {
  if (ValidRange(r)) return r;
  const double min = std::isfinite(r.min) ? r.min : 0;
  return Range{min, min + 1};
}

}  // namespace

// ---- Image -------------------------------------------------------------------------------------

Image::Image(int width, int height, Rgb background)
    : width_(std::max(width, 1)), height_(std::max(height, 1)) {
  pixels_.resize(static_cast<size_t>(width_) * height_ * 3);
  for (size_t i = 0; i < pixels_.size(); i += 3) {
    pixels_[i] = background.r;
    pixels_[i + 1] = background.g;
    pixels_[i + 2] = background.b;
  }
}

void Image::Set(int x, int y, Rgb color) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
  uint8_t* p = &pixels_[(static_cast<size_t>(y) * width_ + x) * 3];
  p[0] = color.r;
  p[1] = color.g;
  p[2] = color.b;
}

Rgb Image::Get(int x, int y) const {
  const uint8_t* p = &pixels_[(static_cast<size_t>(y) * width_ + x) * 3];
  return Rgb{p[0], p[1], p[2]};
}

void Image::FillRect(int x0, int y0, int x1, int y1, Rgb color) {
  for (int y = std::max(y0, 0); y < std::min(y1, height_); ++y) {
    for (int x = std::max(x0, 0); x < std::min(x1, width_); ++x) Set(x, y, color);
  }
}

void Image::FillDisc(double x, double y, double radius, Rgb color) {
  if (radius <= 0) {
    Set(static_cast<int>(std::lround(x)), static_cast<int>(std::lround(y)), color);
    return;
  }
  const int x0 = static_cast<int>(std::floor(x - radius)),
            x1 = static_cast<int>(std::ceil(x + radius));
  const int y0 = static_cast<int>(std::floor(y - radius)),
            y1 = static_cast<int>(std::ceil(y + radius));
  for (int py = y0; py <= y1; ++py) {
    for (int px = x0; px <= x1; ++px) {
      if ((px - x) * (px - x) + (py - y) * (py - y) <= radius * radius) Set(px, py, color);
    }
  }
}

void Image::DrawLine(double x0, double y0, double x1, double y1, Rgb color, double thickness) {
  // Clipping first bounds the number of stamps below, whatever the coordinates.
  const double radius = std::max(thickness, 1.0) / 2;
  if (!ClipSegment(x0, y0, x1, y1, -radius - 1, -radius - 1, width_ + radius, height_ + radius)) {
    return;
  }

  // Stamp discs every half pixel along the segment.
  const double length = std::hypot(x1 - x0, y1 - y0);
  const int steps = std::max(1, static_cast<int>(std::ceil(length * 2)));
  for (int i = 0; i <= steps; ++i) {
    const double t = static_cast<double>(i) / steps;
    FillDisc(x0 + t * (x1 - x0), y0 + t * (y1 - y0), radius, color);
  }
}

void Image::DrawText(int x, int y, std::string_view text, Rgb color, int scale) {
  for (size_t i = 0; i < text.size(); ++i) {
    const uint8_t* glyph = Glyph(text[i]);
    if (glyph == nullptr) continue;
    const int left = x + static_cast<int>(i) * (kGlyphWidth + 1) * scale;
    for (int row = 0; row < kGlyphHeight; ++row) {
      for (int column = 0; column < kGlyphWidth; ++column) {
        if ((glyph[row] >> (kGlyphWidth - 1 - column) & 1) == 0) continue;
        FillRect(left + column * scale, y + row * scale, left + (column + 1) * scale,
                 y + (row + 1) * scale, color);
      }
    }
  }
}

void Image::Paste(const Image& source, int x, int y) {
  for (int sy = 0; sy < source.height(); ++sy) {
    for (int sx = 0; sx < source.width(); ++sx) Set(x + sx, y + sy, source.Get(sx, sy));
  }
}

int TextWidth(std::string_view text, int scale) {
  if (text.empty()) return 0;
  return (static_cast<int>(text.size()) * (kGlyphWidth + 1) - 1) * scale;
}

int TextHeight(int scale) { return kGlyphHeight * scale; }

// ---- Chart -------------------------------------------------------------------------------------

std::vector<double> NiceTicks(Range range, int target) {
  range = Repaired(range);
  const double raw_step = (range.max - range.min) / std::max(target - 1, 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw_step)));
  const double residual = raw_step / magnitude;
  double step = 10 * magnitude;
  if (residual < 1.5) {
    step = magnitude;
  } else if (residual < 3) {
    step = 2 * magnitude;
  } else if (residual < 7) {
    step = 5 * magnitude;
  }

  std::vector<double> ticks;
  const double first = std::ceil(range.min / step - 1e-9),
               last = std::floor(range.max / step + 1e-9);
  for (double k = first; k <= last; ++k) {
    const double value = k * step;
    ticks.push_back(std::abs(value) < step * 1e-9 ? 0.0 : value);
  }
  return ticks;
}

Chart::Chart(int width, int height, Range x, Range y)
    : x_(Repaired(x)),
      y_(Repaired(y)),
      frame_(std::max(width, 160), std::max(height, 120)),
      area_(1, 1) {
  const std::vector<double> x_ticks = NiceTicks(x_), y_ticks = NiceTicks(y_);
  constexpr int kTick = 5, kPad = 4;

  // Margins: the widest y label on the left, a line of labels below, half a label on the right.
  int label_width = 0;
  for (double v : y_ticks) label_width = std::max(label_width, TextWidth(TickLabel(v)));
  const int right_label = x_ticks.empty() ? 0 : TextWidth(TickLabel(x_ticks.back())) / 2;
  left_ = label_width + kTick + 2 * kPad;
  top_ = 2 * kPad;
  const int right = std::max(2 * kPad, right_label + kPad);
  const int bottom = kTick + 2 * kPad + TextHeight();
  area_ = Image(frame_.width() - left_ - right, frame_.height() - top_ - bottom);

  // Grid lines go in the plot area, tick marks and labels outside it.
  for (double v : x_ticks) {
    const int px = static_cast<int>(std::lround(PixelX(v)));
    area_.FillRect(px, 0, px + 1, area_.height(), kLightGray);
    const int fx = left_ + px, fy = top_ + area_.height();
    frame_.FillRect(fx, fy, fx + 1, fy + kTick, kBlack);
    const std::string label = TickLabel(v);
    frame_.DrawText(fx - TextWidth(label) / 2, fy + kTick + kPad, label, kBlack);
  }
  for (double v : y_ticks) {
    const int py = static_cast<int>(std::lround(PixelY(v)));
    area_.FillRect(0, py, area_.width(), py + 1, kLightGray);
    const int fy = top_ + py;
    frame_.FillRect(left_ - kTick, fy, left_, fy + 1, kBlack);
    const std::string label = TickLabel(v);
    frame_.DrawText(left_ - kTick - kPad - TextWidth(label), fy - TextHeight() / 2, label, kBlack);
  }
}

double Chart::PixelX(double x) const {
  return (x - x_.min) / (x_.max - x_.min) * (area_.width() - 1);
}

double Chart::PixelY(double y) const {
  return (y_.max - y) / (y_.max - y_.min) * (area_.height() - 1);
}

void Chart::Scatter(const std::vector<double>& xs, const std::vector<double>& ys, Rgb color,
                    double radius) {
  const size_t count = std::min(xs.size(), ys.size());
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(xs[i]) || !std::isfinite(ys[i])) continue;
    const double px = PixelX(xs[i]), py = PixelY(ys[i]);
    // Points far outside the area would only waste time in FillDisc.
    if (px < -radius - 1 || py < -radius - 1 || px > area_.width() + radius ||
        py > area_.height() + radius) {
      continue;
    }
    area_.FillDisc(px, py, radius, color);
  }
}

void Chart::Line(const std::vector<double>& xs, const std::vector<double>& ys, Rgb color,
                 double thickness) {
  const size_t count = std::min(xs.size(), ys.size());
  for (size_t i = 1; i < count; ++i) {
    const bool finite = std::isfinite(xs[i - 1]) && std::isfinite(ys[i - 1]) &&
                        std::isfinite(xs[i]) && std::isfinite(ys[i]);
    if (!finite) continue;
    area_.DrawLine(PixelX(xs[i - 1]), PixelY(ys[i - 1]), PixelX(xs[i]), PixelY(ys[i]), color,
                   thickness);
  }
}

void Chart::Bar(double x0, double x1, double y0, double y1, Rgb color) {
  if (!std::isfinite(x0) || !std::isfinite(x1) || !std::isfinite(y0) || !std::isfinite(y1)) {
    return;
  }
  // Clamped to the plot area first, so that huge values cannot overflow the conversion.
  const double w = area_.width(), h = area_.height();
  auto clamp = [](double v, double hi) { return std::clamp(v, -1.0, hi + 1); };
  const double px0 = clamp(PixelX(std::min(x0, x1)), w), px1 = clamp(PixelX(std::max(x0, x1)), w);
  const double py0 = clamp(PixelY(std::max(y0, y1)), h), py1 = clamp(PixelY(std::min(y0, y1)), h);
  area_.FillRect(static_cast<int>(std::lround(px0)), static_cast<int>(std::lround(py0)),
                 static_cast<int>(std::lround(px1)) + 1, static_cast<int>(std::lround(py1)) + 1,
                 color);
}

Image Chart::Render() const {
  Image image = frame_;
  image.Paste(area_, left_, top_);
  const int x0 = left_ - 1, y0 = top_ - 1, x1 = left_ + area_.width(), y1 = top_ + area_.height();
  image.FillRect(x0, y0, x1 + 1, y0 + 1, kBlack);
  image.FillRect(x0, y1, x1 + 1, y1 + 1, kBlack);
  image.FillRect(x0, y0, x0 + 1, y1 + 1, kBlack);
  image.FillRect(x1, y0, x1 + 1, y1 + 1, kBlack);
  return image;
}

// ---- Image grids and PNG -----------------------------------------------------------------------

absl::StatusOr<Image> TileGrayscale(const std::vector<std::vector<const float*>>& rows, int height,
                                    int width, int scale, int gap) {
  size_t columns = 0;
  for (const auto& row : rows) columns = std::max(columns, row.size());
  if (columns == 0) return absl::InvalidArgumentError("TileGrayscale: the grid has no images");
  if (height < 1 || width < 1 || scale < 1 || gap < 0) {
    return absl::InvalidArgumentError(absl::StrCat("TileGrayscale: invalid tile size ", height, "x",
                                                   width, ", scale ", scale, ", gap ", gap));
  }

  const int tile_w = width * scale, tile_h = height * scale;
  const int n = static_cast<int>(columns), m = static_cast<int>(rows.size());
  Image grid(n * tile_w + (n + 1) * gap, m * tile_h + (m + 1) * gap);
  for (int r = 0; r < m; ++r) {
    for (int c = 0; c < static_cast<int>(rows[r].size()); ++c) {
      const float* pixels = rows[r][c];
      if (pixels == nullptr) continue;
      const int left = gap + c * (tile_w + gap), top = gap + r * (tile_h + gap);
      for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
          const float v = std::clamp(pixels[y * width + x], 0.0f, 1.0f);
          const uint8_t level = static_cast<uint8_t>(std::lround(v * 255));
          grid.FillRect(left + x * scale, top + y * scale, left + (x + 1) * scale,
                        top + (y + 1) * scale, Rgb{level, level, level});
        }
      }
    }
  }
  return grid;
}

absl::StatusOr<std::string> EncodePng(const Image& image) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width());
  png.height = static_cast<png_uint_32>(image.height());
  png.format = PNG_FORMAT_RGB;

  // The first call computes the size, the second encodes.
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels().data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("libpng failed to encode a ", image.width(), "x",
                                            image.height(), " image: ", png.message));
  }
  std::string bytes(size, '\0');
  if (!png_image_write_to_memory(&png, bytes.data(), &size, 0, image.pixels().data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("libpng failed to encode a ", image.width(), "x",
                                            image.height(), " image: ", png.message));
  }
  bytes.resize(size);
  return bytes;
}

absl::Status WritePng(const std::string& path, const Image& image) {
  absl::StatusOr<std::string> bytes = EncodePng(image);
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(),
                        absl::StrCat("cannot write '", path, "': ", bytes.status().message()));
  }
  return WriteFileAtomically(path, *bytes);
}

}  // namespace kiln::plot
