/** \file
 * Schedules for lowered pipelines: Kiln's hand-written ones or a Halide autoscheduler. All give
 * the same results within float rounding; only speed and compile time differ.
 *
 *   Halide::Pipeline p = ...;
 *   absl::Status s = kiln::ScheduleSegment(segment, p, kiln::Scheduler::kManual, target);
 */
#ifndef KILN_COMPILER_SCHEDULE_SCHEDULE_H_
#define KILN_COMPILER_SCHEDULE_SCHEDULE_H_

#include <string>
#include <vector>

#include "Halide.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "compiler/lower.h"
#include "compiler/model.h"
#include "compiler/optimizers.h"

namespace kiln {

/// kManual: Kiln's hand-written schedules (compiler/schedule/manual.cpp). kLi2018,
/// kMullapudi2016, kAdams2019: Halide's autoschedulers of those names. kNaive: every Func
/// computed at root in serial loops, without vectorization: the baseline of `kiln bench`.
enum class Scheduler { kManual, kLi2018, kMullapudi2016, kAdams2019, kNaive };

/// Parses "manual", "li2018", "mullapudi2016", "adams2019" or "naive" (any case).
absl::StatusOr<Scheduler> ParseScheduler(const std::string& name);
const char* SchedulerName(Scheduler scheduler);

/// Which batches a forward (inference) function is scheduled for. The manual schedule compiles
/// two: kAny, which vectorizes across x below kManualLargeBatch samples (one image would fill
/// one of 16 lanes otherwise) and across samples above, and kLarge, for batches of at least
/// kManualLargeBatch, whose convs and dense layers reduce in register tiles of 16 samples. The
/// generated Forward calls the second for those batches. The autoschedulers compile kAny only.
enum class ForwardBatch { kAny, kLarge };
inline constexpr int kManualLargeBatch = 4;

/// Machine description given to the autoschedulers.
struct MachineOptions {
  int parallelism = 2;                              ///< Threads the schedule is tuned for.
  uint64_t last_level_cache_bytes = 32ull << 20;    ///< Estimate for a server-class CPU.
  float balance = 40;                               ///< Halide's default for CPUs.
};

/// Schedules the pipeline of a lowered segment (outputs: segment.outputs()).
absl::Status ScheduleSegment(const LoweredSegment& segment, Halide::Pipeline& pipeline,
                             Scheduler scheduler, const Halide::Target& target,
                             const MachineOptions& machine = {},
                             ForwardBatch forward_batch = ForwardBatch::kAny);

/// Schedules the optimizers of compiler/optimizers.h. They are compiled once for all models, with
/// Kiln's hand-written schedules whatever schedule the models use: an elementwise pass over flat
/// arrays, which every scheduler would vectorize alike (see the NOTE in schedule.cpp).
void ScheduleOptimizer(Halide::Func updated, const Halide::Target& target);
void ScheduleSumOfSquares(const LoweredSumOfSquares& sum, const Halide::Target& target);

namespace internal {
/// Runs a Halide autoscheduler on `pipeline`, loading its plugin on first use.
absl::Status AutoSchedule(Halide::Pipeline& pipeline, Scheduler scheduler,
                          const Halide::Target& target, const MachineOptions& machine);
void ManualSegment(const LoweredSegment& segment, Halide::Pipeline& pipeline,
                   const Halide::Target& target, ForwardBatch forward_batch = ForwardBatch::kAny);
void ManualElementwiseUpdate(Halide::Func updated, const Halide::Target& target);
void ManualSumOfSquares(const LoweredSumOfSquares& sum);
/// Computes every Func that `outputs` call at root, in serial, unvectorized loops.
void ComputeEverythingAtRoot(const std::vector<Halide::Func>& outputs);
}  // namespace internal

}  // namespace kiln

#endif  // KILN_COMPILER_SCHEDULE_SCHEDULE_H_
