// A one-line progress bar on stderr for long work (only when stderr is a terminal or when forced).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace unime {

class ProgressBar {
 public:
  /// label: "embed"; total: units of work; unit: "inputs".
  ProgressBar(std::string label, int64_t total, std::string unit);
  ~ProgressBar();
  /// done units so far; extra: text appended (e.g. "412 tok/s").
  void update(int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");
  double elapsed_s() const;

 private:
  std::string label_, unit_;
  int64_t total_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace unime
