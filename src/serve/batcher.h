// Request queue + dynamic batching for `unime serve` (the "queue" and "infer" parts of TEI's
// router split). HTTP threads submit one job per request; a fixed pool of inference threads, each
// owning its own Embedder (Embedder is not thread-safe), takes whole jobs from a bounded queue
// until a batch holds max_batch inputs or the queue is empty (optionally waiting up to max_wait_ms
// after its first job for more), and runs one
// embed() over them. A job is never split across batches. Batching never changes a vector
// (Embedder positions each input from its own tokens), which tests/test-serve.cpp checks.
// Legend: N inputs of one job, D embedding dim.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "serve/metrics.h"
#include "unime/embedder.h"

namespace unime::serve {

struct BatcherOptions {
  int max_batch = 32;               ///< inputs per forward pass (a bigger single job runs alone)
  /// How long the first job of a batch may wait for company (and at most a quarter of a full
  /// batch's time at the worker's last per-input time). 0 (default): a free worker takes what is
  /// queued at once, as TEI and vLLM do - jobs that arrive meanwhile make the next batch; waiting
  /// idles the cores while the clients of the batch being filled cannot send (README, bench-serve).
  int max_wait_ms = 0;
  int64_t max_queue_inputs = 8192;  ///< queued inputs beyond this are refused (HTTP 503)
  int64_t max_input_tokens = 0;     ///< per input, 0 = the model's own limit
};

struct JobResult {
  int status = 200;            ///< 200, 400 (bad input), 500 (internal)
  std::string error;           ///< one line when status != 200
  std::vector<float> emb;      ///< [N * D] row-major, rows unit-norm
  int64_t tokens = 0;          ///< real tokens over the job's inputs (OpenAI usage)
};

/// Models whose weight files take at most this many bytes count as small for auto_workers().
constexpr int64_t kSmallModelBytes = 256LL << 20;

/// `unime serve --workers 0`: on the CPU, a small model (weights <= kSmallModelBytes; adapters not
/// counted) gets one single-threaded worker per thread of `threads` (0 = all cores): there, HTTP and
/// batching cost as much as the model, and one worker's batch runs while another's fills (measured
/// in README, bench-serve). A larger model, or any GPU device, gets one worker with every thread
/// (lower latency, one copy of the weights).
int auto_workers(const std::string& model_dir, const std::string& device, int threads);

class Batcher {
 public:
  /// One inference thread per embedder; all must have the same dim().
  Batcher(std::vector<std::unique_ptr<Embedder>> embedders, BatcherOptions opt, Metrics& metrics);
  ~Batcher();  // stop()

  /// Queues a job; nullopt when the queue is full or the batcher is stopping.
  std::optional<std::future<JobResult>> submit(std::vector<EmbedInput> inputs);
  /// Refuses new jobs, finishes every queued one, joins the threads. Idempotent.
  void stop();
  int64_t dim() const { return dim_; }
  int64_t queued_inputs() const;

 private:
  struct Job {
    std::vector<EmbedInput> inputs;
    std::vector<std::vector<int64_t>> ids;  ///< token_ids() of each input, filled by process()
    std::promise<JobResult> done;
  };
  void run(Embedder& emb);
  void process(Embedder& emb, std::vector<std::unique_ptr<Job>>& jobs);

  std::vector<std::unique_ptr<Embedder>> embedders_;
  BatcherOptions opt_;
  Metrics& metrics_;
  int64_t dim_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Job>> queue_;
  int64_t queued_inputs_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace unime::serve
