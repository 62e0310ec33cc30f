// Gradients of every op against central finite differences of the compiled loss.
//
// Each test builds a small model around one op, mostly input → op → flatten → dense → loss. It
// JIT-compiles the model twice, from separate lowerings: once for the loss alone, and once for the
// loss with the gradient of every parameter and of the input images. Each gradient tensor g is
// compared with fd = (L(v + ε) − L(v − ε)) / 2ε per element v, where L is the compiled float32 loss.
//
// Criterion: per tensor, ||g − fd||₂ / ||fd||₂ ≤ 1e-3 and max |g − fd| / max |fd| ≤ 1e-3. Both are
// relative to the whole tensor, because a per-element bound would measure float32 round-off
// rather than the gradient. The loss carries round-off of order 1e-7, so the fd of every element
// is off by about 1e-7 / ε, which is large next to the gradient of an element near zero.
// The default ε = 3e-2 balances round-off against truncation (of order ε² times the third
// derivative). In these tests it kept both relative errors below 2e-4 for every tensor. At
// ε = 1e-2 the input gradients reached 4.5e-4, almost all of it round-off (measured on an AMD EPYC).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "Halide.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "compiler/codegen.h"
#include "compiler/lower.h"
#include "compiler/model.h"
#include "compiler/schedule/schedule.h"
#include "gtest/gtest.h"
#include "tests/test_models.h"

namespace kiln {
namespace {

constexpr double kMaxRelativeError = 1e-3;

// How the test images are drawn.
enum class Images {
  kUniform,       // Uniform in [-1, 1].
  kAwayFromZero,  // Magnitude uniform in [0.1, 1], random sign.
  kDistinct,      // Per channel of each sample, a shuffle of distinct values 3ε apart around 0.
};

// The settings of one finite-difference check.
struct GradientCheck {
  int batch = 1;
  Images images = Images::kUniform;
  float image_scale = 1;  // Multiplies the kUniform and kAwayFromZero image values.
  float eps = 3e-2f;      // Finite-difference step.
  Scheduler scheduler = Scheduler::kManual;
  uint32_t seed = 1;
};

// The values a model's pipelines read. Buffers are dense with mins of 0, in Halide order.
struct Inputs {
  Halide::Buffer<float> images;               // (x, y, c, n)
  Halide::Buffer<int32_t> labels;             // (n)
  std::vector<Halide::Buffer<float>> params;  // PyTorch shapes reversed, as Model::params.
};

struct Gradients {
  float loss = 0;
  std::vector<Halide::Buffer<float>> params;
  Halide::Buffer<float> images;
};

Halide::Buffer<float> BufferLike(const Halide::Buffer<float>& buffer) {
  std::vector<int> sizes;
  for (int d = 0; d < buffer.dimensions(); ++d) sizes.push_back(buffer.dim(d).extent());
  return Halide::Buffer<float>(sizes);
}

Inputs RandomInputs(const Model& model, const GradientCheck& check) {
  std::mt19937 rng(check.seed);
  std::uniform_real_distribution<float> uniform(-1, 1);
  const std::vector<int64_t>& shape = model.input_layer().output_shape;  // {C, H, W}
  const int plane_size = static_cast<int>(shape[1] * shape[2]);
  const int planes = static_cast<int>(shape[0]) * check.batch;

  Inputs inputs;
  inputs.images = Halide::Buffer<float>(static_cast<int>(shape[2]), static_cast<int>(shape[1]),
                                        static_cast<int>(shape[0]), check.batch);
  for (int plane = 0; plane < planes; ++plane) {
    float* image = inputs.images.data() + static_cast<size_t>(plane) * plane_size;
    if (check.images == Images::kDistinct) {
      std::vector<int> rank(plane_size);
      std::iota(rank.begin(), rank.end(), 0);
      std::shuffle(rank.begin(), rank.end(), rng);
      for (int i = 0; i < plane_size; ++i) {
        image[i] = (rank[i] - (plane_size - 1) / 2.0f) * 3 * check.eps;
      }
      continue;
    }
    for (int i = 0; i < plane_size; ++i) {
      float value = uniform(rng);
      if (check.images == Images::kAwayFromZero) {
        value = std::copysign(0.1f + 0.9f * std::abs(value), value);
      }
      image[i] = value * check.image_scale;
    }
  }

  const int classes = static_cast<int>(model.loss_layer().num_classes);
  std::uniform_int_distribution<int32_t> label(0, classes - 1);
  inputs.labels = Halide::Buffer<int32_t>(check.batch);
  for (int n = 0; n < check.batch; ++n) inputs.labels(n) = label(rng);

  // PyTorch's default initialization: uniform in ±1/sqrt(fan_in).
  for (const Param& p : model.params) {
    std::vector<int> sizes(p.shape.rbegin(), p.shape.rend());
    Halide::Buffer<float> values(sizes);
    const float bound = 1.0f / std::sqrt(static_cast<float>(p.fan_in));
    for (int64_t i = 0; i < p.numel(); ++i) values.data()[i] = bound * uniform(rng);
    inputs.params.push_back(std::move(values));
  }
  return inputs;
}

// The JIT target: this machine's, without the features Halide 14 wrongly assumes on AMD Zen 4
// (see HostTarget). Unfixed, the Li2018 code of the pool_conv model below died of SIGILL there.
Halide::Target JitTarget() { return HostTarget(); }

// A model JIT-compiled from two lowerings, both scheduled by the scheduler under test: the loss
// alone, evaluated many times for finite differences, and the loss with every gradient.
class CompiledModel {
 public:
  static absl::StatusOr<std::unique_ptr<CompiledModel>> Compile(const Model& model,
                                                                Scheduler scheduler) {
    auto compiled = std::unique_ptr<CompiledModel>(new CompiledModel());
    compiled->loss_network_ = LowerSegment(model, 0, LowerMode::kTrainLast);
    compiled->training_network_ = LowerSegment(model, 0, LowerMode::kTrainLast);
    LoweredSegment& loss_network = compiled->loss_network_;
    LoweredSegment& training = compiled->training_network_;

    std::vector<Halide::Func> outputs = {training.loss.loss};
    outputs.insert(outputs.end(), training.grads.begin(), training.grads.end());
    outputs.push_back(training.input_grad);
    compiled->loss_pipeline_ = Halide::Pipeline(loss_network.loss.loss);
    compiled->training_pipeline_ = Halide::Pipeline(outputs);

    const Halide::Target& target = compiled->target_;
    for (auto [net, pipeline] : {std::pair{&loss_network, &compiled->loss_pipeline_},
                                 std::pair{&training, &compiled->training_pipeline_}}) {
      absl::Status status = ScheduleSegment(*net, *pipeline, scheduler, target);
      if (!status.ok()) return status;
      try {
        pipeline->compile_jit(target);
      } catch (const Halide::Error& e) {
        return absl::InternalError(absl::StrCat("Halide failed to JIT-compile model '", model.name,
                                                "' with the ", SchedulerName(scheduler),
                                                " schedule: ", e.what()));
      }
    }
    return compiled;
  }

  float Loss(Inputs& inputs) {
    Bind(loss_network_, inputs);
    loss_pipeline_.realize(loss_, target_);
    return loss_();
  }

  Gradients Backward(Inputs& inputs) {
    Bind(training_network_, inputs);
    Gradients gradients;
    Halide::Buffer<float> loss = Halide::Buffer<float>::make_scalar();
    std::vector<Halide::Buffer<>> outputs = {loss};
    for (const Halide::Buffer<float>& param : inputs.params) {
      gradients.params.push_back(BufferLike(param));
      outputs.push_back(gradients.params.back());
    }
    gradients.images = BufferLike(inputs.images);
    outputs.push_back(gradients.images);

    Halide::Realization realization(outputs);
    training_pipeline_.realize(realization, target_);
    gradients.loss = loss();
    return gradients;
  }

 private:
  CompiledModel() = default;

  static void Bind(LoweredSegment& net, Inputs& inputs) {
    net.input.set(inputs.images);
    net.targets.set(inputs.labels);
    for (size_t i = 0; i < net.params.size(); ++i) net.params[i].set(inputs.params[i]);
  }

  Halide::Target target_ = JitTarget();
  LoweredSegment loss_network_, training_network_;
  Halide::Pipeline loss_pipeline_, training_pipeline_;
  Halide::Buffer<float> loss_ = Halide::Buffer<float>::make_scalar();
};

// Central differences of the compiled loss with respect to every element of `values`, one of the
// buffers of `inputs`. Each element is restored after use. The step is divided by the difference
// of the two perturbed floats, not by 2ε, so rounding v ± ε adds no error.
std::vector<double> FiniteDifferences(CompiledModel& compiled, Inputs& inputs,
                                      Halide::Buffer<float>& values, float eps) {
  std::vector<double> fd(values.number_of_elements());
  float* data = values.data();
  for (size_t i = 0; i < fd.size(); ++i) {
    const float original = data[i];
    const float up = original + eps, down = original - eps;
    data[i] = up;
    values.set_host_dirty();
    const double loss_up = compiled.Loss(inputs);
    data[i] = down;
    values.set_host_dirty();
    const double loss_down = compiled.Loss(inputs);
    data[i] = original;
    values.set_host_dirty();
    fd[i] = (loss_up - loss_down) / (static_cast<double>(up) - down);
  }
  return fd;
}

// The error of a gradient g against finite differences fd, in the L2 and the max norm. The max
// norm is the stricter one for an error confined to a few elements (say, a border of the image).
struct Comparison {
  double l2_error = 0;   // ||g − fd||₂ / ||fd||₂
  double max_error = 0;  // max |g − fd| / max |fd|
  double fd_norm = 0;    // ||fd||₂
  size_t worst = 0;      // Flat index of the largest |g − fd|.
};

Comparison Compare(const Halide::Buffer<float>& gradient, const std::vector<double>& fd) {
  Comparison c;
  double difference_squares = 0, fd_squares = 0, max_difference = 0, max_fd = 0;
  for (size_t i = 0; i < fd.size(); ++i) {
    const double difference = std::abs(gradient.data()[i] - fd[i]);
    difference_squares += difference * difference;
    fd_squares += fd[i] * fd[i];
    max_fd = std::max(max_fd, std::abs(fd[i]));
    if (difference > max_difference) {
      max_difference = difference;
      c.worst = i;
    }
  }
  c.fd_norm = std::sqrt(fd_squares);
  c.l2_error = std::sqrt(difference_squares) / std::max(c.fd_norm, 1e-30);
  c.max_error = max_difference / std::max(max_fd, 1e-30);
  return c;
}

// Compiles `model`, computes its gradients once and checks every parameter gradient and the input
// gradient against finite differences. `op` names the op under test in failure messages.
void ExpectGradientsMatchFiniteDifferences(const Model& model, const std::string& op,
                                           const GradientCheck& check) {
  absl::StatusOr<std::unique_ptr<CompiledModel>> compiled =
      CompiledModel::Compile(model, check.scheduler);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  Inputs inputs = RandomInputs(model, check);
  Gradients gradients;
  float loss = 0;
  try {
    gradients = (*compiled)->Backward(inputs);
    loss = (*compiled)->Loss(inputs);
  } catch (const Halide::Error& e) {
    FAIL() << op << " (" << SchedulerName(check.scheduler) << " schedule): running model '"
           << model.name << "' failed: " << e.what();
  }
  EXPECT_NEAR(gradients.loss, loss, 1e-6 * std::abs(loss))
      << op << ": the training pipeline's loss differs from the loss pipeline's";

  std::vector<std::pair<std::string, Halide::Buffer<float>*>> tensors;
  for (size_t i = 0; i < model.params.size(); ++i) {
    tensors.emplace_back(model.params[i].name, &inputs.params[i]);
  }
  tensors.emplace_back("images", &inputs.images);
  for (size_t t = 0; t < tensors.size(); ++t) {
    const auto& [name, values] = tensors[t];
    const Halide::Buffer<float>& gradient =
        t < model.params.size() ? gradients.params[t] : gradients.images;
    const std::vector<double> fd = FiniteDifferences(**compiled, inputs, *values, check.eps);
    const Comparison c = Compare(gradient, fd);
    std::printf("  %-13s %-7s %-11s relative error: L2 %.1e, max %.1e (|fd| %.1e, %zu elements)\n",
                op.c_str(), SchedulerName(check.scheduler), name.c_str(), c.l2_error, c.max_error,
                c.fd_norm, fd.size());

    const std::string where = absl::StrCat(
        op, " (", SchedulerName(check.scheduler), " schedule), gradient of ", name,
        " against central differences with eps ", check.eps, ": largest difference at flat index ",
        c.worst, ", compiled ", gradient.data()[c.worst], ", finite difference ", fd[c.worst]);
    EXPECT_LE(c.l2_error, kMaxRelativeError) << where;
    EXPECT_LE(c.max_error, kMaxRelativeError) << where;
    EXPECT_GT(c.fd_norm, 1e-3) << op << ": the finite-difference gradient of " << name
                               << " is nearly zero, so the comparison checks nothing";
  }
}

// Ends the model of `net` after `x` with flatten → dense(5) named "fc" → cross-entropy over 5
// classes, and builds it. Tensors keep a pointer to their builder, so `net` is not moved.
absl::StatusOr<Model> WithDenseHead(ModelBuilder& net, Tensor x) {
  x = net.flatten(x);
  x = net.dense("fc", x, 5);
  net.cross_entropy_loss(x, 5);
  return std::move(net).build();
}

// ---- conv2d ----------------------------------------------------------------------------------
// A conv followed by flatten and dense is linear up to the loss, so no kink lies between v ± ε.

struct ConvCase {
  const char* name;
  int batch;
  int64_t channels, height, width;
  int64_t out_channels, kernel, stride, padding;
  bool bias;
};

// input → conv2d → flatten → dense(5) → cross-entropy, from `c`.
absl::StatusOr<Model> ConvModel(const ConvCase& c) {
  ModelBuilder net(c.name, ModelOptions{c.batch});
  Tensor x = net.input(c.channels, c.height, c.width);
  x = net.conv2d("conv", x, c.out_channels, c.kernel, c.stride, c.padding, c.bias);
  return WithDenseHead(net, x);
}

void ExpectConvGradients(const ConvCase& c) {
  absl::StatusOr<Model> model = ConvModel(c);
  ASSERT_TRUE(model.ok()) << model.status();
  GradientCheck check;
  check.batch = c.batch;
  ExpectGradientsMatchFiniteDifferences(*model, "conv2d", check);
}

TEST(Conv2dGradient, Kernel3) { ExpectConvGradients({"conv_k3", 1, 3, 5, 7, 4, 3, 1, 0, true}); }

TEST(Conv2dGradient, Stride2Padding1) {
  ExpectConvGradients({"conv_s2_p1", 2, 3, 5, 7, 4, 3, 2, 1, true});
}

TEST(Conv2dGradient, Kernel1NoBias) {
  ExpectConvGradients({"conv_k1", 1, 3, 5, 7, 4, 1, 1, 0, false});
}

// A 1×1 output takes conv2d's single-output path: stride 3 and padding 1 on a 4×5 input give one.
// 8 and 16 output channels fill whole vectors of 8 or 16 lanes, and 6 leaves a partial one, for
// schedules that vectorize across output channels.

TEST(Conv2dGradient, SingleOutput8Channels) {
  ExpectConvGradients({"conv_1x1_out_8", 1, 3, 4, 5, 8, 5, 3, 1, true});
}

TEST(Conv2dGradient, SingleOutput16Channels) {
  ExpectConvGradients({"conv_1x1_out_16", 1, 3, 4, 5, 16, 5, 3, 1, true});
}

TEST(Conv2dGradient, SingleOutput6Channels) {
  ExpectConvGradients({"conv_1x1_out_6", 1, 3, 4, 5, 6, 5, 3, 1, true});
}

// ---- relu ------------------------------------------------------------------------------------
// relu reads the images, which lie at least 0.1 from zero, so v ± ε never crosses its kink at 0.

TEST(ReluGradient, Image) {
  ModelBuilder net("relu_image", ModelOptions{1});
  Tensor x = net.input(3, 5, 7);
  x = net.relu(x);
  absl::StatusOr<Model> model = WithDenseHead(net, x);
  ASSERT_TRUE(model.ok()) << model.status();
  GradientCheck check;
  check.images = Images::kAwayFromZero;
  ExpectGradientsMatchFiniteDifferences(*model, "relu", check);
}

// relu on {F}, after flatten, has its own definition.
TEST(ReluGradient, Flat) {
  ModelBuilder net("relu_flat", ModelOptions{1});
  Tensor x = net.input(3, 5, 7);
  x = net.flatten(x);
  x = net.relu(x);
  x = net.dense("fc", x, 5);
  net.cross_entropy_loss(x, 5);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_TRUE(model.ok()) << model.status();
  GradientCheck check;
  check.images = Images::kAwayFromZero;
  check.seed = 2;
  ExpectGradientsMatchFiniteDifferences(*model, "relu", check);
}

// ---- max_pool2d ------------------------------------------------------------------------------
// The pool reads the images, whose values within a channel are distinct and 3ε apart, so v ± ε
// never changes which element of a window is its maximum and no window has a tie.

// On a 5×7 input the last row and column lie outside every window, so their gradient is zero.
TEST(MaxPool2dGradient, Kernel2Stride2) {
  ModelBuilder net("pool_k2_s2", ModelOptions{1});
  Tensor x = net.input(3, 5, 7);
  x = net.max_pool2d(x, 2, 2);
  absl::StatusOr<Model> model = WithDenseHead(net, x);
  ASSERT_TRUE(model.ok()) << model.status();
  GradientCheck check;
  check.images = Images::kDistinct;
  ExpectGradientsMatchFiniteDifferences(*model, "max_pool2d", check);
}

// With overlapping windows, an element that is the maximum of two windows receives the gradient
// of both.
TEST(MaxPool2dGradient, Kernel3Stride2) {
  ModelBuilder net("pool_k3_s2", ModelOptions{2});
  Tensor x = net.input(3, 5, 7);
  x = net.max_pool2d(x, 3, 2);
  absl::StatusOr<Model> model = WithDenseHead(net, x);
  ASSERT_TRUE(model.ok()) << model.status();
  GradientCheck check;
  check.batch = 2;
  check.images = Images::kDistinct;
  ExpectGradientsMatchFiniteDifferences(*model, "max_pool2d", check);
}

// Finite differences cannot check a window with a tie, whose loss has a kink at the tie. Such a
// window's whole gradient goes to its first maximum in row-major order, as in PyTorch's CPU
// kernel, and the other positions get none.
TEST(MaxPool2dGradient, TiesGoToFirstMaximum) {
  ModelBuilder net("pool_ties", ModelOptions{2});
  Tensor x = net.input(3, 4, 6);
  x = net.max_pool2d(x, 2, 2);
  absl::StatusOr<Model> model = WithDenseHead(net, x);
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<std::unique_ptr<CompiledModel>> compiled =
      CompiledModel::Compile(*model, Scheduler::kManual);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  GradientCheck check;
  check.batch = 2;
  Inputs inputs = RandomInputs(*model, check);
  std::mt19937 rng(7);
  for (size_t i = 0; i < inputs.images.number_of_elements(); ++i) {
    inputs.images.data()[i] = static_cast<float>(rng() % 3);  // Windows of 0, 1 and 2 tie often.
  }
  const Gradients gradients = (*compiled)->Backward(inputs);

  int tied_windows = 0;
  for (int n = 0; n < 2; ++n) {
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < 4; y += 2) {
        for (int x = 0; x < 6; x += 2) {
          int first_x = x, first_y = y, maxima = 0;
          for (int ky = 0; ky < 2; ++ky) {
            for (int kx = 0; kx < 2; ++kx) {
              const float value = inputs.images(x + kx, y + ky, c, n);
              const float best = inputs.images(first_x, first_y, c, n);
              if (value > best) {
                first_x = x + kx;
                first_y = y + ky;
                maxima = 1;
              } else if (value == best) {
                ++maxima;
              }
            }
          }
          tied_windows += maxima > 1;
          for (int ky = 0; ky < 2; ++ky) {
            for (int kx = 0; kx < 2; ++kx) {
              const float g = gradients.images(x + kx, y + ky, c, n);
              if (x + kx == first_x && y + ky == first_y) {
                EXPECT_NE(g, 0.0f) << "first maximum of window (" << x << ", " << y << ", " << c
                                   << ", " << n << ")";
              } else {
                EXPECT_EQ(g, 0.0f) << "position (" << x + kx << ", " << y + ky << ", " << c
                                   << ", " << n << ")";
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(tied_windows, 5) << "too few windows with ties to test them";
}

// ---- flatten ---------------------------------------------------------------------------------

// An input with H·W > 1 takes flatten's div/mod indexing, and a C×1×1 input its direct one.
TEST(FlattenGradient, Image) {
  ModelBuilder net("flatten_image", ModelOptions{1});
  Tensor x = net.input(3, 5, 7);
  absl::StatusOr<Model> model = WithDenseHead(net, x);
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectGradientsMatchFiniteDifferences(*model, "flatten", {});
}

TEST(FlattenGradient, ChannelsOnly) {
  ModelBuilder net("flatten_channels", ModelOptions{1});
  Tensor x = net.input(6, 1, 1);
  absl::StatusOr<Model> model = WithDenseHead(net, x);
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectGradientsMatchFiniteDifferences(*model, "flatten", {});
}

// ---- dense -----------------------------------------------------------------------------------
// Two dense layers, so the first one's input gradient and the second's weight gradient both come
// from a dense adjoint.

TEST(DenseGradient, Bias) {
  ModelBuilder net("dense_bias", ModelOptions{3});
  Tensor x = net.input(3, 5, 7);
  x = net.flatten(x);
  x = net.dense("fc1", x, 9);
  x = net.dense("fc2", x, 5);
  net.cross_entropy_loss(x, 5);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_TRUE(model.ok()) << model.status();
  GradientCheck check;
  check.batch = 3;
  ExpectGradientsMatchFiniteDifferences(*model, "dense", check);
}

TEST(DenseGradient, NoBias) {
  ModelBuilder net("dense_no_bias", ModelOptions{1});
  Tensor x = net.input(3, 5, 7);
  x = net.flatten(x);
  x = net.dense("fc1", x, 9, /*bias=*/false);
  x = net.dense("fc2", x, 5, /*bias=*/false);
  net.cross_entropy_loss(x, 5);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectGradientsMatchFiniteDifferences(*model, "dense", {});
}

// ---- cross_entropy_loss ----------------------------------------------------------------------
// The images are the logits (input {C, 1, 1} → flatten → loss), and there are no parameters.

TEST(CrossEntropyGradient, Batch3) {
  ModelBuilder net("cross_entropy", ModelOptions{3});
  Tensor x = net.input(7, 1, 1);
  x = net.flatten(x);
  net.cross_entropy_loss(x, 7);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_TRUE(model.ok()) << model.status();
  GradientCheck check;
  check.batch = 3;
  check.image_scale = 3;
  ExpectGradientsMatchFiniteDifferences(*model, "cross_entropy", check);
}

// Logits up to ±90: exp(90) overflows float32, so this passes only if the loss subtracts the
// maximum logit before exp. The loss is then of order 100, with round-off of order 1e-5, so ε is
// 0.1 to keep the round-off of fd small. Truncation stays small too, because the logits drawn here
// are far apart and the loss is nearly linear in each of them.
TEST(CrossEntropyGradient, LargeLogits) {
  ModelBuilder net("cross_entropy_large", ModelOptions{1});
  Tensor x = net.input(7, 1, 1);
  x = net.flatten(x);
  net.cross_entropy_loss(x, 7);
  absl::StatusOr<Model> model = std::move(net).build();
  ASSERT_TRUE(model.ok()) << model.status();
  GradientCheck check;
  check.image_scale = 90;
  check.eps = 0.1f;
  ExpectGradientsMatchFiniteDifferences(*model, "cross_entropy", check);
}

// ---- gathers in place of scatters -------------------------------------------------------------
// The lowering replaces the adjoints that Halide's autodiff scatters into a conv's padded input,
// a tiling max_pool2d's input and a flatten's input with gathers (GatherInputAdjoints). The
// tests above check the gradients. This one checks that the replacement happens, since the
// autodiff's own form gives the same gradients, only slower.
TEST(GatherInputAdjoints, ReplaceSmallLenetScatters) {
  absl::StatusOr<Model> model = test_models::SmallLenet(4);
  ASSERT_TRUE(model.ok()) << model.status();
  const LoweredSegment s = LowerSegment(*model, 0, LowerMode::kTrainLast);
  // conv1's padding of the images, max_pool2d1's input (relu1) and conv2's padding of its output,
  // max_pool2d2's input (relu2) and flatten's input (max_pool2d2).
  ASSERT_EQ(s.gathers.size(), 5u);
  std::vector<Halide::Internal::Function> outputs = {s.input_grad.function()};
  for (const Halide::Func& f : s.outputs()) outputs.push_back(f.function());
  const std::map<std::string, Halide::Internal::Function> env =
      Halide::Internal::build_environment(outputs);
  for (const Halide::Func& gather : s.gathers) {
    EXPECT_EQ(env.count(gather.name()), 1u) << gather.name() << " is not read";
    EXPECT_FALSE(gather.has_update_definition()) << gather.name();
  }
  // No scatter into an image tensor is left: no update writes to a computed position, such as
  // x·2 + k or a clamp. (The loss keeps one, in its scan over classes.)
  for (const auto& [name, function] : env) {
    if (function.dimensions() != 4) continue;
    for (const Halide::Internal::Definition& update : function.updates()) {
      for (const Halide::Expr& arg : update.args()) {
        EXPECT_NE(arg.as<Halide::Internal::Variable>(), nullptr)
            << name << " scatters to position " << arg;
      }
    }
  }
}

// ---- schedules -------------------------------------------------------------------------------
// The Li2018 autoscheduler must not change the gradients. A pool on the images feeds a padded
// conv, so the pool's adjoint reads the conv's input gradient. Distinct images keep the maximum of
// every window unique under v ± ε (see max_pool2d above), and everything after the pool is linear.

absl::StatusOr<Model> PoolConvModel() {
  ModelBuilder net("pool_conv", ModelOptions{2});
  Tensor x = net.input(3, 7, 9);
  x = net.max_pool2d(x, 3, 2);
  x = net.conv2d("conv", x, 4, 2, /*stride=*/1, /*padding=*/1);
  x = net.flatten(x);
  x = net.dense("fc", x, 5);
  net.cross_entropy_loss(x, 5);
  return std::move(net).build();
}

TEST(PoolConvGradient, Manual) {
  absl::StatusOr<Model> model = PoolConvModel();
  ASSERT_TRUE(model.ok()) << model.status();
  GradientCheck check;
  check.batch = 2;
  check.images = Images::kDistinct;
  ExpectGradientsMatchFiniteDifferences(*model, "pool+conv", check);
}

TEST(PoolConvGradient, Li2018) {
  absl::StatusOr<Model> model = PoolConvModel();
  ASSERT_TRUE(model.ok()) << model.status();
  GradientCheck check;
  check.batch = 2;
  check.images = Images::kDistinct;
  check.scheduler = Scheduler::kLi2018;
  ExpectGradientsMatchFiniteDifferences(*model, "pool+conv", check);
}

// ||a − b||₂ / ||b||₂ of two buffers of the same shape.
double RelativeDifference(const Halide::Buffer<float>& a, const Halide::Buffer<float>& b) {
  double difference_squares = 0, b_squares = 0;
  for (size_t i = 0; i < b.number_of_elements(); ++i) {
    const double difference = static_cast<double>(a.data()[i]) - b.data()[i];
    difference_squares += difference * difference;
    b_squares += static_cast<double>(b.data()[i]) * b.data()[i];
  }
  return std::sqrt(difference_squares) / std::max(std::sqrt(b_squares), 1e-30);
}

// The manual schedule and Li2018 on a LeNet-like model compute the same loss and gradients, up to
// the float32 rounding of different summation orders. fc2 reads 10 features, not a multiple of a
// vector, like LeNet-5's fc2 with 84.
// Every autoscheduler must give the manual schedule's results. Adams2019 is left out because its
// beam search takes minutes per pipeline.
class AutoscheduleGradient : public ::testing::TestWithParam<Scheduler> {};

TEST_P(AutoscheduleGradient, MatchesManualOnLenet) {
  const Scheduler scheduler = GetParam();
  const char* name = SchedulerName(scheduler);
  constexpr double kMaxDifference = 1e-5;
  absl::StatusOr<Model> model = test_models::SmallLenet(3);
  ASSERT_TRUE(model.ok()) << model.status();

  absl::StatusOr<std::unique_ptr<CompiledModel>> manual =
      CompiledModel::Compile(*model, Scheduler::kManual);
  ASSERT_TRUE(manual.ok()) << manual.status();
  absl::StatusOr<std::unique_ptr<CompiledModel>> automatic = CompiledModel::Compile(*model, scheduler);
  ASSERT_TRUE(automatic.ok()) << automatic.status();

  GradientCheck check;
  check.batch = 3;
  Inputs inputs = RandomInputs(*model, check);
  Gradients expected, actual;
  try {
    expected = (*manual)->Backward(inputs);
    actual = (*automatic)->Backward(inputs);
  } catch (const Halide::Error& e) {
    FAIL() << "running model '" << model->name << "' failed: " << e.what();
  }

  EXPECT_NEAR(actual.loss, expected.loss, kMaxDifference * std::abs(expected.loss))
      << "the loss differs between the " << name << " and manual schedules";
  for (size_t i = 0; i < model->params.size(); ++i) {
    const double difference = RelativeDifference(actual.params[i], expected.params[i]);
    std::printf("  %s vs manual: %-12s relative difference %.1e\n", name,
                model->params[i].name.c_str(), difference);
    EXPECT_LE(difference, kMaxDifference)
        << "gradient of " << model->params[i].name << " differs between the " << name
        << " and manual schedules by relative L2 error " << difference;
  }
  const double difference = RelativeDifference(actual.images, expected.images);
  std::printf("  %s vs manual: %-12s relative difference %.1e\n", name, "images", difference);
  EXPECT_LE(difference, kMaxDifference)
      << "gradient of the images differs between the " << name
      << " and manual schedules by relative L2 error " << difference;
}

INSTANTIATE_TEST_SUITE_P(Autoschedulers, AutoscheduleGradient,
                         ::testing::Values(Scheduler::kLi2018, Scheduler::kMullapudi2016),
                         [](const ::testing::TestParamInfo<Scheduler>& info) {
                           return std::string(SchedulerName(info.param));
                         });

}  // namespace
}  // namespace kiln
