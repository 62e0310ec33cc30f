#include "compiler/schedule/schedule.h"

#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace kiln {

absl::StatusOr<Scheduler> ParseScheduler(const std::string& name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "manual") return Scheduler::kManual;
  if (lower == "li2018") return Scheduler::kLi2018;
  if (lower == "mullapudi2016") return Scheduler::kMullapudi2016;
  if (lower == "adams2019") return Scheduler::kAdams2019;
  if (lower == "naive") return Scheduler::kNaive;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown schedule '", name, "'; use manual, li2018, mullapudi2016, adams2019 or naive"));
}

const char* SchedulerName(Scheduler scheduler) {
  switch (scheduler) {
    case Scheduler::kManual: return "manual";
    case Scheduler::kLi2018: return "li2018";
    case Scheduler::kMullapudi2016: return "mullapudi2016";
    case Scheduler::kAdams2019: return "adams2019";
    case Scheduler::kNaive: return "naive";
  }
  return "unknown";
}

namespace internal {

// NOTE: Adams2019 unrolls loops whose extent it takes from the estimates. The batch is a run-time
// extent, so a loop over a few vectors of samples, unrolled for the estimated batch, fails to
// compile ("Can only unroll for loops over a constant extent"). A large batch estimate keeps
// those loops long enough that Adams2019 does not unroll them.
constexpr int kAdams2019BatchEstimate = 1024;

void EstimateLargeBatch(const LoweredSegment& s) {
  auto large_input = [](Halide::ImageParam p) {
    if (p.defined()) p.dim(p.dimensions() - 1).set_estimate(0, kAdams2019BatchEstimate);
  };
  large_input(s.input);
  large_input(s.targets);
  large_input(s.output_grad);
  auto large_output = [](Halide::Func f, const std::vector<int64_t>& shape) {
    if (!f.defined()) return;
    Halide::Region region;
    for (size_t d = shape.size(); d-- > 0;) region.push_back({0, static_cast<int>(shape[d])});
    region.push_back({0, kAdams2019BatchEstimate});
    f.set_estimates(region);
  };
  const Layer& last = s.model->layers[s.segment.last];
  const int output_layer = IsLoss(last.kind) ? last.input() : s.segment.last;
  large_output(s.output, s.model->layers[output_layer].output_shape);
  large_output(s.input_grad, s.model->layers[s.segment.input].output_shape);
}

absl::Status AutoSchedule(Halide::Pipeline& pipeline, Scheduler scheduler,
                          const Halide::Target& target, const MachineOptions& machine) {
  static std::mutex mutex;
  static bool loaded[4] = {};
  const char* plugin = nullptr;
  const char* name = nullptr;
  switch (scheduler) {
    case Scheduler::kLi2018: plugin = KILN_LI2018_PLUGIN; name = "Li2018"; break;
    case Scheduler::kMullapudi2016: plugin = KILN_MULLAPUDI2016_PLUGIN; name = "Mullapudi2016"; break;
    case Scheduler::kAdams2019: plugin = KILN_ADAMS2019_PLUGIN; name = "Adams2019"; break;
    case Scheduler::kManual:
    case Scheduler::kNaive:
      return absl::InternalError(
          absl::StrCat("AutoSchedule called for the ", SchedulerName(scheduler), " schedule"));
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    bool& done = loaded[static_cast<int>(scheduler)];
    if (!done) {
      const std::string path = plugin;
      try {
        Halide::load_plugin(path);
      } catch (const std::exception& e) {
        return absl::NotFoundError(absl::StrCat("failed to load the ", name, " autoscheduler from '",
                                                path, "': ", e.what(),
                                                "; install libhalide14-0-dev"));
      }
      done = true;
    }
  }
  try {
    pipeline.auto_schedule(name, target,
                           Halide::MachineParams(machine.parallelism, machine.last_level_cache_bytes,
                                                 machine.balance));
  } catch (const Halide::Error& e) {
    return absl::InternalError(absl::StrCat(name, " failed to schedule the pipeline: ", e.what()));
  }
  return absl::OkStatus();
}

void ComputeEverythingAtRoot(const std::vector<Halide::Func>& outputs) {
  std::vector<Halide::Internal::Function> functions;
  for (const Halide::Func& f : outputs) functions.push_back(f.function());
  for (auto& [name, function] : Halide::Internal::build_environment(functions)) {
    Halide::Func(function).compute_root();
  }
}

}  // namespace internal

absl::Status ScheduleSegment(const LoweredSegment& segment, Halide::Pipeline& pipeline,
                             Scheduler scheduler, const Halide::Target& target,
                             const MachineOptions& machine, ForwardBatch forward_batch) {
  if (scheduler == Scheduler::kLi2018 && segment.mode != LowerMode::kForward &&
      machine.parallelism > 1) {
    // NOTE: tuned for more than one thread, Halide 14's Li2018 vectorizes the batch and spatial
    // reductions of a training step as atomic updates with guarded tails, and Halide 14's CPU
    // backend rejects those ("Atomic predicated store is not supported"). Tuned for one thread
    // it emits no such stores.
    MachineOptions serial = machine;
    serial.parallelism = 1;
    return internal::AutoSchedule(pipeline, scheduler, target, serial);
  }
  if (scheduler == Scheduler::kNaive) {
    internal::ComputeEverythingAtRoot(pipeline.outputs());
    return absl::OkStatus();
  }
  if (scheduler == Scheduler::kAdams2019) internal::EstimateLargeBatch(segment);
  if (scheduler != Scheduler::kManual) {
    return internal::AutoSchedule(pipeline, scheduler, target, machine);
  }
  internal::ManualSegment(segment, pipeline, target, forward_batch);
  return absl::OkStatus();
}

void ScheduleOptimizer(Halide::Func updated, const Halide::Target& target) {
  // NOTE: the runtime updates in place (params_out is params), and the autoschedulers split the
  // flat arrays with ShiftInwards: Li2018 and Mullapudi2016 then updated the last elements of
  // LeNet-5's 61,706 twice (tests/schedule_test.cpp caught it when each model compiled its own
  // update). Hence one hand-written schedule, with guarded tails, for all.
  internal::ManualElementwiseUpdate(updated, target);
}

void ScheduleSumOfSquares(const LoweredSumOfSquares& sum, const Halide::Target& /*target*/) {
  internal::ManualSumOfSquares(sum);
}

}  // namespace kiln
