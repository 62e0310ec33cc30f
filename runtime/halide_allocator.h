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

}  // namespace kiln

#endif  // KILN_RUNTIME_HALIDE_ALLOCATOR_H_
