// Normalizers, pre-tokenizers, post-processors and decoders of tokenizer.json (see
// tokenizer-pipeline.h). Each class names the HF type it mirrors; the split behaviours follow
// tokenizers/src/tokenizer/normalizer.rs NormalizedString::split.
#include "text/tokenizer-pipeline.h"

#include <algorithm>
#include <array>
#include <map>
#include <optional>

#include "core/error.h"
#include "text/tokenizer-regex.h"
#include "text/tokenizer-unicode.h"

namespace unime::text::detail {

using nlohmann::json;

namespace {

// ---- JSON helpers ----

void expect_object(const json& j, const std::string& where) {
  UNIME_CHECK(j.is_object(), where, ": expected an object, got ", j.type_name());
}

std::string type_of(const json& j, const std::string& where) {
  expect_object(j, where);
  auto it = j.find("type");
  UNIME_CHECK(it != j.end() && it->is_string(), where, ": missing string field 'type'");
  return it->get<std::string>();
}

bool get_bool(const json& j, const char* key, bool def, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  UNIME_CHECK(it->is_boolean(), where, ": field '", key, "' must be a boolean, got ",
              it->type_name());
  return it->get<bool>();
}

std::string get_string(const json& j, const char* key, const std::string& where,
                       std::optional<std::string> def = std::nullopt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    UNIME_CHECK(def.has_value(), where, ": missing string field '", key, "'");
    return *def;
  }
  UNIME_CHECK(it->is_string(), where, ": field '", key, "' must be a string, got ",
              it->type_name());
  return it->get<std::string>();
}

int64_t get_int(const json& j, const char* key, int64_t def, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  UNIME_CHECK(it->is_number_integer(), where, ": field '", key, "' must be an integer, got ",
              it->type_name());
  return it->get<int64_t>();
}

const json& get_array(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  UNIME_CHECK(it != j.end() && it->is_array(), where, ": missing array field '", key, "'");
  return *it;
}

char32_t get_char(const json& j, const char* key, const std::string& where, const char* def) {
  const std::string s =
      get_string(j, key, where, def ? std::optional<std::string>(def) : std::nullopt);
  UNIME_CHECK(!s.empty() && find_invalid_utf8(s) == std::string::npos, where, ": field '", key,
              "' must be one character, got '", s, "'");
  size_t i = 0;
  const char32_t c = next_cp(s, i);
  UNIME_CHECK(i == s.size(), where, ": field '", key, "' must be one character, got '", s, "'");
  return c;
}

// {"String": s} | {"Regex": r}
Pattern get_pattern(const json& j, const std::string& where) {
  auto it = j.find("pattern");
  UNIME_CHECK(it != j.end() && it->is_object(), where,
              ": field 'pattern' must be {\"String\": ...} or {\"Regex\": ...}");
  if (auto s = it->find("String"); s != it->end() && s->is_string())
    return Pattern(s->get<std::string>(), false, where);
  if (auto r = it->find("Regex"); r != it->end() && r->is_string())
    return Pattern(r->get<std::string>(), true, where);
  throw Error(str(where, ": field 'pattern' must be {\"String\": ...} or {\"Regex\": ...}, got ",
                  it->dump()));
}

// ---- splitting (NormalizedString::split) ----

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior get_behavior(const json& j, const std::string& where, const char* def) {
  const std::string b = get_string(j, "behavior", where,
                                   def ? std::optional<std::string>(def) : std::nullopt);
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  throw Error(str(where, ": unknown split behavior '", b,
                  "' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or "
                  "Contiguous)"));
}

struct Seg {
  size_t b, e;
  bool match;
};

// segments covering text from the matches of a regex/literal (Pattern for &SysRegex)
void segments_from_matches(size_t len, const std::vector<Span>& matches, std::vector<Seg>& segs) {
  segs.clear();
  if (len == 0) {
    segs.push_back({0, 0, false});
    return;
  }
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (prev != s) segs.push_back({prev, s, false});
    segs.push_back({s, e, true});
    prev = e;
  }
  if (prev != len) segs.push_back({prev, len, false});
}

// segments from a character predicate: each matching character is its own match
template <class Pred>
void segments_from_chars(std::string_view text, Pred pred, std::vector<Seg>& segs) {
  segs.clear();
  if (text.empty()) {
    segs.push_back({0, 0, false});
    return;
  }
  size_t last = 0;
  for (size_t i = 0; i < text.size();) {
    const size_t b = i;
    const char32_t c = next_cp(text, i);
    if (pred(c)) {
      if (last < b) segs.push_back({last, b, false});
      segs.push_back({b, i, true});
      last = i;
    }
  }
  if (text.size() > last) segs.push_back({last, text.size(), false});
}

void apply_behavior(const std::vector<Seg>& segs, Behavior beh, std::vector<Span>& keep) {
  keep.clear();
  switch (beh) {
    case Behavior::Isolated:
      for (const auto& s : segs) keep.emplace_back(s.b, s.e);
      break;
    case Behavior::Removed:
      for (const auto& s : segs)
        if (!s.match) keep.emplace_back(s.b, s.e);
      break;
    case Behavior::Contiguous: {
      bool prev = false;
      for (const auto& s : segs) {
        if (s.match == prev && !keep.empty())
          keep.back().second = s.e;
        else
          keep.emplace_back(s.b, s.e);
        prev = s.match;
      }
      break;
    }
    case Behavior::MergedWithPrevious: {
      bool prev = false;
      for (const auto& s : segs) {
        if (s.match && !prev && !keep.empty())
          keep.back().second = s.e;
        else
          keep.emplace_back(s.b, s.e);
        prev = s.match;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool prev = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->match && !prev && !keep.empty())
          keep.back().first = it->b;
        else
          keep.emplace_back(it->b, it->e);
        prev = it->match;
      }
      std::reverse(keep.begin(), keep.end());
      break;
    }
  }
}

void emit_spans(const Piece& p, const std::vector<Span>& keep, std::vector<Piece>& out) {
  for (const auto& [b, e] : keep) {
    if (b == e) continue;  // PreTokenizedString::split drops empty splits
    out.push_back(Piece{p.text.substr(b, e - b), -1, p.at_start && b == 0});
  }
}

// Applies fn(piece, out) to every non-added piece.
template <class Fn>
void for_each_split(std::vector<Piece>& pieces, Fn fn) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  for (auto& p : pieces) {
    if (p.id >= 0)
      out.push_back(std::move(p));
    else
      fn(p, out);
  }
  pieces.swap(out);
}

// ---- byte level table (GPT-2 bytes_to_unicode) ----

struct ByteTables {
  std::array<std::string, 256> to_char;
  std::array<int16_t, 324> to_byte;  // code point -> byte, -1 when not a byte-level char
  ByteTables() {
    to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t c = printable ? char32_t(b) : char32_t(256 + n++);
      append_utf8(to_char[b], c);
      to_byte[c] = int16_t(b);
    }
  }
};

const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

std::string to_byte_level(std::string_view s) {
  const auto& t = byte_tables();
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char b : s) out += t.to_char[b];
  return out;
}

// =============================== normalizers ===============================

class UnicodeNorm : public Normalizer {  // NFC, NFD, NFKC, NFKD
 public:
  explicit UnicodeNorm(NormForm f) : form_(f) {}
  void normalize(std::string& s, bool&) const override { s = normalize_unicode(s, form_); }

 private:
  NormForm form_;
};

class Lowercase : public Normalizer {
 public:
  void normalize(std::string& s, bool&) const override {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) append_lowercase(out, next_cp(s, i));
    s.swap(out);
  }
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& s, bool& lead_moved) const override {
    size_t b = 0, e = s.size();
    if (left_) {
      while (b < e) {
        size_t i = b;
        if (!is_whitespace(next_cp(s, i))) break;
        b = i;
      }
    }
    if (right_) {
      while (e > b) {
        const size_t k = last_cp_start(std::string_view(s).substr(0, e));
        size_t i = k;
        if (!is_whitespace(next_cp(s, i))) break;
        e = k;
      }
    }
    if (b > 0 && b < e) lead_moved = true;
    s = s.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

class StripAccents : public Normalizer {
 public:
  void normalize(std::string& s, bool& lead_moved) const override {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      const size_t b = i;
      const char32_t c = next_cp(s, i);
      if (is_combining_mark(c)) {
        if (out.empty()) lead_moved = true;
        continue;
      }
      out.append(s, b, i - b);
    }
    s.swap(out);
  }
};

class Replace : public Normalizer {
 public:
  Replace(Pattern p, std::string content) : pattern_(std::move(p)), content_(std::move(content)) {}
  void normalize(std::string& s, bool& lead_moved) const override {
    if (pattern_.is_literal() && s.find(pattern_.literal()) == std::string::npos) return;
    std::vector<Span> m;
    pattern_.find_all(s, m);
    if (m.empty()) return;
    std::string out;
    out.reserve(s.size());
    size_t last = 0;
    for (const auto& [b, e] : m) {
      out.append(s, last, b - last);
      out += content_;
      last = e;
    }
    out.append(s, last, std::string::npos);
    // Where the first character of the result comes from (HF transform_range): a deletion at
    // the start exposes a later character; a replacement of 2+ characters aligns to its last
    // replaced character.
    const auto [b0, e0] = m.front();
    if (b0 == 0 && e0 > 0 && !out.empty()) {
      size_t n_chars = 0;
      for (size_t i = 0; i < e0 && n_chars < 2; ++n_chars) next_cp(s, i);
      if (content_.empty() || n_chars >= 2) lead_moved = true;
    }
    s.swap(out);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string p) : prepend_(std::move(p)) {}
  void normalize(std::string& s, bool&) const override {
    if (!s.empty()) s.insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ByteLevelNorm : public Normalizer {
 public:
  void normalize(std::string& s, bool&) const override { s = to_byte_level(s); }
};

// reference: normalizers/bert.rs
class BertNorm : public Normalizer {
 public:
  BertNorm(bool clean, bool chinese, bool strip, bool lower)
      : clean_(clean), chinese_(chinese), strip_(strip), lower_(lower) {}
  void normalize(std::string& s, bool& lead_moved) const override {
    std::string out;
    if (clean_) {
      out.reserve(s.size());
      for (size_t i = 0; i < s.size();) {
        const size_t b = i;
        const char32_t c = next_cp(s, i);
        if (c == 0 || c == 0xFFFD || is_control(c)) {
          if (out.empty()) lead_moved = true;
          continue;
        }
        if (c == '\t' || c == '\n' || c == '\r' || is_whitespace(c))
          out.push_back(' ');
        else
          out.append(s, b, i - b);
      }
      s.swap(out);
    }
    if (chinese_) {
      out.clear();
      for (size_t i = 0; i < s.size();) {
        const size_t b = i;
        const char32_t c = next_cp(s, i);
        if (is_chinese_char(c)) {
          out.push_back(' ');
          out.append(s, b, i - b);
          out.push_back(' ');
        } else {
          out.append(s, b, i - b);
        }
      }
      s.swap(out);
    }
    if (strip_) {  // NFD, then drop non-spacing marks (Mn only, unlike StripAccents)
      s = normalize_unicode(s, NormForm::NFD);
      out.clear();
      for (size_t i = 0; i < s.size();) {
        const size_t b = i;
        if (is_nonspacing_mark(next_cp(s, i))) {
          if (out.empty()) lead_moved = true;
          continue;
        }
        out.append(s, b, i - b);
      }
      s.swap(out);
    }
    if (lower_) Lowercase().normalize(s, lead_moved);
  }

 private:
  bool clean_, chinese_, strip_, lower_;
};

class NormSequence : public Normalizer {
 public:
  explicit NormSequence(std::vector<std::unique_ptr<Normalizer>> v) : v_(std::move(v)) {}
  void normalize(std::string& s, bool& lead_moved) const override {
    for (const auto& n : v_) n->normalize(s, lead_moved);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> v_;
};

// ============================= pre-tokenizers ==============================

class SplitPre : public PreTokenizer {
 public:
  SplitPre(Pattern p, Behavior b, bool invert) : pattern_(std::move(p)), beh_(b), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Span> m, keep;
    std::vector<Seg> segs;
    for_each_split(pieces, [&](const Piece& p, std::vector<Piece>& out) {
      m.clear();
      pattern_.find_all(p.text, m);
      segments_from_matches(p.text.size(), m, segs);
      if (invert_)
        for (auto& s : segs) s.match = !s.match;
      apply_behavior(segs, beh_, keep);
      emit_spans(p, keep, out);
    });
  }

 private:
  Pattern pattern_;
  Behavior beh_;
  bool invert_;
};

template <class Pred>
class CharSplitPre : public PreTokenizer {
 public:
  CharSplitPre(Pred pred, Behavior b) : pred_(pred), beh_(b) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Span> keep;
    std::vector<Seg> segs;
    for_each_split(pieces, [&](const Piece& p, std::vector<Piece>& out) {
      segments_from_chars(p.text, pred_, segs);
      apply_behavior(segs, beh_, keep);
      emit_spans(p, keep, out);
    });
  }

 private:
  Pred pred_;
  Behavior beh_;
};

template <class Pred>
std::unique_ptr<PreTokenizer> make_char_split(Pred pred, Behavior b) {
  return std::make_unique<CharSplitPre<Pred>>(pred, b);
}

// reference: pre_tokenizers/byte_level.rs (GPT-2 pattern)
const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPre : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex, const std::string& where)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<Regex>(kGpt2Pattern, where);
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Span> m, keep;
    std::vector<Seg> segs;
    for_each_split(pieces, [&](Piece& p, std::vector<Piece>& out) {
      if (add_prefix_space_ && p.text[0] != ' ') p.text = " " + p.text;
      if (!regex_) {
        out.push_back(Piece{to_byte_level(p.text), -1, p.at_start});
        return;
      }
      m.clear();
      regex_->find_all(p.text, m);
      segments_from_matches(p.text.size(), m, segs);
      apply_behavior(segs, Behavior::Isolated, keep);
      const size_t first = out.size();
      emit_spans(p, keep, out);
      for (size_t i = first; i < out.size(); ++i) out[i].text = to_byte_level(out[i].text);
    });
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

// reference: pre_tokenizers/metaspace.rs
enum class PrependScheme { Always, Never, First };

PrependScheme get_prepend_scheme(const json& j, const std::string& where) {
  if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
    const std::string s = get_string(j, "prepend_scheme", where);
    if (s == "always") return PrependScheme::Always;
    if (s == "never") return PrependScheme::Never;
    if (s == "first") return PrependScheme::First;
    throw Error(str(where, ": unknown prepend_scheme '", s, "' (expected always, never, first)"));
  }
  return get_bool(j, "add_prefix_space", true, where) ? PrependScheme::Always
                                                        : PrependScheme::Never;
}

class MetaspacePre : public PreTokenizer {
 public:
  MetaspacePre(char32_t rep, PrependScheme scheme, bool split)
      : rep_(rep), scheme_(scheme), split_(split) {
    append_utf8(rep_str_, rep);
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Span> keep;
    std::vector<Seg> segs;
    for_each_split(pieces, [&](Piece& p, std::vector<Piece>& out) {
      std::string t;
      t.reserve(p.text.size() + 8);
      for (char c : p.text) {
        if (c == ' ')
          t += rep_str_;
        else
          t.push_back(c);
      }
      const bool starts = t.compare(0, rep_str_.size(), rep_str_) == 0;
      if (!starts && (scheme_ == PrependScheme::Always ||
                      (scheme_ == PrependScheme::First && p.at_start)))
        t = rep_str_ + t;
      Piece q{std::move(t), -1, p.at_start};
      if (!split_) {
        out.push_back(std::move(q));
        return;
      }
      const char32_t rep = rep_;
      segments_from_chars(q.text, [rep](char32_t c) { return c == rep; }, segs);
      apply_behavior(segs, Behavior::MergedWithNext, keep);
      emit_spans(q, keep, out);
    });
  }

 private:
  char32_t rep_;
  std::string rep_str_;
  PrependScheme scheme_;
  bool split_;
};

// reference: pre_tokenizers/whitespace.rs (\w+|[^\w\s]+)
class WhitespacePre : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for_each_split(pieces, [&](const Piece& p, std::vector<Piece>& out) {
      const std::string& s = p.text;
      size_t i = 0;
      while (i < s.size()) {
        size_t j = i;
        const char32_t c = next_cp(s, j);
        if (is_whitespace(c)) {
          i = j;
          continue;
        }
        const bool word = is_word_char(c);
        size_t e = j;
        while (e < s.size()) {
          size_t k = e;
          const char32_t d = next_cp(s, k);
          if (word ? !is_word_char(d) : (is_word_char(d) || is_whitespace(d))) break;
          e = k;
        }
        out.push_back(Piece{s.substr(i, e - i), -1, p.at_start && i == 0});
        i = e;
      }
    });
  }
};

class PreSequence : public PreTokenizer {
 public:
  explicit PreSequence(std::vector<std::unique_ptr<PreTokenizer>> v) : v_(std::move(v)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : v_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> v_;
};

// ============================ post-processors =============================

// TemplateProcessing, RobertaProcessing, BertProcessing: prefix ids + A + suffix ids.
class TemplatePost : public PostProcessor {
 public:
  TemplatePost(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }
  size_t added_tokens() const override { return before_.size() + after_.size(); }

 private:
  std::vector<int32_t> before_, after_;
};

class NoopPost : public PostProcessor {  // ByteLevel: only trims offsets
 public:
  void process(std::vector<int32_t>&, bool) const override {}
  size_t added_tokens() const override { return 0; }
};

class PostSequence : public PostProcessor {
 public:
  explicit PostSequence(std::vector<std::unique_ptr<PostProcessor>> v) : v_(std::move(v)) {}
  void process(std::vector<int32_t>& ids, bool add) const override {
    for (const auto& p : v_) p->process(ids, add);
  }
  size_t added_tokens() const override {
    size_t n = 0;
    for (const auto& p : v_) n += p->added_tokens();
    return n;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> v_;
};

std::unique_ptr<PostProcessor> make_template(const json& j, const std::string& where) {
  // special_tokens: {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
  std::map<std::string, std::vector<int32_t>> specials;
  if (auto it = j.find("special_tokens"); it != j.end() && !it->is_null()) {
    UNIME_CHECK(it->is_object(), where, ": 'special_tokens' must be an object");
    for (const auto& [name, v] : it->items()) {
      const auto& ids = get_array(v, "ids", where + ".special_tokens." + name);
      std::vector<int32_t> out;
      for (const auto& id : ids) {
        UNIME_CHECK(id.is_number_integer(), where, ".special_tokens.", name,
                    ": ids must be integers");
        out.push_back(id.get<int32_t>());
      }
      specials[name] = std::move(out);
    }
  }
  auto it = j.find("single");
  UNIME_CHECK(it != j.end(), where, ": missing field 'single'");
  // pieces: [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", ...}}] or
  // the string form "<s> $A"
  std::vector<std::pair<bool, std::string>> pieces;  // (is_sequence, special name)
  auto add_string_piece = [&](std::string s) {
    if (!s.empty() && s[0] == '$') {
      pieces.emplace_back(true, "");
      return;
    }
    if (auto c = s.rfind(':'); c != std::string::npos && c + 1 < s.size() &&
                               std::all_of(s.begin() + long(c) + 1, s.end(), ::isdigit))
      s = s.substr(0, c);
    pieces.emplace_back(false, s);
  };
  if (it->is_string()) {
    const std::string s = it->get<std::string>();
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && s[i] == ' ') ++i;
      size_t e = i;
      while (e < s.size() && s[e] != ' ') ++e;
      if (e > i) add_string_piece(s.substr(i, e - i));
      i = e;
    }
  } else {
    UNIME_CHECK(it->is_array(), where, ": 'single' must be a list or a string");
    for (const auto& p : *it) {
      if (p.is_string()) {
        add_string_piece(p.get<std::string>());
      } else if (p.is_object() && p.contains("Sequence")) {
        pieces.emplace_back(true, "");
      } else if (p.is_object() && p.contains("SpecialToken")) {
        pieces.emplace_back(false, get_string(p["SpecialToken"], "id", where + ".single"));
      } else {
        throw Error(str(where, ": unknown template piece ", p.dump()));
      }
    }
  }
  std::vector<int32_t> before, after;
  bool seen_seq = false;
  for (const auto& [is_seq, name] : pieces) {
    if (is_seq) {
      UNIME_CHECK(!seen_seq, where, ": 'single' has two sequence pieces");
      seen_seq = true;
      continue;
    }
    auto sp = specials.find(name);
    UNIME_CHECK(sp != specials.end(), where, ": template uses special token '", name,
                "' that is missing from 'special_tokens'");
    auto& dst = seen_seq ? after : before;
    dst.insert(dst.end(), sp->second.begin(), sp->second.end());
  }
  UNIME_CHECK(seen_seq, where, ": 'single' has no $A sequence piece");
  return std::make_unique<TemplatePost>(std::move(before), std::move(after));
}

int32_t token_pair_id(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  UNIME_CHECK(it != j.end() && it->is_array() && it->size() == 2 && (*it)[1].is_number_integer(),
              where, ": field '", key, "' must be [token, id]");
  return (*it)[1].get<int32_t>();
}

// ================================ decoders ================================

class ByteLevelDec : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    const auto& t = byte_tables();
    std::string bytes, tmp;
    for (const auto& tok : tokens) {
      tmp.clear();
      bool ok = true;
      for (size_t i = 0; i < tok.size();) {
        const char32_t c = next_cp(tok, i);
        if (c >= t.to_byte.size() || t.to_byte[c] < 0) {
          ok = false;
          break;
        }
        tmp.push_back(char(t.to_byte[c]));
      }
      bytes += ok ? tmp : tok;
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class MetaspaceDec : public Decoder {
 public:
  MetaspaceDec(char32_t rep, PrependScheme scheme) : rep_(rep), scheme_(scheme) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      std::string out;
      const std::string& tok = tokens[k];
      for (size_t i = 0; i < tok.size();) {
        const size_t b = i;
        const char32_t c = next_cp(tok, i);
        if (c == rep_) {
          if (!(k == 0 && scheme_ != PrependScheme::Never)) out.push_back(' ');
        } else {
          out.append(tok, b, i - b);
        }
      }
      tokens[k] = std::move(out);
    }
  }

 private:
  char32_t rep_;
  PrependScheme scheme_;
};

class ReplaceDec : public Decoder {
 public:
  ReplaceDec(Pattern p, std::string content) : pattern_(std::move(p)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<Span> m;
    for (auto& tok : tokens) {
      m.clear();
      pattern_.find_all(tok, m);
      if (m.empty()) continue;
      std::string out;
      size_t last = 0;
      for (const auto& [b, e] : m) {
        out.append(tok, last, b - last);
        out += content_;
        last = e;
      }
      out.append(tok, last, std::string::npos);
      tok.swap(out);
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
};

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "<0xAB>" -> byte (u8::from_str_radix on the two middle characters, '+' sign allowed)
int byte_of_token(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  const int lo = hex_digit(t[4]);
  if (lo < 0) return -1;
  if (t[3] == '+') return lo;
  const int hi = hex_digit(t[3]);
  return hi < 0 ? -1 : hi * 16 + lo;
}

class ByteFallbackDec : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    bool have = false;
    auto flush = [&] {
      if (!have) return;
      if (find_invalid_utf8(pending) == std::string::npos) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
      have = false;
    };
    for (auto& t : tokens) {
      const int b = byte_of_token(t);
      if (b >= 0) {
        pending.push_back(char(b));
        have = true;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class FuseDec : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDec : public Decoder {
 public:
  StripDec(char32_t c, size_t start, size_t stop) : c_(c), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& tok : tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;  // (offset, char)
      for (size_t i = 0; i < tok.size();) {
        const size_t b = i;
        chars.emplace_back(b, next_cp(tok, i));
      }
      size_t start_cut = 0;
      for (size_t i = 0; i < std::min(start_, chars.size()); ++i) {
        if (chars[i].second != c_) break;
        start_cut = i + 1;
      }
      size_t stop_cut = chars.size();
      for (size_t i = 0; i < std::min(stop_, chars.size()); ++i) {
        const size_t idx = chars.size() - i - 1;
        if (chars[idx].second != c_) break;
        stop_cut = idx;
      }
      if (stop_cut <= start_cut) {
        tok.clear();
        continue;
      }
      const size_t b = start_cut < chars.size() ? chars[start_cut].first : tok.size();
      const size_t e = stop_cut < chars.size() ? chars[stop_cut].first : tok.size();
      tok = tok.substr(b, e - b);
    }
  }

 private:
  char32_t c_;
  size_t start_, stop_;
};

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t last = 0, pos;
  while ((pos = s.find(from, last)) != std::string::npos) {
    out.append(s, last, pos - last);
    out += to;
    last = pos + from.size();
  }
  out.append(s, last, std::string::npos);
  s.swap(out);
}

class BpeDec : public Decoder {  // BPEDecoder: end-of-word suffix -> space
 public:
  explicit BpeDec(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i)
      replace_all(tokens[i], suffix_, i + 1 == tokens.size() ? "" : " ");
  }

 private:
  std::string suffix_;
};

class WordPieceDec : public Decoder {
 public:
  WordPieceDec(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      auto& t = tokens[i];
      if (i != 0) {
        if (t.compare(0, prefix_.size(), prefix_) == 0)
          t.erase(0, prefix_.size());  // an empty prefix always matches and removes nothing
        else
          t = " " + t;
      }
      if (cleanup_) {
        // reference: decoders/wordpiece.rs cleanup
        static const std::pair<const char*, const char*> kRules[] = {
            {" .", "."},   {" ?", "?"},     {" !", "!"},     {" ,", ","},
            {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},   {" do not", " don't"},
            {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
        for (const auto& [a, b] : kRules) replace_all(t, a, b);
      }
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class DecSequence : public Decoder {
 public:
  explicit DecSequence(std::vector<std::unique_ptr<Decoder>> v) : v_(std::move(v)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : v_) d->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> v_;
};

}  // namespace

const std::string& byte_level_char(unsigned char b) { return byte_tables().to_char[b]; }

// =============================== builders ================================

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string t = type_of(j, where);
  if (t == "NFC") return std::make_unique<UnicodeNorm>(NormForm::NFC);
  if (t == "NFD") return std::make_unique<UnicodeNorm>(NormForm::NFD);
  if (t == "NFKC") return std::make_unique<UnicodeNorm>(NormForm::NFKC);
  if (t == "NFKD") return std::make_unique<UnicodeNorm>(NormForm::NFKD);
  if (t == "Lowercase") return std::make_unique<Lowercase>();
  if (t == "StripAccents") return std::make_unique<StripAccents>();
  if (t == "ByteLevel") return std::make_unique<ByteLevelNorm>();
  if (t == "Strip")
    return std::make_unique<Strip>(get_bool(j, "strip_left", true, where),
                                   get_bool(j, "strip_right", true, where));
  if (t == "Replace")
    return std::make_unique<Replace>(get_pattern(j, where), get_string(j, "content", where));
  if (t == "Prepend") return std::make_unique<Prepend>(get_string(j, "prepend", where));
  if (t == "BertNormalizer") {
    const bool lower = get_bool(j, "lowercase", true, where);
    bool strip = lower;
    if (auto it = j.find("strip_accents"); it != j.end() && !it->is_null())
      strip = get_bool(j, "strip_accents", lower, where);
    return std::make_unique<BertNorm>(get_bool(j, "clean_text", true, where),
                                      get_bool(j, "handle_chinese_chars", true, where), strip,
                                      lower);
  }
  if (t == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> v;
    const auto& arr = get_array(j, "normalizers", where);
    for (size_t i = 0; i < arr.size(); ++i)
      if (auto n = make_normalizer(arr[i], str(where, ".normalizers[", i, "]"))) v.push_back(std::move(n));
    return std::make_unique<NormSequence>(std::move(v));
  }
  throw Error(str(where, ": unsupported normalizer type '", t,
                  "' (supported: NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, "
                  "Prepend, BertNormalizer, ByteLevel, Sequence)"));
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string t = type_of(j, where);
  if (t == "Split")
    return std::make_unique<SplitPre>(get_pattern(j, where), get_behavior(j, where, nullptr),
                                      get_bool(j, "invert", false, where));
  if (t == "ByteLevel")
    return std::make_unique<ByteLevelPre>(get_bool(j, "add_prefix_space", true, where),
                                          get_bool(j, "use_regex", true, where), where);
  if (t == "Metaspace")
    return std::make_unique<MetaspacePre>(get_char(j, "replacement", where, "\xE2\x96\x81"),
                                          get_prepend_scheme(j, where),
                                          get_bool(j, "split", true, where));
  if (t == "Digits") {
    const bool individual = get_bool(j, "individual_digits", false, where);
    return make_char_split([](char32_t c) { return is_numeric(c); },
                           individual ? Behavior::Isolated : Behavior::Contiguous);
  }
  if (t == "Whitespace") return std::make_unique<WhitespacePre>();
  if (t == "WhitespaceSplit")
    return make_char_split([](char32_t c) { return is_whitespace(c); }, Behavior::Removed);
  if (t == "Punctuation")
    return make_char_split([](char32_t c) { return is_punctuation(c); },
                           get_behavior(j, where, "Isolated"));
  if (t == "CharDelimiterSplit") {
    const char32_t d = get_char(j, "delimiter", where, nullptr);
    return make_char_split([d](char32_t c) { return c == d; }, Behavior::Removed);
  }
  if (t == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> v;
    v.push_back(make_char_split([](char32_t c) { return is_whitespace(c); }, Behavior::Removed));
    v.push_back(make_char_split([](char32_t c) { return is_punctuation(c); }, Behavior::Isolated));
    return std::make_unique<PreSequence>(std::move(v));
  }
  if (t == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> v;
    const auto& arr = get_array(j, "pretokenizers", where);
    for (size_t i = 0; i < arr.size(); ++i)
      if (auto p = make_pre_tokenizer(arr[i], str(where, ".pretokenizers[", i, "]")))
        v.push_back(std::move(p));
    return std::make_unique<PreSequence>(std::move(v));
  }
  throw Error(str(where, ": unsupported pre_tokenizer type '", t,
                  "' (supported: Split, ByteLevel, Metaspace, Digits, Whitespace, "
                  "WhitespaceSplit, Punctuation, CharDelimiterSplit, BertPreTokenizer, Sequence)"));
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string t = type_of(j, where);
  if (t == "TemplateProcessing") return make_template(j, where);
  if (t == "ByteLevel") return std::make_unique<NoopPost>();
  if (t == "RobertaProcessing" || t == "BertProcessing")
    return std::make_unique<TemplatePost>(std::vector<int32_t>{token_pair_id(j, "cls", where)},
                                          std::vector<int32_t>{token_pair_id(j, "sep", where)});
  if (t == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> v;
    const auto& arr = get_array(j, "processors", where);
    for (size_t i = 0; i < arr.size(); ++i)
      if (auto p = make_post_processor(arr[i], str(where, ".processors[", i, "]")))
        v.push_back(std::move(p));
    return std::make_unique<PostSequence>(std::move(v));
  }
  throw Error(str(where, ": unsupported post_processor type '", t,
                  "' (supported: TemplateProcessing, ByteLevel, RobertaProcessing, "
                  "BertProcessing, Sequence)"));
}

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string t = type_of(j, where);
  if (t == "ByteLevel") return std::make_unique<ByteLevelDec>();
  if (t == "Metaspace")
    return std::make_unique<MetaspaceDec>(get_char(j, "replacement", where, "\xE2\x96\x81"),
                                          get_prepend_scheme(j, where));
  if (t == "Replace")
    return std::make_unique<ReplaceDec>(get_pattern(j, where), get_string(j, "content", where));
  if (t == "ByteFallback") return std::make_unique<ByteFallbackDec>();
  if (t == "Fuse") return std::make_unique<FuseDec>();
  if (t == "Strip") {
    const int64_t start = get_int(j, "start", 0, where), stop = get_int(j, "stop", 0, where);
    UNIME_CHECK(start >= 0 && stop >= 0, where, ": 'start' and 'stop' must be >= 0");
    return std::make_unique<StripDec>(get_char(j, "content", where, " "), size_t(start),
                                      size_t(stop));
  }
  if (t == "BPEDecoder") return std::make_unique<BpeDec>(get_string(j, "suffix", where, "</w>"));
  if (t == "WordPiece")
    return std::make_unique<WordPieceDec>(get_string(j, "prefix", where, "##"),
                                          get_bool(j, "cleanup", true, where));
  if (t == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> v;
    const auto& arr = get_array(j, "decoders", where);
    for (size_t i = 0; i < arr.size(); ++i)
      if (auto d = make_decoder(arr[i], str(where, ".decoders[", i, "]"))) v.push_back(std::move(d));
    return std::make_unique<DecSequence>(std::move(v));
  }
  throw Error(str(where, ": unsupported decoder type '", t,
                  "' (supported: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, "
                  "BPEDecoder, WordPiece, Sequence)"));
}

}  // namespace unime::text::detail
