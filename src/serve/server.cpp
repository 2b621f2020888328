// `unime serve` transport: OpenAI-compatible JSON <-> EmbedInput, HTTP routes, limits, errors.
// References: OpenAI embeddings API (https://platform.openai.com/docs/api-reference/embeddings),
// chat content parts (type "text" / "image_url"), vLLM's and llama.cpp's multimodal embedding
// forms (compared in docs/README-dev-serve.md).
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
#include <httplib.h>

namespace fs = std::filesystem;
using nlohmann::json;

namespace unime::serve {

// ---- request parsing ----

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& msg) {
  throw HttpError{400, msg, param};
}

const char* type_name(const json& v) { return v.type_name(); }

// one image_url part -> encoded bytes (checked to decode)
std::string image_bytes(const std::string& url, const std::string& where, const ServerOptions& opt) {
  std::string bytes;
  if (url.rfind("data:", 0) == 0) {
    const size_t comma = url.find(',');
    if (comma == std::string::npos) bad("input", where + ": data URL has no ',' before its payload");
    const std::string meta = url.substr(5, comma - 5);  // e.g. "image/png;base64"
    if (meta.size() < 7 || meta.compare(meta.size() - 7, 7, ";base64") != 0)
      bad("input", where + ": data URL must be base64 (data:image/...;base64,...), got 'data:" + meta + ",...'");
    if (meta.rfind("image/", 0) != 0)
      bad("input", where + ": data URL media type must be image/*, got '" + meta.substr(0, meta.size() - 7) + "'");
    auto dec = base64_decode(std::string_view(url).substr(comma + 1));
    if (!dec) bad("input", where + ": data URL payload is not valid base64");
    bytes = std::move(*dec);
  } else if (url.rfind("file://", 0) == 0) {
    if (opt.allowed_local_media_root.empty())
      bad("input", where + ": local files are disabled; start the server with --allowed-local-media-path DIR, or send a data: URL");
    std::error_code ec;
    const fs::path root = fs::weakly_canonical(opt.allowed_local_media_root, ec);
    const fs::path p = fs::weakly_canonical(fs::path(url.substr(7)), ec);
    const auto rel = p.lexically_relative(root);
    if (ec || rel.empty() || *rel.begin() == "..")
      bad("input", where + ": '" + url + "' is outside the allowed local media path " + root.string());
    if (!fs::is_regular_file(p, ec)) bad("input", where + ": '" + url + "' is not a file");
    std::ifstream in(p, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  } else {
    bad("input", where + ": image URL must be a data: URL (remote URLs are never fetched), got '" +
                     url.substr(0, 40) + "'");
  }
  try {
    io::decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), where, opt.max_image_pixels);
  } catch (const Error& e) {
    bad("input", e.what());
  }
  return bytes;
}

std::vector<int64_t> token_array(const json& a, const std::string& where) {
  if (a.empty()) bad("input", where + ": empty token-id array");
  std::vector<int64_t> ids;
  ids.reserve(a.size());
  for (const auto& t : a) {
    if (!t.is_number_integer()) bad("input", where + ": token ids must be integers, got " + type_name(t));
    ids.push_back(t.get<int64_t>());
  }
  return ids;
}

// {"content": "..." | [parts], "instruction": "..."} -> EmbedInput
EmbedInput multimodal_input(const json& o, const std::string& where, const ServerOptions& opt) {
  EmbedInput in;
  in.where = where;
  for (const auto& [k, v] : o.items())
    if (k != "content" && k != "instruction")
      bad("input", where + ": unknown key '" + k + "' (expected 'content' and optional 'instruction')");
  if (o.contains("instruction") && !o["instruction"].is_null()) {
    if (!o["instruction"].is_string()) bad("input", where + ": 'instruction' must be a string");
    in.instruction = o["instruction"].get<std::string>();
  }
  if (!o.contains("content")) bad("input", where + ": missing 'content'");
  const json& c = o["content"];
  if (c.is_string()) {
    in.text = c.get<std::string>();
  } else if (c.is_array()) {
    std::vector<std::string> texts;
    for (size_t i = 0; i < c.size(); ++i) {
      const std::string w = str(where, ".content[", i, "]");
      const json& part = c[i];
      if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
        bad("input", w + ": expected an object with a 'type' (\"text\" or \"image_url\")");
      const std::string type = part["type"].get<std::string>();
      if (type == "text") {
        if (!part.contains("text") || !part["text"].is_string()) bad("input", w + ": 'text' must be a string");
        texts.push_back(part["text"].get<std::string>());
      } else if (type == "image_url") {
        if (!part.contains("image_url")) bad("input", w + ": missing 'image_url'");
        const json& iu = part["image_url"];
        std::string url;
        if (iu.is_string()) url = iu.get<std::string>();
        else if (iu.is_object() && iu.contains("url") && iu["url"].is_string()) url = iu["url"].get<std::string>();
        else bad("input", w + ": 'image_url' must be {\"url\": \"data:image/...;base64,...\"}");
        in.image_bytes.push_back(image_bytes(url, w, opt));
      } else {
        bad("input", w + ": unknown part type '" + type + "' (expected \"text\" or \"image_url\")");
      }
    }
    for (size_t i = 0; i < texts.size(); ++i) in.text += (i ? "\n" : "") + texts[i];
  } else {
    bad("input", where + ": 'content' must be a string or a list of content parts, got " + type_name(c));
  }
  if (in.text.empty() && in.image_bytes.empty()) bad("input", where + ": nothing to embed (no text, no image)");
  return in;
}

}  // namespace

EmbeddingsRequest parse_embeddings_request(const std::string& body, const ServerOptions& opt) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) bad("", "request body is not valid JSON");
  if (!j.is_object()) bad("", str("request body must be a JSON object, got ", type_name(j)));
  EmbeddingsRequest r;
  if (j.contains("model") && !j["model"].is_null() && !j["model"].is_string())
    bad("model", str("'model' must be a string, got ", type_name(j["model"])));
  if (j.contains("encoding_format") && !j["encoding_format"].is_null()) {
    const json& f = j["encoding_format"];
    if (!f.is_string() || (f != "float" && f != "base64"))
      bad("encoding_format", str("'encoding_format' must be \"float\" or \"base64\", got ", f.dump()));
    r.base64 = f == "base64";
  }
  if (j.contains("dimensions") && !j["dimensions"].is_null())
    bad("dimensions", "'dimensions' is not supported: this model's embeddings have a fixed size");
  if (!j.contains("input")) bad("input", "missing 'input'");
  const json& x = j["input"];
  auto text_input = [&](const json& s, const std::string& where) {
    EmbedInput in;
    in.where = where;
    in.text = s.get<std::string>();
    if (in.text.empty()) bad("input", where + ": empty string");
    return in;
  };
  if (x.is_string()) {
    r.inputs.push_back(text_input(x, "input"));
  } else if (x.is_array()) {
    if (x.empty()) bad("input", "'input' is an empty list");
    const bool all_ints = std::all_of(x.begin(), x.end(), [](const json& v) { return v.is_number_integer(); });
    if (all_ints) {  // one input given as token ids
      EmbedInput in;
      in.where = "input";
      in.input_ids = token_array(x, "input");
      r.inputs.push_back(std::move(in));
    } else {
      if (static_cast<int64_t>(x.size()) > opt.max_inputs)
        bad("input", str("'input' has ", x.size(), " items, more than the limit of ", opt.max_inputs));
      for (size_t i = 0; i < x.size(); ++i) {
        const std::string where = str("input[", i, "]");
        const json& v = x[i];
        if (v.is_string()) {
          r.inputs.push_back(text_input(v, where));
        } else if (v.is_array()) {
          EmbedInput in;
          in.where = where;
          in.input_ids = token_array(v, where);
          r.inputs.push_back(std::move(in));
        } else if (v.is_object()) {
          r.inputs.push_back(multimodal_input(v, where, opt));
        } else {
          bad("input", where + ": expected a string, a list of token ids or an object with 'content', got " +
                           type_name(v));
        }
      }
    }
  } else {
    bad("input", str("'input' must be a string or a list, got ", type_name(x)));
  }
  return r;
}

std::string error_json(const HttpError& e) {
  const char* type = e.status == 429 || e.status == 503 ? "server_overloaded"
                     : e.status >= 500                 ? "server_error"
                                                       : "invalid_request_error";
  json err{{"message", e.message}, {"type", type}, {"param", e.param.empty() ? json(nullptr) : json(e.param)},
           {"code", e.status}};
  return json{{"error", err}}.dump();
}

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

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  Batcher& batcher;
  Metrics& metrics;
  httplib::Server http;
  int listen_fd = -1;  // seen in the socket-options hook, for the backlog below

  Impl(ServerOptions o, Batcher& b, Metrics& m) : opt(std::move(o)), batcher(b), metrics(m) {}

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
    http.set_socket_options([this](int fd) {
      int yes = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));  // httplib's default, minus SO_REUSEPORT
      listen_fd = fd;
    });
    http.Post("/v1/embeddings", [this](const httplib::Request& q, httplib::Response& s) { embeddings(q, s); });
    http.Post("/embeddings", [this](const httplib::Request& q, httplib::Response& s) { embeddings(q, s); });
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

Server::Server(ServerOptions opt, Batcher& batcher, Metrics& metrics)
    : impl_(std::make_unique<Impl>(std::move(opt), batcher, metrics)) {
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
