// `unime serve` transport: HTTP routes, limits, errors (request bodies are parsed in request.cpp).
// References: OpenAI embeddings API (https://platform.openai.com/docs/api-reference/embeddings).
#include "serve/server.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include <sys/socket.h>

#include "core/error.h"
#include "io/image.h"
#include "serve/base64.h"
#include "serve/search-page.h"
#include <httplib.h>

namespace fs = std::filesystem;
using nlohmann::json;

namespace unime::serve {

// ---- HTTP ----

namespace {

constexpr int kListenBacklog = 1024;

// httplib's ThreadPool queues accepted connections without bound; this one blocks the accept
// loop when max_pending connections wait, so the kernel's listen backlog absorbs the burst.
class BoundedPool : public httplib::TaskQueue {
 public:
  BoundedPool(size_t threads, size_t max_pending) : max_pending_(max_pending) {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return jobs_.size() < max_pending_ || shutdown_; });
    jobs_.push_back(std::move(fn));
    lock.unlock();
    ready_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    ready_.notify_all();
    space_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [&] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;  // shutdown and drained: queued connections are served first
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      space_.notify_one();
      fn();
    }
  }
  size_t max_pending_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

void send_error(httplib::Response& res, const HttpError& e, Metrics& metrics) {
  res.status = e.status;
  if (e.status == 503 || e.status == 429) res.set_header("Retry-After", "1");
  res.set_content(error_json(e), "application/json");
  metrics.count_error(e.status);
}

// "image/png" etc. from the first bytes (the page's image route serves only index payload images)
const char* image_mime(const std::string& b) {
  auto starts = [&](const char* m, size_t n) { return b.size() >= n && std::memcmp(b.data(), m, n) == 0; };
  if (starts("\x89PNG", 4)) return "image/png";
  if (starts("\xFF\xD8\xFF", 3)) return "image/jpeg";
  if (starts("GIF8", 4)) return "image/gif";
  if (starts("BM", 2)) return "image/bmp";
  if (b.size() >= 12 && starts("RIFF", 4) && b.compare(8, 4, "WEBP") == 0) return "image/webp";
  return "application/octet-stream";
}

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  Batcher& batcher;
  Metrics& metrics;
  const SearchBackend* search;
  httplib::Server http;
  int listen_fd = -1;  // seen in the socket-options hook, for the backlog below

  Impl(ServerOptions o, Batcher& b, Metrics& m, const SearchBackend* s)
      : opt(std::move(o)), batcher(b), metrics(m), search(s) {}

  // POST /v1/search: embed the query through the batcher (so it batches with /v1/embeddings
  // traffic), then the index's top k.
  void search_route(const httplib::Request& req, httplib::Response& res) {
    const auto t0 = std::chrono::steady_clock::now();
    metrics.count_request("search");
    try {
      SearchRequest r = parse_search_request(req.body, opt);
      std::vector<EmbedInput> in;
      in.push_back(std::move(r.query));
      auto fut = batcher.submit(std::move(in));
      if (!fut) throw HttpError{503, "the server is overloaded (request queue full) or shutting down; retry later", ""};
      JobResult out = fut->get();
      if (out.status != 200) throw HttpError{out.status, out.error, out.status == 400 ? "query" : ""};
      json data = json::array();
      for (const auto& h : search->search(out.emb.data(), r.k)) {
        json o{{"object", "search_result"},
               {"id", json::parse(h.id_json)},
               {"score", h.score},
               {"text", h.text.empty() ? json(nullptr) : json(h.text)},
               {"image", h.image.empty() ? json(nullptr) : json(h.image)}};
        if (opt.ui && !h.image.empty()) o["image_url"] = str("/v1/index/images/", h.row);
        data.push_back(std::move(o));
      }
      json body{{"object", "list"},
                {"data", std::move(data)},
                {"model", opt.model_name},
                {"usage", {{"prompt_tokens", out.tokens}, {"total_tokens", out.tokens}}}};
      res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    } catch (const HttpError& e) {
      send_error(res, e, metrics);
    } catch (const std::exception& e) {
      send_error(res, HttpError{500, e.what(), ""}, metrics);
    }
    metrics.observe_latency(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  // GET /v1/index/images/<row>: a payload image of the index, by row number only; never a path
  // from the request, so no other file can be named.
  void image_route(const httplib::Request& req, httplib::Response& res) {
    metrics.count_request("index_image");
    const std::string p = search->image_path(std::stoll(req.matches[1].str()));
    std::string bytes;
    if (!p.empty()) {
      std::ifstream in(p, std::ios::binary);
      if (in) bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    if (bytes.empty()) {
      send_error(res, HttpError{404, str("no image for index row ", req.matches[1].str()), ""}, metrics);
      return;
    }
    res.set_header("Cache-Control", "max-age=3600");
    res.set_content(bytes, image_mime(bytes));
  }

  void embeddings(const httplib::Request& req, httplib::Response& res) {
    const auto t0 = std::chrono::steady_clock::now();
    metrics.count_request("embeddings");
    try {
      EmbeddingsRequest r = parse_embeddings_request(req.body, opt);
      const size_t N = r.inputs.size();
      auto fut = batcher.submit(std::move(r.inputs));
      if (!fut) throw HttpError{503, "the server is overloaded (request queue full) or shutting down; retry later", ""};
      JobResult out = fut->get();
      if (out.status != 200) throw HttpError{out.status, out.error, out.status == 400 ? "input" : ""};
      const auto D = static_cast<size_t>(batcher.dim());
      json data = json::array();
      for (size_t i = 0; i < N; ++i) {
        const float* row = out.emb.data() + i * D;
        json emb;
        if (r.base64) {
          // little-endian float32 bytes, as numpy's frombuffer(..., dtype="float32") reads them
          std::string bytes(D * sizeof(float), '\0');
          for (size_t k = 0; k < D; ++k) {
            uint32_t u;
            std::memcpy(&u, row + k, 4);
            for (int b = 0; b < 4; ++b) bytes[k * 4 + b] = static_cast<char>(u >> (8 * b) & 0xFF);
          }
          emb = base64_encode(bytes);
        } else {
          emb = std::vector<float>(row, row + D);
        }
        data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", std::move(emb)}});
      }
      json body{{"object", "list"},
                {"data", std::move(data)},
                {"model", opt.model_name},
                {"usage", {{"prompt_tokens", out.tokens}, {"total_tokens", out.tokens}}}};
      res.set_content(body.dump(), "application/json");
    } catch (const HttpError& e) {
      send_error(res, e, metrics);
    } catch (const std::exception& e) {
      send_error(res, HttpError{500, e.what(), ""}, metrics);
    }
    metrics.observe_latency(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  void routes() {
    http.new_task_queue = [this] {
      return new BoundedPool(static_cast<size_t>(opt.http_threads), static_cast<size_t>(opt.max_pending_connections));
    };
    http.set_payload_max_length(static_cast<size_t>(opt.max_body_bytes));
    // Keep-alive clients (the openai client, requests.Session) send each request in two writes;
    // without TCP_NODELAY, Nagle + delayed ACK stall each one ~40 ms. httplib closes a kept-alive
    // connection after 5 requests by default: 1000 here. An idle kept-alive connection holds its
    // HTTP thread, and SIGTERM waits for it, for up to 2 s.
    http.set_tcp_nodelay(true);
    http.set_keep_alive_max_count(1000);
    http.set_keep_alive_timeout(2);
    http.set_socket_options([this](int fd) {
      int yes = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));  // httplib's default, minus SO_REUSEPORT
      listen_fd = fd;
    });
    http.Post("/v1/embeddings", [this](const httplib::Request& q, httplib::Response& s) { embeddings(q, s); });
    http.Post("/embeddings", [this](const httplib::Request& q, httplib::Response& s) { embeddings(q, s); });
    if (search) {
      http.Post("/v1/search", [this](const httplib::Request& q, httplib::Response& s) { search_route(q, s); });
      if (opt.ui) {
        http.Get(R"(/v1/index/images/(\d{1,15}))",
                 [this](const httplib::Request& q, httplib::Response& s) { image_route(q, s); });
        http.Get("/", [this](const httplib::Request&, httplib::Response& s) {
          metrics.count_request("ui");
          // everything is inline: no external assets, no CDN
          s.set_header("Content-Security-Policy",
                       "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                       "img-src 'self' blob: data:; connect-src 'self'");
          s.set_content(search_page_html(), "text/html; charset=utf-8");
        });
      }
    }
    http.Get("/health", [this](const httplib::Request&, httplib::Response& s) {
      metrics.count_request("health");
      s.set_content(json{{"status", "ok"}}.dump(), "application/json");
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& s) {
      metrics.count_request("models");
      json m{{"id", opt.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "unime"}};
      s.set_content(json{{"object", "list"}, {"data", json::array({m})}}.dump(), "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& s) {
      metrics.count_request("metrics");
      s.set_content(metrics.render(), "text/plain; version=0.0.4");
    });
    // httplib's own answers (404, 413 body too large, 400 unparsable HTTP) get OpenAI's shape too
    http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& q, httplib::Response& s) {
      if (!s.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      const bool form = q.get_header_value("Content-Type").rfind("application/x-www-form-urlencoded", 0) == 0;
      std::string msg = s.status == 413 && form
                            ? "form-encoded bodies are limited to 8192 bytes by the HTTP library; send "
                              "Content-Type: application/json"
                        : s.status == 413 ? str("request body is larger than the limit of ", opt.max_body_bytes,
                                                " bytes (--max-body-bytes)")
                        : s.status == 404 ? str("no route for ", q.method, " ", q.path)
                                          : str("HTTP error ", s.status);
      send_error(s, HttpError{s.status, msg, ""}, metrics);
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([this](const httplib::Request&, httplib::Response& s, std::exception_ptr ep) {
      std::string msg = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        msg = e.what();
      } catch (...) {
      }
      send_error(s, HttpError{500, msg, ""}, metrics);
    });
  }
};

Server::Server(ServerOptions opt, Batcher& batcher, Metrics& metrics, const SearchBackend* search)
    : impl_(std::make_unique<Impl>(std::move(opt), batcher, metrics, search)) {
  impl_->routes();
}

Server::~Server() = default;

int Server::bind() {
  auto& o = impl_->opt;
  int port = o.port;
  if (port == 0) {
    port = impl_->http.bind_to_any_port(o.host);
    UNIME_CHECK(port > 0, "serve: cannot bind to ", o.host, " (any port)");
  } else {
    UNIME_CHECK(impl_->http.bind_to_port(o.host, port), "serve: cannot bind to ", o.host, ":", port,
                " (in use? try another --port)");
  }
  // Debian's libcpp-httplib is a compiled library whose listen() backlog is 5 (the
  // CPPHTTPLIB_LISTEN_BACKLOG default), so a burst of a few hundred connects would be refused.
  // listen() again on the bound socket raises it (Linux caps it at net.core.somaxconn).
  UNIME_CHECK(impl_->listen_fd >= 0 && ::listen(impl_->listen_fd, kListenBacklog) == 0, "serve: cannot listen on ",
              o.host, ":", port);
  return port;
}

void Server::listen() { impl_->http.listen_after_bind(); }

void Server::stop() { impl_->http.stop(); }

}  // namespace unime::serve
