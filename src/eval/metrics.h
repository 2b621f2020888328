// Evaluation metrics on similarity scores (METHOD.md section 5): MMEB Precision@1, image-text
// Recall@K in both directions, SugarCrepe pairwise accuracy, and MMEB's unweighted means.
// Legend: Q queries, C candidates; scores are row-major [Q x C] (cosine of unit rows).
//
// Ties are deterministic and count AGAINST the query: a gold candidate is ranked below every
// non-gold candidate whose score is >= its own. So a query whose gold score equals the best
// non-gold score is not a hit (MMEB's reference argmax would pick index 0 and call it a hit; we
// prefer not to reward a model that cannot tell the two apart, e.g. a constant embedding).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace unime::eval {

/// 1-based rank of the best gold among `scores` (C values): 1 + the number of non-gold
/// candidates scoring >= the best gold score. `gold` lists candidate indices (not empty).
int64_t rank_of_gold(const float* scores, int64_t C, const std::vector<int64_t>& gold);

/// MMEB hit@1 for one query: gold is candidate 0; true iff scores[0] > every other score.
bool hit_at_1(const float* scores, int64_t C);

/// Recall@k over Q queries: the fraction whose rank_of_gold <= k. scores: [Q x C];
/// gold[q]: the correct candidates of query q.
double recall_at_k(const std::vector<float>& scores, int64_t Q, int64_t C,
                   const std::vector<std::vector<int64_t>>& gold, int64_t k);

/// SugarCrepe: fraction of items with pos[i] > neg[i] (ties are wrong).
double pairwise_accuracy(const std::vector<float>& pos, const std::vector<float>& neg);

/// [A x D] x [B x D]^T -> [A x B] row-major dot products.
std::vector<float> score_matrix(const std::vector<float>& a, const std::vector<float>& b,
                                int64_t D);

/// The four MMEB meta-tasks.
inline const char* const kMetaTasks[] = {"classification", "vqa", "retrieval", "grounding"};

struct DatasetInfo {
  std::string meta_task;  ///< classification | vqa | retrieval | grounding
  std::string split;      ///< IND | OOD
};

/// Unweighted means of per-dataset scores: one per meta-task present, "IND", "OOD" (when any
/// dataset has that split) and "overall" (all datasets). Every dataset must be in `info`.
std::map<std::string, double> mmeb_means(const std::map<std::string, double>& score,
                                         const std::map<std::string, DatasetInfo>& info);

}  // namespace unime::eval
