// Progress bar; see progress.h. Redrawn at most 10 times a second with '\r'; when stderr is not a
// terminal (logs, CI), a plain line every 10 s and one at the end.
#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace unime {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total) {
  start_ = last_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() {
  // unwinding from an error: end the bar's line so the error message starts a line of its own
  if (!finished_ && isatty(2)) std::fprintf(stderr, "\r\033[K");
}

double ProgressBar::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::update(int64_t done, const std::string& extra) {
  const auto now = std::chrono::steady_clock::now();
  const bool tty = isatty(2);
  const double since = std::chrono::duration<double>(now - last_).count();
  if (since < (tty ? 0.1 : 10.0) && done < total_) return;
  last_ = now;
  const double el = elapsed_s();
  const double frac = total_ > 0 ? static_cast<double>(done) / total_ : 1.0;
  const double eta = frac > 0 ? el / frac - el : 0.0;
  const int width = 30, filled = static_cast<int>(frac * width);
  std::string bar(filled, '#');
  bar += std::string(width - filled, '.');
  std::fprintf(stderr, "%s%s [%s] %lld/%lld %s %.0fs ETA %.0fs %s%s", tty ? "\r" : "",
               label_.c_str(), bar.c_str(), static_cast<long long>(done),
               static_cast<long long>(total_), unit_.c_str(), el, eta, extra.c_str(),
               tty ? "\033[K" : "\n");
  std::fflush(stderr);
}

void ProgressBar::finish(const std::string& extra) {
  if (finished_) return;
  finished_ = true;
  std::fprintf(stderr, "%s%s: %lld %s in %.1fs %s\n", isatty(2) ? "\r\033[K" : "", label_.c_str(),
               static_cast<long long>(total_), unit_.c_str(), elapsed_s(), extra.c_str());
}

}  // namespace unime
