// Base64 (RFC 4648 section 4, standard alphabet, '=' padding) for the embeddings server:
// `encoding_format: "base64"` responses (little-endian float32 bytes) and `data:` image URLs.
// Written here because no Debian header-only base64 fits (see docs/README-dev-serve.md).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace unime::serve {

/// Bytes -> base64 text with '=' padding.
std::string base64_encode(std::string_view bytes);

/// Base64 text -> bytes; nullopt on a character outside the alphabet, a bad length or bad
/// padding. Padding may be omitted (as browsers' data URLs sometimes do); whitespace is refused.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace unime::serve
