// Hugging Face `tokenizer.json` tokenizers in C++, with ids identical to the Rust `tokenizers`
// library: byte-level BPE (Qwen2/Qwen3, Llama-3, GPT-2) and Metaspace/byte-fallback BPE
// (Llama-2, Mistral, Phi-3, Gemma), added/special tokens, normalizers, pre-tokenizers,
// post-processors and decoders. bos/eos/pad come from tokenizer_config.json.
// reference: https://github.com/huggingface/tokenizers (tokenizers/src/tokenizer/mod.rs)
// Details, supported components and the invalid-UTF-8 policy: docs/README-dev-text.md.
//
// Usage:
//   auto tok = unime::text::Tokenizer::load("models/qwen3");   // dir or tokenizer.json
//   std::vector<int32_t> ids = tok.encode("<|im_start|>user\nhi<|im_end|>");
//   std::string text = tok.decode(ids, /*skip_special_tokens=*/true);
//   auto batch = tok.encode_batch({"a", "b"});                  // parallel, same ids as encode
// A Tokenizer is an immutable shared handle: copying is cheap and const calls are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace unime::text {

class Tokenizer {
 public:
  /// dir (containing tokenizer.json and optional tokenizer_config.json) or a tokenizer.json
  /// path (a tokenizer_config.json beside it is read too). Throws unime::Error naming the file
  /// and key on bad or unsupported content.
  static Tokenizer load(const std::string& dir_or_file);
  /// Builds from the JSON texts themselves; `origin` names them in error messages.
  static Tokenizer from_json(std::string_view tokenizer_json,
                             std::string_view tokenizer_config_json = {},
                             const std::string& origin = "tokenizer.json");

  /// Ids of text, with the post-processor's special tokens when add_special_tokens (as HF
  /// `encode(text, add_special_tokens)`). Throws unime::Error when text is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  /// encode() of each text, spread over the hardware threads (HF encode_batch, incl. padding).
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts,
                                                 bool add_special_tokens = true) const;
  /// Text of ids (HF decode): unknown ids are skipped; special tokens too when asked.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;  // vocab or added token
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;  // an added token marked "special"
  int64_t vocab_size() const;         // incl. added tokens (max id + 1)
  std::optional<int32_t> bos_id() const;  // tokenizer_config.json bos_token
  std::optional<int32_t> eos_id() const;  // tokenizer_config.json eos_token
  std::optional<int32_t> pad_id() const;  // tokenizer_config.json pad_token
  const std::string& origin() const;      // the path (or name) it was loaded from

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  static Tokenizer build(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                         const std::string& origin);
  std::shared_ptr<const Impl> impl_;
};

}  // namespace unime::text
