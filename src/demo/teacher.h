// The demo's text teacher: a lexical embedding (TF-IDF over word unigrams and bigrams, hashed to
// a fixed width, L2-normalised). The world's sentences differ in which attributes bind to which
// objects; bigrams see "red circle" vs "red square", which a freshly pretrained tiny LLM's
// last-token state does not separate well. It stands where NV-Embed-V2 stands in the paper: a
// stronger text embedder run offline, its vectors stored as .npy for stage 1.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace unime::demo {

/// Lower-cased alphanumeric words of s.
std::vector<std::string> words(const std::string& s);

/// [N x dim] row-major, rows unit-norm (a row with no words is all zero). IDF is fitted on
/// `sentences` itself (smooth: log((1 + N) / (1 + df)) + 1).
std::vector<float> lexical_embed(const std::vector<std::string>& sentences, int64_t dim);

/// Sentences of an NLI / text JSONL in the order stage 1 reads them (per row: text, sent0, sent1,
/// hard_neg), and the (sent0, sent1, hard_neg) row index triples.
struct NliSentences {
  std::vector<std::string> sentences;
  std::vector<std::array<int64_t, 3>> triples;
};
NliSentences read_nli_sentences(const std::string& path);

/// Fraction of triples with cos(sent0, sent1) > cos(sent0, hard_neg); emb [N x D] unit rows.
double nli_accuracy(const NliSentences& s, const std::vector<float>& emb, int64_t D);

}  // namespace unime::demo
