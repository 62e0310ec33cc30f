#include "runtime/progress.h"

#include <unistd.h>

#include <algorithm>

#include "fmt/core.h"

namespace kiln {

ProgressBar::ProgressBar(std::FILE* stream, std::string label, int64_t total)
    : stream_(stream),
      label_(std::move(label)),
      total_(std::max<int64_t>(total, 1)),
      enabled_(stream != nullptr && isatty(fileno(stream))),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

void ProgressBar::Update(int64_t done, double loss) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;

  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : 0;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * done / total_);
  fmt::print(stream_, "\r{} [{}{}] {}/{}  {:.0f} img/s  loss {:.4f}  ETA {:.0f}s ", label_,
             std::string(filled, '='), std::string(kWidth - filled, ' '), done, total_, rate, loss,
             eta);
  std::fflush(stream_);
}

void ProgressBar::Finish() {
  if (!enabled_) return;
  fmt::print(stream_, "\r{}\r", std::string(110, ' '));
  std::fflush(stream_);
}

}  // namespace kiln
