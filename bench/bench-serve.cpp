// bench-serve: `unime serve` under load against offline embedding of the same inputs.
//   bench-serve --model DIR [--clients 32] [--requests 50] [--inputs-per-request 1] [--threads 0]
//               [--dtype f32] [--max-batch 32] [--max-wait-ms 0] [--workers 0] [--worker-threads 0] [--keep-alive 1] [--rounds 5]
// 1. offline: one Embedder embeds all inputs in batches of --max-batch (what `unime embed` does);
// 2. served: the same inputs as POST /v1/embeddings from --clients concurrent HTTP clients on
//    loopback (each sends its requests one after another) to an in-process Server + Batcher with
//    the same model options; every answer is checked (status, count, dim). Clients keep their
//    connection alive (as the openai client and requests.Session do); --keep-alive 0 connects per request.
// --rounds N alternates the two N times and reports the median ratio; with N > 1 the offline
// Embedder stays loaded beside the server's (two copies of the model).
// --worker-threads N gives each server worker N threads (default: the cores shared out, as `unime serve`).
// Prints throughput (inputs/s), request latency p50/p99, and served / offline throughput, and
// where the CPU went: the load generator (client threads: JSON, HTTP, checking) shares the cores
// with the server here, so its share is printed beside the server's CPU per input.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <time.h>

#include <httplib.h>

#include "serve/batcher.h"
#include "serve/metrics.h"
#include "serve/server.h"
#include "unime/embedder.h"
#include "unime/runtime.h"

using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// deterministic captions of varied length (4..24 words)
std::vector<std::string> make_texts(int n) {
  const char* words[] = {"red", "circle", "left", "of", "a", "blue", "square", "above", "the", "green",
                         "star", "small", "large", "striped", "background", "two", "objects", "near", "ring", "cross"};
  std::vector<std::string> out;
  uint64_t s = 12345;
  for (int i = 0; i < n; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    const int len = 4 + static_cast<int>((s >> 33) % 21);
    std::string t = "item " + std::to_string(i) + ":";
    for (int w = 0; w < len; ++w) {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      t += " ";
      t += words[(s >> 33) % 20];
    }
    out.push_back(t);
  }
  return out;
}

// CPU seconds (user + system) of the whole process, and of the calling thread
double process_cpu_s() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}
double thread_cpu_s() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5))];
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.empty() ? 0 : v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

}  // namespace

int main(int argc, char** argv) {
  unime::early_init(argc, argv);
  std::string model;
  int clients = 32, requests = 50, ipr = 1, workers = 0, worker_threads = 0, keep_alive = 1, rounds = 5;
  unime::EmbedderOptions opt;
  opt.dtype = "f32";
  unime::serve::BatcherOptions bo;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", a.c_str());
        std::exit(1);
      }
      return argv[++i];
    };
    if (a == "--model") model = next();
    else if (a == "--clients") clients = std::stoi(next());
    else if (a == "--requests") requests = std::stoi(next());
    else if (a == "--inputs-per-request") ipr = std::stoi(next());
    else if (a == "--threads") opt.threads = std::stoi(next());
    else if (a == "--dtype") opt.dtype = next();
    else if (a == "--max-batch") bo.max_batch = std::stoi(next());
    else if (a == "--max-wait-ms") bo.max_wait_ms = std::stoi(next());
    else if (a == "--workers") workers = std::stoi(next());
    else if (a == "--worker-threads") worker_threads = std::stoi(next());
    else if (a == "--keep-alive") keep_alive = std::stoi(next());
    else if (a == "--rounds") rounds = std::stoi(next());
    else {
      std::fprintf(stderr, "error: unknown option %s (see the header of bench/bench-serve.cpp)\n", a.c_str());
      return 1;
    }
  }
  if (model.empty() || clients < 1 || requests < 1 || ipr < 1 || workers < 0 || rounds < 1) {
    std::fprintf(stderr, "usage: bench-serve --model DIR [--clients 32] [--requests 50] [--inputs-per-request 1] "
                         "[--threads 0] [--dtype f32] [--max-batch 32] [--max-wait-ms 0] [--workers 0] [--worker-threads 0] [--keep-alive 1] "
                         "[--rounds 5]\n");
    return 1;
  }
  try {
    const int n = clients * requests * ipr;
    const auto texts = make_texts(n);
    std::vector<unime::EmbedInput> inputs(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) inputs[i].text = texts[i];
    opt.batch_size = bo.max_batch;

    // ---- 1. offline: one Embedder, what `unime embed` does ----
    auto emb = unime::Embedder::load(model, opt);
    std::fprintf(stderr, "model: %s\n", emb->describe().c_str());
    emb->embed({inputs.begin(), inputs.begin() + std::min(n, bo.max_batch)});  // warm-up
    std::vector<float> offline;
    // torch's and OpenBLAS's thread counts are process-wide: each phase sets its own (the server's
    // worker threads keep the count they first ran with)
    auto offline_round = [&](double& cpu) {
      unime::set_threads(opt.threads);
      const auto t0 = Clock::now();
      const double cpu0 = process_cpu_s();
      offline = emb->embed(inputs);
      cpu = process_cpu_s() - cpu0;
      return seconds_since(t0);
    };
    double offline_cpu = 0;
    double offline_s = offline_round(offline_cpu);
    const int64_t D = emb->dim();
    if (rounds == 1) emb.reset();  // one copy of the model at a time

    // ---- 2. served: the same inputs through HTTP ----
    // the server's workers share the cores as `unime serve` does; offline keeps --threads (what
    // `unime embed` runs with), so the ratio compares against the best offline set-up
    if (workers == 0) workers = unime::serve::auto_workers(model, opt.device, opt.threads);
    unime::EmbedderOptions served_opt = opt;
    served_opt.threads = worker_threads > 0 ? worker_threads : unime::threads_per_worker(opt.threads, workers);
    std::vector<std::unique_ptr<unime::Embedder>> embedders;
    for (int w = 0; w < workers; ++w) embedders.push_back(unime::Embedder::load(model, served_opt));
    unime::serve::Metrics metrics;
    unime::serve::Batcher batcher(std::move(embedders), bo, metrics);
    unime::serve::ServerOptions so;
    so.port = 0;
    so.http_threads = std::max(64, clients + 8);
    unime::serve::Server server(so, batcher, metrics);
    const int port = server.bind();
    std::thread listener([&] { server.listen(); });
    std::atomic<int> failures{0};
    double max_diff = 0;
    std::mutex diff_mu;
    struct Served {
      double seconds = 0, server_cpu = 0, client_cpu = 0;
      std::vector<double> latency;
    };
    auto served_round = [&](int per_client) {
      unime::set_threads(served_opt.threads);
      std::vector<std::vector<double>> lat(static_cast<size_t>(clients));
      double client_cpu = 0;
      const auto t0 = Clock::now();
      const double cpu0 = process_cpu_s();
      std::vector<std::thread> threads;
      for (int c = 0; c < clients; ++c) {
        threads.emplace_back([&, c] {
          httplib::Client cli("127.0.0.1", port);
          cli.set_read_timeout(600, 0);
          cli.set_keep_alive(keep_alive != 0);  // as real clients (openai, requests.Session) do
          cli.set_tcp_nodelay(true);
          double local_diff = 0;
          for (int r = 0; r < per_client; ++r) {
            const int first = (c * per_client + r) * ipr;
            json in = json::array();
            for (int k = 0; k < ipr; ++k) in.push_back(texts[first + k]);
            const auto t = Clock::now();
            auto res = cli.Post("/v1/embeddings", json{{"input", in}}.dump(), "application/json");
            lat[c].push_back(seconds_since(t));
            if (!res || res->status != 200) {
              ++failures;
              continue;
            }
            const json body = json::parse(res->body);
            if (body["data"].size() != static_cast<size_t>(ipr)) {
              ++failures;
              continue;
            }
            for (int k = 0; k < ipr; ++k) {  // batching must not change a vector
              const json& e = body["data"][k]["embedding"];
              if (e.size() != static_cast<size_t>(D)) {
                ++failures;
                break;
              }
              for (int64_t d = 0; d < D; ++d)
                local_diff = std::max(local_diff, std::abs(e[d].get<double>() - offline[(first + k) * D + d]));
            }
          }
          std::lock_guard<std::mutex> lock(diff_mu);
          max_diff = std::max(max_diff, local_diff);
          client_cpu += thread_cpu_s();
        });
      }
      for (auto& t : threads) t.join();
      Served out;
      out.seconds = seconds_since(t0);
      out.client_cpu = client_cpu;
      out.server_cpu = process_cpu_s() - cpu0 - client_cpu;
      for (auto& v : lat) out.latency.insert(out.latency.end(), v.begin(), v.end());
      return out;
    };

    // Rounds alternate offline and served so that each ratio compares neighbours in time (this VM's
    // speed drifts between minutes: single rounds move by +-25 points); the summary is the median.
    // warm-up, untimed: every worker and client connection runs once (as offline's warm-up batch)
    served_round(std::min(requests, 2));
    std::vector<double> ratios;
    for (int round = 0; round < rounds; ++round) {
      if (round > 0) offline_s = offline_round(offline_cpu);
      const auto before = metrics.totals();
      const Served sv = served_round(requests);
      const auto after = metrics.totals();
      const double mean_batch = static_cast<double>(after.inputs - before.inputs) /
                                static_cast<double>(std::max<uint64_t>(1, after.batches - before.batches));
      const double off_tput = n / offline_s, srv_tput = n / sv.seconds;
      ratios.push_back(srv_tput / off_tput);
      std::printf("round %d: offline %d inputs in %.2f s = %.1f inputs/s (batch %d, %.2f ms CPU per input); served "
                  "%.2f s = %.1f inputs/s, %.1f requests/s, latency p50 %.1f ms, p99 %.1f ms, server %.2f ms CPU "
                  "per input, load generator %.2f ms (%.0f%% of the CPU used while serving), %.1f inputs per forward pass; "
                  "served/offline %.1f%%\n",
                  round + 1, n, offline_s, off_tput, bo.max_batch, 1e3 * offline_cpu / n, sv.seconds, srv_tput,
                  clients * requests / sv.seconds, 1e3 * percentile(sv.latency, 0.5),
                  1e3 * percentile(sv.latency, 0.99), 1e3 * sv.server_cpu / n, 1e3 * sv.client_cpu / n,
                  100.0 * sv.client_cpu / std::max(1e-9, sv.server_cpu + sv.client_cpu), mean_batch, 100.0 * ratios.back());
      std::fflush(stdout);
    }
    server.stop();
    listener.join();
    batcher.stop();
    std::printf("served: %d clients x %d requests x %d inputs, keep-alive %s, %d worker%s x %d thread%s; failures %d; "
                "max |served - offline| %.2e\n",
                clients, requests, ipr, keep_alive ? "on" : "off", workers, workers == 1 ? "" : "s",
                served_opt.threads, served_opt.threads == 1 ? "" : "s", failures.load(), max_diff);
    std::printf("bench-serve: served/offline throughput = %.1f%% (median of %d rounds; target >= 80%%)\n",
                100.0 * median(ratios), rounds);
    return failures.load() == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
