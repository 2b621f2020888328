// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE", ...}): vocab, ranked
// merges, unk/fuse_unk, byte_fallback (<0xXX> pieces), continuing_subword_prefix,
// end_of_word_suffix and ignore_merges, with the exact merge order of the reference.
// reference: tokenizers/src/models/bpe/{model.rs,word.rs}
// Legend: a "word" is one pre-token (a piece after normalisation and pre-tokenisation).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace unime::text::detail {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::optional<std::string> continuing_subword_prefix;  // "" behaves as absent
  std::optional<std::string> end_of_word_suffix;         // "" behaves as absent
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

class Bpe {
 public:
  /// merges in rank order; throws unime::Error (prefixed by `where`) on a merge whose parts or
  /// result are not in the vocab, or an unk_token that is not.
  Bpe(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges,
      BpeOptions options, const std::string& where);

  /// Appends the ids of one word (cached per thread for short words).
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;
  /// Same without the cache; use_heap forces the O(n log n) merge loop used for long words
  /// (tests check it against the quadratic one used for short words).
  void tokenize_uncached(std::string_view word, std::vector<int32_t>& out, bool use_heap) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;
  size_t size() const { return vocab_.size(); }  // HF BPE::get_vocab_size (entries)
  int32_t max_id() const { return max_id_; }

 private:
  struct MergeEntry {
    uint64_t key;  // (left id << 32) | right id; kEmpty when the slot is free
    uint32_t rank;
    int32_t new_id;
  };
  static constexpr uint64_t kEmpty = ~uint64_t(0);

  const MergeEntry* find_merge(int32_t a, int32_t b) const;
  void insert_merge(int32_t a, int32_t b, uint32_t rank, int32_t new_id);
  void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const;
  void merge_small(std::vector<int32_t>& ids) const;
  void merge_heap(std::vector<int32_t>& ids) const;
  int32_t char_id(std::string_view ch, char32_t cp) const;

  Vocab vocab_;
  std::unordered_map<int32_t, std::string> vocab_r_;
  std::vector<MergeEntry> merges_;  // open addressing, power-of-two size
  uint64_t merge_mask_ = 0;
  BpeOptions opt_;
  std::optional<int32_t> unk_id_;
  int32_t byte_ids_[256];         // id of "<0xXX>" or -1
  std::vector<int32_t> bmp_ids_;  // id of each single BMP character token, or -1
  int32_t max_id_ = -1;
  uint64_t uid_;                  // identifies this model in the per-thread word caches
};

}  // namespace unime::text::detail
