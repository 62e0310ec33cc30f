// kiln-bench: training-step and inference throughput of a compiled model on random inputs.
// Prints one JSON object; bench/compare.py runs it beside PyTorch and reports the ratios.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "fmt/core.h"
#include "runtime/compiled_model.h"
#include "runtime/network.h"

ABSL_FLAG(std::string, model, "lenet5", "Compiled model to measure.");
ABSL_FLAG(int, batch, 0, "Images per step; 0 uses the compiled batch.");
ABSL_FLAG(int, threads, 2, "Worker threads.");
ABSL_FLAG(double, seconds, 3.0, "Measuring time per figure, in seconds.");

namespace {

// Runs `step` for about `seconds` after a warm-up; returns the best of three rates in items/s.
double ItemsPerSecond(const std::function<void()>& step, int items, double seconds) {
  for (int i = 0; i < 20; ++i) step();
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    int count = 0;
    const auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    while (elapsed < seconds / 3) {
      step();
      ++count;
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    best = std::max(best, count * items / elapsed);
  }
  return best;
}

void Check(const absl::Status& status) {
  if (!status.ok()) {
    fmt::print(stderr, "kiln-bench: {}\n", std::string(status.message()));
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const kiln::CompiledModel* model = kiln::FindCompiledModel(absl::GetFlag(FLAGS_model));
  if (model == nullptr) {
    fmt::print(stderr, "kiln-bench: unknown model '{}'\n", absl::GetFlag(FLAGS_model));
    return 2;
  }
  const int batch = absl::GetFlag(FLAGS_batch) > 0 ? absl::GetFlag(FLAGS_batch) : model->batch_size;
  const double seconds = absl::GetFlag(FLAGS_seconds);
  if (absl::GetFlag(FLAGS_batch) < 0 || absl::GetFlag(FLAGS_threads) < 1 || !(seconds > 0) ||
      !std::isfinite(seconds)) {
    fmt::print(stderr,
               "kiln-bench: --batch must not be negative, --threads must be at least 1 and "
               "--seconds positive and finite\n");
    return 2;
  }
  kiln::SetThreads(absl::GetFlag(FLAGS_threads));

  kiln::Network net(*model);
  net.InitParams(0);
  std::mt19937 generator(0);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::vector<float> images(static_cast<size_t>(batch) * model->channels * model->height * model->width);
  for (float& p : images) p = pixel(generator);
  std::vector<int32_t> labels(batch);
  for (int32_t& l : labels) l = static_cast<int32_t>(generator() % model->num_classes);
  std::vector<float> logits(static_cast<size_t>(batch) * model->num_classes);
  // Tiny steps keep the parameters finite however long the measurement runs.
  const kiln::SgdOptions sgd{1e-6f, 0.9f, 0.0f};

  const double train = ItemsPerSecond(
      [&] {
        Check(net.Backward(images.data(), labels.data(), batch).status());
        Check(net.Update(sgd));
      },
      batch, seconds);
  const double inference = ItemsPerSecond(
      [&] { Check(net.Forward(images.data(), batch, logits.data())); }, batch, seconds);
  const double single = ItemsPerSecond(
      [&] { Check(net.Forward(images.data(), 1, logits.data())); }, 1, seconds);

  fmt::print(
      "{{\"model\": \"{}\", \"schedule\": \"{}\", \"threads\": {}, \"batch\": {}, "
      "\"train_images_per_second\": {:.1f}, \"inference_images_per_second\": {:.1f}, "
      "\"inference_batch1_latency_ms\": {:.4f}}}\n",
      model->name, model->schedule, absl::GetFlag(FLAGS_threads), batch, train, inference,
      1000.0 / single);
  return 0;
}
