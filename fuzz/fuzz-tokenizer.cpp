// libFuzzer target for the tokenizer: arbitrary bytes as input text (for a byte-level and a
// Metaspace/byte-fallback tokenizer built here), and as tokenizer.json content. Bad input must
// end in unime::Error, never a crash; accepted text must decode without crashing.
// Build: make fuzz; run: build-fuzz/bin/fuzz-tokenizer -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "text/tokenizer.h"

namespace {

const char* kByteLevel = R"({"version": "1.0",
  "added_tokens": [{"id": 9, "content": "<|im_start|>", "single_word": false, "lstrip": true,
                    "rstrip": true, "normalized": false, "special": true},
                   {"id": 10, "content": "ab", "single_word": true, "lstrip": false,
                    "rstrip": false, "normalized": true, "special": false}],
  "normalizer": {"type": "NFC"},
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]},
  "post_processor": {"type": "ByteLevel"},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "Ġa": 5, "abc": 6,
                                     "Ã": 7, "©": 8},
            "merges": ["a b", "Ġ a", "ab c"]}})";

const char* kMetaspace = R"({"version": "1.0",
  "added_tokens": [{"id": 0, "content": "<unk>", "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true},
                   {"id": 1, "content": "<s>", "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true}],
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                 {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                    "split": true},
  "post_processor": {"type": "TemplateProcessing", "single": ["<s>", "$A"],
                     "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
    {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 1}]},
  "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
            "vocab": {"<unk>": 0, "<s>": 1, "<0x41>": 2, "<0xC3>": 3, "<0xA9>": 4, "▁": 5,
                      "a": 6, "▁a": 7, "b": 8},
            "merges": [["▁", "a"]]}})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto byte_level = unime::text::Tokenizer::from_json(kByteLevel);
  static const auto metaspace = unime::text::Tokenizer::from_json(kMetaspace);
  if (size == 0) return 0;
  const std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (data[0] % 3 == 2) {  // the bytes as a tokenizer.json
      const auto tok = unime::text::Tokenizer::from_json(input, "", "fuzz.json");
      const auto ids = tok.encode("Hello, world! <s> 123 \xE4\xB8\xAD");
      (void)tok.decode(ids, true);
    } else {
      const auto& tok = data[0] % 3 == 0 ? byte_level : metaspace;
      const auto ids = tok.encode(input, data[0] & 4);
      const std::string text = tok.decode(ids, data[0] & 8);
      (void)tok.decode(std::vector<int32_t>(ids.rbegin(), ids.rend()), false);
    }
  } catch (const unime::Error&) {
  }
  return 0;
}
