// `unime serve`: an OpenAI-compatible embeddings server (the "transport" part of TEI's split) on
// cpp-httplib. POST /v1/embeddings, GET /health, GET /v1/models, GET /metrics.
// Request format, limits and error shape: docs/README-dev-serve.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "serve/batcher.h"
#include "serve/metrics.h"
#include "unime/embedder.h"

namespace unime::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                          ///< 0 = any free port (see Server::bind)
  std::string model_name = "unime";         ///< the `model` id in answers and /v1/models
  int64_t max_body_bytes = 64LL << 20;      ///< larger bodies -> 413
  int64_t max_inputs = 2048;                ///< inputs per request (OpenAI's limit)
  int64_t max_image_pixels = 8192LL * 8192; ///< per image
  std::string allowed_local_media_root;     ///< "" = no local files; else file:// URLs under it
  int http_threads = 64;                    ///< connections served at once
  int64_t max_pending_connections = 1024;   ///< accepted connections waiting for an HTTP thread
};

/// An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct HttpError {
  int status = 400;
  std::string message;
  std::string param;  ///< "" = null
};

/// A parsed POST /v1/embeddings body.
struct EmbeddingsRequest {
  std::vector<EmbedInput> inputs;
  bool base64 = false;  ///< encoding_format
};

/// Parses and checks a body (JSON, types, limits, data URLs, image bytes); throws HttpError.
EmbeddingsRequest parse_embeddings_request(const std::string& body, const ServerOptions& opt);

/// The OpenAI error JSON for an HttpError.
std::string error_json(const HttpError& e);

class Server {
 public:
  Server(ServerOptions opt, Batcher& batcher, Metrics& metrics);
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
