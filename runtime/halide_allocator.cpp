#include "runtime/halide_allocator.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "HalideRuntime.h"

namespace kiln {
namespace {

// Vector loads may need 64-byte alignment (AVX-512), and Halide may read up to 8 bytes before
// and after a block, so each block carries a header in front and slack behind.
constexpr size_t kAlignment = 64;

struct Header {
  void* raw;
  size_t size;
};

struct Cache {
  std::mutex mutex;
  std::map<size_t, std::vector<void*>> free_blocks;  // By requested size.
  size_t cached_bytes = 0;
  size_t max_cached_bytes = 0;
  size_t in_use_bytes = 0;
  size_t peak_bytes = 0;

  // Counts `size` more bytes in use; the mutex is held.
  void Take(size_t size) {
    in_use_bytes += size;
    peak_bytes = std::max(peak_bytes, in_use_bytes);
  }
};

Cache& GetCache() {
  static auto* cache = new Cache();  // Never destroyed: Halide may free during static teardown.
  return *cache;
}

Header* HeaderOf(void* block) { return static_cast<Header*>(block) - 1; }

void* Allocate(void* /*user_context*/, size_t size) {
  Cache& cache = GetCache();
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    auto it = cache.free_blocks.find(size);
    if (it != cache.free_blocks.end() && !it->second.empty()) {
      void* block = it->second.back();
      it->second.pop_back();
      cache.cached_bytes -= size;
      cache.Take(size);
      return block;
    }
  }
  void* raw = std::malloc(size + sizeof(Header) + 2 * kAlignment);
  if (raw == nullptr) return nullptr;
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    cache.Take(size);
  }
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw) + sizeof(Header);
  void* block = reinterpret_cast<void*>((start + kAlignment - 1) / kAlignment * kAlignment);
  *HeaderOf(block) = {raw, size};
  return block;
}

void Free(void* /*user_context*/, void* block) {
  if (block == nullptr) return;
  Cache& cache = GetCache();
  const Header header = *HeaderOf(block);
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    cache.in_use_bytes -= header.size;
    if (cache.cached_bytes + header.size <= cache.max_cached_bytes) {
      cache.free_blocks[header.size].push_back(block);
      cache.cached_bytes += header.size;
      return;
    }
  }
  std::free(header.raw);
}

}  // namespace

HalideMemory GetHalideMemory() {
  Cache& cache = GetCache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  return {cache.in_use_bytes, cache.peak_bytes, cache.cached_bytes};
}

void ResetHalidePeakBytes() {
  Cache& cache = GetCache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  cache.peak_bytes = cache.in_use_bytes;
}

void InstallHalideAllocator(size_t max_cached_bytes) {
  static std::once_flag once;
  std::call_once(once, [max_cached_bytes] {
    GetCache().max_cached_bytes = max_cached_bytes;
    halide_set_custom_malloc(Allocate);
    halide_set_custom_free(Free);
  });
}

}  // namespace kiln
