// Dynamic batching across requests for `unime serve`; see batcher.h.
#include "serve/batcher.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "core/error.h"
#include "unime/runtime.h"

namespace unime::serve {

using Clock = std::chrono::steady_clock;

int auto_workers(const std::string& model_dir, const std::string& device, int threads) {
  if (device != "cpu") return 1;
  namespace fs = std::filesystem;
  int64_t bytes = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    const auto ext = e.path().extension().string();
    if (ext == ".safetensors" || ext == ".bin") bytes += static_cast<int64_t>(e.file_size(ec));
  }
  if (ec || bytes == 0 || bytes > kSmallModelBytes) return 1;  // unreadable folders fail later, at load
  return std::min(threads_per_worker(threads, 1), 64);  // one per thread, 0 = all cores
}

Batcher::Batcher(std::vector<std::unique_ptr<Embedder>> embedders, BatcherOptions opt, Metrics& metrics)
    : embedders_(std::move(embedders)), opt_(opt), metrics_(metrics) {
  TORCH_CHECK(!embedders_.empty(), "Batcher: no embedders");
  dim_ = embedders_[0]->dim();
  for (auto& e : embedders_) threads_.emplace_back([this, p = e.get()] { run(*p); });
}

Batcher::~Batcher() { stop(); }

std::optional<std::future<JobResult>> Batcher::submit(std::vector<EmbedInput> inputs) {
  auto job = std::make_unique<Job>();
  job->inputs = std::move(inputs);
  auto fut = job->done.get_future();
  const auto n = static_cast<int64_t>(job->inputs.size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || queued_inputs_ + n > opt_.max_queue_inputs) return std::nullopt;
    queued_inputs_ += n;
    queue_.push_back(std::move(job));
    metrics_.set_queue_depth(queued_inputs_);
  }
  cv_.notify_one();
  return fut;
}

void Batcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

int64_t Batcher::queued_inputs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_inputs_;
}

void Batcher::run(Embedder& emb) {
  // With max_wait_ms > 0 a batch waits for company at most that long, and at most a quarter of what a full batch
  // would take at this worker's last per-input compute time: waiting longer than the work it
  // batches cannot pay off (a 0.3 ms-per-input model lost a third of its served throughput to a
  // fixed 5 ms wait). Scaled to a full batch, not the last one: small batches must not shorten
  // the wait that would let the next one grow.
  double per_input_s = 0;
  for (;;) {
    std::vector<std::unique_ptr<Job>> jobs;
    int64_t n = 0;  // inputs in the batch
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      auto take = [&] {
        n += static_cast<int64_t>(queue_.front()->inputs.size());
        queued_inputs_ -= static_cast<int64_t>(queue_.front()->inputs.size());
        jobs.push_back(std::move(queue_.front()));
        queue_.pop_front();
      };
      take();
      const auto wait = std::min(std::chrono::duration<double>(opt_.max_wait_ms / 1000.0),
                                 std::chrono::duration<double>(per_input_s * opt_.max_batch / 4));
      const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(wait);
      for (;;) {
        while (!queue_.empty() && n + static_cast<int64_t>(queue_.front()->inputs.size()) <= opt_.max_batch) take();
        if (n >= opt_.max_batch || !queue_.empty() || stopping_) break;  // full, or next job does not fit
        if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
          while (!queue_.empty() && n + static_cast<int64_t>(queue_.front()->inputs.size()) <= opt_.max_batch) take();
          break;
        }
      }
      metrics_.set_queue_depth(queued_inputs_);
    }
    // another thread may take the rest of the queue while this one computes
    cv_.notify_one();
    const auto t0 = Clock::now();
    process(emb, jobs);
    per_input_s = std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(std::max<int64_t>(1, n));
  }
}

void Batcher::process(Embedder& emb, std::vector<std::unique_ptr<Job>>& jobs) {
  // 1. per job: token ids (usage, the token limit, bad ids) so one bad request fails alone
  std::vector<JobResult> res(jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) {
    try {
      for (const auto& in : jobs[j]->inputs) {
        jobs[j]->ids.push_back(emb.token_ids(in));
        const auto L = static_cast<int64_t>(jobs[j]->ids.back().size());
        UNIME_CHECK(opt_.max_input_tokens <= 0 || L <= opt_.max_input_tokens, in.where, ": input has ",
                    L, " tokens, more than the server's limit of ", opt_.max_input_tokens,
                    " (--max-input-tokens)");
        res[j].tokens += L;
      }
    } catch (const Error& e) {
      res[j].status = 400;
      res[j].error = e.what();
    } catch (const std::exception& e) {
      res[j].status = 500;
      res[j].error = e.what();
    }
  }
  // 2. one embed() over the valid jobs; if it fails, each job again on its own
  auto embed_jobs = [&](const std::vector<size_t>& which) {
    std::vector<EmbedInput> all;
    std::vector<std::vector<int64_t>> ids;
    int64_t tokens = 0;
    for (size_t j : which) {
      all.insert(all.end(), jobs[j]->inputs.begin(), jobs[j]->inputs.end());
      ids.insert(ids.end(), jobs[j]->ids.begin(), jobs[j]->ids.end());
      tokens += res[j].tokens;
    }
    const auto t0 = Clock::now();
    std::vector<float> out = emb.embed_tokenized(all, std::move(ids));
    metrics_.observe_batch(static_cast<int64_t>(all.size()), tokens,
                           std::chrono::duration<double>(Clock::now() - t0).count());
    size_t off = 0;
    for (size_t j : which) {
      const size_t len = jobs[j]->inputs.size() * static_cast<size_t>(dim_);
      res[j].emb.assign(out.begin() + off, out.begin() + off + len);
      off += len;
    }
  };
  auto fail = [&](size_t j, int status, const std::string& msg) {
    res[j].status = status;
    res[j].error = msg;
  };
  std::vector<size_t> ok;
  for (size_t j = 0; j < jobs.size(); ++j)
    if (res[j].status == 200) ok.push_back(j);
  if (!ok.empty()) {
    try {
      embed_jobs(ok);
    } catch (const std::exception&) {
      for (size_t j : ok) {
        try {
          embed_jobs({j});
        } catch (const Error& e) {
          fail(j, 400, e.what());
        } catch (const c10::Error& e) {
          fail(j, 500, e.what_without_backtrace());
        } catch (const std::exception& e) {
          fail(j, 500, e.what());
        }
      }
    }
  }
  for (size_t j = 0; j < jobs.size(); ++j) jobs[j]->done.set_value(std::move(res[j]));
}

}  // namespace unime::serve
