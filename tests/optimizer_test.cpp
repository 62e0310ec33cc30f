// The compiled optimizers against torch.optim, and the learning-rate schedules against
// torch.optim.lr_scheduler: values stored by tools/make_optimizer_reference.py in
// $KILN_TEST_DATA/optimizer_reference.safetensors.
#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/optimizer.h"
#include "runtime/safetensors.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

// The stored reference file, read once.
class Reference {
 public:
  static const Reference& Get() {
    static const Reference* reference = new Reference();
    return *reference;
  }

  bool ok() const { return error.empty(); }

  std::vector<float> F32(const std::string& name) const {
    const TensorData& t = file.tensors.at(name);
    return std::vector<float>(t.f32(), t.f32() + t.numel());
  }
  std::vector<double> F64(const std::string& name) const {
    const TensorData& t = file.tensors.at(name);
    std::vector<double> values(t.numel());
    std::memcpy(values.data(), t.data.data(), values.size() * sizeof(double));
    return values;
  }
  bool Has(const std::string& name) const { return file.tensors.count(name) > 0; }

  std::string error;
  TensorFile file;
  std::vector<ParamInfo> params;
  int64_t num_params = 0;
  int steps = 0;
  nlohmann::json cases, schedules;
  double base_lr = 0;

 private:
  Reference() {
    const char* dir = std::getenv("KILN_TEST_DATA");
    if (dir == nullptr) {
      error = "KILN_TEST_DATA is not set; run through ctest, or set it to tests/data";
      return;
    }
    absl::StatusOr<TensorFile> read =
        ReadSafetensors(std::string(dir) + "/optimizer_reference.safetensors");
    if (!read.ok()) {
      error = std::string(read.status().message());
      return;
    }
    file = *std::move(read);
    for (const nlohmann::json& entry : nlohmann::json::parse(file.metadata.at("tensors"))) {
      ParamInfo p;
      p.name = entry[0].get<std::string>();
      p.shape = entry[1].get<std::vector<int64_t>>();
      p.numel = 1;
      for (int64_t d : p.shape) p.numel *= d;
      p.offset = num_params;
      num_params += p.numel;
      params.push_back(p);
    }
    steps = std::stoi(file.metadata.at("steps"));
    cases = nlohmann::json::parse(file.metadata.at("cases"));
    schedules = nlohmann::json::parse(file.metadata.at("schedules"));
    base_lr = std::stod(file.metadata.at("base_lr"));
  }
};

OptimizerOptions OptionsOf(const nlohmann::json& c) {
  OptimizerOptions o;
  absl::StatusOr<OptimizerKind> kind = ParseOptimizer(c.at("optimizer").get<std::string>());
  EXPECT_TRUE(kind.ok());
  o.kind = *kind;
  o.lr = c.at("lr").get<float>();
  o.momentum = c.value("momentum", 0.0f);
  o.nesterov = c.value("nesterov", false);
  o.weight_decay = c.value("weight_decay", 0.0f);
  o.beta1 = c.value("beta1", 0.9);
  o.beta2 = c.value("beta2", 0.999);
  o.eps = c.value("eps", 1e-8f);
  o.max_grad_norm = c.value("max_grad_norm", 0.0f);
  if (c.contains("lr_mult")) {
    for (const auto& [layer, factor] : c.at("lr_mult").items()) {
      o.lr_multipliers.push_back({layer, factor.get<float>()});
    }
  }
  return o;
}

// Each value within 1e-5 of its magnitude, or of the array's root mean square where that is
// larger: a value that is a small difference of large terms (a momentum that changed sign)
// carries rounding errors of the terms' size, and PyTorch fuses multiply-adds where Halide's
// code may not, or the other way round. Returns the worst ratio of error to tolerance.
double ExpectClose(absl::Span<const float> actual, absl::Span<const float> expected,
                   const std::string& what) {
  EXPECT_EQ(actual.size(), expected.size()) << what;
  double squares = 0;
  for (float e : expected) squares += static_cast<double>(e) * e;
  const double rms = std::sqrt(squares / std::max<size_t>(expected.size(), 1));
  double worst = 0;
  size_t failures = 0;
  for (size_t i = 0; i < std::min(actual.size(), expected.size()); ++i) {
    const double tolerance = 1e-5 * std::max(std::abs(static_cast<double>(expected[i])), rms);
    const double error = std::abs(static_cast<double>(actual[i]) - expected[i]);
    worst = std::max(worst, error / tolerance);
    if (!(error <= tolerance) && failures++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: " << actual[i] << " vs torch " << expected[i];
    }
  }
  return worst;
}

TEST(Optimizer, MatchesTorchOptim) {
  const Reference& ref = Reference::Get();
  ASSERT_TRUE(ref.ok()) << ref.error;
  ASSERT_GE(ref.cases.size(), 8u);
  for (const auto& [name, c] : ref.cases.items()) {
    SCOPED_TRACE(name);
    const OptimizerOptions options = OptionsOf(c);
    ASSERT_TRUE(CheckOptimizerOptions(options, ref.params).ok());
    std::vector<float> values = ref.F32("start");
    OptimizerState state;
    for (int step = 0; step < ref.steps; ++step) {
      const std::vector<float> grads = ref.F32("grads." + std::to_string(step));
      absl::StatusOr<UpdateStats> stats =
          ApplyUpdate(options, options.lr, ref.params, absl::MakeSpan(values), grads, state);
      ASSERT_TRUE(stats.ok()) << stats.status();
      if (options.max_grad_norm == 0) {
        EXPECT_EQ(stats->grad_scale, 1.0);
      }
    }
    EXPECT_EQ(state.steps, ref.steps);
    double worst = ExpectClose(values, ref.F32(name + ".params"), name + " params");
    if (options.kind == OptimizerKind::kSgd) {
      // Without momentum torch keeps no momentum buffer, and Kiln's is the last gradient.
      if (ref.Has(name + ".momentum_buffer")) {
        const std::vector<float> momentum = ref.F32(name + ".momentum_buffer");
        worst = std::max(worst, ExpectClose(state.momentum, momentum, name + " momentum"));
      }
    } else {
      worst = std::max(worst, ExpectClose(state.exp_avg, ref.F32(name + ".exp_avg"), name + " m"));
      worst = std::max(worst,
                       ExpectClose(state.exp_avg_sq, ref.F32(name + ".exp_avg_sq"), name + " v"));
    }
    std::printf("%-20s worst error %.3f of the tolerance\n", name.c_str(), worst);
  }
}

TEST(Optimizer, ClippingScalesAboveTheBound) {
  const Reference& ref = Reference::Get();
  ASSERT_TRUE(ref.ok()) << ref.error;
  const std::vector<float> grads = ref.F32("grads.0");
  double squares = 0;
  for (float g : grads) squares += static_cast<double>(g) * g;
  const double norm = std::sqrt(squares);
  for (double bound : {norm / 3, norm * 2}) {
    OptimizerOptions options;
    options.max_grad_norm = static_cast<float>(bound);
    std::vector<float> values = ref.F32("start");
    OptimizerState state;
    absl::StatusOr<UpdateStats> stats =
        ApplyUpdate(options, 0.1f, ref.params, absl::MakeSpan(values), grads, state);
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_NEAR(stats->grad_norm, norm, 1e-5 * norm);
    EXPECT_NEAR(stats->grad_scale, std::min(1.0, bound / norm), 1e-6);
  }
}

TEST(Optimizer, GradientNormsMatchADoubleSum) {
  const Reference& ref = Reference::Get();
  ASSERT_TRUE(ref.ok()) << ref.error;
  const std::vector<float> grads = ref.F32("grads.3");
  absl::StatusOr<std::vector<double>> norms = GradientNorms(ref.params, grads);
  ASSERT_TRUE(norms.ok()) << norms.status();
  ASSERT_EQ(norms->size(), ref.params.size());
  for (size_t i = 0; i < ref.params.size(); ++i) {
    double squares = 0;
    for (int64_t k = 0; k < ref.params[i].numel; ++k) {
      const double g = grads[ref.params[i].offset + k];
      squares += g * g;
    }
    EXPECT_NEAR((*norms)[i], std::sqrt(squares), 1e-6 * std::sqrt(squares)) << ref.params[i].name;
  }
}

TEST(Optimizer, TrainableSquaresFinite) {
  const Reference& ref = Reference::Get();
  ASSERT_TRUE(ref.ok()) << ref.error;
  ASSERT_GE(ref.params.size(), 2u);
  const std::vector<float> grads = ref.F32("grads.3");
  const ParamInfo& first = ref.params.front();
  const ParamInfo& last = ref.params.back();
  auto finite = [&](const std::vector<ParamInfo>& params, const std::vector<float>& values) {
    absl::StatusOr<bool> result = TrainableSquaresFinite(params, values);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.value_or(false);
  };
  EXPECT_TRUE(finite(ref.params, grads));

  std::vector<float> nan = grads;
  nan[last.offset + last.numel - 1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(finite(ref.params, nan));

  // Frozen tensors are skipped, as in Network::CheckFinite.
  std::vector<float> infinite = grads;
  infinite[first.offset] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(finite(ref.params, infinite));
  std::vector<ParamInfo> frozen = ref.params;
  frozen.front().trainable = false;
  EXPECT_TRUE(finite(frozen, infinite));
  // A frozen tensor in the middle splits the sum into two runs, and both are checked.
  ASSERT_GE(ref.params.size(), 3u);
  std::vector<ParamInfo> split = ref.params;
  split[1].trainable = false;
  std::vector<float> middle = grads;
  middle[split[1].offset] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(finite(split, middle));
  EXPECT_FALSE(finite(split, nan));
  EXPECT_FALSE(finite(split, infinite));

  // Squares of 2.25e38 are finite in each tensor, but not in the sum of the two.
  std::vector<float> large = grads;
  large[first.offset] = 1.5e19f;
  large[last.offset] = 1.5e19f;
  EXPECT_FALSE(finite(ref.params, large));
  absl::StatusOr<std::vector<double>> norms = GradientNorms(ref.params, large);
  ASSERT_TRUE(norms.ok()) << norms.status();
  EXPECT_TRUE(std::isfinite(norms->front()));
  EXPECT_TRUE(std::isfinite(norms->back()));

  std::vector<ParamInfo> outside = ref.params;
  outside.back().offset = static_cast<int64_t>(grads.size());
  absl::StatusOr<bool> error = TrainableSquaresFinite(outside, grads);
  ASSERT_FALSE(error.ok());
  EXPECT_THAT(error.status().message(), HasSubstr("lies outside the gradient array"));
}

TEST(Optimizer, FrozenParametersAndTheirStateStayUnchanged) {
  const Reference& ref = Reference::Get();
  ASSERT_TRUE(ref.ok()) << ref.error;
  std::vector<ParamInfo> params = ref.params;
  params[0].trainable = false;  // a.weight
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdamW}) {
    OptimizerOptions options;
    options.kind = kind;
    options.weight_decay = 0.1f;  // would move a frozen parameter if it were applied
    std::vector<float> values = ref.F32("start");
    const std::vector<float> start = values;
    OptimizerState state;
    ASSERT_TRUE(
        ApplyUpdate(options, 0.1f, params, absl::MakeSpan(values), ref.F32("grads.0"), state).ok());
    const int64_t frozen = params[0].numel;
    EXPECT_TRUE(std::equal(values.begin(), values.begin() + frozen, start.begin()));
    EXPECT_FALSE(std::equal(values.begin() + frozen, values.end(), start.begin() + frozen));
    const FloatArray& moment = kind == OptimizerKind::kSgd ? state.momentum : state.exp_avg;
    EXPECT_TRUE(
        std::all_of(moment.begin(), moment.begin() + frozen, [](float v) { return v == 0; }));
  }
}

TEST(Optimizer, ArraysOfTheWrongSizeAreAnError) {
  const Reference& ref = Reference::Get();
  ASSERT_TRUE(ref.ok()) << ref.error;
  std::vector<float> values(ref.num_params - 1), grads(ref.num_params - 1);
  OptimizerState state;
  absl::StatusOr<UpdateStats> stats =
      ApplyUpdate(OptimizerOptions(), 0.1f, ref.params, absl::MakeSpan(values), grads, state);
  ASSERT_FALSE(stats.ok());
  EXPECT_THAT(stats.status().message(), HasSubstr("b.bias"));
}

TEST(LrSchedule, MatchesTorchSchedulers) {
  const Reference& ref = Reference::Get();
  ASSERT_TRUE(ref.ok()) << ref.error;
  ASSERT_GE(ref.schedules.size(), 5u);
  for (const auto& [name, spec] : ref.schedules.items()) {
    SCOPED_TRACE(name);
    LrSchedule schedule;
    absl::StatusOr<LrSchedule::Kind> kind = ParseLrSchedule(spec.at("schedule").get<std::string>());
    ASSERT_TRUE(kind.ok());
    schedule.kind = *kind;
    schedule.step_size = spec.value("step_size", 1);
    schedule.gamma = spec.value("gamma", 0.1f);
    schedule.min_lr = spec.value("min_lr", 0.0f);
    schedule.warmup_epochs = spec.value("warmup_epochs", 0);
    schedule.warmup_start_factor = spec.value("warmup_start_factor", 0.1f);
    const int epochs = spec.at("epochs").get<int>();
    ASSERT_TRUE(CheckLrSchedule(schedule, epochs).ok());
    const std::vector<double> expected = ref.F64("schedule." + name);
    ASSERT_EQ(expected.size(), static_cast<size_t>(epochs));
    for (int e = 0; e < epochs; ++e) {
      // Float hyperparameters (gamma, factors) against torch's doubles.
      EXPECT_NEAR(ScheduledLr(schedule, ref.base_lr, e, epochs), expected[e], 1e-7 * expected[e])
          << "epoch " << e;
    }
  }
}

TEST(LrSchedule, BadValuesNameTheValue) {
  LrSchedule cosine;
  cosine.kind = LrSchedule::Kind::kCosine;
  cosine.warmup_epochs = 5;
  EXPECT_THAT(CheckLrSchedule(cosine, 5).message(), HasSubstr("no epochs left after 5 warm-up"));
  LrSchedule step;
  step.kind = LrSchedule::Kind::kStep;
  step.step_size = 0;
  EXPECT_THAT(CheckLrSchedule(step, 5).message(), HasSubstr("step size 0"));
  EXPECT_THAT(ParseLrSchedule("linear").status().message(), HasSubstr("'linear'"));
}

TEST(OptimizerOptions, ParsingAndChecksNameTheBadPart) {
  absl::StatusOr<std::vector<LrMultiplier>> m = ParseLrMultipliers("conv1=0.1, layer1 = 0.5");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ((*m)[1].layer, "layer1");
  EXPECT_EQ((*m)[1].factor, 0.5f);
  EXPECT_EQ(FormatLrMultipliers(*m), "conv1=0.1,layer1=0.5");
  EXPECT_THAT(ParseLrMultipliers("conv1=-1").status().message(), HasSubstr("'conv1=-1'"));
  EXPECT_THAT(ParseLrMultipliers("conv1").status().message(), HasSubstr("LAYER=FACTOR"));
  EXPECT_THAT(ParseOptimizer("rmsprop").status().message(), HasSubstr("sgd, adam or adamw"));

  const Reference& ref = Reference::Get();
  ASSERT_TRUE(ref.ok()) << ref.error;
  OptimizerOptions options;
  options.lr_multipliers = {{"conv9", 0.1f}};
  absl::Status s = CheckOptimizerOptions(options, ref.params);
  EXPECT_THAT(s.message(), HasSubstr("'conv9' matches no parameter"));
  EXPECT_THAT(s.message(), HasSubstr("a, b"));
  options.lr_multipliers.clear();
  options.nesterov = true;
  options.momentum = 0;
  EXPECT_THAT(CheckOptimizerOptions(options, ref.params).message(), HasSubstr("Nesterov"));
  options.nesterov = false;
  options.momentum = 1.5f;  // torch.optim.SGD would take it; its updates grow without bound
  EXPECT_THAT(CheckOptimizerOptions(options, ref.params).message(),
              HasSubstr("momentum 1.5 is invalid; use a finite value in [0, 1)"));
  options.momentum = 0.9f;
  options.kind = OptimizerKind::kAdam;
  options.beta2 = 1.0f;
  EXPECT_THAT(CheckOptimizerOptions(options, ref.params).message(), HasSubstr("beta2 1"));
}

TEST(HyperparameterMetadata, ReadsBackWhatItWrote) {
  OptimizerOptions written;
  written.kind = OptimizerKind::kAdamW;
  written.lr = 0.0012345678f;  // Needs all nine digits to read back the same float.
  written.weight_decay = 0.01f;
  written.beta2 = 0.95;
  written.max_grad_norm = 2.5f;
  written.lr_multipliers = {{"conv1", 0.1f}, {"layer1", 0.5f}};
  LrSchedule schedule;
  schedule.kind = LrSchedule::Kind::kCosine;
  schedule.warmup_epochs = 2;
  schedule.min_lr = 1e-5f;
  const std::map<std::string, std::string> metadata = HyperparameterMetadata(written, schedule);

  OptimizerOptions read;
  LrSchedule read_schedule;
  absl::StatusOr<std::vector<std::string>> keys =
      ReadHyperparameterMetadata(metadata, {}, 10, read, read_schedule);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), metadata.size());
  EXPECT_EQ(read.kind, written.kind);
  EXPECT_EQ(read.lr, written.lr);
  EXPECT_EQ(read.weight_decay, written.weight_decay);
  EXPECT_EQ(read.beta2, written.beta2);
  EXPECT_EQ(read.max_grad_norm, written.max_grad_norm);
  EXPECT_EQ(FormatLrMultipliers(read.lr_multipliers), "conv1=0.1,layer1=0.5");
  EXPECT_EQ(read_schedule.kind, LrSchedule::Kind::kCosine);
  EXPECT_EQ(read_schedule.warmup_epochs, 2);
  EXPECT_EQ(read_schedule.min_lr, 1e-5f);

  // Kept keys are neither read nor reported.
  OptimizerOptions partly_read;
  keys = ReadHyperparameterMetadata(metadata, {"lr", "lr_mult"}, 10, partly_read, read_schedule);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(partly_read.lr, OptimizerOptions().lr);
  EXPECT_TRUE(partly_read.lr_multipliers.empty());
  EXPECT_EQ(std::count(keys->begin(), keys->end(), "lr"), 0);
}

TEST(HyperparameterMetadata, BadRecordsNameTheKeyAndChangeNothing) {
  struct Case {
    const char* key;
    const char* value;
    const char* expected;
  };
  for (const Case& c :
       {Case{"momentum", "5", "kiln.momentum is '5': momentum 5 is invalid; use a finite value "
                              "in [0, 1)"},
        Case{"lr", "fast", "kiln.lr is 'fast': it is not a valid value"},
        Case{"lr", "inf", "kiln.lr is 'inf': it is not a valid value"},
        Case{"eps", "0", "epsilon 0 is invalid"},
        Case{"optimizer", "rmsprop", "kiln.optimizer is 'rmsprop'"},
        Case{"lr_mult", "conv1", "kiln.lr_mult is 'conv1'"},
        Case{"warmup_epochs", "12", "no epochs left after 12 warm-up epochs of 10"},
        Case{"nesterov", "yes", "kiln.nesterov is 'yes'"}}) {
    std::map<std::string, std::string> metadata = {{"kiln.lr", "0.5"},
                                                   {"kiln.lr_schedule", "cosine"}};
    metadata[std::string("kiln.") + c.key] = c.value;
    OptimizerOptions options;
    LrSchedule schedule;
    std::string invalid_key;
    absl::StatusOr<std::vector<std::string>> keys =
        ReadHyperparameterMetadata(metadata, {}, 10, options, schedule, &invalid_key);
    ASSERT_FALSE(keys.ok()) << c.key << " " << c.value;
    EXPECT_THAT(keys.status().message(), HasSubstr(c.expected));
    EXPECT_EQ(invalid_key, c.key);
    EXPECT_EQ(options.lr, OptimizerOptions().lr) << "a failed read must change nothing";
    EXPECT_EQ(schedule.kind, LrSchedule::Kind::kConstant);
  }
}

}  // namespace
}  // namespace kiln
