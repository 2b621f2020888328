// The demo's text teacher: a compositional embedding of the world's language. It parses a
// sentence into the facts it states - objects (shape, colour, size), the relations between them
// (converse forms normalised: "X right of Y" = "Y left of X"), the background - and embeds the
// weighted sum of fixed random unit vectors, one per fact (hashed), L2-normalised. Paraphrases
// map to the same vector, a subset of the facts stays close, a changed attribute or relation
// moves away: the discriminative knowledge a freshly pretrained tiny LLM lacks. It stands where
// NV-Embed-V2 stands in the paper: a stronger text embedder run offline, its vectors stored as
// .npy for stage 1.
//
//   auto v = unime::demo::WorldVocab::from_world_json(world_json);
//   auto emb = unime::demo::teacher_embed(sentences, v, 512);   // [N x 512], unit rows
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace unime::demo {

/// Lower-cased alphanumeric words of s.
std::vector<std::string> words(const std::string& s);

/// The world's words the teacher understands (world.json "vocab").
struct WorldVocab {
  std::vector<std::string> shapes, colours, sizes, tones, textures;
  static WorldVocab from_world_json(const nlohmann::json& world);
};

/// The facts one text states, as feature strings with weights (exposed for tests).
std::vector<std::pair<std::string, float>> teacher_facts(const std::string& text, const WorldVocab& v);

/// [N x dim] row-major, rows unit-norm (a text with no facts is all zero).
std::vector<float> teacher_embed(const std::vector<std::string>& texts, const WorldVocab& v, int64_t dim);

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
