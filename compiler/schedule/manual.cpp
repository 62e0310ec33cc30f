// Kiln's hand-written schedules: one section per op, then one for the gradients. The algorithms
// are in compiler/ops/.
//
// THE LAYOUT. Every intermediate tensor is stored with the batch innermost, (n, x, y, c) and
// (n, f), and vectorized across samples. LeNet's feature maps are 28, 14, 10, 5 and 1 wide, so
// vectors across x waste lanes or need tails, while a batch of 64 fills four AVX-512 vectors
// exactly in every layer, forward and backward. Each step of a reduction over kernel taps and
// input channels is then one broadcast weight times one contiguous vector of samples.
//
// Measured with bench/compare.py on LeNet-5, batch 64, 2 threads, on a 2-core AMD EPYC with
// AVX-512 under KVM, against PyTorch 1.13 eager in the same run. Training step: 0.75× PyTorch
// with x vectorized, 1.18–1.32× with samples vectorized. Inference: 1.55× and 2.1–2.4×.
// Batches of fewer than 4 samples get their own x-vectorized inference function: batch-1
// latency 0.25 ms without it, 0.043–0.05 ms with it, 0.036 ms with the changes described at
// ScheduleBatchInnermost and ScheduleConvPool (PyTorch: 0.18 ms).
#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "compiler/schedule/schedule.h"

namespace kiln::internal {
namespace {

using Halide::Func;
using Halide::Var;
using Halide::TailStrategy;

// Samples per vector: one AVX-512 register of floats.
constexpr int kLanes = 16;
// Inference below this many samples vectorizes across x instead, in vectors of 8 lanes: LeNet's
// rows are 28, 14, 10 and 5 wide.
constexpr int kSmallBatch = kManualLargeBatch;
constexpr int kSmallBatchLanes = 8;

// The reduction variables of update definition `update` of `f`, in its current loop order,
// innermost first: the order a conv's reduction was set to (ReduceChannelsInnermost) survives
// the schedules that reorder the other loops around it.
std::vector<Halide::RVar> RVars(Func f, int update) {
  std::vector<Halide::RVar> rvars;
  for (const Halide::Internal::Dim& d : f.function().update(update).schedule().dims()) {
    if (d.is_rvar()) rvars.emplace_back(d.var);
  }
  return rvars;
}

// The pure Vars among the left-hand side arguments of update `update` of `f`.
std::vector<Var> PureUpdateVars(Func f, int update) {
  std::vector<Var> pure;
  for (const Halide::Expr& e : f.function().update(update).args()) {
    const auto* var = e.as<Halide::Internal::Variable>();
    if (var != nullptr && !var->reduction_domain.defined()) pure.emplace_back(var->name);
  }
  return pure;
}

// Index of the Var named `name` in `vars`, or -1.
int IndexOf(const std::vector<Var>& vars, const std::string& name) {
  for (size_t i = 0; i < vars.size(); ++i) {
    if (vars[i].name() == name) return static_cast<int>(i);
  }
  return -1;
}

// The inference function's specialization for batches below kSmallBatch (ScheduleBatchInnermost).
struct SmallBatch {
  Halide::Expr condition;  // Undefined: no specialization.
  bool parallel = false;   // Whether its loops run in parallel.
};

// Stores `f` with the batch dimension `n` innermost, computes it at root, vectorizes every
// definition across `lanes` samples and parallelizes it over its outermost other dimension.
// RoundUp computes whole vectors past a partial batch: the inputs clamp n, so those lanes read
// the last sample, and nothing reads them back. Returns false when `f` has no batch dimension.
//
// With `small_batch` defined (the inference function for batches below kSmallBatch), `f` keeps
// the caller's storage order, x (or features) innermost. Batches for which it is true get a
// specialization that vectorizes across x, because one sample would fill one of 16 lanes. Its
// vectors round up past the row's end (LeNet's rows are 28, 14, 10 and 5 wide), which keeps the
// accumulators of a reduction in registers. Masked tails made LLVM keep them in memory. LeNet-5
// at batch 1 (generated function driven directly, 2 threads, Zen 4): 0.20 ms with samples
// innermost in storage and masked tails, 0.14 ms in x-innermost storage, 0.043 ms rounded up.
//
// The specialization runs on the calling thread unless `small_batch.parallel`. LeNet-5's batch 1
// is about 35 µs of work in a dozen loops. With them parallel, the second thread slept between
// loops, and 2 threads took 0.030–0.062 ms from run to run. Serial, 1 or 2 threads take
// 0.034 ms (driven directly, Zen 4). ResNet-20's batch 1 took 4.5 ms in parallel and 8.1 ms
// serially (kiln bench, 2 threads).
//
// With `across_channels` (a conv whose output is 1×1, like LeNet's C5), the specialization
// vectorizes across output channels instead, since its x vectors would repeat one value in
// every lane. Each lane then reads its own channel's weights, a gather 400 floats apart in C5,
// and one gather replaces eight broadcasts and FMAs. C5 alone at batch 1 (Halide JIT, Zen 4):
// 16 µs across x, 5.6 µs across channels, 35 µs with its weights copied channels innermost on
// each call. LeNet-5 at batch 1, driven directly: 0.050 → 0.038 ms.
bool ScheduleBatchInnermost(Func f, const SmallBatch& small_batch = SmallBatch(),
                            int lanes = kLanes, bool across_channels = false) {
  const std::string n = ops::vars().n.name();
  std::vector<Var> args = f.args();
  const int n_index = IndexOf(args, n);
  if (n_index < 0) return false;
  std::vector<Var> storage = {args[n_index]};
  for (int i = 0; i < static_cast<int>(args.size()); ++i) {
    if (i != n_index) storage.push_back(args[i]);
  }
  // Rounding up across features (a (f, n) Func) would read BatchNorm's running statistics past
  // their end, so those keep guarded tails.
  const TailStrategy across_tail =
      args.size() == 4 ? TailStrategy::RoundUp : TailStrategy::GuardWithIf;
  across_channels = across_channels && args.size() == 4;
  f.compute_root();
  if (storage.size() > 1) {
    if (!small_batch.condition.defined()) f.reorder_storage(storage);
    f.reorder(std::vector<Halide::VarOrRVar>(storage.begin(), storage.end()));
  }
  if (small_batch.condition.defined() && storage.size() > 1) {
    Halide::Stage small = f.specialize(small_batch.condition);
    small.vectorize(across_channels ? args[2] : storage[1], kSmallBatchLanes, across_tail);
    if (small_batch.parallel && !across_channels && storage.size() > 2) {
      small.parallel(storage.back());
    }
  }
  f.vectorize(args[n_index], lanes, TailStrategy::RoundUp);
  if (storage.size() > 1) f.parallel(storage.back());

  for (int u = 0; u < f.num_update_definitions(); ++u) {
    std::vector<Var> pure = PureUpdateVars(f, u);
    const int pure_n = IndexOf(pure, n);
    if (pure_n < 0) {
      f.update(u).unscheduled();  // Reduces over the batch: left serial (the loss sum).
      continue;
    }
    // Samples innermost, then the reduction, then the other pure dimensions.
    std::vector<Halide::VarOrRVar> order = {pure[pure_n]};
    for (const Halide::RVar& r : RVars(f, u)) order.emplace_back(r);
    Var outermost = pure[pure_n];
    for (int i = 0; i < static_cast<int>(pure.size()); ++i) {
      if (i != pure_n) order.emplace_back(outermost = pure[i]);
    }
    // Vectors of samples innermost and groups of them just outside the reduction, so each
    // accumulator vector stays in a register for the whole reduction.
    Var groups(n + "_groups"), samples(n + "_samples");
    Halide::Stage update = f.update(u);
    if (small_batch.condition.defined() && pure.size() > 1) {
      // One vector across x (or features, or channels) innermost, then the reduction. The other
      // vectors of a row stay inside the reduction, where ScheduleConvPool unrolls them. Blocks
      // of channels go outside it (C5 has 15).
      Var across = pure[pure_n == 0 ? 1 : 0];
      if (across_channels) across = pure[2];
      const Var vector(across.name() + "_lanes");
      std::vector<Halide::VarOrRVar> small_order = {vector};
      if (!across_channels) small_order.emplace_back(across);
      for (const Halide::RVar& r : RVars(f, u)) small_order.emplace_back(r);
      if (across_channels) small_order.emplace_back(across);
      for (const Var& v : pure) {
        if (v.name() != across.name()) small_order.emplace_back(v);
      }
      Halide::Stage small = update.specialize(small_batch.condition);
      small.split(across, across, vector, kSmallBatchLanes, across_tail)
          .reorder(small_order)
          .vectorize(vector);
      if (small_batch.parallel && outermost.name() != n && outermost.name() != across.name()) {
        small.parallel(outermost);
      }
    }
    update.split(pure[pure_n], groups, samples, lanes, TailStrategy::RoundUp);
    order[0] = samples;
    order.insert(order.begin() + 1 + RVars(f, u).size(), groups);
    update.reorder(order).vectorize(samples);
    if (outermost.name() != n) update.parallel(outermost);
  }
  return true;
}

// All of `channels` when there are 2 to 12, else the largest of 8, 4 and 2 that divides them
// (and is smaller), or 1. A block is a tile's count of independent accumulator chains, and with
// few of them each FMA waits on an earlier one's result. LeNet's 6-channel tiles had 2: its
// training step (generated function driven directly, batch 64, 2 threads, Zen 4) took 1.82 ms
// with blocks of 2 and 1.56 ms with blocks of 6.
int ChannelBlock(int channels) {
  if (channels >= 2 && channels <= 12) return channels;
  for (int b : {8, 4, 2}) {
    if (channels % b == 0 && channels > b) return b;
  }
  return 1;
}

// A reduction f(..., c, n) (a conv, a dense layer or a conv's input gradient, whose outermost
// dimension `c` has `channels` values) computed in register tiles of 16 samples × a block of up
// to 12 channels (ChannelBlock): the tile's accumulators stay in registers for the whole
// reduction, each input vector loaded serves every channel of the block, and the block's
// independent accumulators hide the FMA latency that one accumulator chain waits on. The tiles
// are copied into a batch-innermost wrapper that every consumer reads. Where `batch` (the
// run-time batch size) is given, batches of at most 8 samples get tiles of 8 samples × twice the
// channels. AMD Zen 4 splits each 16-lane FMA into two 8-lane halves, so 8-lane vectors lose
// nothing there. `width`, when given, is f's extent in x (a conv's output width). Falls back to
// ScheduleBatchInnermost with `lanes` for other Funcs.
//
// Measured on ResNet-20 (batch 64, 2 threads, AMD EPYC Zen 4): accumulating a block of channels
// in place in the root buffer, instead of in a tile, made the first stage's convs 2.7× slower,
// since LLVM cannot prove the block's run-time-strided accumulators distinct and keeps them in
// memory. The 256-channel 3×3 conv at 28×28 and batch 8 ran at these GFLOP/s (same machine,
// generated function driven directly). 16-sample tiles: 91. 8-sample tiles of 16 channels: 90.
// With packed weights: 142. With the input stored channels before columns: 155. Reducing over
// input channels innermost (ReduceChannelsInnermost): 168–179, which is 72–76 % of the
// 235 GFLOP/s peak. Tiles that also spanned 2, 3 or 4 columns were slower (99–153).
bool ScheduleRegisterTiled(Func f, int channels, const Halide::Expr& batch, int width = 0,
                           int lanes = kLanes) {
  const int block = ChannelBlock(channels);
  std::vector<Var> args = f.args();
  const std::string n = ops::vars().n.name();
  if (block == 1 || f.num_update_definitions() != 1 || args.size() < 2 ||
      args.back().name() != n || PureUpdateVars(f, 0).size() != args.size()) {
    return ScheduleBatchInnermost(f, SmallBatch(), lanes);
  }
  const Var c = args[args.size() - 2];
  Func tiled = f.in();
  std::vector<Var> storage = {args.back()};
  storage.insert(storage.end(), args.begin(), args.end() - 1);
  Var groups(n + "_groups"), samples(n + "_samples"), blocks(c.name() + "_blocks"),
      in_block(c.name() + "_in_block");
  // Channels split into whole blocks (RoundUp, not guards) give each tile a constant size, which
  // LLVM needs to keep it in registers. With 16 guarded channels per tile the conv below ran at
  // 50 GFLOP/s, not 90. Constant extents in channels and x (a conv's output width) give the
  // conv's input constant strides too: 138 → 174 GFLOP/s in inference.
  tiled.compute_root().reorder_storage(storage);
  if (width > 0) tiled.bound(c, 0, channels).bound(args[0], 0, width);
  f.compute_at(tiled, groups);
  std::vector<Var> tile_storage = {args.back(), c};
  for (size_t i = 0; i + 2 < args.size(); ++i) tile_storage.push_back(args[i]);
  f.reorder_storage(tile_storage);
  std::vector<Halide::VarOrRVar> tile_order(tile_storage.begin(), tile_storage.end());
  std::vector<Halide::VarOrRVar> update_order = {args.back(), c};
  for (const Halide::RVar& r : RVars(f, 0)) update_order.emplace_back(r);
  for (size_t i = 0; i + 2 < args.size(); ++i) update_order.emplace_back(args[i]);

  // Tiles of `lanes` samples × `channel_block` channels.
  auto schedule_tiles = [&](Halide::Stage copy, Halide::Stage pure, Halide::Stage update,
                            int lanes, int channel_block) {
    copy.split(args.back(), groups, samples, lanes, TailStrategy::RoundUp)
        .split(c, blocks, in_block, channel_block, TailStrategy::RoundUp);
    // samples, in_block, groups, the other dimensions (x, y), blocks.
    std::vector<Halide::VarOrRVar> order = {samples, in_block, groups};
    for (size_t i = 0; i + 2 < args.size(); ++i) order.emplace_back(args[i]);
    order.emplace_back(blocks);
    copy.reorder(order).vectorize(samples).unroll(in_block);
    if (args.size() > 2) {
      // With few blocks, parallel over rows of blocks too.
      Var tasks(c.name() + "_tasks");
      copy.fuse(args[args.size() - 3], blocks, tasks).parallel(tasks);
    } else {
      copy.parallel(blocks);
    }
    pure.reorder(tile_order).vectorize(args.back(), lanes).unroll(c);
    update.reorder(update_order).vectorize(args.back(), lanes).unroll(c);
  };
  if (batch.defined()) {
    const int half_block = channels % (2 * block) == 0 && channels > 2 * block ? 2 * block : block;
    const Halide::Expr half = batch <= kLanes / 2;
    schedule_tiles(tiled.specialize(half), f.specialize(half), f.update().specialize(half),
                   kLanes / 2, half_block);
  }
  schedule_tiles(tiled, f, f.update(), kLanes, block);
  return true;
}

// Returns the vector width across samples for `model`: 8 lanes when it is compiled for 8 samples
// or fewer, so that they do not fill half of each 16-lane vector.
int SampleLanes(const Model& model) {
  return model.batch_size <= kLanes / 2 ? kLanes / 2 : kLanes;
}

// Returns the run-time batch size of segment `s`: its input's outermost extent.
Halide::Expr BatchSize(const LoweredSegment& s) {
  return s.input.dim(s.input.dimensions() - 1).extent();
}

// Copies conv weight `weight` (kx, ky, in, out) into a buffer stored as (out, in, kx, ky). A
// register tile's block of output channels then reads its weights at constant offsets from one
// address, in the order the conv reduces. The caller's buffer has an output-channel stride
// unknown until run time, so LLVM computed the block's addresses in vector registers and
// extracted them one by one: two extra instructions per FMA.
void PackConvWeight(Func weight) {
  std::vector<Var> w = weight.args();
  weight.compute_root().reorder_storage(w[3], w[2], w[0], w[1]).parallel(w[3]);
}

// Stores a register-tiled conv's zero-padded input (n, c, x, y): the samples of all input
// channels at one position are contiguous, the order the tiles reduce in. Inference only:
// training packs a copy (PackConvInputCopy), because the weight gradients sweep a few input
// channels' planes at a time. In this layout a plane's columns lie batch × channels floats apart
// (2 KB in ResNet-18 at batch 8), and a power-of-two stride maps the sweep onto a few cache
// sets. With the weight gradients reading this layout, ResNet-18's training step at 224×224 ran
// at 1.9 images/s, and at 2.6 reading it batch-innermost (2 threads, Zen 4).
void PackConvInput(Func padded) {
  const ops::Vars& v = ops::vars();
  padded.reorder_storage(v.n, v.c, v.x, v.y);
}

// Gives conv `conv` (training) its own copy of its zero-padded input `padded`, stored as
// PackConvInput stores it, while the weight gradient keeps reading `padded` batch-innermost.
// Measured on the 256-channel 3×3 conv at 28×28 and batch 8 (training step: forward and weight
// gradient, generated function driven directly, 2 threads, Zen 4): 183 → 113 ms.
void PackConvInputCopy(Func padded, Func conv) {
  const ops::Vars& v = ops::vars();
  Func copy = padded.in(conv);
  PackConvInput(copy);
  copy.compute_root()
      .reorder(v.n, v.c, v.x, v.y)
      .vectorize(v.n, kLanes / 2, TailStrategy::RoundUp)
      .parallel(v.y);
}

// Reduces conv `conv` over input channels innermost, then kernel columns and rows: the order
// PackConvWeight and PackConvInput store weights and inputs in. It is set before any other
// schedule. Every path (register tiles, small batches, convs computed inside a pool) then sums
// in the same order. A sample's logits agree across batch sizes to within about 1e-6 of its
// largest logit, not bit for bit: the x-vectorized function for batches below kSmallBatch
// rounds differently (cause not identified). The algorithm (ops/conv2d.cpp) keeps the kernel
// taps first: with the channel first in its RDom, Halide 14's autodiff gave a wrong input
// gradient for a 2×2 kernel.
void ReduceChannelsInnermost(Func conv) {
  const std::vector<Halide::RVar> r = RVars(conv, 0);  // (kx, ky, ci)
  conv.update().reorder(r[2], r[0], r[1]);
}

// ---- conv2d, relu, max_pool2d ------------------------------------------------------------------
// Every conv, pool and zero-padded conv input is stored batch-innermost. relu is inlined into
// its consumer. For inference, a conv → relu → max_pool2d chain computes the conv rows one pool
// row needs inside the pool's loop over rows, so no full conv output is ever stored.
void ScheduleConvPool(Func pool, Func conv, const SmallBatch& small_batch, int lanes) {
  ScheduleBatchInnermost(pool, small_batch, lanes);
  // Allocated once per channel and folded by Halide to the rows in use, not once per row.
  const ops::Vars& v = ops::vars();
  conv.compute_at(pool, v.y).store_at(pool, v.c);
  if (small_batch.condition.defined()) {
    // Every vector of the conv rows one pool row needs (2 rows × 2 vectors in LeNet's C3) goes
    // inside the reduction with its own accumulator. With one accumulator, each FMA waited for
    // the previous one's result.
    std::vector<Halide::VarOrRVar> order = {Var(v.x.name() + "_lanes"), v.x, v.y};
    for (const Halide::RVar& r : RVars(conv, 0)) order.emplace_back(r);
    conv.update().specialize(small_batch.condition).reorder(order).unroll(v.x).unroll(v.y);
  }
}

// ---- dense ---------------------------------------------------------------------------------
// out(o, n) += W(i, o) · in(i, n): a broadcast weight times a vector of samples per step.
// The logits of the inference pipeline are its output, whose layout (class, n) is the caller's,
// so they are vectorized across classes instead, with guarded tails.
void ScheduleLogitsOutput(Func logits) {
  const ops::Vars& v = ops::vars();
  logits.compute_root().parallel(v.n).vectorize(v.f, kLanes, TailStrategy::GuardWithIf);
  logits.update().parallel(v.n).vectorize(v.f, kLanes, TailStrategy::GuardWithIf);
}

// A segment's output is a copy in the caller's layout, (x, y, c, n) or (f, n): parallel over
// its outermost dimension and vectorized across x or features, with guarded tails.
void ScheduleOutputCopy(Func f) {
  std::vector<Var> args = f.args();
  f.compute_root().parallel(args.back()).vectorize(args[0], kLanes, TailStrategy::GuardWithIf);
}

// Schedules the output Func of every layer and every conv's padded input; elementwise ops
// (activations, add, concat, dropout, normalization) are inlined into their consumers. With
// `fuse_pools` (inference), conv → relu → max_pool2d chains are computed inside the pool.
void ScheduleBatchReduction(Func f, const std::vector<int64_t>& shape, int lanes);

// Schedules the layers of a segment. `fuse_pools` (inference) computes conv → relu → pool chains
// inside the pool's rows. `large_batch` (inference for batches of at least kSmallBatch) drops the
// small-batch specializations and reduces the other convs and the dense layers in register tiles,
// as training does. Measured with kiln bench against the inference schedule without the tiles
// (2 threads, 2-core AMD EPYC Zen 4): LeNet-5 at batch 64 76,404 → 88,793 images/s, a 3×3
// convolution of 256 channels at 28×28 and batch 8 15.2 → 99.0 images/s.
void ScheduleLayers(const LoweredSegment& s, bool fuse_pools, bool large_batch = false) {
  const Model& model = *s.model;
  const Halide::Expr batch = BatchSize(s);
  const int lanes = SampleLanes(model);
  // Small batches run in parallel in segments of at least 4 MFLOP per sample. LeNet-5 has 0.85
  // and ran faster serially, ResNet-20's residual blocks (a segment each) have about 6 to 7 and
  // ran faster in parallel (ScheduleBatchInnermost). The threshold between them was not tuned.
  SmallBatch small_batch;
  if (fuse_pools && !large_batch) {
    int64_t flops = 0;
    for (const auto& [i, lowered] : s.layers) flops += model.flops(model.layers[i]);
    small_batch = {batch < kSmallBatch, flops >= 4'000'000};
  }
  std::vector<int> consumers(model.layers.size(), 0);
  for (const Layer& layer : model.layers) {
    for (int in : layer.inputs) ++consumers[in];
  }
  // The conv that ScheduleConvPool computes inside pool layer `pool`'s rows: a conv of this
  // segment that feeds only a relu that feeds only the pool. -1 when there is none.
  auto fused_conv = [&](int pool) {
    const Layer& relu = model.layers[model.layers[pool].input()];
    const int relu_index = model.layers[pool].input();
    const bool fused = fuse_pools && s.layers.at(pool).stages.empty() &&
                       s.layers.count(relu_index) != 0 && relu.kind == OpKind::kRelu &&
                       consumers[relu_index] == 1 && s.layers.count(relu.input()) != 0 &&
                       model.layers[relu.input()].kind == OpKind::kConv2d &&
                       consumers[relu.input()] == 1;
    return fused ? relu.input() : -1;
  };
  auto pooled = [&](int conv) {
    for (const auto& [i, lowered] : s.layers) {
      const OpKind kind = model.layers[i].kind;
      if ((kind == OpKind::kMaxPool2d || kind == OpKind::kAvgPool2d) && fused_conv(i) == conv) {
        return true;
      }
    }
    return false;
  };
  auto param_func = [&](int param) {
    for (size_t j = 0; j < s.param_indices.size(); ++j) {
      if (s.param_indices[j] == param) return s.param_funcs[j];
    }
    return Func();
  };

  Func prediction;
  for (const auto& [i, lowered] : s.layers) {
    const Layer& layer = model.layers[i];
    switch (layer.kind) {
      case OpKind::kConv2d: {
        ReduceChannelsInnermost(lowered.output);
        // The zero-padded input. In training, a conv without padding whose input is stored in
        // the segment reads that input directly (its packed copy and its weight gradient): the
        // padded copy only repeated it. LeNet-5's training step (driven directly, batch 64,
        // 2 threads, Zen 4): 1.047 → 1.031 ms. A segment's input (ResNet's 1×1 shortcut convs)
        // is read through clamps, so its padded copy stays.
        if (fuse_pools || layer.padding != 0 || layer.input() == s.segment.input) {
          ScheduleBatchInnermost(lowered.stages[0], small_batch, lanes);
        }
        const bool single_output = layer.output_shape[1] == 1 && layer.output_shape[2] == 1;
        if (fuse_pools && (!large_batch || pooled(i))) {
          ScheduleBatchInnermost(lowered.output, small_batch, lanes, single_output);
        } else if (ScheduleRegisterTiled(
                       lowered.output, static_cast<int>(layer.out_channels), batch,
                       static_cast<int>(layer.output_shape[2]), lanes)) {
          // A conv with a 1×1 output reads each weight once per tile, so a packed copy costs
          // as much as it saves. Without C5's copy LeNet-5's training step (driven directly,
          // batch 64, 2 threads, Zen 4) took 1.50 ms instead of 1.55.
          if (!single_output) PackConvWeight(param_func(layer.params[0]));
          // With one input channel, (n, c, x, y) is the batch-innermost layout already, so the
          // packed copy only repeated it. LeNet-5's training step: 1.063 → 1.047 ms.
          const bool one_channel = model.layers[layer.input()].output_shape[0] == 1;
          if (fuse_pools) {
            PackConvInput(lowered.stages[0]);
          } else if (!one_channel) {
            PackConvInputCopy(lowered.stages[0], lowered.output);
          }
        }
        break;
      }
      case OpKind::kMaxPool2d:
      case OpKind::kAvgPool2d: {
        const int conv = fused_conv(i);
        if (conv >= 0) {
          ScheduleConvPool(lowered.output, s.layers.at(conv).output, small_batch, lanes);
        } else {
          ScheduleBatchInnermost(lowered.output, small_batch, lanes);
        }
        break;
      }
      case OpKind::kAdaptiveAvgPool2d:
        ScheduleBatchInnermost(lowered.stages[0], small_batch, lanes);
        break;
      case OpKind::kBatchNorm2d:
      case OpKind::kBatchNorm1d:
        // Per-channel statistics: sums over the batch in vector lanes, channels in parallel.
        // With the adjoints parallel too (ManualSegment), ResNet-20's training step at batch 64
        // went from 168 to 191 and 232 to 278 images/s in alternating runs (2 threads, Zen 4).
        for (Func stage : lowered.stages) ScheduleBatchReduction(stage, {}, lanes);
        break;
      case OpKind::kDense:
        if (fuse_pools && s.last && i == model.loss_layer().input()) {
          prediction = lowered.output;
        } else {
          if (fuse_pools && !large_batch) {
            ScheduleBatchInnermost(lowered.output, small_batch, lanes);
          } else {
            ScheduleRegisterTiled(lowered.output, static_cast<int>(layer.out_channels), batch, 0,
                                  lanes);
          }
        }
        // Small batches gather their weights across features, in_features apart. Copying the
        // weights transposed on each call cost more: LeNet-5 at batch 1 (driven directly, 2
        // threads, Zen 4) 0.035 → 0.033 ms without the copy.
        break;
      case OpKind::kSigmoid:
      case OpKind::kTanh:
        // Too costly to recompute in each consumer: a dense layer would evaluate every
        // activation once per output feature.
        ScheduleBatchInnermost(lowered.output, small_batch, lanes);
        break;
      default: break;  // inlined
    }
  }
  if (prediction.defined()) ScheduleLogitsOutput(prediction);
  ScheduleOutputCopy(s.output);
}

// ---- gradients (adjoints from propagate_adjoints) ---------------------------------------------
// propagate_adjoints makes one adjoint Func per forward definition, named
// "<forward>_<definition>_d_def__", with the forward Func's dimensions. Kiln's ops give them
// four shapes, all batch-innermost except the last:
//  - gathers (a conv's input gradient): pure in (x, y, c, n), reducing over taps and channels;
//  - scatters (a strided conv's input gradient, overlapping max_pool2d windows): update
//    left-hand sides of RVars, pure in (c, n);
//  - the gathers that replace the other scatters ("<adjoint>_gather", GatherInputAdjoints in
//    compiler/lower.cpp): pure, a select of one or a few reads;
//  - parameter gradients: pure in the parameter's indices, reducing over space and the batch.
// Parameter gradients sum the batch in vector lanes with rfactor, then add the lanes.

bool IsCopy(const Halide::Internal::Function& f) {
  const auto* call = f.values()[0].as<Halide::Internal::Call>();
  if (call == nullptr || call->args.size() != f.args().size()) return false;
  for (size_t i = 0; i < call->args.size(); ++i) {
    const auto* var = call->args[i].as<Halide::Internal::Variable>();
    if (var == nullptr || var->name != f.args()[i]) return false;
  }
  return true;
}

bool IsConstant(const Halide::Expr& e) {
  return Halide::Internal::as_const_int(Halide::Internal::simplify(e)) != nullptr;
}

// Schedules conv weight gradient `f` (kx, ky, in, out) of PyTorch shape `shape`, whose sample
// RVar was split and rfactored into `partial` (pure in `lane`, reducing over `space` and
// `groups`). Each parallel task takes a block of output channels and sums it with one block of
// input channels at a time. For each kernel row, the accumulators of the two blocks' (out, in,
// kx) triples stay in registers (about 24 vectors) over the whole image. Each vector of output
// gradients is then loaded once per block of input channels, and each input vector once per
// block of output channels. `storage` is partial's storage order.
//
// Measured on the 256-channel 3×3 conv at 28×28 and batch 8 (training step: forward and weight
// gradient, generated function driven directly, 2 threads, Zen 4). One (in, out) pair per task
// with all 9 taps in registers, in 16 lanes: 420 ms. Blocks of 4 output × 2 input channels in
// 8 lanes: 175 ms. With 12, 16, 24 or 32 accumulators, or the kernel rows unrolled too:
// 160–230 ms, within the run-to-run noise except 12.
void ScheduleWeightGradientTiles(Func f, int update, Func partial, const std::vector<Var>& pure,
                                 const std::vector<Halide::RVar>& space, Halide::RVar groups,
                                 Halide::RVar samples, Var lane, const std::vector<Var>& storage,
                                 const std::vector<int64_t>& shape) {
  constexpr int kAccumulators = 24;
  const int kernel = static_cast<int>(shape[3]);
  int out_block = 1;
  if (shape[0] % 4 == 0) {
    out_block = 4;
  } else if (shape[0] % 2 == 0) {
    out_block = 2;
  }
  int in_block = 1;
  for (int b : {8, 4, 2}) {
    if (b * out_block * kernel <= kAccumulators && shape[1] % b == 0) {
      in_block = b;
      break;
    }
  }
  // Input channels per lane-sum task: a multiple of in_block that divides them, at most 32.
  int in_chunk = in_block;
  for (int d = 32; d > in_block; --d) {
    if (shape[1] % d == 0 && d % in_block == 0) {
      in_chunk = d;
      break;
    }
  }

  // f's update adds the lanes, parallel over blocks of output channels. Each chunk of input
  // channels computes its lane sums (`tile`) just before, so they are read back from cache.
  Var out_blocks("out_blocks"), out_in("out_in");
  Var in_chunks("in_chunks"), in_chunk_in("in_chunk_in");
  f.update(update)
      .split(pure[3], out_blocks, out_in, out_block)
      .split(pure[2], in_chunks, in_chunk_in, in_chunk)
      .reorder(pure[0], pure[1], samples, in_chunk_in, out_in, in_chunks, out_blocks)
      .unroll(pure[0])
      .unroll(pure[1])
      .parallel(out_blocks);
  Func tile = partial.in(f);
  Var in_blocks("in_blocks"), in_in("in_in");
  tile.compute_at(f, in_chunks)
      .reorder_storage(storage)
      .split(pure[2], in_blocks, in_in, in_block)
      .reorder(lane, pure[0], pure[1], in_in, pure[3], in_blocks)
      .vectorize(lane);
  partial.compute_at(tile, in_blocks).reorder_storage(storage).vectorize(lane);
  // lane, kx, in, out, then the image, the sample groups and the kernel rows.
  std::vector<Halide::VarOrRVar> order = {lane, pure[0], pure[2], pure[3]};
  order.insert(order.end(), space.begin(), space.end());
  order.emplace_back(groups);
  order.emplace_back(pure[1]);
  partial.update().reorder(order).vectorize(lane).unroll(pure[0]).unroll(pure[2]).unroll(pure[3]);
}

// Computes `f` at root and each of its updates that sums over the batch (a parameter gradient,
// a BatchNorm statistic or its adjoint) in vector lanes of samples with rfactor, parallel over
// f's outermost dimension, then adds the lanes. Updates without a batch RVar stay serial.
// `shape` is the parameter's shape in PyTorch order, empty for other Funcs. A weight too large
// to keep 16 partial sums of (a large dense layer) reduces over the batch serially per element
// instead, vectorized across its first dimension. `lanes` is the vector width across samples.
void ScheduleBatchReduction(Func f, const std::vector<int64_t>& shape, int lanes) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const int kernel = shape.size() == 4 ? static_cast<int>(shape[3]) : 0;
  f.compute_root();
  for (int u = 0; u < f.num_update_definitions(); ++u) {
    std::vector<Var> pure = PureUpdateVars(f, u);
    const std::vector<Halide::RVar> rvars = RVars(f, u);
    const auto& info = f.function().update(u).schedule().rvars();
    int batch = -1;  // The RVar over samples: the one whose extent is the run-time batch.
    for (size_t i = 0; i < info.size(); ++i) {
      if (!IsConstant(info[i].extent)) batch = static_cast<int>(i);
    }
    if (pure.empty() || batch < 0) continue;
    if (numel * kLanes > (int64_t{1} << 26)) {
      f.update(u).vectorize(pure[0], kLanes, TailStrategy::GuardWithIf).parallel(pure.back());
      continue;
    }

    Halide::RVar groups("sample_groups"), samples("samples");
    Var lane("lane");
    Halide::Stage update = f.update(u);
    update.split(rvars[batch], groups, samples, lanes, TailStrategy::GuardWithIf);
    Func partial = update.rfactor(samples, lane);

    std::vector<Var> storage = {lane};
    for (const Var& v : partial.args()) {
      if (v.name() != lane.name()) storage.push_back(v);
    }
    std::vector<Halide::RVar> space;  // The RVars other than the samples, innermost first.
    for (size_t i = 0; i < rvars.size(); ++i) {
      if (static_cast<int>(i) != batch) space.push_back(rvars[i]);
    }
    if (pure.size() == 4 && kernel >= 1 && kernel <= 5) {
      ScheduleWeightGradientTiles(f, u, partial, pure, space, groups, samples, lane, storage,
                                  shape);
      continue;
    }
    // Taps (a conv weight's first two dimensions) inside the spatial loops, so each vector of
    // output gradients is loaded once for every tap.
    std::vector<Halide::VarOrRVar> order = {lane};
    const size_t taps = pure.size() == 4 ? 2 : 0;
    for (size_t i = 0; i < taps; ++i) order.emplace_back(pure[i]);
    order.insert(order.end(), space.begin(), space.end());
    order.emplace_back(groups);
    for (size_t i = taps; i < pure.size(); ++i) order.emplace_back(pure[i]);
    partial.reorder_storage(storage).vectorize(lane);
    partial.update().reorder(order).vectorize(lane);
    update.parallel(pure.back());
    if (u + 1 == f.num_update_definitions()) {
      // Each task computes its slice of the lane sums and adds them, in one parallel loop
      // instead of three (the sums' zeroing, the sums, the additions). LeNet-5's training step
      // (driven directly, batch 64, 2 threads, Zen 4): 1.12 → 1.09 ms, 14 parallel loops fewer.
      partial.compute_at(f, pure.back());
    } else {
      partial.compute_root().parallel(pure.back());
      partial.update().parallel(pure.back());
    }
  }
}

// Computes `f`, a Func without a batch dimension (BatchNorm's per-channel adjoints), at root,
// with each definition parallel over its outermost pure dimension. Its reductions cannot all be
// split with rfactor: Halide 14 could not prove the adjoint of a BatchNorm mean associative.
void ScheduleParallelOverPure(Func f) {
  f.compute_root();
  if (!f.args().empty()) f.parallel(f.args().back());
  for (int u = 0; u < f.num_update_definitions(); ++u) {
    const std::vector<Var> pure = PureUpdateVars(f, u);
    if (!pure.empty()) f.update(u).parallel(pure.back());
  }
}

// Skips the taps of conv input gradient `f` whose output position lies outside the conv's
// output (`layer`, stride 1). Halide 14's autodiff writes the gradient as a gather over every
// kernel tap and output channel, reading the output gradient over a border as wide as the
// kernel, where it is zero. LeNet's C3 (14×14 input, 10×10 output, 5×5 taps) spent about half
// its input gradient's FMAs on that border. The predicate makes Halide trim the tap loops.
// LeNet-5's training step (generated function driven directly, batch 64, 2 threads, Zen 4):
// 1.49 ms, 1.34 ms with the predicate, 1.29 ms with the read clamped too. The gradients are
// bit for bit the same: the skipped products were all zero.
void SkipTapsOutsideOutput(Func f, const Layer& layer) {
  if (layer.stride != 1 || f.num_update_definitions() != 1) return;
  // The one read of another adjoint in the update: the conv's output gradient, (x, y, c, n).
  class FindOutputGradient : public Halide::Internal::IRGraphVisitor {
   public:
    explicit FindOutputGradient(std::string self) : self_(std::move(self)) {}
    using IRGraphVisitor::visit;
    void visit(const Halide::Internal::Call* call) override {
      IRGraphVisitor::visit(call);
      if (call->call_type == Halide::Internal::Call::Halide && call->args.size() == 4 &&
          call->name != self_ && call->name.find("_d_def__") != std::string::npos) {
        reads.push_back(call);
      }
    }
    std::vector<const Halide::Internal::Call*> reads;

   private:
    std::string self_;
  } finder(f.name());
  Halide::Internal::Definition& update = f.function().update(0);
  for (const Halide::Expr& value : update.values()) value.accept(&finder);
  if (finder.reads.size() != 1) return;
  const std::vector<Halide::Expr>& at = finder.reads[0]->args;
  const int width = static_cast<int>(layer.output_shape[2]);
  const int height = static_cast<int>(layer.output_shape[1]);
  Halide::Expr inside = at[0] >= 0 && at[0] < width && at[1] >= 0 && at[1] < height;
  if (update.predicate().defined()) inside = update.predicate() && inside;
  update.predicate() = Halide::Internal::simplify(inside);

  // The predicate keeps the read inside the output, but bounds inference ignores predicates.
  // Clamping the read's position too stops it computing the output gradient over the border.
  class ClampRead : public Halide::Internal::IRMutator {
   public:
    ClampRead(const Halide::Internal::Call* read, int width, int height)
        : read_(read), width_(width), height_(height) {}
    using IRMutator::visit;
    Halide::Expr visit(const Halide::Internal::Call* call) override {
      if (call != read_) return IRMutator::visit(call);
      std::vector<Halide::Expr> args = call->args;
      args[0] = Halide::clamp(args[0], 0, width_ - 1);
      args[1] = Halide::clamp(args[1], 0, height_ - 1);
      return Halide::Internal::Call::make(call->type, call->name, args, call->call_type,
                                          call->func, call->value_index, call->image,
                                          call->param);
    }

   private:
    const Halide::Internal::Call* read_;
    int width_, height_;
  } clamp_read(finder.reads[0], width, height);
  for (Halide::Expr& value : update.values()) value = clamp_read.mutate(value);
}

}  // namespace

void ManualSegment(const LoweredSegment& s, Halide::Pipeline& pipeline, const Halide::Target&,
                   ForwardBatch forward_batch) {
  ScheduleLayers(s, /*fuse_pools=*/s.mode == LowerMode::kForward,
                 /*large_batch=*/forward_batch == ForwardBatch::kLarge);
  if (s.mode == LowerMode::kForward || s.mode == LowerMode::kTrainForward) return;
  for (const Halide::Func& stage : s.loss.stages) {
    if (!ScheduleBatchInnermost(stage, SmallBatch(), SampleLanes(*s.model))) {
      Func(stage).compute_root();
    }
  }
  if (s.needs_input_grad) ScheduleOutputCopy(s.input_grad);

  // Halide makes repeated Func names unique with "$<n>", which the autodiff spells "_<n>".
  auto spelled = [](std::string n) {
    std::replace(n.begin(), n.end(), '$', '_');
    return n;
  };
  auto adjoint_of = [&](const std::string& adjoint, const Halide::Func& f) {
    return spelled(adjoint).rfind(spelled(f.name()) + "_", 0) == 0;
  };
  const Model& model = *s.model;

  std::vector<Halide::Internal::Function> outputs;
  for (const Halide::Func& f : pipeline.outputs()) outputs.push_back(f.function());
  const std::map<std::string, Halide::Internal::Function> env =
      Halide::Internal::build_environment(outputs);
  // The Funcs that some update definition reads: a gather read there is read many times.
  std::set<std::string> read_by_updates;
  for (const auto& [name, function] : env) {
    for (const Halide::Internal::Definition& update : function.updates()) {
      read_by_updates.merge(FuncsRead(update));
    }
  }
  for (const auto& [name, function] : env) {
    if (name.find("_d_def__") == std::string::npos) continue;
    // A gather read only by pure definitions (elementwise adjoints, such as ReLU's) is inlined
    // into them. LeNet-5's training step (generated function driven directly, batch 64,
    // 2 threads, Zen 4): 1.26 ms with the scatters, 1.18 ms with the gathers stored, 1.13 ms
    // with them inlined.
    const bool gather = std::any_of(s.gathers.begin(), s.gathers.end(),
                                    [&](const Func& g) { return g.name() == name; });
    if (gather && read_by_updates.count(name) == 0) continue;
    Func f(function);
    bool of_parameter = false;
    for (size_t i = 0; i < s.param_funcs.size() && !of_parameter; ++i) {
      if (!adjoint_of(name, s.param_funcs[i])) continue;
      of_parameter = true;
      const Param& p = model.params[s.param_indices[i]];
      ScheduleBatchReduction(f, p.shape, SampleLanes(model));
    }
    if (of_parameter || (function.updates().empty() && IsCopy(function))) continue;
    // A conv's input gradient gathers over its output channels, and a dense layer's over its
    // output features: blocked over input channels (features) like the forward layer over
    // output channels. With the dense layers' input gradients blocked too, LeNet-5's training
    // step (driven directly, batch 64, 2 threads, Zen 4) took 1.06 ms, not 1.09.
    int channels = 0;
    for (const auto& [i, lowered] : s.layers) {
      const Layer& layer = model.layers[i];
      if (layer.kind == OpKind::kConv2d && layer.groups == 1 &&
          adjoint_of(name, lowered.stages[0])) {
        channels = static_cast<int>(model.layers[layer.input()].output_shape[0]);
        SkipTapsOutsideOutput(f, layer);
      }
      if (layer.kind == OpKind::kDense && adjoint_of(name, s.func_of(layer.input()))) {
        channels = static_cast<int>(model.layers[layer.input()].output_shape[0]);
      }
    }
    // Copies stay inlined; everything else is stored once, since several reductions read it.
    if (!ScheduleRegisterTiled(f, channels, BatchSize(s), 0, SampleLanes(model))) {
      ScheduleParallelOverPure(f);
    }
  }
}

void ManualElementwiseUpdate(Func updated, const Halide::Target& target) {
  // Elementwise over the flat arrays: large vectors, split across threads in big chunks. The
  // tails are guarded: the runtime updates in place, and a shifted-inward tail would update the
  // last elements twice.
  Var i = updated.args()[0], outer("outer"), inner("inner");
  const int lanes = target.natural_vector_size<float>();
  updated.compute_root()
      .split(i, outer, inner, lanes * 256, TailStrategy::GuardWithIf)
      .parallel(outer)
      .vectorize(inner, lanes, TailStrategy::GuardWithIf);
}

void ManualSumOfSquares(const LoweredSumOfSquares& s) {
  // Chunks in parallel, each a vector of lanes. Only the final sum of the lanes is serial, and
  // it is small: a 64 MB array has 4,096 chunks of 16 lanes.
  Func partial = s.partial;
  Var lane = partial.args()[0], chunk = partial.args()[1];
  partial.compute_root().vectorize(lane).parallel(chunk);
  partial.update().vectorize(lane).parallel(chunk);
}

}  // namespace kiln::internal
