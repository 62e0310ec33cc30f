#include "runtime/augment.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cctype>
#include <cstring>
#include <functional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "runtime/plot.h"

namespace kiln {
namespace {

// Pixel (row, column) of channel c in a CHW image.
inline int64_t Offset(ImageShape shape, int c, int row, int column) {
  return (int64_t{c} * shape.height + row) * shape.width + column;
}

// Python's round() for a non-negative double: halves go to the even neighbour.
int64_t RoundHalfToEven(double x) {
  const double floor = std::floor(x);
  const double fraction = x - floor;
  int64_t rounded = static_cast<int64_t>(floor);
  if (fraction > 0.5 || (fraction == 0.5 && rounded % 2 != 0)) ++rounded;
  return rounded;
}

// torchvision's _blend on float images: ratio * x + (1 - ratio) * other, clamped to [0, 1]. The
// ratios are rounded to float as torch does when it multiplies a float tensor by a Python float.
inline float Blend(float x, float other, float ratio, float other_ratio) {
  return std::clamp(ratio * x + other_ratio * other, 0.0f, 1.0f);
}

// torchvision's rgb_to_grayscale weights, applied in float as torch does.
inline float Grayscale(float r, float g, float b) {
  return 0.2989f * r + 0.587f * g + 0.114f * b;
}

}  // namespace

// ---- Functional ops --------------------------------------------------------------------------

void HorizontalFlip(ImageShape shape, float* image) {
  for (int c = 0; c < shape.channels; ++c) {
    for (int row = 0; row < shape.height; ++row) {
      float* line = image + Offset(shape, c, row, 0);
      std::reverse(line, line + shape.width);
    }
  }
}

void Erase(ImageShape shape, const Box& box, float value, float* image) {
  for (int c = 0; c < shape.channels; ++c) {
    for (int row = box.top; row < box.top + box.height; ++row) {
      float* line = image + Offset(shape, c, row, box.left);
      std::fill(line, line + box.width, value);
    }
  }
}

namespace {

// Source index and weights of one output index of torch's upsample_bilinear2d with
// align_corners=False and no explicit scale factor, in float as its CPU kernel computes them.
struct LinearTap {
  int index0 = 0;
  int index1 = 0;
  float weight0 = 1;
  float weight1 = 0;
};

std::vector<LinearTap> LinearTaps(int input_size, int output_size) {
  const float scale = static_cast<float>(input_size) / static_cast<float>(output_size);
  std::vector<LinearTap> taps(output_size);
  for (int i = 0; i < output_size; ++i) {
    float source = scale * (static_cast<float>(i) + 0.5f) - 0.5f;
    if (source < 0) source = 0;
    LinearTap& tap = taps[i];
    tap.index0 = std::min(static_cast<int>(source), input_size - 1);
    tap.index1 = tap.index0 < input_size - 1 ? tap.index0 + 1 : tap.index0;
    tap.weight1 = std::clamp(source - static_cast<float>(tap.index0), 0.0f, 1.0f);
    tap.weight0 = 1.0f - tap.weight1;
  }
  return taps;
}

}  // namespace

void ResizedCrop(ImageShape shape, const float* image, const Box& box, int out_height,
                 int out_width, float* out) {
  const std::vector<LinearTap> rows = LinearTaps(box.height, out_height);
  const std::vector<LinearTap> columns = LinearTaps(box.width, out_width);
  for (int c = 0; c < shape.channels; ++c) {
    for (int i = 0; i < out_height; ++i) {
      const LinearTap& r = rows[i];
      const float* line0 = image + Offset(shape, c, box.top + r.index0, box.left);
      const float* line1 = image + Offset(shape, c, box.top + r.index1, box.left);
      float* target = out + (int64_t{c} * out_height + i) * out_width;
      for (int j = 0; j < out_width; ++j) {
        const LinearTap& t = columns[j];
        const float top = t.weight0 * line0[t.index0] + t.weight1 * line0[t.index1];
        const float bottom = t.weight0 * line1[t.index0] + t.weight1 * line1[t.index1];
        target[j] = r.weight0 * top + r.weight1 * bottom;
      }
    }
  }
}

std::optional<PerspectiveCoefficients> GetPerspectiveCoefficients(const Quad& startpoints,
                                                                  const Quad& endpoints) {
  // Each end point (x, y) and start point (u, v) give two equations in (a, ..., h):
  //   a x + b y + c - g x u - h y u = u   and   d x + e y + f - g x v - h y v = v.
  double a[8][9] = {};
  for (int k = 0; k < 4; ++k) {
    const double x = endpoints[k].x, y = endpoints[k].y;
    const double u = startpoints[k].x, v = startpoints[k].y;
    const double first[9] = {x, y, 1, 0, 0, 0, -u * x, -u * y, u};
    const double second[9] = {0, 0, 0, x, y, 1, -v * x, -v * y, v};
    std::copy(first, first + 9, a[2 * k]);
    std::copy(second, second + 9, a[2 * k + 1]);
  }

  // Gaussian elimination with partial pivoting on the augmented matrix.
  for (int col = 0; col < 8; ++col) {
    int pivot = col;
    for (int row = col + 1; row < 8; ++row) {
      if (std::abs(a[row][col]) > std::abs(a[pivot][col])) pivot = row;
    }
    if (std::abs(a[pivot][col]) < 1e-12) return std::nullopt;
    std::swap(a[col], a[pivot]);
    for (int row = 0; row < 8; ++row) {
      if (row == col) continue;
      const double factor = a[row][col] / a[col][col];
      for (int k = col; k < 9; ++k) a[row][k] -= factor * a[col][k];
    }
  }
  PerspectiveCoefficients coefficients;
  for (int k = 0; k < 8; ++k) coefficients[k] = a[k][8] / a[k][k];
  return coefficients;
}

void Perspective(ImageShape shape, const float* image, const Quad& startpoints,
                 const Quad& endpoints, float* out) {
  const std::optional<PerspectiveCoefficients> solved =
      GetPerspectiveCoefficients(startpoints, endpoints);
  if (!solved.has_value()) {
    std::copy(image, image + shape.size(), out);
    return;
  }
  const PerspectiveCoefficients& k = *solved;
  const int64_t plane = int64_t{shape.height} * shape.width;
  // A position more than a pixel outside the image reads only zeros, so clamping it there
  // changes nothing and keeps the integer conversion defined (NaN goes to -2 as well).
  auto clamp_outside = [](double v, int size) {
    return std::min(std::max(-2.0, v), size + 1.0);  // std::max(-2.0, NaN) is -2
  };
  // floor() without the libm call that the baseline x86-64 target (no SSE4.1) makes.
  auto floor_to_int = [](double v) {
    const int truncated = static_cast<int>(v);
    return truncated - (truncated > v ? 1 : 0);
  };
  // The image with a zero border (2 pixels before, 3 after), so that the 4 neighbours of any
  // clamped position are readable without a test per neighbour. Those tests mispredicted, and
  // the transform took 17 µs per 28 x 28 image.
  const int padded_width = shape.width + 5, padded_height = shape.height + 5;
  const int64_t padded_plane = int64_t{padded_width} * padded_height;
  std::vector<float> padded(static_cast<size_t>(shape.channels * padded_plane), 0.0f);
  for (int c = 0; c < shape.channels; ++c) {
    for (int i = 0; i < shape.height; ++i) {
      std::copy_n(image + c * plane + int64_t{i} * shape.width, shape.width,
                  padded.data() + c * padded_plane + int64_t{i + 2} * padded_width + 2);
    }
  }
  // The weight that the neighbours at `index` and `index + 1` inside [0, size) contribute.
  // Computed without branches, which mispredicted along the image's border.
  auto inside_weight = [](int index, double fraction, int size) {
    const auto inside = [size](int n) {
      return static_cast<double>(static_cast<unsigned>(n) < static_cast<unsigned>(size));
    };
    return inside(index) * (1 - fraction) + inside(index + 1) * fraction;
  };

  // Per row: first the input positions (a loop the compiler vectorizes), then the samples.
  std::vector<double> xs(shape.width), ys(shape.width);
  for (int i = 0; i < shape.height; ++i) {
    for (int j = 0; j < shape.width; ++j) {
      // The input position of this output pixel's centre, in grid_sample's pixel coordinates
      // (align_corners=False), where input pixel (r, s) has its centre at (s, r).
      const double x = j + 0.5, y = i + 0.5;
      const double inverse = 1.0 / (k[6] * x + k[7] * y + 1);
      xs[j] = (k[0] * x + k[1] * y + k[2]) * inverse - 0.5;
      ys[j] = (k[3] * x + k[4] * y + k[5]) * inverse - 0.5;
    }
    for (int j = 0; j < shape.width; ++j) {
      const double source_x = clamp_outside(xs[j], shape.width);
      const double source_y = clamp_outside(ys[j], shape.height);
      const int x0 = floor_to_int(source_x), y0 = floor_to_int(source_y);
      const double fx = source_x - x0, fy = source_y - y0;
      // torchvision samples the image and an all-ones mask with zero padding and blends with the
      // fill value: sample * mask + (1 - mask) * fill, with fill = 0. The mask's sample is the
      // weight of the neighbours inside the image, which factors into columns and rows.
      const double mask =
          inside_weight(x0, fx, shape.width) * inside_weight(y0, fy, shape.height);
      const int64_t at = int64_t{y0 + 2} * padded_width + (x0 + 2);
      for (int c = 0; c < shape.channels; ++c) {
        const float* p = padded.data() + c * padded_plane + at;
        const double sum = (1 - fx) * (1 - fy) * p[0] + fx * (1 - fy) * p[1] +
                           (1 - fx) * fy * p[padded_width] + fx * fy * p[padded_width + 1];
        out[c * plane + int64_t{i} * shape.width + j] = static_cast<float>(sum * mask);
      }
    }
  }
}

void AdjustBrightness(ImageShape shape, double factor, float* image) {
  const float ratio = static_cast<float>(factor);
  const float other_ratio = static_cast<float>(1.0 - factor);
  for (int64_t n = 0; n < shape.size(); ++n) image[n] = Blend(image[n], 0, ratio, other_ratio);
}

void AdjustContrast(ImageShape shape, double factor, float* image) {
  const int64_t plane = int64_t{shape.height} * shape.width;
  double sum = 0;
  for (int64_t n = 0; n < plane; ++n) {
    sum += shape.channels == 3 ? Grayscale(image[n], image[plane + n], image[2 * plane + n])
                               : image[n];
  }
  const float mean = static_cast<float>(sum / static_cast<double>(plane));

  const float ratio = static_cast<float>(factor);
  const float other_ratio = static_cast<float>(1.0 - factor);
  for (int64_t n = 0; n < shape.size(); ++n) {
    image[n] = Blend(image[n], mean, ratio, other_ratio);
  }
}

void AdjustSaturation(ImageShape shape, double factor, float* image) {
  if (shape.channels != 3) return;
  const int64_t plane = int64_t{shape.height} * shape.width;
  const float ratio = static_cast<float>(factor);
  const float other_ratio = static_cast<float>(1.0 - factor);
  for (int64_t n = 0; n < plane; ++n) {
    float& r = image[n];
    float& g = image[plane + n];
    float& b = image[2 * plane + n];
    const float gray = Grayscale(r, g, b);
    r = Blend(r, gray, ratio, other_ratio);
    g = Blend(g, gray, ratio, other_ratio);
    b = Blend(b, gray, ratio, other_ratio);
  }
}

void AdjustHue(ImageShape shape, double factor, float* image) {
  if (shape.channels != 3) return;
  const int64_t plane = int64_t{shape.height} * shape.width;
  const float shift = static_cast<float>(factor);
  for (int64_t n = 0; n < plane; ++n) {
    float& r = image[n];
    float& g = image[plane + n];
    float& b = image[2 * plane + n];

    // RGB -> HSV as torchvision's _rgb2hsv: where max == min, saturation and hue are 0, and
    // ties between channels go to red, then green.
    const float max = std::max({r, g, b});
    const float min = std::min({r, g, b});
    const bool gray = max == min;
    const float chroma = max - min;
    const float saturation = chroma / (gray ? 1.0f : max);
    const float divisor = gray ? 1.0f : chroma;
    const float rc = (max - r) / divisor, gc = (max - g) / divisor, bc = (max - b) / divisor;
    float hue;
    if (max == r) {
      hue = bc - gc;
    } else if (max == g) {
      hue = 2.0f + rc - bc;
    } else {
      hue = 4.0f + gc - rc;
    }
    hue = std::fmod(hue / 6.0f + 1.0f, 1.0f);

    // Shift with Python's modulo: the result takes the sign of the divisor 1.
    hue = std::fmod(hue + shift, 1.0f);
    if (hue < 0) hue += 1.0f;

    // HSV -> RGB as torchvision's _hsv2rgb.
    const float value = max;
    const float sector = std::floor(hue * 6.0f);
    const float f = hue * 6.0f - sector;
    const float p = std::clamp(value * (1.0f - saturation), 0.0f, 1.0f);
    const float q = std::clamp(value * (1.0f - saturation * f), 0.0f, 1.0f);
    const float t = std::clamp(value * (1.0f - saturation * (1.0f - f)), 0.0f, 1.0f);
    switch (static_cast<int>(sector) % 6) {
      case 0: r = value, g = t, b = p; break;
      case 1: r = q, g = value, b = p; break;
      case 2: r = p, g = value, b = t; break;
      case 3: r = p, g = q, b = value; break;
      case 4: r = t, g = p, b = value; break;
      default: r = value, g = p, b = q; break;
    }
  }
}

// ---- Parameter sampling ----------------------------------------------------------------------

namespace {

constexpr uint64_t kGoldenGamma = 0x9e3779b97f4a7c15ULL;

// The splitmix64 output function.
uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

SampleRng::SampleRng(uint64_t seed, int64_t epoch, int64_t index, uint64_t stream) {
  uint64_t key = Mix(seed + kGoldenGamma);
  key = Mix(key ^ (static_cast<uint64_t>(epoch) + kGoldenGamma));
  key = Mix(key ^ (static_cast<uint64_t>(index) + 2 * kGoldenGamma));
  state_ = Mix(key ^ (stream + 3 * kGoldenGamma));
}

uint64_t SampleRng::NextBits() {
  state_ += kGoldenGamma;
  return Mix(state_);
}

double SampleRng::Uniform() { return static_cast<double>(NextBits() >> 11) * 0x1.0p-53; }

double SampleRng::Uniform(double low, double high) { return low + (high - low) * Uniform(); }

int64_t SampleRng::UniformInt(int64_t low, int64_t high) {
  const uint64_t n = static_cast<uint64_t>(high - low);
  // Rejecting the lowest 2^64 mod n values leaves a multiple of n equally likely values.
  const uint64_t threshold = (0 - n) % n;
  uint64_t bits = NextBits();
  while (bits < threshold) bits = NextBits();
  return low + static_cast<int64_t>(bits % n);
}

std::optional<Box> SampleEraseBox(SampleRng& rng, int height, int width, Range scale,
                                  Range ratio) {
  const double area = static_cast<double>(height) * width;
  const double log_min = std::log(ratio.min), log_max = std::log(ratio.max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double erase_area = area * rng.Uniform(scale.min, scale.max);
    const double aspect_ratio = std::exp(rng.Uniform(log_min, log_max));
    const int64_t h = RoundHalfToEven(std::sqrt(erase_area * aspect_ratio));
    const int64_t w = RoundHalfToEven(std::sqrt(erase_area / aspect_ratio));
    if (!(h < height && w < width)) continue;

    Box box;
    box.height = static_cast<int>(h);
    box.width = static_cast<int>(w);
    box.top = static_cast<int>(rng.UniformInt(0, height - h + 1));
    box.left = static_cast<int>(rng.UniformInt(0, width - w + 1));
    return box;
  }
  return std::nullopt;
}

Box SampleCropBox(SampleRng& rng, int height, int width, Range scale, Range ratio) {
  const double area = static_cast<double>(height) * width;
  const double log_min = std::log(ratio.min), log_max = std::log(ratio.max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.Uniform(scale.min, scale.max);
    const double aspect_ratio = std::exp(rng.Uniform(log_min, log_max));
    const int64_t w = RoundHalfToEven(std::sqrt(target_area * aspect_ratio));
    const int64_t h = RoundHalfToEven(std::sqrt(target_area / aspect_ratio));
    if (!(0 < w && w <= width && 0 < h && h <= height)) continue;

    Box box;
    box.height = static_cast<int>(h);
    box.width = static_cast<int>(w);
    box.top = static_cast<int>(rng.UniformInt(0, height - h + 1));
    box.left = static_cast<int>(rng.UniformInt(0, width - w + 1));
    return box;
  }

  // Central crop of the whole image, narrowed to the nearest allowed aspect ratio.
  const double in_ratio = static_cast<double>(width) / height;
  Box box{0, 0, height, width};
  if (in_ratio < ratio.min) {
    box.height = static_cast<int>(RoundHalfToEven(width / ratio.min));
  } else if (in_ratio > ratio.max) {
    box.width = static_cast<int>(RoundHalfToEven(height * ratio.max));
  }
  box.top = (height - box.height) / 2;
  box.left = (width - box.width) / 2;
  return box;
}

PerspectivePoints SamplePerspectivePoints(SampleRng& rng, int height, int width,
                                          double distortion_scale) {
  // Python's int() truncates towards zero, as the cast does for these non-negative values.
  const int dx = static_cast<int>(distortion_scale * (width / 2));
  const int dy = static_cast<int>(distortion_scale * (height / 2));
  auto near_zero = [&](int d) { return static_cast<int>(rng.UniformInt(0, d + 1)); };
  auto near_end = [&](int size, int d) {
    return static_cast<int>(rng.UniformInt(size - d - 1, size));
  };

  PerspectivePoints points;
  points.startpoints = {Point{0, 0}, Point{width - 1, 0}, Point{width - 1, height - 1},
                        Point{0, height - 1}};
  // Drawn in torchvision's order: x then y of top-left, top-right, bottom-right, bottom-left.
  points.endpoints[0].x = near_zero(dx);
  points.endpoints[0].y = near_zero(dy);
  points.endpoints[1].x = near_end(width, dx);
  points.endpoints[1].y = near_zero(dy);
  points.endpoints[2].x = near_end(width, dx);
  points.endpoints[2].y = near_end(height, dy);
  points.endpoints[3].x = near_zero(dx);
  points.endpoints[3].y = near_end(height, dy);
  return points;
}

JitterFactors SampleJitterFactors(SampleRng& rng, const ColorJitter& jitter) {
  JitterFactors factors;
  // Fisher-Yates shuffle: a uniform permutation, as torch.randperm(4).
  for (int i = 3; i > 0; --i) {
    std::swap(factors.order[i], factors.order[rng.UniformInt(0, i + 1)]);
  }
  auto draw = [&](const std::optional<Range>& range) -> std::optional<double> {
    if (!range.has_value()) return std::nullopt;
    return rng.Uniform(range->min, range->max);
  };
  factors.brightness = draw(jitter.brightness);
  factors.contrast = draw(jitter.contrast);
  factors.saturation = draw(jitter.saturation);
  factors.hue = draw(jitter.hue);
  return factors;
}

// ---- Pipelines -------------------------------------------------------------------------------

namespace {

// Applies one transform to `image` in place, with `scratch` (shape.size() values) as room for
// the out-of-place ops.
class TransformApplier {
 public:
  TransformApplier(ImageShape shape, SampleRng& rng, std::vector<float>& image,
                   std::vector<float>& scratch)
      : shape_(shape), rng_(rng), image_(image), scratch_(scratch) {}

  void operator()(const RandomHorizontalFlip& flip) {
    if (rng_.Uniform() < flip.p) HorizontalFlip(shape_, image_.data());
  }

  void operator()(const RandomErasing& erasing) {
    if (!(rng_.Uniform() < erasing.p)) return;
    const std::optional<Box> box =
        SampleEraseBox(rng_, shape_.height, shape_.width, erasing.scale, erasing.ratio);
    if (box.has_value()) Erase(shape_, *box, erasing.value, image_.data());
  }

  void operator()(const RandomResizedCrop& crop) {
    const Box box = SampleCropBox(rng_, shape_.height, shape_.width, crop.scale, crop.ratio);
    ResizedCrop(shape_, image_.data(), box, crop.height, crop.width, scratch_.data());
    std::swap(image_, scratch_);
  }

  void operator()(const RandomPerspective& perspective) {
    if (!(rng_.Uniform() < perspective.p)) return;
    const PerspectivePoints points =
        SamplePerspectivePoints(rng_, shape_.height, shape_.width, perspective.distortion_scale);
    Perspective(shape_, image_.data(), points.startpoints, points.endpoints, scratch_.data());
    std::swap(image_, scratch_);
  }

  void operator()(const ColorJitter& jitter) {
    const JitterFactors factors = SampleJitterFactors(rng_, jitter);
    for (int op : factors.order) {
      float* image = image_.data();
      if (op == 0 && factors.brightness) AdjustBrightness(shape_, *factors.brightness, image);
      if (op == 1 && factors.contrast) AdjustContrast(shape_, *factors.contrast, image);
      if (op == 2 && factors.saturation) AdjustSaturation(shape_, *factors.saturation, image);
      if (op == 3 && factors.hue) AdjustHue(shape_, *factors.hue, image);
    }
  }

 private:
  ImageShape shape_;
  SampleRng& rng_;
  std::vector<float>& image_;
  std::vector<float>& scratch_;
};

}  // namespace

void AugmentImage(const Augmentation& augmentation, const float* image, uint64_t seed,
                  int64_t epoch, int64_t index, float* out) {
  const ImageShape shape = augmentation.shape;
  std::vector<float> current(image, image + shape.size());
  std::vector<float> scratch(shape.size());
  for (size_t t = 0; t < augmentation.transforms.size(); ++t) {
    SampleRng rng(seed, epoch, index, t);
    std::visit(TransformApplier(shape, rng, current, scratch), augmentation.transforms[t]);
  }
  std::copy(current.begin(), current.end(), out);
}

absl::Status Augment(const Augmentation& augmentation, const float* images, int count,
                     int channels, int height, int width, const int64_t* sample_indices,
                     uint64_t seed, int64_t epoch, float* out) {
  const ImageShape shape = augmentation.shape;
  if (count < 0) {
    return absl::InvalidArgumentError(absl::StrCat("Augment: count ", count, " is negative"));
  }
  if (channels != shape.channels || height != shape.height || width != shape.width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Augment: the images are ", channels, "x", height, "x", width,
        " but the augmentation was parsed for ", shape.channels, "x", shape.height, "x",
        shape.width, ". Pass the model's input shape to ParseAugmentation"));
  }
  for (int i = 0; i < count; ++i) {
    AugmentImage(augmentation, images + i * shape.size(), seed, epoch, sample_indices[i],
                 out + i * shape.size());
  }
  return absl::OkStatus();
}

// ---- Spec parsing and description -----------------------------------------------------------

namespace {

constexpr char kTransformNames[] = "hflip, erase, resized_crop, perspective, jitter";

// Shortest text that parses back to the same double.
std::string FormatNumber(double value) {
  char buffer[32];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

// Shortest text that parses back to the same float.
std::string FormatFloat(float value) {
  char buffer[32];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string FormatRange(Range range) {
  return absl::StrCat(FormatNumber(range.min), ":", FormatNumber(range.max));
}

absl::string_view Trim(absl::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

// One "name(key=value, ...)" item of a spec, with its text trimmed.
struct Call {
  absl::string_view name;
  std::vector<std::pair<absl::string_view, absl::string_view>> arguments;
};

// Builds the InvalidArgument error for `spec` with `detail`, which states what is wrong and how to
// fix it.
absl::Status SpecError(absl::string_view spec, absl::string_view detail) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid augmentation spec \"", spec, "\": ", detail));
}

// Splits `spec` into calls. Checks the punctuation only, not the names.
absl::StatusOr<std::vector<Call>> SplitCalls(absl::string_view spec) {
  std::vector<Call> calls;
  size_t position = 0;
  while (true) {
    const size_t end = spec.find_first_of("(,", position);
    Call call;
    call.name = Trim(spec.substr(position, end == absl::string_view::npos ? end : end - position));
    if (call.name.empty()) {
      return SpecError(spec, absl::StrCat("a transform name is missing at character ", position + 1,
                                          ". Remove the extra comma, or write one of ",
                                          kTransformNames));
    }
    position = end;
    if (position != absl::string_view::npos && spec[position] == '(') {
      const size_t close = spec.find(')', position);
      if (close == absl::string_view::npos) {
        return SpecError(spec, absl::StrCat("\"", call.name, spec.substr(position),
                                            "\" has no closing parenthesis. Add ')'"));
      }
      const absl::string_view inside = spec.substr(position + 1, close - position - 1);
      if (!Trim(inside).empty()) {
        size_t start = 0;
        while (true) {
          const size_t comma = inside.find(',', start);
          const absl::string_view argument = Trim(inside.substr(
              start, comma == absl::string_view::npos ? comma : comma - start));
          const size_t equals = argument.find('=');
          if (equals == absl::string_view::npos) {
            return SpecError(spec, absl::StrCat("argument \"", argument, "\" of ", call.name,
                                                " has no value. Write name=value"));
          }
          call.arguments.emplace_back(Trim(argument.substr(0, equals)),
                                      Trim(argument.substr(equals + 1)));
          if (comma == absl::string_view::npos) break;
          start = comma + 1;
        }
      }
      // After ')' only a comma and the next transform, or the end, may follow.
      position = spec.find_first_not_of(" \t\n", close + 1);
      if (position != absl::string_view::npos && spec[position] != ',') {
        return SpecError(spec, absl::StrCat("unexpected text \"", spec.substr(position),
                                            "\" after \"", call.name,
                                            "(...)\". Separate transforms with commas"));
      }
    }
    calls.push_back(std::move(call));
    if (position == absl::string_view::npos) break;
    ++position;  // Skips the comma.
  }
  return calls;
}

// Reads the arguments of one call into the fields of its transform. Each field parser stores
// into its destination and returns an error detail, or an empty string on success.
class ArgumentReader {
 public:
  ArgumentReader(absl::string_view spec, const Call& call) : spec_(spec), call_(call) {}

  // Registers argument `key`, read by `parse`, which returns an error detail or "".
  template <typename Parse>
  void Add(absl::string_view key, Parse parse) {
    keys_.push_back(key);
    parsers_.push_back(std::function<std::string(absl::string_view)>(parse));
  }

  // Parses every argument of the call, rejecting unknown and repeated ones.
  absl::Status Read() {
    std::vector<bool> seen(keys_.size(), false);
    for (const auto& [key, value] : call_.arguments) {
      const auto found = std::find(keys_.begin(), keys_.end(), key);
      if (found == keys_.end()) {
        const std::string valid =
            keys_.empty() ? "it takes no arguments" : absl::StrCat("valid arguments: ",
                                                                   absl::StrJoin(keys_, ", "));
        return SpecError(spec_, absl::StrCat("unknown argument \"", key, "\" of ", call_.name,
                                             ". ", valid));
      }
      const size_t k = found - keys_.begin();
      if (seen[k]) {
        return SpecError(spec_, absl::StrCat("argument \"", key, "\" of ", call_.name,
                                             " is given twice. Give it once"));
      }
      seen[k] = true;
      const std::string detail = parsers_[k](value);
      if (!detail.empty()) {
        return SpecError(spec_, absl::StrCat("\"", key, "=", value, "\" of ", call_.name, " ",
                                             detail));
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::string_view spec_;
  const Call& call_;
  std::vector<absl::string_view> keys_;
  std::vector<std::function<std::string(absl::string_view)>> parsers_;
};

// Parses a finite number, or returns false.
bool ParseNumber(absl::string_view text, double* value) {
  return absl::SimpleAtod(text, value) && std::isfinite(*value);
}

constexpr char kNotNumber[] = "is not a finite number. Write a decimal number such as 0.5";
constexpr char kNotRange[] =
    "is not a range of two finite numbers. Write min:max with min <= max, such as 0.02:0.33";

// A probability in [0, 1].
auto ProbabilityParser(double* p) {
  return [p](absl::string_view text) -> std::string {
    if (!ParseNumber(text, p)) return kNotNumber;
    if (*p < 0 || *p > 1) return "is outside [0, 1]. Write a probability from 0 to 1";
    return "";
  };
}

// A range min:max with lowest <= min <= max <= highest.
auto RangeParser(Range* range, double lowest, double highest) {
  return [=](absl::string_view text) -> std::string {
    const size_t colon = text.find(':');
    if (colon == absl::string_view::npos || !ParseNumber(text.substr(0, colon), &range->min) ||
        !ParseNumber(text.substr(colon + 1), &range->max)) {
      return kNotRange;
    }
    if (range->min > range->max) return "has min > max. Write min:max with min <= max";
    if (range->min < lowest || range->max > highest) {
      return absl::StrCat("is outside [", FormatNumber(lowest), ", ",
                          std::isinf(highest) ? "inf" : FormatNumber(highest),
                          "]. Write a range inside it");
    }
    return "";
  };
}

// An aspect ratio range: 0 < min <= max.
auto RatioParser(Range* range) {
  return [range](absl::string_view text) -> std::string {
    std::string detail = RangeParser(range, 0, INFINITY)(text);
    if (!detail.empty()) return detail;
    if (range->min <= 0) return "has a ratio of 0. Write positive ratios, such as 0.75:1.3333";
    return "";
  };
}

// A ColorJitter factor: a single number x >= 0, meaning [max(0, center - x), center + x], or a
// range. For hue, center is 0, x must be at most 0.5 and a range lies in [-0.5, 0.5]. A range
// that is the single point `center` turns the factor off, as torchvision does.
auto JitterParser(std::optional<Range>* factor, bool hue) {
  return [=](absl::string_view text) -> std::string {
    const double center = hue ? 0 : 1;
    Range range;
    if (text.find(':') != absl::string_view::npos) {
      std::string detail = RangeParser(&range, hue ? -0.5 : 0, hue ? 0.5 : INFINITY)(text);
      if (!detail.empty()) return detail;
    } else {
      double x = 0;
      if (!ParseNumber(text, &x)) return kNotNumber;
      if (x < 0) return "is negative. Write a factor of 0 or more";
      if (hue && x > 0.5) return "is outside [0, 0.5]. Write a hue offset from 0 to 0.5";
      range = {hue ? -x : std::max(0.0, center - x), center + x};
    }
    if (range.min == center && range.max == center) {
      factor->reset();
    } else {
      *factor = range;
    }
    return "";
  };
}

absl::StatusOr<Transform> ParseTransform(absl::string_view spec, const Call& call,
                                         ImageShape shape) {
  ArgumentReader reader(spec, call);
  Transform transform;
  if (call.name == "hflip") {
    RandomHorizontalFlip& flip = transform.emplace<RandomHorizontalFlip>();
    reader.Add("p", ProbabilityParser(&flip.p));
  } else if (call.name == "erase") {
    RandomErasing& erasing = transform.emplace<RandomErasing>();
    reader.Add("p", ProbabilityParser(&erasing.p));
    reader.Add("scale", RangeParser(&erasing.scale, 0, 1));
    reader.Add("ratio", RatioParser(&erasing.ratio));
    reader.Add("value", [&erasing](absl::string_view text) -> std::string {
      double value = 0;
      if (!ParseNumber(text, &value)) return kNotNumber;
      erasing.value = static_cast<float>(value);
      return "";
    });
  } else if (call.name == "resized_crop") {
    RandomResizedCrop& crop = transform.emplace<RandomResizedCrop>();
    crop.height = shape.height;
    crop.width = shape.width;
    reader.Add("scale", RangeParser(&crop.scale, 0, INFINITY));
    reader.Add("ratio", RatioParser(&crop.ratio));
  } else if (call.name == "perspective") {
    RandomPerspective& perspective = transform.emplace<RandomPerspective>();
    reader.Add("distortion", [&perspective](absl::string_view text) -> std::string {
      if (!ParseNumber(text, &perspective.distortion_scale)) return kNotNumber;
      if (perspective.distortion_scale < 0 || perspective.distortion_scale > 1) {
        return "is outside [0, 1]. Write a distortion scale from 0 to 1";
      }
      return "";
    });
    reader.Add("p", ProbabilityParser(&perspective.p));
  } else if (call.name == "jitter") {
    if (shape.channels != 1 && shape.channels != 3) {
      return SpecError(spec, absl::StrCat("jitter needs images of 1 or 3 channels, not ",
                                          shape.channels, ". Remove jitter"));
    }
    ColorJitter& jitter = transform.emplace<ColorJitter>();
    reader.Add("brightness", JitterParser(&jitter.brightness, false));
    reader.Add("contrast", JitterParser(&jitter.contrast, false));
    reader.Add("saturation", JitterParser(&jitter.saturation, false));
    reader.Add("hue", JitterParser(&jitter.hue, true));
  } else {
    return SpecError(spec, absl::StrCat("unknown transform \"", call.name,
                                        "\". Valid transforms: ", kTransformNames,
                                        ", or none alone"));
  }
  if (absl::Status status = reader.Read(); !status.ok()) return status;
  return transform;
}

// Describe's text for each transform.
struct TransformDescriber {
  std::string operator()(const RandomHorizontalFlip& flip) const {
    return absl::StrCat("hflip(p=", FormatNumber(flip.p), ")");
  }
  std::string operator()(const RandomErasing& erasing) const {
    return absl::StrCat("erase(p=", FormatNumber(erasing.p), ",scale=", FormatRange(erasing.scale),
                        ",ratio=", FormatRange(erasing.ratio), ",value=",
                        FormatFloat(erasing.value), ")");
  }
  std::string operator()(const RandomResizedCrop& crop) const {
    return absl::StrCat("resized_crop(scale=", FormatRange(crop.scale), ",ratio=",
                        FormatRange(crop.ratio), ")");
  }
  std::string operator()(const RandomPerspective& perspective) const {
    return absl::StrCat("perspective(distortion=", FormatNumber(perspective.distortion_scale),
                        ",p=", FormatNumber(perspective.p), ")");
  }
  std::string operator()(const ColorJitter& jitter) const {
    std::vector<std::string> arguments;
    const std::pair<const char*, const std::optional<Range>*> factors[] = {
        {"brightness", &jitter.brightness},
        {"contrast", &jitter.contrast},
        {"saturation", &jitter.saturation},
        {"hue", &jitter.hue}};
    for (const auto& [name, range] : factors) {
      if (range->has_value()) arguments.push_back(absl::StrCat(name, "=", FormatRange(**range)));
    }
    return absl::StrCat("jitter(", absl::StrJoin(arguments, ","), ")");
  }
};

}  // namespace

std::string Augmentation::Describe() const {
  if (transforms.empty()) return "none";
  std::vector<std::string> parts;
  for (const Transform& transform : transforms) {
    parts.push_back(std::visit(TransformDescriber(), transform));
  }
  return absl::StrJoin(parts, ",");
}

absl::StatusOr<Augmentation> ParseAugmentation(std::string_view spec, int channels, int height,
                                               int width) {
  if (channels < 1 || height < 1 || width < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ParseAugmentation: invalid image shape ", channels, "x", height, "x", width,
        ". Channels, height and width must be at least 1"));
  }
  Augmentation augmentation;
  augmentation.shape = ImageShape{channels, height, width};
  // Debian's Abseil has its own string_view, distinct from std::string_view.
  const absl::string_view text(spec.data(), spec.size());
  const absl::string_view trimmed = Trim(text);
  if (trimmed.empty() || trimmed == "none") return augmentation;

  absl::StatusOr<std::vector<Call>> calls = SplitCalls(text);
  if (!calls.ok()) return calls.status();
  for (const Call& call : *calls) {
    if (call.name == "none") {
      return SpecError(text, "\"none\" must stand alone. Remove it or the other transforms");
    }
    absl::StatusOr<Transform> transform = ParseTransform(text, call, augmentation.shape);
    if (!transform.ok()) return transform.status();
    augmentation.transforms.push_back(*std::move(transform));
  }
  return augmentation;
}

// ---- Preview grid ----------------------------------------------------------------------------

namespace {

// Draws `image` as a tile, each pixel a kGridScale x kGridScale block.
plot::Image DrawTile(ImageShape shape, const float* image) {
  plot::Image tile(shape.width * kGridScale, shape.height * kGridScale);
  const int64_t plane = int64_t{shape.height} * shape.width;
  auto level = [](float v) {
    return static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 1.0f) * 255));
  };
  for (int row = 0; row < shape.height; ++row) {
    for (int column = 0; column < shape.width; ++column) {
      const int64_t n = int64_t{row} * shape.width + column;
      plot::Rgb color;
      color.r = level(image[n]);
      color.g = shape.channels == 3 ? level(image[plane + n]) : color.r;
      color.b = shape.channels == 3 ? level(image[2 * plane + n]) : color.r;
      for (int dy = 0; dy < kGridScale; ++dy) {
        for (int dx = 0; dx < kGridScale; ++dx) {
          tile.Set(column * kGridScale + dx, row * kGridScale + dy, color);
        }
      }
    }
  }
  return tile;
}

}  // namespace

absl::Status WriteAugmentationGrid(const std::string& path, const Dataset& data,
                                   const Augmentation& augmentation, uint64_t seed, int images,
                                   int variants) {
  const ImageShape shape = augmentation.shape;
  if (data.channels != shape.channels || data.height != shape.height ||
      data.width != shape.width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot write '", path, "': the dataset's images are ", data.channels, "x", data.height,
        "x", data.width, " but the augmentation was parsed for ", shape.channels, "x",
        shape.height, "x", shape.width, ". Parse it with the dataset's shape"));
  }
  if (shape.channels != 1 && shape.channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot write '", path, "': images of ", shape.channels,
        " channels cannot be drawn. Use a dataset of 1 or 3 channels"));
  }
  if (images < 1 || images > data.count || variants < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot write '", path, "': invalid grid of ", images, " images and ", variants,
        " variants. Choose 1 to ", data.count, " images and 0 or more variants"));
  }
  if (data.images.size() != static_cast<size_t>(data.count * shape.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot write '", path, "': the dataset contains ", data.images.size(), " values, not ",
        data.count, " images of ", shape.size()));
  }

  const int tile_width = shape.width * kGridScale, tile_height = shape.height * kGridScale;
  const int columns = variants + 1;
  plot::Image grid(columns * tile_width + (columns + 1) * kGridGap,
                   images * tile_height + (images + 1) * kGridGap);
  std::vector<float> augmented(shape.size());
  for (int i = 0; i < images; ++i) {
    const float* original = data.images.data() + i * shape.size();
    const int top = kGridGap + i * (tile_height + kGridGap);
    grid.Paste(DrawTile(shape, original), kGridGap, top);
    for (int v = 0; v < variants; ++v) {
      AugmentImage(augmentation, original, seed, /*epoch=*/v, /*index=*/i, augmented.data());
      grid.Paste(DrawTile(shape, augmented.data()), kGridGap + (v + 1) * (tile_width + kGridGap),
                 top);
    }
  }
  return plot::WritePng(path, grid);
}

}  // namespace kiln
