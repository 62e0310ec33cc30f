/** \file
 * `kiln bench`: one model at one batch under every schedule compiled into the program, beside
 * PyTorch on the same machine in the same run.
 *
 *   kiln::bench::Options options;
 *   options.model = "lenet5";
 *   absl::StatusOr<kiln::bench::Report> report = kiln::bench::Run(options, stderr);
 *   std::fputs(kiln::bench::FormatTable(*report).c_str(), stdout);
 *
 * For each schedule it reports kiln-gen's compile time, training-step images/s (forward, backward
 * and SGD update), inference images/s, batch-1 latency, GFLOP/s and the share of the machine's
 * FP32 peak. Run measures that peak first with a kernel of independent fused multiply-adds
 * (bench/fma_peak_gen.cpp). The training step's peak memory is the Network's state plus the
 * largest total that the generated functions allocate at once. The PyTorch peers run bench/pytorch_peer.py in
 * a child Python process (eager, and torch.compile where the installed PyTorch has it).
 *
 * FLOPs follow CompiledModel::layers (a multiply-add counts as 2). A training step counts the
 * forward pass plus, for each conv and dense layer, its weight gradient and its input gradient at
 * the layer's forward FLOPs each, without the input gradient of the first such layer, which
 * reads the model's input.
 */
#ifndef KILN_BENCH_BENCH_H_
#define KILN_BENCH_BENCH_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/plot.h"

namespace kiln::bench {

/// Returns the schedule names that `kiln bench` accepts, in table order.
inline const std::vector<std::string>& ScheduleNames() {
  static const std::vector<std::string> names = {"manual", "li2018", "mullapudi2016", "adams2019",
                                                 "naive"};
  return names;
}

struct Options {
  std::string model = "lenet5";  ///< CompiledModel::model of the variants to measure.
  int batch = 0;                 ///< Images per step; 0 uses the model's compiled batch.
  int threads = 2;
  double seconds = 2.0;          ///< Measuring time per figure and runner in each round.
  /// Passes over all runners, alternating so that all run under the same machine load. Each figure
  /// is the best of the rounds: these shared machines slow down by up to half for minutes.
  int rounds = 3;
  std::vector<std::string> schedules;  ///< Empty: every schedule.
  /// The Python that runs the peers. "auto" tries python3, then /usr/bin/python3, and takes the
  /// first that imports torch. "off" runs no peer. Anything else is the interpreter's path.
  std::string python = "auto";
  std::string peer_script;       ///< bench/pytorch_peer.py.
  /// When not empty: the manual schedule is also measured training on the trainer's prefetched
  /// batches, as "kiln manual + batches", and on batches augmented with this spec
  /// (ParseAugmentation), as "kiln manual + augment".
  std::string augment;
};

/// One runner's figures; 0 where a figure does not apply or was not measured.
struct Row {
  std::string runner;    ///< "kiln manual", "PyTorch 1.13.0 eager", ...
  std::string schedule;  ///< Kiln's schedule; empty for peers.
  std::string error;     ///< Why the runner has no figures; empty when it ran.
  double compile_seconds = 0;
  double train_images_per_second = 0;
  double inference_images_per_second = 0;
  double batch1_latency_ms = 0;
  double train_gflops = 0, inference_gflops = 0;  ///< GFLOP/s.
  double train_peak_percent = 0, inference_peak_percent = 0;
  double train_peak_memory_bytes = 0;
};

struct Report {
  std::string model;
  int batch = 0;
  int threads = 0;
  std::string machine;  ///< The CPU's model name.
  std::string date;     ///< UTC, ISO 8601.
  double peak_gflops = 0;           ///< The FMA kernel's FP32 GFLOP/s on `threads` threads.
  double forward_flops_per_image = 0;
  double train_flops_per_image = 0;  ///< See Run: forward, weight and input gradients.
  std::vector<Row> rows;            ///< Kiln's schedules, then the peers.

  /// The first peer that ran in eager mode, or nullptr.
  const Row* Eager() const;
};

/// Measures the FP32 peak of `threads` threads in GFLOP/s: the best of several calls of the FMA
/// kernel, each long enough (about 50 ms) to time.
double MeasurePeakGflops(int threads);

/// Runs the benchmark, writing progress lines to `progress` unless it is null. Fails when no
/// variant of the model is compiled in, a requested schedule is unknown, or an option is out of
/// range. A schedule or peer that cannot run becomes a row with its error.
absl::StatusOr<Report> Run(const Options& options, std::FILE* progress);

/// The report as an aligned text table with the ratios against PyTorch eager.
std::string FormatTable(const Report& report);
/// One CSV row per runner, with a header line.
std::string FormatCsv(const Report& report);
/// The whole report as a JSON object.
std::string FormatJson(const Report& report);
/// A bar chart of training-step images/s, one bar per measured runner in row order: Kiln's
/// schedules in blue (naive in gray), the peers in red.
plot::Image TrainingChart(const Report& report);

}  // namespace kiln::bench

#endif  // KILN_BENCH_BENCH_H_
