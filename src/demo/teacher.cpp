// Lexical teacher; see teacher.h.
#include "demo/teacher.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "io/jsonl.h"

namespace unime::demo {

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::vector<std::string> features(const std::string& s) {
  auto w = words(s);
  std::vector<std::string> f = w;
  for (size_t i = 0; i + 1 < w.size(); ++i) f.push_back(w[i] + " " + w[i + 1]);
  return f;
}

}  // namespace

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (unsigned char c : s) {
    if (std::isalnum(c)) {
      cur += static_cast<char>(std::tolower(c));
    } else if (!cur.empty()) {
      out.push_back(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::vector<float> lexical_embed(const std::vector<std::string>& sentences, int64_t dim) {
  UNIME_CHECK(dim > 0, "lexical_embed: dim must be > 0");
  const int64_t N = static_cast<int64_t>(sentences.size());
  std::vector<std::vector<std::string>> feats(N);
  std::unordered_map<std::string, int64_t> df;
  for (int64_t i = 0; i < N; ++i) {
    feats[i] = features(sentences[i]);
    std::unordered_set<std::string> seen(feats[i].begin(), feats[i].end());
    for (auto& f : seen) ++df[f];
  }
  std::vector<float> out(static_cast<size_t>(N * dim), 0.0f);
  for (int64_t i = 0; i < N; ++i) {
    std::unordered_map<std::string, int64_t> tf;
    for (auto& f : feats[i]) ++tf[f];
    float* row = out.data() + i * dim;
    for (auto& [f, c] : tf) {
      const double idf = std::log((1.0 + N) / (1.0 + df[f])) + 1.0;
      const uint64_t h = fnv1a(f);
      row[h % dim] += static_cast<float>((h >> 63) ? -c * idf : c * idf);  // signed hashing
    }
    double n = 0;
    for (int64_t k = 0; k < dim; ++k) n += double(row[k]) * row[k];
    if (n > 0)
      for (int64_t k = 0; k < dim; ++k) row[k] = static_cast<float>(row[k] / std::sqrt(n));
  }
  return out;
}

NliSentences read_nli_sentences(const std::string& path) {
  NliSentences s;
  io::read_jsonl(path, [&](int64_t line, const nlohmann::json& row) {
    const std::string where = str(path, ":", line);
    std::array<int64_t, 3> t{-1, -1, -1};
    int k = 0;
    for (const char* key : {"text", "sent0", "sent1", "hard_neg"}) {
      if (!row.contains(key)) continue;
      UNIME_CHECK(row[key].is_string(), where, ": '", key, "' must be a string");
      if (std::string(key) != "text") t[k++] = static_cast<int64_t>(s.sentences.size());
      s.sentences.push_back(row[key].get<std::string>());
    }
    if (t[2] >= 0) s.triples.push_back(t);
  });
  return s;
}

double nli_accuracy(const NliSentences& s, const std::vector<float>& emb, int64_t D) {
  if (s.triples.empty()) return 0.0;
  auto dot = [&](int64_t a, int64_t b) {
    double r = 0;
    for (int64_t k = 0; k < D; ++k) r += double(emb[a * D + k]) * emb[b * D + k];
    return r;
  };
  int64_t right = 0;
  for (auto& t : s.triples) right += dot(t[0], t[1]) > dot(t[0], t[2]);
  return static_cast<double>(right) / static_cast<double>(s.triples.size());
}

}  // namespace unime::demo
