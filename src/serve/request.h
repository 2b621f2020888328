// `unime serve` request bodies: POST /v1/embeddings and POST /v1/search JSON -> EmbedInput(s),
// checked against the server's limits; errors in OpenAI's shape. Torch-free and HTTP-free (the
// libFuzzer target fuzz/fuzz-request.cpp drives it). Format: docs/README-dev-serve.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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
  int64_t max_search_k = 1000;              ///< POST /v1/search: largest "k"
  bool ui = false;                          ///< GET / serves the search page (needs an index)
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

/// A parsed POST /v1/search body: {"query": string | {"content": ..., "instruction": ...}, "k": n}.
struct SearchRequest {
  EmbedInput query;
  int64_t k = 10;
};

/// Parses and checks a search body; throws HttpError.
SearchRequest parse_search_request(const std::string& body, const ServerOptions& opt);

/// The OpenAI error JSON for an HttpError.
std::string error_json(const HttpError& e);

}  // namespace unime::serve
