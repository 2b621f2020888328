// Training a byte-level BPE tokenizer (GPT-2 / Llama-3 style) on a text corpus and writing it as a
// Hugging Face `tokenizer.json` + `tokenizer_config.json` that both the Rust `tokenizers` library
// and text/tokenizer.h load with identical ids. The demo uses it to give its from-scratch model a
// vocabulary fitted to the world's language.
// reference: tokenizers/src/models/bpe/trainer.rs (BpeTrainer: word counts after the ByteLevel
// pre-tokenizer, the 256-symbol byte alphabet, most frequent pair first, ties to the smaller
// pair of ids, merges stop at vocab_size or when no pair reaches min_frequency).
//
//   unime::text::BpeTrainOptions opt;          // vocab 1024, specials <unk> <s> </s> <pad> <image>
//   auto t = unime::text::train_bpe(lines, opt);
//   unime::io::write_file_atomic("dir/tokenizer.json", t.tokenizer_json);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace unime::text {

struct BpeTrainOptions {
  int64_t vocab_size = 1024;  ///< specials + 256 byte symbols + merges, at most
  int64_t min_frequency = 2;  ///< a pair must occur this often (word counts) to be merged
  /// Added tokens, ids 0.. in this order. bos/eos/pad/unk name entries of this list ("" = none).
  std::vector<std::string> special_tokens = {"<unk>", "<s>", "</s>", "<pad>", "<image>"};
  std::string bos = "<s>", eos = "</s>", pad = "<pad>", unk = "<unk>";
  bool add_bos = true;  ///< the post-processor puts bos before every encoded text
  int64_t model_max_length = 2048;
};

struct TrainedTokenizer {
  std::string tokenizer_json;         ///< HF tokenizers format
  std::string tokenizer_config_json;  ///< bos/eos/pad/unk tokens for transformers
  int64_t vocab_size = 0;             ///< incl. special tokens
  int64_t merges = 0;
};

/// Throws unime::Error on invalid UTF-8 (naming the line index) or bad options.
TrainedTokenizer train_bpe(const std::vector<std::string>& texts, const BpeTrainOptions& opt);

}  // namespace unime::text
