/** \file
 * Small raster plots saved as PNG: a chart with axes, numeric tick labels, scatter points,
 * polylines and bars, and a grid of grayscale images. Drawing is plain pixel work on an RGB image, and
 * libpng's simplified API (libpng 1.6) does the encoding.
 *
 *   kiln::plot::Chart chart(640, 400, {-1, 1}, {-1.5, 1.5});
 *   chart.Scatter(xs, ys, kiln::plot::kGray);
 *   chart.Line(xs, fit, kiln::plot::kRed);
 *   absl::Status s = kiln::plot::WritePng("fit.png", chart.Render());
 *
 * Text is limited to tick labels: digits, '-', '+', '.' and 'e' in a 3×5 pixel font. Legends and
 * axis titles belong in the caption of the document that shows the image.
 */
#ifndef KILN_RUNTIME_PLOT_H_
#define KILN_RUNTIME_PLOT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln::plot {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

inline constexpr Rgb kWhite{255, 255, 255};
inline constexpr Rgb kBlack{0, 0, 0};
inline constexpr Rgb kLightGray{225, 225, 225};
inline constexpr Rgb kGray{140, 140, 140};
inline constexpr Rgb kRed{214, 39, 40};
inline constexpr Rgb kBlue{31, 119, 180};
inline constexpr Rgb kGreen{44, 160, 44};

/// An 8-bit RGB image, row-major from the top-left pixel, 3 bytes per pixel.
class Image {
 public:
  /// An image of width × height pixels filled with `background`. Sizes below 1 are raised to 1.
  Image(int width, int height, Rgb background = kWhite);

  int width() const { return width_; }
  int height() const { return height_; }
  /// The pixels, width · height · 3 bytes.
  const std::vector<uint8_t>& pixels() const { return pixels_; }

  /// Sets pixel (x, y). Pixels outside the image are ignored, so shapes may cross the border.
  void Set(int x, int y, Rgb color);
  /// Returns pixel (x, y), which must lie inside the image.
  Rgb Get(int x, int y) const;

  /// Fills the pixels x in [x0, x1), y in [y0, y1).
  void FillRect(int x0, int y0, int x1, int y1, Rgb color);
  /// Fills a disc of `radius` pixels around (x, y). Radius 0 sets the nearest pixel.
  void FillDisc(double x, double y, double radius, Rgb color);
  /// Draws a segment between two pixel positions, `thickness` pixels wide, with round ends.
  void DrawLine(double x0, double y0, double x1, double y1, Rgb color, double thickness = 1);
  /// Draws `text` with its top-left corner at (x, y), each font pixel as a scale × scale block.
  /// Characters outside the font leave a blank.
  void DrawText(int x, int y, std::string_view text, Rgb color, int scale = 2);
  /// Copies `source` with its top-left corner at (x, y), clipped to this image.
  void Paste(const Image& source, int x, int y);

 private:
  int width_, height_;
  std::vector<uint8_t> pixels_;
};

/// Width in pixels of `text` drawn by Image::DrawText at `scale`.
int TextWidth(std::string_view text, int scale = 2);
/// Height in pixels of a line drawn by Image::DrawText at `scale`.
int TextHeight(int scale = 2);

/// A closed interval [min, max] of data values, with min < max.
struct Range {
  double min = 0, max = 1;
};

/// A 2-D chart with linear axes: a plot area framed in black with light-gray grid lines at
/// "nice" tick values (1, 2 or 5 times a power of ten), labelled on the left and bottom axes.
/// Data outside the ranges is clipped at the frame.
class Chart {
 public:
  /// A chart of `width` × `height` pixels (at least 160 × 120) for data in `x` × `y`. An invalid
  /// range (min ≥ max, or not finite) becomes [min, min + 1], or [0, 1] when min is not finite.
  Chart(int width, int height, Range x, Range y);

  /// Draws a dot of `radius` pixels at each (xs[i], ys[i]). The shorter vector sets the count,
  /// and points with a non-finite coordinate are skipped.
  void Scatter(const std::vector<double>& xs, const std::vector<double>& ys, Rgb color,
               double radius = 2);
  /// Draws the polyline through (xs[i], ys[i]) in order, `thickness` pixels wide. A point with a
  /// non-finite coordinate breaks the line there.
  void Line(const std::vector<double>& xs, const std::vector<double>& ys, Rgb color,
            double thickness = 2);

  /// Fills the rectangle of data coordinates [x0, x1] × [y0, y1] (a bar of a bar chart),
  /// clipped at the frame. Nothing is drawn when a coordinate is not finite.
  void Bar(double x0, double x1, double y0, double y1, Rgb color);

  /// Returns the finished chart: axes, labels and the data drawn so far.
  Image Render() const;

 private:
  double PixelX(double x) const;
  double PixelY(double y) const;

  Range x_, y_;
  Image frame_;     // Everything outside the plot area: tick marks and labels.
  Image area_;      // The plot area: grid lines and data.
  int left_, top_;  // Position of the plot area in frame_.
};

/// Returns the tick values for `range`: multiples of a step of 1, 2 or 5 times a power of ten,
/// chosen to give about `target` ticks, that lie inside the range.
std::vector<double> NiceTicks(Range range, int target = 6);

/// Tiles grayscale images into a grid: rows[r][c] goes to grid row r, column c. Each image has
/// height × width values, row-major, where 0 is black and 1 white (values outside [0, 1] are
/// clamped). Each value becomes a scale × scale block, and `gap` white pixels separate the tiles.
/// Rows may differ in length, and the longest sets the grid's width. A null pointer leaves its
/// tile white. Returns InvalidArgument for an empty grid or non-positive sizes.
absl::StatusOr<Image> TileGrayscale(const std::vector<std::vector<const float*>>& rows, int height,
                                    int width, int scale = 3, int gap = 2);

/// Encodes `image` as an 8-bit RGB PNG file in memory.
absl::StatusOr<std::string> EncodePng(const Image& image);
/// Encodes `image` and writes it to `path` atomically (WriteFileAtomically): `path` is replaced
/// only by a complete file.
absl::Status WritePng(const std::string& path, const Image& image);

}  // namespace kiln::plot

#endif  // KILN_RUNTIME_PLOT_H_
