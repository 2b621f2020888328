// `unime serve` request bodies: OpenAI-compatible JSON -> EmbedInput, with the limits and the
// one-line errors of docs/README-dev-serve.md. Torch-free and HTTP-free, so that the libFuzzer
// target fuzz/fuzz-request.cpp runs it alone.
// References: OpenAI embeddings API (https://platform.openai.com/docs/api-reference/embeddings),
// chat content parts (type "text" / "image_url"), vLLM's and llama.cpp's multimodal embedding
// forms (compared in docs/README-dev-serve.md).
#include "serve/request.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/image.h"
#include "serve/base64.h"

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

SearchRequest parse_search_request(const std::string& body, const ServerOptions& opt) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) bad("", "request body is not valid JSON");
  if (!j.is_object()) bad("", str("request body must be a JSON object, got ", type_name(j)));
  for (const auto& [key, v] : j.items())
    if (key != "query" && key != "k" && key != "model" && key != "user")
      bad(key, "unknown key '" + key + "' (expected 'query' and optional 'k', 'model')");
  if (j.contains("model") && !j["model"].is_null() && !j["model"].is_string())
    bad("model", str("'model' must be a string, got ", type_name(j["model"])));
  SearchRequest r;
  if (j.contains("k") && !j["k"].is_null()) {
    const json& k = j["k"];
    if (!k.is_number_integer()) bad("k", str("'k' must be an integer, got ", type_name(k)));
    const auto v = k.get<int64_t>();
    if (v < 1 || v > opt.max_search_k) bad("k", str("'k' must be between 1 and ", opt.max_search_k, ", got ", v));
    r.k = v;
  }
  if (!j.contains("query")) bad("query", "missing 'query'");
  const json& q = j["query"];
  if (q.is_string()) {
    r.query.where = "query";
    r.query.text = q.get<std::string>();
    if (r.query.text.empty()) bad("query", "query: empty string");
  } else if (q.is_object()) {
    try {
      r.query = multimodal_input(q, "query", opt);
    } catch (HttpError& e) {
      e.param = "query";
      throw;
    }
  } else {
    bad("query", str("'query' must be a string or an object with 'content' (chat content parts), got ",
                     type_name(q)));
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

}  // namespace unime::serve
