// Prometheus text metrics for `unime serve`.
#include "serve/metrics.h"

#include <algorithm>
#include <sstream>

namespace unime::serve {

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}

void Histogram::observe(double v) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  ++counts_[i];
  sum_ += v;
  ++count_;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream os;
  os << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    os << name << "_bucket{le=\"" << bounds_[i] << "\"} " << cum << "\n";
  }
  cum += counts_.back();
  os << name << "_bucket{le=\"+Inf\"} " << cum << "\n";
  os << name << "_sum " << sum_ << "\n" << name << "_count " << count_ << "\n";
  return os.str();
}

Metrics::Metrics()
    : batch_size_({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048}),
      latency_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}) {}

void Metrics::count_request(const std::string& endpoint) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[endpoint];
}

void Metrics::count_error(int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++errors_[status];
}

uint64_t Histogram::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

Metrics::Totals Metrics::totals() const {
  Totals t;
  t.batches = batch_size_.count();  // its own lock, not nested in mu_
  std::lock_guard<std::mutex> lock(mu_);
  t.inputs = inputs_;
  return t;
}

void Metrics::observe_batch(int64_t inputs, int64_t tokens, double seconds) {
  batch_size_.observe(static_cast<double>(inputs));
  std::lock_guard<std::mutex> lock(mu_);
  tokens_ += static_cast<uint64_t>(tokens);
  inputs_ += static_cast<uint64_t>(inputs);
  infer_seconds_ += seconds;
  if (seconds > 0) tokens_per_s_last_ = static_cast<double>(tokens) / seconds;
}

std::string Metrics::render() const {
  std::ostringstream os;
  {
    std::lock_guard<std::mutex> lock(mu_);
    os << "# HELP unime_requests_total HTTP requests received, by endpoint.\n"
          "# TYPE unime_requests_total counter\n";
    for (const auto& [ep, n] : requests_) os << "unime_requests_total{endpoint=\"" << ep << "\"} " << n << "\n";
    os << "# HELP unime_request_errors_total Requests answered with an error, by HTTP status.\n"
          "# TYPE unime_request_errors_total counter\n";
    for (const auto& [st, n] : errors_) os << "unime_request_errors_total{status=\"" << st << "\"} " << n << "\n";
    os << "# HELP unime_queue_depth Inputs waiting for an inference thread.\n"
          "# TYPE unime_queue_depth gauge\nunime_queue_depth "
       << queue_depth_.load() << "\n";
    os << "# HELP unime_inputs_total Inputs embedded.\n# TYPE unime_inputs_total counter\nunime_inputs_total "
       << inputs_ << "\n";
    os << "# HELP unime_tokens_total Real (unpadded) tokens embedded.\n"
          "# TYPE unime_tokens_total counter\nunime_tokens_total "
       << tokens_ << "\n";
    os << "# HELP unime_inference_seconds_total Wall time spent in forward passes.\n"
          "# TYPE unime_inference_seconds_total counter\nunime_inference_seconds_total "
       << infer_seconds_ << "\n";
    os << "# HELP unime_tokens_per_second Tokens per second of the last forward pass.\n"
          "# TYPE unime_tokens_per_second gauge\nunime_tokens_per_second "
       << tokens_per_s_last_ << "\n";
  }
  os << batch_size_.render("unime_batch_size", "Inputs per forward pass (dynamic batches).");
  os << latency_.render("unime_request_duration_seconds", "Latency of POST /v1/embeddings, receipt to answer.");
  return os.str();
}

}  // namespace unime::serve
