/** \file
 * A one-line progress bar for terminals: done/total, images/s, loss and ETA, redrawn in place
 * at most ten times a second. Draws nothing when the stream is not a terminal (logs, CI).
 */
#ifndef KILN_RUNTIME_PROGRESS_H_
#define KILN_RUNTIME_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace kiln {

class ProgressBar {
 public:
  ProgressBar(std::FILE* stream, std::string label, int64_t total);
  /// Reports `done` of `total` items with the running mean loss.
  void Update(int64_t done, double loss);
  /// Erases the bar so the next line starts clean.
  void Finish();

 private:
  std::FILE* stream_;
  std::string label_;
  int64_t total_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace kiln

#endif  // KILN_RUNTIME_PROGRESS_H_
