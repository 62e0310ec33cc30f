#include "bench/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>

#include <sys/wait.h>

#include "HalideBuffer.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "kiln_fma_peak.h"
#include "kiln_fma_peak_shape.h"
#include "nlohmann/json.hpp"
#include "runtime/compiled_model.h"
#include "runtime/halide_allocator.h"
#include "runtime/network.h"
#include "runtime/trainer.h"

namespace kiln::bench {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs `step` for about `seconds` after a warm-up; returns the best of three rates in items/s.
// Each third runs the step at least once, however slow.
double ItemsPerSecond(const std::function<absl::Status()>& step, int items, double seconds,
                      absl::Status& status) {
  for (int i = 0; i < 3 && status.ok(); ++i) status = step();
  double best = 0;
  for (int round = 0; round < 3 && status.ok(); ++round) {
    int count = 0;
    const Clock::time_point start = Clock::now();
    double elapsed = 0;
    while (status.ok() && (count == 0 || elapsed < seconds / 3)) {
      status = step();
      ++count;
      elapsed = SecondsSince(start);
    }
    best = std::max(best, count * items / elapsed);
  }
  return best;
}

std::string CpuName() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown CPU";
}

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

// Measures one compiled variant.
Row MeasureSchedule(const CompiledModel& variant, int batch, double seconds) {
  Row row;
  row.runner = "kiln " + variant.schedule;
  row.schedule = variant.schedule;
  row.compile_seconds = variant.compile_seconds;

  Network net(variant);
  net.InitParams(0);
  std::mt19937 generator(0);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  int64_t per_image = 1;
  for (int64_t d : variant.input_shape) per_image *= d;
  std::vector<float> images(static_cast<size_t>(batch * per_image));
  for (float& p : images) p = pixel(generator);
  int64_t per_output = 1;
  for (int64_t d : variant.output_shape) per_output *= d;
  std::vector<float> outputs(static_cast<size_t>(batch * per_output));
  // Class labels for classifiers, a tensor shaped like the output for the other losses.
  const bool classifier = variant.targets == Targets::kClassLabels;
  std::vector<int32_t> labels(classifier ? static_cast<size_t>(batch) : 0);
  for (int32_t& l : labels) l = static_cast<int32_t>(generator() % variant.num_classes);
  std::vector<float> targets(classifier ? 0 : outputs.size());
  for (float& t : targets) t = pixel(generator);
  // Tiny steps keep the parameters finite however long the measurement runs.
  const SgdOptions sgd{1e-6f, 0.9f, 0.0f};

  absl::Status status;
  ResetHalidePeakBytes();
  row.train_images_per_second = ItemsPerSecond(
      [&]() -> absl::Status {
        absl::StatusOr<BatchResult> result =
            classifier ? net.Backward(images.data(), labels.data(), batch)
                       : net.Backward(images.data(), targets.data(), batch);
        if (!result.ok()) return result.status();
        return net.Update(sgd);
      },
      batch, seconds, status);
  row.train_peak_memory_bytes =
      static_cast<double>(net.StateBytes() + GetHalideMemory().peak_bytes);
  if (status.ok()) {
    row.inference_images_per_second = ItemsPerSecond(
        [&] { return net.Forward(images.data(), batch, outputs.data()); }, batch, seconds, status);
  }
  if (status.ok()) {
    const double single = ItemsPerSecond(
        [&] { return net.Forward(images.data(), 1, outputs.data()); }, 1, seconds, status);
    row.batch1_latency_ms = 1000.0 / single;
  }
  if (!status.ok()) {
    // The figures measured before the failure are dropped with it.
    return Row{row.runner, row.schedule, std::string(status.message()), row.compile_seconds};
  }
  return row;
}

// Measures training steps of `variant` whose batches come from the trainer's BatchPrefetcher
// with `augmentation` (none: gathering only), over 32 batches of random images, epoch after
// epoch.
Row MeasureAugmentedTraining(const CompiledModel& variant, int batch, double seconds,
                             const Augmentation& augmentation) {
  Row row;
  row.runner = "kiln " + variant.schedule +
               (augmentation.transforms.empty() ? " + batches" : " + augment");
  row.schedule = variant.schedule;
  Dataset data;
  data.count = static_cast<int64_t>(batch) * 32;
  data.channels = variant.channels;
  data.height = variant.height;
  data.width = variant.width;
  data.num_classes = variant.num_classes;
  std::mt19937 generator(1);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  data.images.resize(static_cast<size_t>(data.count) * data.channels * data.height * data.width);
  for (float& p : data.images) p = pixel(generator);
  data.labels.resize(data.count);
  for (int32_t& l : data.labels) l = static_cast<int32_t>(generator() % variant.num_classes);
  std::vector<int64_t> order(data.count);
  for (int64_t i = 0; i < data.count; ++i) order[i] = i;

  Network net(variant);
  net.InitParams(0);
  const SgdOptions sgd{1e-6f, 0.9f, 0.0f};
  std::unique_ptr<BatchPrefetcher> batches;
  int epoch = 0;
  absl::Status status;
  row.train_images_per_second = ItemsPerSecond(
      [&]() -> absl::Status {
        if (batches == nullptr || batches->done()) {
          batches.reset();  // waits for its worker
          batches = std::make_unique<BatchPrefetcher>(data, order, batch, augmentation, 0, epoch++);
        }
        absl::StatusOr<const TrainingBatch*> next = batches->Next();
        if (!next.ok()) return next.status();
        absl::StatusOr<BatchResult> result =
            net.Backward((*next)->images.data(), (*next)->labels.data(), (*next)->count);
        if (!result.ok()) return result.status();
        return net.Update(sgd);
      },
      batch, seconds, status);
  if (!status.ok()) return Row{row.runner, row.schedule, std::string(status.message()), 0};
  return row;
}

// Quotes `text` for /bin/sh.
std::string ShellQuote(const std::string& text) {
  return "'" + absl::StrReplaceAll(text, {{"'", "'\\''"}}) + "'";
}

// Runs `command` through /bin/sh; returns its exit status and fills `out` with its stdout.
int RunCommand(const std::string& command, std::string& out) {
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  char chunk[4096];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof(chunk), pipe)) > 0) out.append(chunk, got);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Returns the interpreter that runs the peers, or "" when none imports torch.
std::string FindPython(const std::string& choice) {
  if (choice == "off") return "";
  std::vector<std::string> candidates = {choice};
  if (choice == "auto") candidates = {"python3", "/usr/bin/python3"};
  for (const std::string& python : candidates) {
    std::string out;
    if (RunCommand(ShellQuote(python) + " -c 'import torch' 2>/dev/null", out) == 0) {
      return python;
    }
  }
  return "";
}

// Runs the PyTorch peer in `mode` ("eager" or "compile").
Row MeasurePeer(const Options& options, const std::string& python, const std::string& mode,
                int batch) {
  Row row;
  row.runner = mode == "eager" ? "PyTorch eager" : "PyTorch torch.compile";
  const std::string command = absl::StrCat(
      ShellQuote(python), " ", ShellQuote(options.peer_script), " --model ",
      ShellQuote(options.model), " --batch ", batch, " --threads ", options.threads,
      " --seconds ", options.seconds, " --mode ", mode, " 2>/dev/null");
  std::string out;
  const int status = RunCommand(command, out);
  nlohmann::json result = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (result.is_object() && result.contains("peer")) row.runner = result["peer"];
  if (status != 0 || !result.is_object() || result.contains("error")) {
    row.error = result.is_object() && result.contains("error")
                    ? result["error"].get<std::string>()
                    : absl::StrCat(options.peer_script, " exited with status ", status,
                                   " without a result (it measures lenet5, resnet20, resnet18 "
                                   "and conv3x3)");
    return row;
  }
  row.train_images_per_second = result.value("train_images_per_second", 0.0);
  row.inference_images_per_second = result.value("inference_images_per_second", 0.0);
  row.batch1_latency_ms = result.value("inference_batch1_latency_ms", 0.0);
  row.train_peak_memory_bytes = result.value("train_peak_memory_bytes", 0.0);
  return row;
}

// "1.23x" of a / b, or "-" when either is missing.
std::string Ratio(double a, double b) {
  return a > 0 && b > 0 ? absl::StrFormat("%.2fx", a / b) : "-";
}

// Keeps the better of each figure of `row` and `best`, the same runner in two rounds.
void KeepBest(const Row& row, Row& best) {
  if (!row.error.empty()) return;
  if (!best.error.empty()) {
    best = row;
    return;
  }
  best.train_images_per_second =
      std::max(best.train_images_per_second, row.train_images_per_second);
  best.inference_images_per_second =
      std::max(best.inference_images_per_second, row.inference_images_per_second);
  best.batch1_latency_ms = std::min(best.batch1_latency_ms, row.batch1_latency_ms);
  best.train_peak_memory_bytes = std::min(best.train_peak_memory_bytes,
                                          row.train_peak_memory_bytes);
}

}  // namespace

const Row* Report::Eager() const {
  for (const Row& row : rows) {
    if (row.schedule.empty() && row.error.empty() &&
        row.runner.find("eager") != std::string::npos) {
      return &row;
    }
  }
  return nullptr;
}

double MeasurePeakGflops(int threads) {
  Halide::Runtime::Buffer<float> out(kFmaPeakLanes, kFmaPeakChains, threads);
  auto time_call = [&](int iterations) {
    const Clock::time_point start = Clock::now();
    kiln_fma_peak(iterations, 0.999999f, 1e-6f, out);
    return SecondsSince(start);
  };
  // Lengthen the call until it takes 50 ms, then keep the best of five.
  int iterations = 1 << 12;
  while (time_call(iterations) < 0.05 && iterations < (1 << 30)) iterations *= 2;
  double best = 0;
  for (int call = 0; call < 5; ++call) {
    const double flops = 2.0 * kFmaPeakLanes * kFmaPeakChains * threads * iterations;
    best = std::max(best, flops / time_call(iterations) / 1e9);
  }
  return best;
}

absl::StatusOr<Report> Run(const Options& options, std::FILE* progress) {
  if (options.batch < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", options.batch, " must not be negative (0 uses the compiled one)"));
  }
  if (options.threads < 1 || options.threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads ", options.threads, " must be in [1, 256]"));
  }
  if (options.rounds < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("rounds ", options.rounds, " must be at least 1"));
  }
  if (!(options.seconds > 0) || !std::isfinite(options.seconds)) {
    return absl::InvalidArgumentError(
        absl::StrCat("seconds ", options.seconds, " must be positive and finite"));
  }
  // The schedule variants of the model. Other builds of it (another head, frozen layers) share
  // its name in CompiledModel::model, and the one compiled under the model's own name wins. A
  // build that no model lists as a variant, such as lenet5_c5_features, is found by its name.
  std::map<std::string, const CompiledModel*> variants;
  for (const std::string& name : CompiledModelNames()) {
    const CompiledModel* m = FindCompiledModel(name);
    if (m->model == options.model && (variants.count(m->schedule) == 0 || name == options.model)) {
      variants[m->schedule] = m;
    }
  }
  if (variants.empty()) {
    const CompiledModel* m = FindCompiledModel(options.model);
    if (m != nullptr) variants[m->schedule] = m;
  }
  if (variants.empty()) {
    std::vector<std::string> models;
    for (const std::string& name : CompiledModelNames()) {
      const std::string& model = FindCompiledModel(name)->model;
      if (std::find(models.begin(), models.end(), model) == models.end()) models.push_back(model);
    }
    return absl::NotFoundError(absl::StrCat("no compiled variant of model '", options.model,
                                            "'; this program has: ", absl::StrJoin(models, ", ")));
  }
  std::vector<std::string> schedules = options.schedules;
  if (schedules.empty()) schedules = ScheduleNames();
  for (const std::string& s : schedules) {
    if (std::find(ScheduleNames().begin(), ScheduleNames().end(), s) == ScheduleNames().end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown schedule '", s, "'; use ",
                                                     absl::StrJoin(ScheduleNames(), ", ")));
    }
  }

  SetThreads(options.threads);
  Report report;
  report.model = options.model;
  report.threads = options.threads;
  report.machine = CpuName();
  report.date = UtcNow();
  const CompiledModel& any = *variants.begin()->second;
  report.batch = options.batch > 0 ? options.batch : any.batch_size;
  // Training: the forward pass, then per conv and dense layer the weight gradient and the input
  // gradient, each as many FLOPs as its forward pass, except that the first of them reads the
  // model's input, whose gradient no one computes. The other layers' backward passes are small
  // and not counted.
  bool first_weighted = true;
  for (const LayerInfo& layer : any.layers) {
    report.forward_flops_per_image += layer.flops;
    report.train_flops_per_image += layer.flops;
    if (layer.op == "conv2d" || layer.op == "dense") {
      report.train_flops_per_image += (first_weighted ? 1 : 2) * layer.flops;
      first_weighted = false;
    }
  }
  if (progress != nullptr) std::fprintf(progress, "kiln bench: measuring the FP32 peak\n");
  report.peak_gflops = MeasurePeakGflops(options.threads);

  const std::string python = FindPython(options.python);
  for (int round = 0; round < options.rounds; ++round) {
    std::vector<Row> rows;
    for (const std::string& schedule : schedules) {
      auto it = variants.find(schedule);
      if (it == variants.end()) {
        Row row;
        row.runner = "kiln " + schedule;
        row.schedule = schedule;
        row.error = schedule == "adams2019" && options.model == "lenet5"
                        ? "not compiled into this program (configure with "
                          "-DKILN_BENCH_ADAMS2019=ON)"
                        : absl::StrCat("not compiled into this program (kiln_add_model(... "
                                       "MODEL ", options.model, " SCHEDULE ", schedule, "))");
        rows.push_back(row);
        continue;
      }
      if (progress != nullptr) {
        std::fprintf(progress, "kiln bench: round %d of %d, %s, %s schedule\n", round + 1,
                     options.rounds, options.model.c_str(), schedule.c_str());
      }
      rows.push_back(MeasureSchedule(*it->second, report.batch, options.seconds));
      if (schedule == "manual" && !options.augment.empty()) {
        const CompiledModel& manual = *it->second;
        absl::StatusOr<Augmentation> augmentation = ParseAugmentation(
            options.augment, manual.channels, manual.height, manual.width);
        if (!augmentation.ok()) return augmentation.status();
        if (manual.targets != Targets::kClassLabels) {
          return absl::InvalidArgumentError(absl::StrCat(
              "--augment measures classifiers; model '", options.model, "' is not one"));
        }
        // The trainer's batches without augmentation, then with it: the difference is what
        // augmentation costs (gathering fresh batches costs too, beside the fixed batch above).
        Augmentation none = *augmentation;
        none.transforms.clear();
        rows.push_back(MeasureAugmentedTraining(manual, report.batch, options.seconds, none));
        rows.push_back(
            MeasureAugmentedTraining(manual, report.batch, options.seconds, *augmentation));
      }
    }

    for (const std::string mode : {"eager", "compile"}) {
      if (options.python == "off") break;
      Row row;
      row.runner = mode == std::string("eager") ? "PyTorch eager" : "PyTorch torch.compile";
      if (python.empty()) {
        row.error = options.python == "auto"
                        ? "neither python3 nor /usr/bin/python3 imports torch; pass --python"
                        : absl::StrCat(options.python, " does not import torch");
      } else {
        if (progress != nullptr) {
          std::fprintf(progress, "kiln bench: round %d of %d, PyTorch %s\n", round + 1,
                       options.rounds, mode.c_str());
        }
        row = MeasurePeer(options, python, mode, report.batch);
      }
      rows.push_back(row);
    }

    if (round == 0) {
      report.rows = rows;
    } else {
      for (size_t i = 0; i < rows.size(); ++i) KeepBest(rows[i], report.rows[i]);
    }
  }
  // GFLOP/s and the share of the peak follow from the best rates.
  for (Row& row : report.rows) {
    if (!row.error.empty()) continue;
    row.train_gflops = row.train_images_per_second * report.train_flops_per_image / 1e9;
    row.inference_gflops = row.inference_images_per_second * report.forward_flops_per_image / 1e9;
    row.train_peak_percent = 100 * row.train_gflops / report.peak_gflops;
    row.inference_peak_percent = 100 * row.inference_gflops / report.peak_gflops;
  }
  return report;
}

std::string FormatTable(const Report& report) {
  const Row* eager = report.Eager();
  std::string out = absl::StrFormat(
      "%s, batch %d, %d threads, %s, %s\nFP32 peak %.1f GFLOP/s (FMA kernel); per image %.3f "
      "MFLOP forward, %.3f MFLOP per training step\n\n",
      report.model, report.batch, report.threads, report.machine, report.date, report.peak_gflops,
      report.forward_flops_per_image / 1e6, report.train_flops_per_image / 1e6);
  out += absl::StrFormat("%-24s %9s %11s %7s %11s %7s %9s %7s %8s %6s %9s %8s\n", "runner",
                         "compile s", "train img/s", "x eager", "infer img/s", "x eager",
                         "batch-1 ms", "x eager", "train GF/s", "% peak", "memory MB",
                         "x eager");
  for (const Row& row : report.rows) {
    if (!row.error.empty()) {
      out += absl::StrFormat("%-24s %s\n", row.runner, "not measured: " + row.error);
      continue;
    }
    const bool peer = row.schedule.empty();
    out += absl::StrFormat(
        "%-24s %9s %11.1f %7s %11.1f %7s %9.3f %7s %8.1f %6.1f %9.1f %8s\n", row.runner,
        peer ? "-" : absl::StrFormat("%.1f", row.compile_seconds), row.train_images_per_second,
        eager ? Ratio(row.train_images_per_second, eager->train_images_per_second) : "-",
        row.inference_images_per_second,
        eager ? Ratio(row.inference_images_per_second, eager->inference_images_per_second) : "-",
        row.batch1_latency_ms,
        eager ? Ratio(eager->batch1_latency_ms, row.batch1_latency_ms) : "-", row.train_gflops,
        row.train_peak_percent, row.train_peak_memory_bytes / 1e6,
        eager ? Ratio(eager->train_peak_memory_bytes, row.train_peak_memory_bytes) : "-");
  }
  out += "\n\"x eager\": how many times better than PyTorch eager (speed, or lower latency and "
         "memory).\n";
  return out;
}

std::string FormatCsv(const Report& report) {
  std::string out =
      "model,batch,threads,runner,schedule,compile_seconds,train_images_per_second,"
      "inference_images_per_second,batch1_latency_ms,train_gflops,inference_gflops,"
      "train_peak_percent,inference_peak_percent,train_peak_memory_bytes,peak_gflops,error\n";
  for (const Row& row : report.rows) {
    out += absl::StrFormat("%s,%d,%d,%s,%s,%.3f,%.2f,%.2f,%.4f,%.3f,%.3f,%.2f,%.2f,%.0f,%.2f,\"%s\"\n",
                           report.model, report.batch, report.threads, row.runner, row.schedule,
                           row.compile_seconds, row.train_images_per_second,
                           row.inference_images_per_second, row.batch1_latency_ms,
                           row.train_gflops, row.inference_gflops, row.train_peak_percent,
                           row.inference_peak_percent, row.train_peak_memory_bytes,
                           report.peak_gflops, absl::StrReplaceAll(row.error, {{"\"", "\"\""}}));
  }
  return out;
}

std::string FormatJson(const Report& report) {
  nlohmann::json rows = nlohmann::json::array();
  for (const Row& row : report.rows) {
    nlohmann::json r = {{"runner", row.runner}, {"schedule", row.schedule}};
    if (!row.error.empty()) {
      r["error"] = row.error;
    } else {
      r.update({{"compile_seconds", row.compile_seconds},
                {"train_images_per_second", row.train_images_per_second},
                {"inference_images_per_second", row.inference_images_per_second},
                {"batch1_latency_ms", row.batch1_latency_ms},
                {"train_gflops", row.train_gflops},
                {"inference_gflops", row.inference_gflops},
                {"train_peak_percent", row.train_peak_percent},
                {"inference_peak_percent", row.inference_peak_percent},
                {"train_peak_memory_bytes", row.train_peak_memory_bytes}});
    }
    rows.push_back(r);
  }
  nlohmann::json out = {{"model", report.model},
                        {"batch", report.batch},
                        {"threads", report.threads},
                        {"machine", report.machine},
                        {"date", report.date},
                        {"peak_gflops", report.peak_gflops},
                        {"forward_flops_per_image", report.forward_flops_per_image},
                        {"train_flops_per_image", report.train_flops_per_image},
                        {"rows", rows}};
  return out.dump(2) + "\n";
}

plot::Image TrainingChart(const Report& report) {
  // Unmeasured runners get no bar: a zero-height one would read as a slow result.
  std::vector<Row> measured;
  for (const Row& row : report.rows) {
    if (row.error.empty()) measured.push_back(row);
  }
  double top = 0;
  for (const Row& row : measured) top = std::max(top, row.train_images_per_second);
  const double bars = std::max<size_t>(measured.size(), 1);
  plot::Chart chart(640, 400, {0, bars}, {0, top > 0 ? top * 1.1 : 1});
  for (size_t i = 0; i < measured.size(); ++i) {
    const Row& row = measured[i];
    const plot::Rgb color = row.schedule.empty()      ? plot::kRed
                            : row.schedule == "naive" ? plot::kGray
                                                      : plot::kBlue;
    chart.Bar(i + 0.15, i + 0.85, 0, row.train_images_per_second, color);
  }
  return chart.Render();
}

}  // namespace kiln::bench
