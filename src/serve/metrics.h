// Server metrics in the Prometheus text exposition format
// (https://prometheus.io/docs/instrumenting/exposition_formats/): request and error counters,
// queue depth, batch-size and latency histograms, tokens and tokens/s. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace unime::serve {

/// A cumulative histogram with fixed upper bounds (Prometheus `le` buckets, +Inf implied).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  uint64_t count() const;
  /// `name_bucket{le=...}`, `name_sum`, `name_count` lines.
  std::string render(const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void count_request(const std::string& endpoint);
  void count_error(int status);
  void set_queue_depth(int64_t inputs) { queue_depth_ = inputs; }
  /// One forward pass: `inputs` rows, `tokens` real tokens, `seconds` wall time.
  void observe_batch(int64_t inputs, int64_t tokens, double seconds);
  void observe_latency(double seconds) { latency_.observe(seconds); }
  /// The whole page for GET /metrics.
  std::string render() const;
  /// Forward passes and inputs embedded so far (unime_batch_size_count, unime_inputs_total).
  struct Totals {
    uint64_t batches = 0, inputs = 0;
  };
  Totals totals() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> requests_;  // endpoint -> count
  std::map<int, uint64_t> errors_;            // HTTP status -> count
  std::atomic<int64_t> queue_depth_{0};
  uint64_t tokens_ = 0, inputs_ = 0;
  double infer_seconds_ = 0, tokens_per_s_last_ = 0;
  Histogram batch_size_, latency_;
};

}  // namespace unime::serve
