/// \file
/// Data augmentation for training: five torchvision 0.14 transforms with its parameters and its
/// tensor-path arithmetic, driven by counter-based random numbers.
///
/// Example:
///
///     absl::StatusOr<kiln::Augmentation> augmentation = kiln::ParseAugmentation(
///         "hflip(p=0.5),resized_crop(scale=0.08:1),jitter(brightness=0.4)", 1, 28, 28);
///     if (!augmentation.ok()) return augmentation.status();  // Names the bad text and the fix.
///     std::vector<float> out(batch * 28 * 28);
///     absl::Status s = kiln::Augment(*augmentation, images, batch, 1, 28, 28, indices, seed,
///                                    epoch, out.data());
///
/// The module has three layers:
///   1. Functional ops (HorizontalFlip, Erase, ResizedCrop, Perspective, Adjust*) apply one
///      transform with explicit parameters to one CHW float image, as the functions of the same
///      names in torchvision.transforms.functional do on float tensors.
///   2. Sample* functions draw those parameters by torchvision's procedures (the get_params
///      methods of the transform classes) from a SampleRng.
///   3. Augmentation is an ordered list of transforms, like transforms.Compose, and Augment
///      applies it to a batch.
///
/// Randomness is counter-based. The draws for one sample depend only on (seed, epoch, sample
/// index), so the output does not depend on thread scheduling or batch composition, and a
/// resumed run reproduces the same images. Kiln does not reproduce torchvision's random
/// streams: the same seed gives different draws than torch.manual_seed, from the same
/// distributions.
///
/// Images are float values, nominally in [0, 1], in CHW layout. On 1-channel images, saturation
/// and hue leave the image unchanged, because torchvision 0.14's adjust_saturation and
/// adjust_hue return 1-channel tensors as they are (checked by tools/make_augment_reference.py,
/// whose reference outputs for those cases equal the inputs).

#ifndef KILN_RUNTIME_AUGMENT_H_
#define KILN_RUNTIME_AUGMENT_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/idx.h"

namespace kiln {

// ---- Functional ops --------------------------------------------------------------------------

/// The shape of one CHW image.
struct ImageShape {
  int channels = 1;
  int height = 0;
  int width = 0;
  /// Number of values: channels x height x width.
  int64_t size() const { return int64_t{channels} * height * width; }
};

/// A rectangle of pixels: rows [top, top + height), columns [left, left + width).
struct Box {
  int top = 0;
  int left = 0;
  int height = 0;
  int width = 0;
};

/// A pixel position: x is the column, y the row.
struct Point {
  int x = 0;
  int y = 0;
};

/// Four corners in torchvision's order: top-left, top-right, bottom-right, bottom-left.
using Quad = std::array<Point, 4>;

/// Mirrors `image` left to right in place (torchvision's hflip).
void HorizontalFlip(ImageShape shape, float* image);

/// Sets every channel of the pixels in `box` to `value`, in place (torchvision's erase with a
/// scalar value). `box` must lie inside the image.
void Erase(ImageShape shape, const Box& box, float value, float* image);

/// Crops `box` from `image` and resizes the crop to out_height x out_width (torchvision's
/// resized_crop with bilinear interpolation, antialias=False, align_corners=False, the tensor
/// path of RandomResizedCrop in torchvision 0.14).
///
/// Output pixel (i, j) samples the crop at row (i + 0.5) * box.height / out_height - 0.5 and the
/// matching column, clamped below at 0, as torch's upsample_bilinear2d does. `box` must lie inside
/// the image, its sides and the output sizes must be at least 1, and `out` (channels x out_height x
/// out_width values) must not overlap `image`.
void ResizedCrop(ImageShape shape, const float* image, const Box& box, int out_height,
                 int out_width, float* out);

/// The 8 coefficients (a, b, c, d, e, f, g, h) of a perspective transform. It maps an output
/// pixel (x, y) to the input position (ax + by + c, dx + ey + f) / (gx + hy + 1).
using PerspectiveCoefficients = std::array<double, 8>;

/// Solves the coefficients that map each of `endpoints` to the matching one of `startpoints`
/// (torchvision's _get_perspective_coeffs). Kiln solves the 8 x 8 system in double precision,
/// torchvision by least squares in float32, so the two differ by rounding only. Returns
/// std::nullopt when the system is singular (for example, three collinear end points).
std::optional<PerspectiveCoefficients> GetPerspectiveCoefficients(const Quad& startpoints,
                                                                  const Quad& endpoints);

/// Warps `image` so that `startpoints` move to `endpoints` (torchvision's perspective with
/// bilinear interpolation and fill 0, as RandomPerspective calls it).
///
/// Output pixel (i, j) samples the input at the position that the coefficients give for the
/// pixel centre (j + 0.5, i + 0.5), minus 0.5 (grid_sample with align_corners=False). Neighbours
/// outside the image count as 0, and the result is multiplied by the same bilinear sample of an
/// all-ones image, as torchvision's fill mask does. When the coefficients cannot be solved, `out`
/// receives a copy of `image`. `out` must not overlap `image`.
void Perspective(ImageShape shape, const float* image, const Quad& startpoints,
                 const Quad& endpoints, float* out);

/// Multiplies every value by `factor` and clamps to [0, 1] (torchvision's adjust_brightness).
void AdjustBrightness(ImageShape shape, double factor, float* image);

/// Blends each value with the mean of the grayscale image: factor * x + (1 - factor) * mean,
/// clamped to [0, 1] (torchvision's adjust_contrast). The grayscale image is
/// 0.2989 R + 0.587 G + 0.114 B for 3 channels and the image itself for 1. `shape.channels` must
/// be 1 or 3.
void AdjustContrast(ImageShape shape, double factor, float* image);

/// Blends each RGB pixel with its grayscale value: factor * x + (1 - factor) * gray, clamped to
/// [0, 1] (torchvision's adjust_saturation). A 1-channel image is left unchanged. `shape.channels`
/// must be 1 or 3.
void AdjustSaturation(ImageShape shape, double factor, float* image);

/// Shifts the hue of each RGB pixel by `factor` turns, in [-0.5, 0.5], through torchvision's
/// float RGB -> HSV -> RGB conversion (adjust_hue). A 1-channel image is left unchanged.
/// `shape.channels` must be 1 or 3.
void AdjustHue(ImageShape shape, double factor, float* image);

// ---- Parameter sampling ----------------------------------------------------------------------

/// A small counter-based random generator: splitmix64 over a 64-bit counter. The uniform helpers
/// are defined here, not by std:: distributions, so every platform draws the same numbers.
class SampleRng {
 public:
  /// The generator of stream `stream` of sample `index` in `epoch`. Augment gives each transform
  /// of a pipeline its position as stream, so that the draws of one transform do not shift those
  /// of the next.
  SampleRng(uint64_t seed, int64_t epoch, int64_t index, uint64_t stream = 0);

  /// The next 64 random bits.
  uint64_t NextBits();
  /// A double uniform in [0, 1), with 53 random bits.
  double Uniform();
  /// A double uniform in [low, high), low <= high (torch.empty(1).uniform_(low, high)).
  double Uniform(double low, double high);
  /// An integer uniform in [low, high), low < high (torch.randint(low, high)), without modulo
  /// bias.
  int64_t UniformInt(int64_t low, int64_t high);

 private:
  uint64_t state_;
};

/// A closed interval [min, max].
struct Range {
  double min = 0;
  double max = 0;
};

/// Draws an erasing box as RandomErasing.get_params does: up to 10 attempts, each with an area
/// of uniform(scale) times the image area and an aspect ratio (height / width) of
/// exp(uniform(log ratio)), rounded half to even. The first box smaller than the image in both
/// sides is placed uniformly. Returns std::nullopt when no attempt fits, and then the image stays
/// unchanged. Requires 0 < ratio.min <= ratio.max.
std::optional<Box> SampleEraseBox(SampleRng& rng, int height, int width, Range scale,
                                  Range ratio);

/// Draws a crop box as RandomResizedCrop.get_params does: up to 10 attempts with an area of
/// uniform(scale) times the image area and an aspect ratio (width / height) of
/// exp(uniform(log ratio)). The first box that fits is placed uniformly. When none fits, the
/// result is the central crop of the image clamped to the ratio range. Requires
/// 0 < ratio.min <= ratio.max.
Box SampleCropBox(SampleRng& rng, int height, int width, Range scale, Range ratio);

/// Start and end points of a perspective transform.
struct PerspectivePoints {
  /// The image corners: (0, 0), (width - 1, 0), (width - 1, height - 1), (0, height - 1).
  Quad startpoints;
  /// Each corner moved inwards by up to distortion_scale times half the image size.
  Quad endpoints;
};

/// Draws the points as RandomPerspective.get_params does, for distortion_scale in [0, 1].
PerspectivePoints SamplePerspectivePoints(SampleRng& rng, int height, int width,
                                          double distortion_scale);

/// The factors of one ColorJitter draw. A factor that is std::nullopt is not applied.
struct JitterFactors {
  /// The order in which to apply brightness (0), contrast (1), saturation (2) and hue (3), a
  /// uniform permutation as torch.randperm(4) gives.
  std::array<int, 4> order = {0, 1, 2, 3};
  std::optional<double> brightness, contrast, saturation, hue;
};

// ---- Transforms and pipelines ----------------------------------------------------------------

/// torchvision.transforms.RandomHorizontalFlip: flips with probability p.
struct RandomHorizontalFlip {
  double p = 0.5;
};

/// torchvision.transforms.RandomErasing with a scalar value: with probability p, sets a box of
/// all channels to `value` (SampleEraseBox).
struct RandomErasing {
  double p = 0.5;
  /// Range of the box area as a fraction of the image area, within [0, 1].
  Range scale = {0.02, 0.33};
  /// Range of the box aspect ratio, height / width.
  Range ratio = {0.3, 3.3};
  float value = 0;
};

/// torchvision.transforms.RandomResizedCrop with bilinear interpolation and antialias=False:
/// crops a box (SampleCropBox) and resizes it to height x width.
struct RandomResizedCrop {
  int height = 0;
  int width = 0;
  /// Range of the crop area as a fraction of the image area.
  Range scale = {0.08, 1.0};
  /// Range of the crop aspect ratio, width / height.
  Range ratio = {3.0 / 4.0, 4.0 / 3.0};
};

/// torchvision.transforms.RandomPerspective with bilinear interpolation and fill 0: with
/// probability p, warps the image by SamplePerspectivePoints.
struct RandomPerspective {
  /// Degree of distortion, in [0, 1].
  double distortion_scale = 0.5;
  double p = 0.5;
};

/// torchvision.transforms.ColorJitter: the factor ranges, each std::nullopt when not applied.
/// ParseAugmentation turns torchvision's single-number form b into [max(0, 1 - b), 1 + b] for
/// brightness, contrast and saturation, and h into [-h, h] for hue.
struct ColorJitter {
  std::optional<Range> brightness, contrast, saturation, hue;
};

/// Draws the factors of one ColorJitter application, as ColorJitter.get_params does: the
/// permutation first, then brightness, contrast, saturation and hue, each uniform in its range.
JitterFactors SampleJitterFactors(SampleRng& rng, const ColorJitter& jitter);

using Transform = std::variant<RandomHorizontalFlip, RandomErasing, RandomResizedCrop,
                               RandomPerspective, ColorJitter>;

/// An ordered list of transforms, applied like transforms.Compose, for images of one shape.
///
/// The output of the whole list has the same shape as its input: RandomResizedCrop resizes to
/// the input's height x width. An Augmentation with no transforms copies its input.
struct Augmentation {
  /// The shape of the images it takes and returns.
  ImageShape shape;
  std::vector<Transform> transforms;

  /// Returns the spec in ParseAugmentation's syntax with every argument written out, or "none".
  /// ParseAugmentation of the result gives the same Augmentation.
  std::string Describe() const;
};

/// Applies `augmentation` to one image with the draws of (seed, epoch, index). `image` and `out`
/// have augmentation.shape and must not overlap.
void AugmentImage(const Augmentation& augmentation, const float* image, uint64_t seed,
                  int64_t epoch, int64_t index, float* out);

/// Applies `augmentation` to `count` images in NCHW layout. Image i uses the draws of (seed, epoch,
/// sample_indices[i]), so its output does not depend on the other images of the batch. `out`
/// receives count x channels x height x width values and must not overlap `images`. The function
/// keeps no state and may run on several threads at once.
///
/// Returns InvalidArgument, writing nothing, when count is negative or (channels, height, width)
/// differs from augmentation.shape.
absl::Status Augment(const Augmentation& augmentation, const float* images, int count,
                     int channels, int height, int width, const int64_t* sample_indices,
                     uint64_t seed, int64_t epoch, float* out);

/// Parses a comma-separated list of transforms for images of channels x height x width:
///
///     hflip(p=0.5)
///     erase(p=0.5, scale=0.02:0.33, ratio=0.3:3.3, value=0)
///     resized_crop(scale=0.08:1, ratio=0.75:1.3333)       output size = height x width
///     perspective(distortion=0.5, p=0.5)
///     jitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
///
/// Omitted arguments take torchvision's defaults (shown above, except that jitter's default for
/// each factor is 0, which turns it off), and a transform without arguments may omit the
/// parentheses. A range is min:max. Each jitter factor is a single number or a min:max range of
/// factors (hue offsets for hue). Spaces around names, values and separators are ignored. An empty
/// spec or "none" gives no transforms.
///
/// Returns InvalidArgument, with a message that quotes the bad text and states the fix, for:
///   - an unknown transform or argument, a repeated argument, or a malformed list;
///   - a value that is not a finite number;
///   - p or distortion outside [0, 1], or a range whose min exceeds its max;
///   - an erasing scale outside [0, 1], a negative crop scale, or a ratio that is not positive;
///   - a negative jitter factor, or a hue outside [-0.5, 0.5];
///   - jitter on images with other than 1 or 3 channels, or a shape with a size below 1.
absl::StatusOr<Augmentation> ParseAugmentation(std::string_view spec, int channels, int height,
                                               int width);

/// Tile layout of WriteAugmentationGrid: each image pixel becomes a kGridScale x kGridScale block,
/// and kGridGap white pixels separate the tiles and frame the grid. A grid of `images` rows and
/// 1 + `variants` columns of H x W images is therefore
/// columns * (W * kGridScale) + (columns + 1) * kGridGap pixels wide, and likewise high.
inline constexpr int kGridScale = 3;
inline constexpr int kGridGap = 2;

/// Writes a PNG grid to `path`: one row for each of the first `images` images of `data`, with
/// the original followed by `variants` augmented draws (epochs 0 to variants - 1, sample index =
/// image index), laid out as kGridScale and kGridGap describe. 1-channel images are drawn in
/// gray, 3-channel images in colour.
///
/// Returns InvalidArgument when `data` does not have augmentation.shape, has other than 1 or 3
/// channels or fewer than `images` images, or when images is below 1 or variants below 0.
/// Write errors come from plot::WritePng and name `path`, and then no file is left there.
absl::Status WriteAugmentationGrid(const std::string& path, const Dataset& data,
                                   const Augmentation& augmentation, uint64_t seed, int images,
                                   int variants);

}  // namespace kiln

#endif  // KILN_RUNTIME_AUGMENT_H_
