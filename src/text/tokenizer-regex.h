// Oniguruma regexes with the matching semantics of the Hugging Face tokenizers library
// (`SysRegex`, built on the onig crate): Ruby syntax, UTF-8, no options; find_iter skips an
// empty match that touches the previous match's end.
// reference: tokenizers/src/utils/onig.rs, onig crate FindMatches
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace unime::text::detail {

using Span = std::pair<size_t, size_t>;  // [begin, end) byte offsets

class Regex {
 public:
  /// Compiles pattern; throws unime::Error naming `where` when Oniguruma rejects it.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  /// Appends every match of text to out, left to right (thread-safe).
  void find_all(std::string_view text, std::vector<Span>& out) const;

 private:
  void* re_ = nullptr;  // regex_t*
};

/// Escapes a literal for use in a pattern (Rust regex::escape).
std::string escape_regex(std::string_view literal);

/// A Split/Replace pattern: {"String": s} searches s literally, {"Regex": r} uses Oniguruma.
class Pattern {
 public:
  Pattern() = default;
  Pattern(std::string literal_or_regex, bool is_regex, const std::string& where);
  void find_all(std::string_view text, std::vector<Span>& out) const;
  bool is_literal() const { return !regex_; }
  const std::string& literal() const { return literal_; }

 private:
  std::string literal_;
  std::shared_ptr<Regex> regex_;
};

}  // namespace unime::text::detail
