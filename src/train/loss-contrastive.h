// Stage 2 of UniME (arXiv 2504.17432, section 3.3; docs METHOD.md section 3): hard-negative
// enhanced InfoNCE. For normalised query embeddings q [N, D] and candidates c [M, D] (M >= N,
// c[i] is the positive of q[i]), S = q c^T and, for every row i:
//   1. false-negative filter: drop each candidate j != i with S[i,j] > S[i,i] + beta;
//   2. hard negatives: the k most similar remaining candidates j != i (ties: lower index first);
//   3. loss_i = cross-entropy over [S[i,i], S[i,h_1..h_k]] / tau with target 0;
// loss = mean_i loss_i. When fewer than k candidates survive, the missing logits are -inf (they
// add nothing). k = 0 keeps every surviving candidate: with no filter that is the plain in-batch
// InfoNCE of VLM2Vec (cross-entropy of S / tau against the diagonal).
// Explicit hard negatives (rows with neg_text / neg_image_path): pass c = [positives; negatives]
// [2N, D]; the negatives are candidates like any other.
// Legend: N queries, M candidates, D embedding dim, k hard negatives per row.
#pragma once

#include <cstdint>
#include <optional>

namespace unime::train {

/// What the selection did in one step (for the per-step log).
struct HardNegStats {
  double removed_per_row = 0;  ///< candidates the false-negative filter dropped, mean over rows
  int64_t removed_total = 0;   ///< the same, summed
  double mean_neg_sim = 0;     ///< mean similarity of the chosen negatives (0 when none)
  double mean_pos_sim = 0;     ///< mean S[i,i]
  int64_t rows_short = 0;      ///< rows with fewer than k surviving candidates (k > 0)
  int64_t n_neg = 0;           ///< chosen negatives, summed over rows
};

/// The selection alone, on a similarity matrix S [N, M] (M >= N, positives on the diagonal).
struct HardNegSelection {
  torch::Tensor index;    ///< [N, K] int64 candidate columns, most similar first; -1 where none
  torch::Tensor removed;  ///< [N] int64: candidates removed by the filter
};

/// Defaults of the released recipe.
constexpr double kHardNegTau = 0.02;
constexpr int64_t kHardNegK = 8;
constexpr double kHardNegMargin = 0.1;

/// Filter + top-k on S (no gradient). K = k, or M - 1 when k == 0. fn_margin: beta, or nullopt
/// for no filter. Throws unime::Error when M < k + 1 (not enough candidates for k negatives).
HardNegSelection select_hard_negatives(const torch::Tensor& S, int64_t k,
                                       std::optional<double> fn_margin);

/// The loss from a similarity matrix S [N, M] (differentiable in S). Computed in float32 (float64
/// when S is float64). stats may be null.
torch::Tensor loss_hard_negative_scores(const torch::Tensor& S, double tau, int64_t k,
                                        std::optional<double> fn_margin, HardNegStats* stats = nullptr);

/// q [N, D], c [M, D], L2-normalised -> scalar loss (S = q c^T).
torch::Tensor loss_hard_negative(const torch::Tensor& q, const torch::Tensor& c, double tau = kHardNegTau,
                                 int64_t k = kHardNegK,
                                 std::optional<double> fn_margin = kHardNegMargin,
                                 HardNegStats* stats = nullptr);

/// Plain in-batch InfoNCE (VLM2Vec): loss_hard_negative(q, c, tau, 0, nullopt).
torch::Tensor loss_infonce(const torch::Tensor& q, const torch::Tensor& c, double tau = kHardNegTau);

}  // namespace unime::train
