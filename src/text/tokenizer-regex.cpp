// Oniguruma wrapper for tokenizer Split/Replace patterns (see tokenizer-regex.h).
#include "text/tokenizer-regex.h"

#include <oniguruma.h>

#include <memory>
#include <mutex>

#include "core/error.h"

namespace unime::text::detail {

namespace {

void init_onig() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

struct RegionDeleter {
  void operator()(OnigRegion* r) const { onig_region_free(r, 1); }
};

OnigRegion* thread_region() {
  thread_local std::unique_ptr<OnigRegion, RegionDeleter> region(onig_region_new());
  return region.get();
}

std::string onig_message(int code, OnigErrorInfo* info) {
  OnigUChar buf[ONIG_MAX_ERROR_MESSAGE_LEN];
  if (info)
    onig_error_code_to_str(buf, code, info);
  else
    onig_error_code_to_str(buf, code);
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where) {
  init_onig();
  regex_t* re = nullptr;
  OnigErrorInfo info;
  const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
  const int r = onig_new(&re, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                         ONIG_SYNTAX_DEFAULT, &info);
  if (r != ONIG_NORMAL)
    throw Error(str(where, ": invalid regex '", pattern, "': ", onig_message(r, &info)));
  re_ = re;
}

Regex::~Regex() {
  if (re_) onig_free(static_cast<regex_t*>(re_));
}

void Regex::find_all(std::string_view text, std::vector<Span>& out) const {
  auto* re = static_cast<regex_t*>(re_);
  OnigRegion* region = thread_region();
  const auto* s = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* end = s + text.size();
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= text.size()) {
    onig_region_clear(region);
    const int r = onig_search(re, s, end, s + last_end, end, region, ONIG_OPTION_NONE);
    if (r == ONIG_MISMATCH) break;
    if (r < 0) throw Error(str("regex search failed: ", onig_message(r, nullptr)));
    const auto b = static_cast<size_t>(region->beg[0]);
    const auto e = static_cast<size_t>(region->end[0]);
    if (b == e && have_last && last_match_end == e) {
      // an empty match right after the previous one: step one character and search again
      if (last_end < text.size()) {
        const auto c = static_cast<unsigned char>(text[last_end]);
        last_end += c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      } else {
        last_end += 1;
      }
      continue;
    }
    last_end = e;
    have_last = true;
    last_match_end = e;
    out.emplace_back(b, e);
  }
}

std::string escape_regex(std::string_view literal) {
  std::string out;
  out.reserve(literal.size() * 2);
  for (char c : literal) {
    switch (c) {
      case '\\': case '.': case '+': case '*': case '?': case '(': case ')': case '|':
      case '[': case ']': case '{': case '}': case '^': case '$': case '#': case '&':
      case '-': case '~':
        out.push_back('\\');
        break;
      default:
        break;
    }
    out.push_back(c);
  }
  return out;
}

Pattern::Pattern(std::string literal_or_regex, bool is_regex, const std::string& where) {
  if (is_regex) {
    regex_ = std::make_shared<Regex>(literal_or_regex, where);
  } else if (literal_or_regex.empty()) {
    // an empty literal matches the empty string everywhere: keep the regex engine's behaviour
    regex_ = std::make_shared<Regex>(std::string(), where);
  } else {
    literal_ = std::move(literal_or_regex);
  }
}

void Pattern::find_all(std::string_view text, std::vector<Span>& out) const {
  if (regex_) {
    regex_->find_all(text, out);
    return;
  }
  // a non-empty literal: leftmost non-overlapping occurrences, as the regex engine finds them
  size_t pos = 0;
  while ((pos = text.find(literal_, pos)) != std::string_view::npos) {
    out.emplace_back(pos, pos + literal_.size());
    pos += literal_.size();
  }
}

}  // namespace unime::text::detail
