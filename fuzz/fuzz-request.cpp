// libFuzzer target for the server's request parser (src/serve/request.cpp): the code that turns
// POST /v1/embeddings and POST /v1/search JSON bodies into EmbedInputs (JSON, types, limits, data
// URLs, base64, image decoding). Any input must end in a parsed request that respects the limits
// or in an HttpError with a 4xx status and a message - never a crash, a hang or another exception.
// The first byte picks the endpoint. Run: build-fuzz/bin/fuzz-request corpus/ -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "serve/request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool search = data[0] & 1;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  unime::serve::ServerOptions opt;
  opt.max_inputs = 16;
  opt.max_image_pixels = 1 << 16;
  opt.max_search_k = 100;
  try {
    if (search) {
      const auto r = unime::serve::parse_search_request(body, opt);
      if (r.k < 1 || r.k > opt.max_search_k) std::abort();
      if (r.query.text.empty() && r.query.image_bytes.empty()) std::abort();
    } else {
      const auto r = unime::serve::parse_embeddings_request(body, opt);
      if (r.inputs.empty()) std::abort();
      for (const auto& in : r.inputs)
        if (in.text.empty() && in.image_bytes.empty() && (!in.input_ids || in.input_ids->empty())) std::abort();
      if (r.inputs.size() > static_cast<size_t>(opt.max_inputs)) std::abort();
    }
  } catch (const unime::serve::HttpError& e) {
    if (e.status < 400 || e.status >= 500 || e.message.empty()) std::abort();
    (void)unime::serve::error_json(e);
  }
  return 0;
}
