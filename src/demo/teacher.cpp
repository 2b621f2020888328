// Compositional text teacher; see teacher.h.
#include "demo/teacher.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <unordered_map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/jsonl.h"

namespace unime::demo {

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

bool in(const std::vector<std::string>& v, const std::string& w) {
  return std::find(v.begin(), v.end(), w) != v.end();
}

struct Object {
  std::string size, colour, shape;
};

// One sentence: noun phrases "[size] [colour] shape" and, between two consecutive ones, a
// relation word (left/right/above/over/below/under) when present.
void sentence_facts(const std::vector<std::string>& w, const WorldVocab& v,
                    std::vector<std::pair<std::string, float>>& out) {
  std::vector<Object> objs;
  std::vector<size_t> at;  // word index of each object's shape word
  Object cur;
  std::string tone, texture;
  for (size_t i = 0; i < w.size(); ++i) {
    if (in(v.sizes, w[i])) {
      cur.size = w[i];
    } else if (in(v.colours, w[i])) {
      cur.colour = w[i];
    } else if (in(v.shapes, w[i])) {
      cur.shape = w[i];
      objs.push_back(cur);
      at.push_back(i);
      cur = {};
    } else {
      if (in(v.tones, w[i])) tone = w[i];
      if (in(v.textures, w[i])) texture = w[i];
      cur = {};
    }
  }
  auto key = [](const Object& o) { return o.colour.empty() ? o.shape : o.colour + " " + o.shape; };
  for (const auto& o : objs) {
    out.push_back({"shape:" + o.shape, 1.0f});
    if (!o.colour.empty()) out.push_back({"object:" + o.colour + " " + o.shape, 2.0f});
    if (!o.size.empty()) out.push_back({"size:" + o.size + " " + o.shape, 1.0f});
  }
  for (size_t k = 0; k + 1 < objs.size(); ++k) {
    std::string rel;
    bool flip = false;
    for (size_t i = at[k] + 1; i < at[k + 1]; ++i) {
      if (w[i] == "left") rel = "left of";
      if (w[i] == "right") rel = "left of", flip = true;
      if (w[i] == "above" || w[i] == "over") rel = "above";
      if (w[i] == "below" || w[i] == "under") rel = "above", flip = true;
    }
    if (rel.empty()) continue;
    const Object& a = flip ? objs[k + 1] : objs[k];
    const Object& b = flip ? objs[k] : objs[k + 1];
    out.push_back({"relation:" + key(a) + " " + rel + " " + key(b), 3.0f});
    out.push_back({"relation-shapes:" + a.shape + " " + rel + " " + b.shape, 1.5f});
  }
  if (!tone.empty()) out.push_back({"background:" + tone, 2.0f});
  if (!texture.empty()) out.push_back({"texture:" + texture, 2.0f});
}

// A fixed random unit vector per feature (Gaussian from the feature's hash).
std::vector<float> feature_vector(const std::string& f, int64_t dim) {
  std::mt19937_64 rng(fnv1a(f));
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> u(static_cast<size_t>(dim));
  double n = 0;
  for (auto& x : u) x = g(rng), n += double(x) * x;
  for (auto& x : u) x = static_cast<float>(x / std::sqrt(n));
  return u;
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

WorldVocab WorldVocab::from_world_json(const nlohmann::json& world) {
  UNIME_CHECK(world.contains("vocab") && world["vocab"].is_object(), "world.json: no 'vocab' object");
  const auto& v = world["vocab"];
  auto list = [&](const char* k) {
    UNIME_CHECK(v.contains(k) && v[k].is_array(), "world.json: vocab has no '", k, "' list");
    std::vector<std::string> r;
    for (const auto& x : v[k]) {
      UNIME_CHECK(x.is_string(), "world.json: vocab '", k, "' must hold strings");
      r.push_back(x.get<std::string>());
    }
    return r;
  };
  return {list("shapes"), list("colours"), list("sizes"), list("background_tones"),
          list("background_textures")};
}

std::vector<std::pair<std::string, float>> teacher_facts(const std::string& text, const WorldVocab& v) {
  std::vector<std::pair<std::string, float>> out;
  std::string sentence;
  for (char c : text + ".") {
    if (c == '.' || c == '?' || c == '!' || c == ';' || c == '\n') {
      sentence_facts(words(sentence), v, out);
      sentence.clear();
    } else {
      sentence += c;
    }
  }
  return out;
}

std::vector<float> teacher_embed(const std::vector<std::string>& texts, const WorldVocab& v, int64_t dim) {
  UNIME_CHECK(dim > 0, "teacher_embed: dim must be > 0");
  const int64_t N = static_cast<int64_t>(texts.size());
  std::vector<float> out(static_cast<size_t>(N * dim), 0.0f);
  std::unordered_map<std::string, std::vector<float>> vectors;
  for (int64_t i = 0; i < N; ++i) {
    float* row = out.data() + i * dim;
    for (const auto& [f, wgt] : teacher_facts(texts[static_cast<size_t>(i)], v)) {
      auto it = vectors.find(f);  // each feature's vector is drawn once
      if (it == vectors.end()) it = vectors.emplace(f, feature_vector(f, dim)).first;
      for (int64_t k = 0; k < dim; ++k) row[k] += wgt * it->second[static_cast<size_t>(k)];
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
