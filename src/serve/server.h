// `unime serve`: an OpenAI-compatible embeddings server (the "transport" part of TEI's split) on
// cpp-httplib. POST /v1/embeddings, GET /health, GET /v1/models, GET /metrics; with an index,
// POST /v1/search and (--ui) a search page at GET / with GET /v1/index/images/<row>.
// Request format, limits and error shape: docs/README-dev-serve.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "serve/batcher.h"
#include "serve/metrics.h"
#include "serve/request.h"
#include "unime/embedder.h"

namespace unime::serve {

/// What POST /v1/search needs from an index. src/index implements it (tools/unime-serve.cpp wires
/// it in), which keeps FAISS out of this library.
class SearchBackend {
 public:
  struct Hit {
    std::string id_json;  ///< the row's id as JSON text (a string or an integer)
    float score = 0;
    std::string text, image;  ///< "" when absent
    int64_t row = 0;
  };
  virtual ~SearchBackend() = default;
  virtual int64_t dim() const = 0;
  virtual int64_t size() const = 0;
  /// Best first; query is one unit-norm [dim()] vector.
  virtual std::vector<Hit> search(const float* query, int64_t k) const = 0;
  /// Image file of a row ("" when none or out of range): the only files the page's image route serves.
  virtual std::string image_path(int64_t row) const = 0;
};

class Server {
 public:
  /// `search` (may be null) enables POST /v1/search and, with opt.ui, the page at GET /.
  Server(ServerOptions opt, Batcher& batcher, Metrics& metrics, const SearchBackend* search = nullptr);
  ~Server();
  /// Binds the listening socket; returns the port (the chosen one when opt.port == 0).
  int bind();
  /// Serves until stop(); in-flight requests finish before it returns.
  void listen();
  /// Safe from any thread (not from a signal handler).
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace unime::serve
