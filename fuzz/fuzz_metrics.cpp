// Metrics logs, JSON Lines or CSV by the first byte (runtime/metrics_log.h).
#include "fuzz/fuzz_input.h"
#include "runtime/metrics_log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string path =
      kiln::fuzz::WriteInput(data + 1, size - 1, data[0] % 2 ? ".csv" : ".jsonl");
  (void)kiln::ReadMetrics(path);
  return 0;
}
