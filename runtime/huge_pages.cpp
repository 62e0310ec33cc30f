#include "runtime/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <new>

namespace kiln {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;  // x86-64's PMD size.

size_t RoundUp(size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }

}  // namespace

void* AllocateOnHugePages(size_t bytes) {
  if (bytes < kHugePageMinBytes) {
    void* block = std::malloc(bytes == 0 ? 1 : bytes);
    if (block == nullptr) throw std::bad_alloc();
    return block;
  }
  // Sizes within two huge pages of SIZE_MAX would wrap in the rounding below.
  if (bytes > SIZE_MAX - 2 * kHugePage) throw std::bad_alloc();
  // Map a huge page more than needed and unmap the ends around an aligned start: the kernel
  // backs an address range with a huge page only where it covers a whole aligned 2 MiB.
  const size_t size = RoundUp(bytes);
  void* mapped = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(mapped);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > start) munmap(mapped, aligned - start);
  // The mapping ends at start + size + kHugePage and the block at aligned + size.
  const size_t tail = start + kHugePage - aligned;
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + size), tail);
  // Where THP is "never", the advice is ignored and the pages stay 4 KiB ones.
  madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(aligned);
}

void FreeOnHugePages(void* block, size_t bytes) {
  if (block == nullptr) return;
  if (bytes < kHugePageMinBytes) {
    std::free(block);
    return;
  }
  munmap(block, RoundUp(bytes));
}

}  // namespace kiln
