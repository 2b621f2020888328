// Evaluation metrics on similarity scores; see metrics.h for the tie rule.
#include "eval/metrics.h"

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace unime::eval {

int64_t rank_of_gold(const float* scores, int64_t C, const std::vector<int64_t>& gold) {
  UNIME_CHECK(!gold.empty(), "rank_of_gold: no gold candidate");
  std::vector<char> is_gold(static_cast<size_t>(C), 0);
  float best = -std::numeric_limits<float>::infinity();
  for (int64_t g : gold) {
    UNIME_CHECK(g >= 0 && g < C, "rank_of_gold: gold index ", g, " out of range [0, ", C, ")");
    is_gold[g] = 1;
    best = std::max(best, scores[g]);
  }
  int64_t rank = 1;
  for (int64_t j = 0; j < C; ++j)
    if (!is_gold[j] && scores[j] >= best) ++rank;
  return rank;
}

bool hit_at_1(const float* scores, int64_t C) {
  for (int64_t j = 1; j < C; ++j)
    if (scores[j] >= scores[0]) return false;
  return C > 0;
}

double recall_at_k(const std::vector<float>& scores, int64_t Q, int64_t C,
                   const std::vector<std::vector<int64_t>>& gold, int64_t k) {
  UNIME_CHECK(static_cast<int64_t>(scores.size()) == Q * C && static_cast<int64_t>(gold.size()) == Q,
              "recall_at_k: expected ", Q, "x", C, " scores and ", Q, " gold lists, got ",
              scores.size(), " scores and ", gold.size(), " gold lists");
  if (Q == 0) return 0.0;
  int64_t hits = 0;
  for (int64_t q = 0; q < Q; ++q) hits += rank_of_gold(scores.data() + q * C, C, gold[q]) <= k;
  return static_cast<double>(hits) / static_cast<double>(Q);
}

double pairwise_accuracy(const std::vector<float>& pos, const std::vector<float>& neg) {
  UNIME_CHECK(pos.size() == neg.size(), "pairwise_accuracy: ", pos.size(), " positive vs ",
              neg.size(), " negative scores");
  if (pos.empty()) return 0.0;
  int64_t right = 0;
  for (size_t i = 0; i < pos.size(); ++i) right += pos[i] > neg[i];
  return static_cast<double>(right) / static_cast<double>(pos.size());
}

std::vector<float> score_matrix(const std::vector<float>& a, const std::vector<float>& b,
                                int64_t D) {
  const int64_t A = D ? static_cast<int64_t>(a.size()) / D : 0;
  const int64_t B = D ? static_cast<int64_t>(b.size()) / D : 0;
  std::vector<float> s(static_cast<size_t>(A * B));
  for (int64_t i = 0; i < A; ++i)
    for (int64_t j = 0; j < B; ++j) {
      const float* x = a.data() + i * D;
      const float* y = b.data() + j * D;
      double dot = 0;  // double accumulation: scores that tie in exact arithmetic tie here too
      for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(x[d]) * y[d];
      s[i * B + j] = static_cast<float>(dot);
    }
  return s;
}

std::map<std::string, double> mmeb_means(const std::map<std::string, double>& score,
                                         const std::map<std::string, DatasetInfo>& info) {
  std::map<std::string, std::pair<double, int64_t>> acc;  // name -> (sum, count)
  for (const auto& [name, s] : score) {
    auto it = info.find(name);
    UNIME_CHECK(it != info.end(), "dataset '", name,
                "' has no meta-task/split (add it to manifest.json)");
    for (const std::string& key : {it->second.meta_task, it->second.split, std::string("overall")}) {
      acc[key].first += s;
      acc[key].second += 1;
    }
  }
  std::map<std::string, double> out;
  for (const auto& [key, v] : acc) out[key] = v.first / static_cast<double>(v.second);
  return out;
}

}  // namespace unime::eval
