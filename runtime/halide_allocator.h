/** \file
 * A caching allocator for the memory the generated functions allocate on every call.
 *
 * A training step allocates the same intermediate buffers (several MB for LeNet-5 at batch 64)
 * on every call. glibc serves blocks that large with fresh mmap'd pages, so without a cache each
 * step pays for page faults and zeroing again.
 */
#ifndef KILN_RUNTIME_HALIDE_ALLOCATOR_H_
#define KILN_RUNTIME_HALIDE_ALLOCATOR_H_

#include <cstddef>

namespace kiln {

/// Makes Halide's runtime allocate through Kiln's cache. Idempotent and thread-safe. Freed
/// blocks stay cached by exact size, up to `max_cached_bytes` in all.
void InstallHalideAllocator(size_t max_cached_bytes = size_t{1} << 30);

/// Bytes the generated functions hold through the cache: in use now, the most in use at once
/// since the last ResetHalidePeakBytes, and what the cache keeps besides. Zero until
/// InstallHalideAllocator.
struct HalideMemory {
  size_t in_use_bytes = 0;
  size_t peak_bytes = 0;
  size_t cached_bytes = 0;
};
HalideMemory GetHalideMemory();
/// Starts a new peak at the bytes in use now.
void ResetHalidePeakBytes();

}  // namespace kiln

#endif  // KILN_RUNTIME_HALIDE_ALLOCATOR_H_
