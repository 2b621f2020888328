// Byte-level BPE training; see bpe-train.h.
#include "text/bpe-train.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"
#include "text/tokenizer-pipeline.h"
#include "text/tokenizer-unicode.h"

namespace unime::text {

namespace {

using nlohmann::ordered_json;

// Splits a byte-level piece (each byte already mapped to one GPT-2 character) into characters.
std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : 4;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

ordered_json added_token(int64_t id, const std::string& content) {
  return ordered_json{{"id", id},           {"content", content}, {"single_word", false},
                      {"lstrip", false},    {"rstrip", false},    {"normalized", false},
                      {"special", true}};
}

}  // namespace

TrainedTokenizer train_bpe(const std::vector<std::string>& texts, const BpeTrainOptions& opt) {
  const int64_t n_special = static_cast<int64_t>(opt.special_tokens.size());
  UNIME_CHECK(opt.vocab_size >= n_special + 256, "BPE training: vocab_size ", opt.vocab_size,
              " is smaller than the ", n_special, " special tokens + 256 byte symbols");
  UNIME_CHECK(opt.min_frequency >= 1, "BPE training: min_frequency must be >= 1");
  for (const std::string* name : {&opt.bos, &opt.eos, &opt.pad, &opt.unk})
    UNIME_CHECK(name->empty() || std::find(opt.special_tokens.begin(), opt.special_tokens.end(),
                                           *name) != opt.special_tokens.end(),
                "BPE training: '", *name, "' is not one of the special tokens");

  // 1. word counts after the ByteLevel pre-tokenizer (GPT-2 regex, bytes -> characters)
  const nlohmann::json pre_json{{"type", "ByteLevel"}, {"add_prefix_space", false},
                                {"trim_offsets", true}, {"use_regex", true}};
  auto pre = detail::make_pre_tokenizer(pre_json, "BPE training: pre_tokenizer");
  std::map<std::string, int64_t> word_count;  // ordered: deterministic ids of equal-count pairs
  for (size_t i = 0; i < texts.size(); ++i) {
    UNIME_CHECK(detail::find_invalid_utf8(texts[i]) == std::string_view::npos, "BPE training: text ", i, " is not valid UTF-8");
    std::vector<detail::Piece> pieces{{texts[i], -1, true}};
    pre->pre_tokenize(pieces);
    for (const auto& p : pieces) ++word_count[p.text];
  }

  // 2. the alphabet: all 256 byte symbols, by code point (so any text encodes)
  std::vector<std::string> id_to_tok(opt.special_tokens);
  std::vector<std::pair<uint32_t, std::string>> alphabet;
  for (int b = 0; b < 256; ++b) {
    const std::string& ch = detail::byte_level_char(static_cast<unsigned char>(b));
    size_t at = 0;
    alphabet.emplace_back(static_cast<uint32_t>(detail::next_cp(ch, at)), ch);
  }
  std::sort(alphabet.begin(), alphabet.end());
  std::unordered_map<std::string, int32_t> tok_to_id;
  for (size_t i = 0; i < id_to_tok.size(); ++i) tok_to_id[id_to_tok[i]] = static_cast<int32_t>(i);
  for (auto& [cp, ch] : alphabet) {
    tok_to_id[ch] = static_cast<int32_t>(id_to_tok.size());
    id_to_tok.push_back(ch);
  }

  struct Word {
    std::vector<int32_t> sym;
    int64_t count;
  };
  std::vector<Word> words;
  for (auto& [w, c] : word_count) {
    Word word{{}, c};
    for (auto& ch : utf8_chars(w)) word.sym.push_back(tok_to_id.at(ch));
    words.push_back(std::move(word));
  }

  // 3. merges: the most frequent adjacent pair (ties: the smaller pair of ids), until full
  std::vector<std::pair<std::string, std::string>> merges;
  while (static_cast<int64_t>(id_to_tok.size()) < opt.vocab_size) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pair_count;
    for (const auto& w : words)
      for (size_t k = 0; k + 1 < w.sym.size(); ++k) pair_count[{w.sym[k], w.sym[k + 1]}] += w.count;
    std::pair<int32_t, int32_t> best{-1, -1};
    int64_t best_count = 0;
    for (const auto& [p, c] : pair_count)
      if (c > best_count) best_count = c, best = p;  // map order: first = smallest ids on ties
    if (best_count < opt.min_frequency) break;
    const std::string merged = id_to_tok[best.first] + id_to_tok[best.second];
    int32_t new_id;
    if (auto it = tok_to_id.find(merged); it != tok_to_id.end()) {
      new_id = it->second;  // two merge paths to one string: HF keeps the first id
    } else {
      new_id = static_cast<int32_t>(id_to_tok.size());
      id_to_tok.push_back(merged);
      tok_to_id[merged] = new_id;
    }
    merges.emplace_back(id_to_tok[best.first], id_to_tok[best.second]);
    for (auto& w : words) {
      std::vector<int32_t> out;
      out.reserve(w.sym.size());
      for (size_t k = 0; k < w.sym.size(); ++k) {
        if (k + 1 < w.sym.size() && w.sym[k] == best.first && w.sym[k + 1] == best.second) {
          out.push_back(new_id);
          ++k;
        } else {
          out.push_back(w.sym[k]);
        }
      }
      w.sym = std::move(out);
    }
  }

  // 4. tokenizer.json
  ordered_json tj;
  tj["version"] = "1.0";
  tj["truncation"] = nullptr;
  tj["padding"] = nullptr;
  tj["added_tokens"] = ordered_json::array();
  for (int64_t i = 0; i < n_special; ++i)
    tj["added_tokens"].push_back(added_token(i, opt.special_tokens[i]));
  tj["normalizer"] = nullptr;
  tj["pre_tokenizer"] = pre_json;
  if (opt.add_bos && !opt.bos.empty()) {
    const int64_t bos_id = tok_to_id.at(opt.bos);
    auto seq = [](const char* id) { return ordered_json{{"Sequence", {{"id", id}, {"type_id", 0}}}}; };
    ordered_json bos{{"SpecialToken", {{"id", opt.bos}, {"type_id", 0}}}};
    tj["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {bos, seq("A")}},
        {"pair", {bos, seq("A"), ordered_json{{"SpecialToken", {{"id", opt.bos}, {"type_id", 1}}}},
                  ordered_json{{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{opt.bos, {{"id", opt.bos}, {"ids", {bos_id}}, {"tokens", {opt.bos}}}}}}};
  } else {
    tj["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                            {"trim_offsets", true}, {"use_regex", true}};
  }
  tj["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                   {"use_regex", true}};
  ordered_json vocab = ordered_json::object();
  for (size_t i = 0; i < id_to_tok.size(); ++i) vocab[id_to_tok[i]] = i;  // specials too: the
  // library keeps an added token's id only when the model's vocabulary holds it
  ordered_json m = ordered_json::array();
  for (auto& [a, b] : merges) m.push_back(ordered_json::array({a, b}));
  tj["model"] = {{"type", "BPE"},        {"dropout", nullptr},
                 {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                 {"byte_fallback", false}, {"ignore_merges", false},
                 {"vocab", vocab},       {"merges", m}};

  ordered_json cfg{{"tokenizer_class", "PreTrainedTokenizerFast"},
                   {"model_max_length", opt.model_max_length},
                   {"clean_up_tokenization_spaces", false}};
  for (auto [key, v] : {std::pair{"bos_token", &opt.bos}, {"eos_token", &opt.eos},
                        {"pad_token", &opt.pad}, {"unk_token", &opt.unk}})
    if (!v->empty()) cfg[key] = *v;
  ordered_json decl = ordered_json::object();
  for (int64_t i = 0; i < n_special; ++i) {
    auto t = added_token(i, opt.special_tokens[i]);
    t.erase("id");
    decl[std::to_string(i)] = t;
  }
  cfg["added_tokens_decoder"] = decl;

  TrainedTokenizer out;
  out.tokenizer_json = tj.dump(1) + "\n";
  out.tokenizer_config_json = cfg.dump(2) + "\n";
  out.vocab_size = static_cast<int64_t>(id_to_tok.size());
  out.merges = static_cast<int64_t>(merges.size());
  return out;
}

}  // namespace unime::text
