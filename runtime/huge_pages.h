/** \file
 * Float arrays on transparent huge pages, for the state the optimizer streams over every step.
 *
 * The update reads the parameters, their gradients and the optimizer's moments once per step,
 * after the training step has pushed them out of cache. On 4 KiB pages that pass ran several
 * times slower than on huge pages. Measured on LeNet-5's SGD update after a batch-64 training
 * step, 2 threads, on a 2-core AMD EPYC Zen 4 VM (kernel 6.18, THP in "madvise" mode). The
 * update took 79 µs on glibc's mmap'd arrays and 18 µs on huge pages, and the training step
 * with it 1.19 ms and 1.08 ms.
 *
 *   kiln::FloatArray grads(model.num_params);  // a std::vector<float> on huge pages
 *
 * Arrays under kHugePageMinBytes come from malloc. Where the kernel declines huge pages (THP
 * "never"), the arrays live on ordinary pages and only the speed differs.
 *
 * NOTE: each larger array occupies whole 2 MiB pages, so a model of 247 KB arrays (LeNet-5)
 * takes 2 MiB of memory per array. Network::StateBytes counts the arrays' sizes, not that.
 */
#ifndef KILN_RUNTIME_HUGE_PAGES_H_
#define KILN_RUNTIME_HUGE_PAGES_H_

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace kiln {

/// Arrays at least this large get their own huge-page-aligned mapping: 64 KiB, below the
/// smallest model whose update cost showed (LeNet-5, 247 KB per array).
inline constexpr size_t kHugePageMinBytes = size_t{64} << 10;

/// Allocates `bytes`: from malloc below kHugePageMinBytes, otherwise a mapping that starts on a
/// 2 MiB boundary, marked for transparent huge pages. Throws std::bad_alloc when out of memory.
void* AllocateOnHugePages(size_t bytes);
/// Frees what AllocateOnHugePages(`bytes`) returned.
void FreeOnHugePages(void* block, size_t bytes);

/// An allocator (std::allocator's interface) over AllocateOnHugePages. It has no state, so any
/// instance frees any block.
template <typename T>
struct HugePageAllocator {
  // Small arrays come from malloc, which aligns for the fundamental types only.
  static_assert(alignof(T) <= alignof(std::max_align_t), "T is over-aligned for malloc");
  using value_type = T;
  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>& /*other*/) {}
  T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(AllocateOnHugePages(n * sizeof(T)));
  }
  void deallocate(T* block, size_t n) { FreeOnHugePages(block, n * sizeof(T)); }
  template <typename U>
  bool operator==(const HugePageAllocator<U>& /*other*/) const { return true; }
  template <typename U>
  bool operator!=(const HugePageAllocator<U>& /*other*/) const { return false; }
};

/// The flat arrays of a model's state: parameters, gradients, optimizer moments.
using FloatArray = std::vector<float, HugePageAllocator<float>>;

}  // namespace kiln

#endif  // KILN_RUNTIME_HUGE_PAGES_H_
