/** \file
 * Figures of a training run as PNG files: line charts (loss, accuracy, gradient norms), a
 * confusion matrix and the filters of the first convolution. PLplot 5.15 draws the charts and
 * text into memory through its cairo "memcairo" device. libpng then encodes the picture, and
 * kiln::plot::WritePng writes it atomically: `path` is replaced only by a complete image, and a
 * failed write leaves neither a partial file nor a temporary one.
 *
 *   kiln::figures::Series train{"train", epochs, train_loss};
 *   kiln::figures::Series test{"test", epochs, test_loss};
 *   absl::Status s = kiln::figures::PlotCurves("loss.png", "Loss", "epoch", "loss",
 *                                              {train, test});
 *
 *   absl::StatusOr<kiln::figures::CountMatrix> m = kiln::figures::ConfusionMatrix(labels,
 *                                                                                 predictions, 10);
 *   s = kiln::figures::PlotConfusionMatrix("confusion.png", *m, class_names);
 *
 * Text is UTF-8 and drawn in the system's sans-serif font (through Pango and fontconfig).
 * PLplot keeps global state, so the functions here take a process-wide lock. Other code in the
 * process must not call PLplot while one of them runs.
 * Needs Debian's libplplot-dev and plplot-driver-cairo (tools/install-deps.sh). Without the
 * cairo driver the functions return FailedPrecondition.
 */
#ifndef KILN_RUNTIME_FIGURES_H_
#define KILN_RUNTIME_FIGURES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln::figures {

/// One line of a line chart: the points (xs[i], ys[i]), named in the legend.
struct Series {
  std::string name;
  std::vector<double> xs, ys;
};

/// Draws a 900 × 540 pixel line chart with a title, axis titles, grid lines and a legend to the
/// right of the plot area, and writes it to `path` as PNG. Each series gets its own colour (ten
/// colours, then the colours repeat with dashed lines). A point with a non-finite coordinate
/// breaks its line, and with `log_y` so does a y <= 0, because a logarithmic axis cannot show
/// it. The axes span the points that are drawn, and [0, 1] when there are none.
/// The legend shrinks its text beyond 20 series, and about 40 names fit its height.
/// Errors: InvalidArgument when `series` is empty or a series' xs and ys differ in length
/// (the message names the series), FailedPrecondition when PLplot's cairo driver is missing,
/// and WritePng's errors, which name `path`.
absl::Status PlotCurves(const std::string& path, const std::string& title,
                        const std::string& x_label, const std::string& y_label,
                        const std::vector<Series>& series, bool log_y = false);

/// A k × k matrix of counts, row-major: counts[true_class][predicted_class].
using CountMatrix = std::vector<std::vector<int64_t>>;

/// Counts each (labels[i], predictions[i]) pair into a `class_count` × `class_count` matrix.
/// InvalidArgument when the vectors differ in length, `class_count` < 1, or a value lies outside
/// [0, class_count); the message names the index and the value.
absl::StatusOr<CountMatrix> ConfusionMatrix(const std::vector<int>& labels,
                                            const std::vector<int>& predictions, int class_count);

/// Draws `matrix` as a heat map titled "Confusion matrix" and writes it to `path` as PNG: true
/// classes as rows from the top, predicted classes as columns, each cell coloured by its count
/// divided by its row's total (white for 0, dark blue for 1) and labelled with the count. The axes
/// are titled "true" and "predicted" and labelled with `class_names`, or with the class indices
/// when `class_names` is empty. The image grows with the class count, from 480 to 1200 pixels
/// square.
/// Errors: InvalidArgument when `matrix` is empty or not square, a count is negative, or
/// `class_names` is neither empty nor one name per class, FailedPrecondition when PLplot's
/// cairo driver is missing, and WritePng's errors, which name `path`.
absl::Status PlotConfusionMatrix(const std::string& path, const CountMatrix& matrix,
                                 const std::vector<std::string>& class_names = {});

/// The shape of a convolution's weights, PyTorch's (out_channels, in_channels, kh, kw).
struct FilterShape {
  int out_channels = 0, in_channels = 0, height = 0, width = 0;
};

/// Draws each of the `shape.out_channels` filters in `weights` (row-major in `shape`) as a tile
/// of a grid under `title`, and writes the image to `path` as PNG. Each filter is scaled from
/// its own minimum (black) to its maximum (white), so tiles show patterns, not magnitudes. With 3
/// input channels a tile is an RGB image (channels 0, 1, 2 as red, green, blue), with 1 it is
/// grayscale, and otherwise it shows the mean over the input channels in grayscale. A filter
/// with all values equal is mid-gray, and non-finite weights are left out of the range and drawn
/// black. Each weight becomes a square block max(1, floor(40 / max(kh, kw))) pixels wide, the
/// grid has ceil(sqrt(out_channels)) columns, and the image is at least 360 pixels wide.
/// Errors: InvalidArgument when a dimension is below 1 or weights.size() is not the product of
/// the shape, FailedPrecondition when PLplot's cairo driver is missing, and WritePng's errors,
/// which name `path`.
absl::Status PlotFilterGrid(const std::string& path, const std::vector<float>& weights,
                            FilterShape shape, const std::string& title);

}  // namespace kiln::figures

#endif  // KILN_RUNTIME_FIGURES_H_
