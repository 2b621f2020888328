// Tokenizer: loading tokenizer.json / tokenizer_config.json, the added vocabulary, and the
// encode pipeline of the Hugging Face tokenizers library:
//   1. split the raw text on added tokens that are not `normalized` (leftmost-longest),
//   2. normalize each remaining piece, then split it on the `normalized` added tokens,
//   3. pre-tokenize, 4. BPE each pre-token, 5. truncate, post-process, pad.
// reference: tokenizers/src/tokenizer/{mod.rs,added_vocabulary.rs,serialization.rs}
#include "text/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "text/tokenizer-bpe.h"
#include "text/tokenizer-pipeline.h"
#include "text/tokenizer-unicode.h"

namespace unime::text {

using detail::Piece;
using nlohmann::json;

namespace {

// ---- added tokens ----

struct AddedToken {
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
  bool operator==(const AddedToken&) const = default;
};

// Byte trie over added-token contents; longest_at gives the longest token starting at a byte.
// Scanning start positions left to right gives AhoCorasick's LeftmostLongest matches.
class TokenTrie {
 public:
  TokenTrie() { root_.fill(-1); }
  bool empty() const { return nodes_.empty(); }

  void add(std::string_view s, int32_t id) {
    if (s.empty()) return;
    int32_t node = root_[static_cast<unsigned char>(s[0])];
    if (node < 0) {
      node = new_node();
      root_[static_cast<unsigned char>(s[0])] = node;
    }
    for (size_t i = 1; i < s.size(); ++i) {
      const auto b = static_cast<unsigned char>(s[i]);
      int32_t next = child(node, b);
      if (next < 0) {
        next = new_node();
        nodes_[size_t(node)].kids.emplace_back(b, next);
      }
      node = next;
    }
    if (nodes_[size_t(node)].id < 0) nodes_[size_t(node)].id = id;  // first pattern wins ties
  }

  bool longest_at(std::string_view text, size_t pos, size_t& end, int32_t& id) const {
    int32_t node = root_[static_cast<unsigned char>(text[pos])];
    bool found = false;
    for (size_t i = pos + 1; node >= 0; ++i) {
      if (nodes_[size_t(node)].id >= 0) {
        found = true;
        end = i;
        id = nodes_[size_t(node)].id;
      }
      if (i >= text.size()) break;
      node = child(node, static_cast<unsigned char>(text[i]));
    }
    return found;
  }

 private:
  struct Node {
    int32_t id = -1;
    std::vector<std::pair<unsigned char, int32_t>> kids;
  };
  int32_t new_node() {
    nodes_.emplace_back();
    return int32_t(nodes_.size() - 1);
  }
  int32_t child(int32_t node, unsigned char b) const {
    for (const auto& [k, n] : nodes_[size_t(node)].kids)
      if (k == b) return n;
    return -1;
  }
  std::vector<Node> nodes_;
  std::array<int32_t, 256> root_;
};

struct Truncation {
  size_t max_length = 0;
  bool left = false;
};

struct Padding {
  std::optional<size_t> fixed;  // Fixed(n); BatchLongest otherwise
  bool left = false;
  std::optional<size_t> multiple_of;
  int32_t pad_id = 0;
};

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  UNIME_CHECK(f.good(), p.string(), ": cannot open file");
  std::ostringstream ss;
  ss << f.rdbuf();
  UNIME_CHECK(!f.bad(), p.string(), ": read error");
  return ss.str();
}

json parse_json(std::string_view text, const std::string& origin) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw Error(str(origin, ": invalid JSON: ", e.what()));
  }
}

bool flag(const json& j, const char* key, bool def, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  UNIME_CHECK(it->is_boolean(), where, ": field '", key, "' must be a boolean");
  return it->get<bool>();
}

std::optional<std::string> opt_string(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  UNIME_CHECK(it->is_string(), where, ": field '", key, "' must be a string or null");
  return it->get<std::string>();
}

std::unique_ptr<detail::Bpe> make_bpe(const json& m, const std::string& where) {
  UNIME_CHECK(m.is_object(), where, ": expected an object");
  std::string type = "BPE";
  if (auto it = m.find("type"); it != m.end()) {
    UNIME_CHECK(it->is_string(), where, ": field 'type' must be a string");
    type = it->get<std::string>();
  }
  UNIME_CHECK(type == "BPE", where, ": unsupported model type '", type,
              "' (only BPE models are supported)");
  auto v = m.find("vocab");
  UNIME_CHECK(v != m.end() && v->is_object(), where, ": missing object field 'vocab'");
  detail::Vocab vocab;
  vocab.reserve(v->size());
  for (const auto& [tok, id] : v->items()) {
    UNIME_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 &&
                    id.get<int64_t>() <= INT32_MAX,
                where, ".vocab: token '", tok, "' has id ", id.dump(),
                "; expected an integer in [0, 2^31)");
    vocab[tok] = id.get<int32_t>();
  }
  std::vector<std::pair<std::string, std::string>> merges;
  if (auto mg = m.find("merges"); mg != m.end() && !mg->is_null()) {
    UNIME_CHECK(mg->is_array(), where, ": field 'merges' must be a list");
    merges.reserve(mg->size());
    size_t rank = 0;
    for (const auto& e : *mg) {
      if (e.is_string()) {  // "a b" (a '#version' line is skipped, as the reference does)
        const std::string& s = e.get_ref<const std::string&>();
        if (s.rfind("#version", 0) == 0) continue;
        const size_t sp = s.find(' ');
        UNIME_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, where,
                    ".merges[", rank, "]: expected \"left right\", got \"", s, "\"");
        merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else {  // ["a", "b"]
        UNIME_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(), where,
                    ".merges[", rank, "]: expected \"left right\" or [\"left\", \"right\"], got ",
                    e.dump());
        merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      }
      ++rank;
    }
  }
  detail::BpeOptions opt;
  opt.unk_token = opt_string(m, "unk_token", where);
  opt.continuing_subword_prefix = opt_string(m, "continuing_subword_prefix", where);
  opt.end_of_word_suffix = opt_string(m, "end_of_word_suffix", where);
  opt.fuse_unk = flag(m, "fuse_unk", false, where);
  opt.byte_fallback = flag(m, "byte_fallback", false, where);
  opt.ignore_merges = flag(m, "ignore_merges", false, where);
  return std::make_unique<detail::Bpe>(std::move(vocab), merges, std::move(opt), where);
}

}  // namespace

struct Tokenizer::Impl {
  std::string origin;
  std::unique_ptr<detail::Normalizer> normalizer;
  std::unique_ptr<detail::PreTokenizer> pre_tokenizer;
  std::unique_ptr<detail::Bpe> model;
  std::unique_ptr<detail::PostProcessor> post;
  std::unique_ptr<detail::Decoder> decoder;
  std::optional<Truncation> truncation;
  std::optional<Padding> padding;

  // added vocabulary (AddedVocabulary)
  std::unordered_map<std::string, int32_t, detail::StringHash, std::equal_to<>> added_map;
  std::unordered_map<int32_t, AddedToken> added_r;
  std::unordered_set<std::string> special_set;
  std::vector<AddedToken> special_list, added_list;
  TokenTrie trie_raw, trie_norm;

  std::optional<int32_t> bos, eos, pad;
  int64_t n_vocab = 0;

  std::optional<int32_t> token_to_id(std::string_view t) const {
    if (auto it = added_map.find(t); it != added_map.end()) return it->second;
    return model->token_to_id(t);
  }

  // AddedVocabulary::add_tokens for one token, as the deserializer calls it
  void add_token(const AddedToken& tok) {
    if (tok.special && !tok.content.empty() && !special_set.count(tok.content)) {
      special_list.push_back(tok);
      special_set.insert(tok.content);
    }
    if (tok.content.empty()) return;
    for (const auto& [id, t] : added_r)
      if (t == tok) return;
    int32_t new_id;
    if (auto id = token_to_id(tok.content)) {
      new_id = *id;
    } else {
      const auto vs = int64_t(model->size());
      int64_t mx = -1;
      for (const auto& [c, id2] : added_map) mx = std::max<int64_t>(mx, id2);
      new_id = int32_t(mx < 0 ? vs : (mx >= vs || vs == 0) ? mx + 1 : vs);
    }
    added_map[tok.content] = new_id;
    added_r[new_id] = tok;
    if (!special_set.count(tok.content)) added_list.push_back(tok);
  }

  void build_tries() {
    for (const auto* list : {&special_list, &added_list}) {
      for (const auto& tok : *list) {
        const int32_t id = *token_to_id(tok.content);
        if (!tok.normalized) {
          trie_raw.add(tok.content, id);
        } else {
          std::string s = tok.content;
          bool lead = false;
          if (normalizer) normalizer->normalize(s, lead);
          trie_norm.add(s, id);
        }
      }
    }
  }

  // AddedVocabulary::find_matches + split_with_indices: appends the splits of s to out
  void split_added(std::string s, const TokenTrie& trie, bool at_start,
                   std::vector<Piece>& out) const {
    if (s.empty()) return;
    if (trie.empty()) {
      out.push_back(Piece{std::move(s), -1, at_start});
      return;
    }
    const std::string_view sv = s;
    size_t start_offset = 0;
    auto push = [&](size_t b, size_t e, int32_t id) {
      if (e > b) out.push_back(Piece{s.substr(b, e - b), id, at_start && b == 0});
    };
    for (size_t pos = 0; pos < sv.size();) {
      size_t stop = 0;
      int32_t id = -1;
      if (!trie.longest_at(sv, pos, stop, id)) {
        ++pos;
        continue;
      }
      size_t start = pos;
      pos = stop;  // the automaton resumes after the match, even when it is discarded below
      const AddedToken& tok = added_r.at(id);
      if (tok.single_word) {
        bool start_space = true, stop_space = true;
        if (start > 0) {
          size_t k = detail::last_cp_start(sv.substr(0, start));
          start_space = !detail::is_word_char(detail::next_cp(sv, k));
        }
        if (stop < sv.size()) {
          size_t k = stop;
          stop_space = !detail::is_word_char(detail::next_cp(sv, k));
        }
        if (!start_space || !stop_space) continue;
      }
      if (tok.lstrip) {
        size_t ns = start;
        while (ns > 0) {
          size_t k = detail::last_cp_start(sv.substr(0, ns));
          const size_t cs = k;
          if (!detail::is_whitespace(detail::next_cp(sv, k))) break;
          ns = cs;
        }
        start = std::max(ns, start_offset);
      }
      if (tok.rstrip) {
        while (stop < sv.size()) {
          size_t k = stop;
          if (!detail::is_whitespace(detail::next_cp(sv, k))) break;
          stop = k;
        }
      }
      if (start_offset < start) push(start_offset, start, -1);
      push(start, stop, id);
      start_offset = stop;
    }
    if (start_offset < sv.size()) push(start_offset, sv.size(), -1);
  }

  void post_process(std::vector<int32_t>& ids, bool add_special) const {
    if (truncation) {
      size_t max_len = truncation->max_length;
      const size_t n_added = post ? post->added_tokens() : 0;
      bool apply = true;
      if (add_special && n_added > 0) {
        if (n_added > max_len)
          apply = false;  // the reference's usize subtraction wraps: no truncation
        else
          max_len -= n_added;
      }
      if (apply && ids.size() > max_len) {
        if (truncation->left)
          ids.erase(ids.begin(), ids.end() - long(max_len));
        else
          ids.resize(max_len);
      }
    }
    if (post) post->process(ids, add_special);
    if (padding) pad_to(ids, padding->fixed ? *padding->fixed : ids.size());
  }

  void pad_to(std::vector<int32_t>& ids, size_t target) const {
    if (padding->multiple_of && *padding->multiple_of > 0 && target % *padding->multiple_of != 0)
      target += *padding->multiple_of - target % *padding->multiple_of;
    if (ids.size() >= target) return;
    const size_t n = target - ids.size();
    if (padding->left)
      ids.insert(ids.begin(), n, padding->pad_id);
    else
      ids.insert(ids.end(), n, padding->pad_id);
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special) const {
    const size_t bad = detail::find_invalid_utf8(text);
    UNIME_CHECK(bad == std::string_view::npos, "tokenizer: input is not valid UTF-8 (bad byte 0x",
                std::hex, int(static_cast<unsigned char>(text[bad])), std::dec, " at offset ", bad,
                " of ", text.size(), ")");
    std::vector<Piece> pieces, normed;
    split_added(std::string(text), trie_raw, true, pieces);
    normed.reserve(pieces.size());
    for (auto& p : pieces) {
      if (p.id >= 0) {
        normed.push_back(std::move(p));
        continue;
      }
      bool lead = false;
      if (normalizer) normalizer->normalize(p.text, lead);
      split_added(std::move(p.text), trie_norm, p.at_start && !lead, normed);
    }
    if (pre_tokenizer) pre_tokenizer->pre_tokenize(normed);
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    for (const auto& p : normed) {
      if (p.id >= 0)
        ids.push_back(p.id);
      else
        model->tokenize(p.text, ids);
    }
    post_process(ids, add_special);
    return ids;
  }
};

// ---- loading ----

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json,
                               std::string_view tokenizer_config_json,
                               const std::string& origin) {
  try {
    return build(tokenizer_json, tokenizer_config_json, origin);
  } catch (const nlohmann::json::exception& e) {  // a field of the wrong JSON type
    throw Error(str(origin, ": unexpected content: ", e.what()));
  }
}

Tokenizer Tokenizer::build(std::string_view tokenizer_json,
                           std::string_view tokenizer_config_json, const std::string& origin) {
  auto impl = std::make_shared<Impl>();
  impl->origin = origin;
  const json j = parse_json(tokenizer_json, origin);
  UNIME_CHECK(j.is_object(), origin, ": expected a JSON object at the top level, got ",
              j.type_name());
  auto field = [&](const char* key) -> const json& {
    static const json null_value;
    auto it = j.find(key);
    return it == j.end() ? null_value : *it;
  };
  const json& model = field("model");
  UNIME_CHECK(!model.is_null(), origin, ": missing field 'model'");
  impl->model = make_bpe(model, origin + ": model");
  impl->normalizer = detail::make_normalizer(field("normalizer"), origin + ": normalizer");
  impl->pre_tokenizer =
      detail::make_pre_tokenizer(field("pre_tokenizer"), origin + ": pre_tokenizer");
  impl->post = detail::make_post_processor(field("post_processor"), origin + ": post_processor");
  impl->decoder = detail::make_decoder(field("decoder"), origin + ": decoder");

  if (const json& t = field("truncation"); !t.is_null()) {
    const std::string w = origin + ": truncation";
    UNIME_CHECK(t.is_object() && t.contains("max_length") && t["max_length"].is_number_unsigned(),
                w, ": expected an object with an integer 'max_length'");
    Truncation tr;
    tr.max_length = t["max_length"].get<size_t>();
    tr.left = t.value("direction", std::string("Right")) == "Left";
    impl->truncation = tr;
  }
  if (const json& p = field("padding"); !p.is_null()) {
    const std::string w = origin + ": padding";
    UNIME_CHECK(p.is_object(), w, ": expected an object");
    Padding pd;
    if (auto s = p.find("strategy"); s != p.end() && s->is_object() && s->contains("Fixed")) {
      UNIME_CHECK((*s)["Fixed"].is_number_unsigned(), w, ": strategy.Fixed must be an integer");
      pd.fixed = (*s)["Fixed"].get<size_t>();
    }
    pd.left = p.value("direction", std::string("Right")) == "Left";
    if (auto m = p.find("pad_to_multiple_of"); m != p.end() && m->is_number_unsigned())
      pd.multiple_of = m->get<size_t>();
    if (auto id = p.find("pad_id"); id != p.end() && id->is_number_integer())
      pd.pad_id = id->get<int32_t>();
    impl->padding = pd;
  }

  if (const json& added = field("added_tokens"); !added.is_null()) {
    UNIME_CHECK(added.is_array(), origin, ": 'added_tokens' must be a list");
    for (size_t i = 0; i < added.size(); ++i) {
      const json& a = added[i];
      const std::string w = str(origin, ": added_tokens[", i, "]");
      UNIME_CHECK(a.is_object() && a.contains("content") && a["content"].is_string(), w,
                  ": expected an object with a string 'content'");
      AddedToken t;
      t.content = a["content"].get<std::string>();
      t.single_word = flag(a, "single_word", false, w);
      t.lstrip = flag(a, "lstrip", false, w);
      t.rstrip = flag(a, "rstrip", false, w);
      t.special = flag(a, "special", false, w);
      t.normalized = flag(a, "normalized", !t.special, w);
      impl->add_token(t);
    }
  }
  impl->build_tries();

  int64_t max_id = impl->model->max_id();
  for (const auto& [id, t] : impl->added_r) max_id = std::max<int64_t>(max_id, id);
  impl->n_vocab = max_id + 1;

  if (!tokenizer_config_json.empty()) {
    const std::string corigin = origin + " (tokenizer_config.json)";
    const json c = parse_json(tokenizer_config_json, corigin);
    UNIME_CHECK(c.is_object(), corigin, ": expected a JSON object");
    auto token_name = [&](const char* key) -> std::optional<std::string> {
      auto it = c.find(key);
      if (it == c.end() || it->is_null()) return std::nullopt;
      if (it->is_string()) return it->get<std::string>();
      if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
        return (*it)["content"].get<std::string>();
      throw Error(str(corigin, ": '", key, "' must be a string or {\"content\": ...}, got ",
                      it->dump()));
    };
    auto resolve = [&](const char* key) -> std::optional<int32_t> {
      auto name = token_name(key);
      return name ? impl->token_to_id(*name) : std::nullopt;
    };
    impl->bos = resolve("bos_token");
    impl->eos = resolve("eos_token");
    impl->pad = resolve("pad_token");

    // transformers' LlamaTokenizerFast, CodeLlamaTokenizerFast and GemmaTokenizerFast replace
    // tokenizer.json's post-processor in __init__ (update_post_processor) by a TemplateProcessing
    // built from add_bos_token (default true) and add_eos_token (default false); null counts as
    // false, as Python's truthiness does. Phi-3 / Phi-3.5-V use tokenizer_class LlamaTokenizer
    // (Phi-3-mini-4k-instruct sets add_bos_token false): transformers follows the config, not
    // tokenizer.json, and Phi3VProcessor tokenizes each prompt chunk with it.
    std::string cls;
    if (auto it = c.find("tokenizer_class"); it != c.end() && it->is_string()) cls = it->get<std::string>();
    if (cls.size() > 4 && cls.compare(cls.size() - 4, 4, "Fast") == 0) cls.resize(cls.size() - 4);
    if (cls == "LlamaTokenizer" || cls == "CodeLlamaTokenizer" || cls == "GemmaTokenizer") {
      auto truthy = [&](const char* key, bool def) {
        auto it = c.find(key);
        if (it == c.end()) return def;
        if (it->is_null()) return false;
        UNIME_CHECK(it->is_boolean(), corigin, ": '", key, "' must be true, false or null, got ", it->dump());
        return it->get<bool>();
      };
      const bool add_bos = truthy("add_bos_token", true), add_eos = truthy("add_eos_token", false);
      json single = json::array(), specials = json::object();
      auto special = [&](const char* key, const char* flag_name) {
        const auto name = token_name(key);
        UNIME_CHECK(name, corigin, ": ", flag_name, " is true but '", key, "' is not set");
        const auto id = impl->token_to_id(*name);
        UNIME_CHECK(id, corigin, ": ", key, " '", *name, "' is not in the vocabulary");
        single.push_back({{"SpecialToken", {{"id", *name}, {"type_id", 0}}}});
        specials[*name] = {{"id", *name}, {"ids", {*id}}, {"tokens", {*name}}};
      };
      if (add_bos) special("bos_token", "add_bos_token");
      single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
      if (add_eos) special("eos_token", "add_eos_token");
      const json post{{"type", "TemplateProcessing"}, {"single", single}, {"pair", json::array()},
                      {"special_tokens", specials}};
      impl->post = detail::make_post_processor(post, corigin + ": post-processor from add_bos_token / add_eos_token");
    }
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::load(const std::string& dir_or_file) {
  namespace fs = std::filesystem;
  fs::path p(dir_or_file);
  std::error_code ec;
  UNIME_CHECK(fs::exists(p, ec), dir_or_file, ": no such file or directory");
  fs::path file = fs::is_directory(p, ec) ? p / "tokenizer.json" : p;
  UNIME_CHECK(fs::is_regular_file(file, ec), file.string(),
              ": not found (expected a tokenizer.json or a directory holding one)");
  const fs::path config = file.parent_path() / "tokenizer_config.json";
  std::string config_text;
  if (fs::is_regular_file(config, ec)) config_text = read_file(config);
  return from_json(read_file(file), config_text, file.string());
}

// ---- queries ----

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          bool add_special_tokens) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  const size_t hw = std::max(1u, std::thread::hardware_concurrency());
  const size_t n_threads = std::min(hw, std::max<size_t>(1, texts.size() / 64));
  if (n_threads <= 1) {
    for (size_t i = 0; i < texts.size(); ++i) out[i] = impl_->encode(texts[i], add_special_tokens);
  } else {
    std::atomic<size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mu;
    auto work = [&] {
      try {
        for (size_t i; (i = next.fetch_add(16)) < texts.size();)
          for (size_t k = i; k < std::min(i + 16, texts.size()); ++k)
            out[k] = impl_->encode(texts[k], add_special_tokens);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
        next = texts.size();
      }
    };
    std::vector<std::thread> pool;
    for (size_t t = 1; t < n_threads; ++t) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
  }
  if (impl_->padding) {
    size_t longest = 0;
    for (const auto& ids : out) longest = std::max(longest, ids.size());
    const size_t target = impl_->padding->fixed ? *impl_->padding->fixed : longest;
    for (auto& ids : out) impl_->pad_to(ids, target);
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* tok = nullptr;
    if (auto it = impl_->added_r.find(id); it != impl_->added_r.end())
      tok = &it->second.content;
    else
      tok = impl_->model->id_to_token(id);
    if (!tok) continue;  // unknown ids are skipped, as the reference does
    if (skip_special_tokens && impl_->special_set.count(*tok)) continue;
    tokens.push_back(*tok);
  }
  if (!impl_->decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out.push_back(' ');
      out += tokens[i];
    }
    return out;
  }
  impl_->decoder->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  return impl_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (auto it = impl_->added_r.find(id); it != impl_->added_r.end()) return it->second.content;
  if (const std::string* t = impl_->model->id_to_token(id)) return *t;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_r.find(id);
  return it != impl_->added_r.end() && impl_->special_set.count(it->second.content) > 0;
}

int64_t Tokenizer::vocab_size() const { return impl_->n_vocab; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<int32_t> Tokenizer::pad_id() const { return impl_->pad; }
const std::string& Tokenizer::origin() const { return impl_->origin; }

}  // namespace unime::text
