// The stages around the BPE model in a Hugging Face tokenizer.json: normalizers,
// pre-tokenizers, post-processors and decoders, each built from its JSON object.
// reference: tokenizers/src/{normalizers,pre_tokenizers,processors,decoders}/*.rs
// Legend: a Piece is one split of the input (HF `Split` of a PreTokenizedString): its text, the
// added-token id when the split is an added token, and whether it starts at byte 0 of the
// original input (HF `offsets_original().0 == 0`, which Metaspace prepend_scheme "first" reads).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace unime::text::detail {

struct Piece {
  std::string text;
  int32_t id = -1;  // >= 0: an added token, never touched by later stages
  bool at_start = false;
};

// ---- normalizers ----
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  /// Rewrites s in place; sets lead_moved when the first character of the result no longer
  /// maps to the first original byte (leading characters were deleted).
  virtual void normalize(std::string& s, bool& lead_moved) const = 0;
};

// ---- pre-tokenizers ----
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  /// Replaces every non-added piece by its splits (empty splits are dropped).
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

// ---- post-processors ----
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  /// Adds the special tokens of the single-sequence template around ids.
  virtual void process(std::vector<int32_t>& ids, bool add_special_tokens) const = 0;
  /// How many ids process() adds (HF added_tokens(is_pair=false)).
  virtual size_t added_tokens() const = 0;
};

// ---- decoders ----
class Decoder {
 public:
  virtual ~Decoder() = default;
  /// HF decode_chain: tokens in, tokens out; the caller concatenates the result.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

/// Builders; `where` names the JSON location for errors ("tokenizer.json: normalizer").
/// A JSON null yields nullptr. token_id resolves special-token names for post-processors.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j,
                                                   const std::string& where);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& where);

/// GPT-2 byte-to-unicode table: the UTF-8 text of the character standing for byte b.
const std::string& byte_level_char(unsigned char b);

}  // namespace unime::text::detail
