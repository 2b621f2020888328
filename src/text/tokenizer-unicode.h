// UTF-8 and Unicode helpers for the tokenizer: strict validation, decoding, the character
// classes the Hugging Face tokenizers library takes from Rust's `char` (is_whitespace,
// is_numeric, is_alphanumeric, ...), lossy repair (Rust String::from_utf8_lossy) and the
// utf8proc-backed normalisation forms.
// reference: https://doc.rust-lang.org/std/primitive.char.html, https://juliastrings.github.io/utf8proc/
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace unime::text::detail {

/// Byte offset of the first invalid UTF-8 sequence in s (overlong forms, surrogates and code
/// points past U+10FFFF are invalid, as in Rust's str), or npos when s is valid.
size_t find_invalid_utf8(std::string_view s);

/// Length in bytes of the UTF-8 sequence that starts with byte b (1 for stray bytes).
inline size_t utf8_len(unsigned char b) {
  return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

/// Decodes the code point at s[i] (s must be valid UTF-8); advances i past it.
inline char32_t next_cp(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + i;
  if (p[0] < 0x80) {
    i += 1;
    return p[0];
  }
  if (p[0] < 0xE0) {
    i += 2;
    return (char32_t(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
  }
  if (p[0] < 0xF0) {
    i += 3;
    return (char32_t(p[0] & 0x0F) << 12) | (char32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
  }
  i += 4;
  return (char32_t(p[0] & 0x07) << 18) | (char32_t(p[1] & 0x3F) << 12) |
         (char32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

/// Appends the UTF-8 encoding of c to out.
void append_utf8(std::string& out, char32_t c);

/// Offset of the last code point of s (s valid, non-empty).
size_t last_cp_start(std::string_view s);

// ---- character classes (Rust `char` semantics) ----
bool is_whitespace(char32_t c);    // White_Space property
bool is_numeric(char32_t c);       // general category Nd | Nl | No
bool is_alphabetic(char32_t c);    // approximated by L* | Nl | Mn/Mc marks that are Alphabetic
bool is_alphanumeric(char32_t c);  // is_alphabetic || is_numeric
bool is_word_char(char32_t c);     // regex \w: Alphabetic | M* | Nd | Pc | Join_Control
bool is_punctuation(char32_t c);   // ASCII punctuation or general category P*
bool is_control(char32_t c);       // BERT's _is_control (Cc/Cf/Cn/Co except \t \n \r)
bool is_combining_mark(char32_t c);  // general category Mn | Mc | Me
bool is_nonspacing_mark(char32_t c);  // general category Mn
bool is_chinese_char(char32_t c);    // the CJK blocks BERT pads with spaces

/// Rust char::to_lowercase, appended to out (U+0130 lowers to two code points).
void append_lowercase(std::string& out, char32_t c);

/// Unicode normalisation forms (s must be valid UTF-8).
enum class NormForm { NFC, NFD, NFKC, NFKD };
std::string normalize_unicode(std::string_view s, NormForm form);

/// Rust String::from_utf8_lossy: each maximal ill-formed subsequence becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

}  // namespace unime::text::detail
