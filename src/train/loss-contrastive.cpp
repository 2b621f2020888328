// Hard-negative InfoNCE; see loss-contrastive.h. Reference: UniME's released loss (false-negative
// filter at S[i,i] + beta, top-k hardest, cross-entropy over positive + k negatives at tau).
#include "train/loss-contrastive.h"

#include <limits>

#include "core/error.h"

namespace unime::train {

namespace {

torch::ScalarType loss_dtype(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

void check_scores(const torch::Tensor& S, int64_t k) {
  TORCH_CHECK(S.dim() == 2, "hard-negative loss: S must be [N, M], got ", S.sizes());
  const int64_t N = S.size(0), M = S.size(1);
  UNIME_CHECK(N > 0, "hard-negative loss: empty batch");
  UNIME_CHECK(M >= N, "hard-negative loss: ", M, " candidates for ", N,
              " queries; expected at least one candidate (the positive) per query");
  UNIME_CHECK(k >= 0, "hard-negative loss: --hard-negatives must be >= 0, got ", k);
  UNIME_CHECK(M >= k + 1, "hard-negative loss: ", k, " hard negatives need at least ", k + 1,
              " candidates per query, got ", M, " (batch ", N,
              "); raise the batch size or lower --hard-negatives");
}

}  // namespace

HardNegSelection select_hard_negatives(const torch::Tensor& S_in, int64_t k,
                                       std::optional<double> fn_margin) {
  check_scores(S_in, k);
  torch::NoGradGuard ng;
  auto S = S_in.detach().to(loss_dtype(S_in));
  const int64_t N = S.size(0), M = S.size(1);
  const int64_t K = k == 0 ? M - 1 : k;
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(S.device());
  auto rows = torch::arange(N, opts).unsqueeze(1);               // [N, 1]
  auto cols = torch::arange(M, opts).unsqueeze(0);               // [1, M]
  auto is_pos = cols == rows;                                    // [N, M]
  auto pos = S.narrow(1, 0, N).diagonal().unsqueeze(1);          // [N, 1]
  auto dropped = torch::zeros({N, M}, opts.dtype(torch::kBool));
  if (fn_margin) dropped = (S > pos + *fn_margin).logical_and(is_pos.logical_not());
  const double ninf = -std::numeric_limits<double>::infinity();
  auto masked = S.masked_fill(dropped.logical_or(is_pos), ninf);  // [N, M]
  // stable descending sort: equal similarities keep column order, so ties pick the lower index
  auto sorted = std::get<1>(torch::sort(masked, /*stable=*/true, /*dim=*/1, /*descending=*/true));
  auto index = sorted.narrow(1, 0, K);                           // [N, K]
  auto valid = masked.gather(1, index) > ninf;
  return {index.masked_fill(valid.logical_not(), -1), dropped.sum(1)};
}

torch::Tensor loss_hard_negative_scores(const torch::Tensor& S_in, double tau, int64_t k,
                                        std::optional<double> fn_margin, HardNegStats* stats) {
  UNIME_CHECK(tau > 0, "hard-negative loss: temperature must be > 0, got ", tau);
  const HardNegSelection sel = select_hard_negatives(S_in, k, fn_margin);
  auto S = S_in.to(loss_dtype(S_in));
  const int64_t N = S.size(0);
  auto valid = sel.index >= 0;                                   // [N, K]
  auto pos = S.narrow(1, 0, N).diagonal().unsqueeze(1);          // [N, 1]
  auto neg = S.gather(1, sel.index.clamp_min(0))                 // [N, K]
                 .masked_fill(valid.logical_not(), -std::numeric_limits<double>::infinity());
  auto logits = torch::cat({pos, neg}, 1) / tau;                 // [N, 1 + K]
  auto loss = (torch::logsumexp(logits, 1) - logits.select(1, 0)).mean();
  if (stats) {
    torch::NoGradGuard ng;
    const int64_t n_neg = valid.sum().item<int64_t>();
    stats->removed_total = sel.removed.sum().item<int64_t>();
    stats->removed_per_row = static_cast<double>(stats->removed_total) / N;
    stats->n_neg = n_neg;
    stats->mean_neg_sim =
        n_neg > 0 ? neg.detach().masked_fill(valid.logical_not(), 0).sum().item<double>() / n_neg : 0.0;
    stats->mean_pos_sim = pos.detach().mean().item<double>();
    stats->rows_short = k > 0 ? (valid.sum(1) < k).sum().item<int64_t>() : 0;
  }
  return loss;
}

torch::Tensor loss_hard_negative(const torch::Tensor& q, const torch::Tensor& c, double tau, int64_t k,
                                 std::optional<double> fn_margin, HardNegStats* stats) {
  TORCH_CHECK(q.dim() == 2 && c.dim() == 2 && q.size(1) == c.size(1),
              "hard-negative loss: expected q [N, D] and c [M, D], got ", q.sizes(), " and ", c.sizes());
  const auto dt = loss_dtype(q);
  auto S = torch::matmul(q.to(dt), c.to(dt).t());                // [N, M]
  return loss_hard_negative_scores(S, tau, k, fn_margin, stats);
}

torch::Tensor loss_infonce(const torch::Tensor& q, const torch::Tensor& c, double tau) {
  return loss_hard_negative(q, c, tau, 0, std::nullopt, nullptr);
}

}  // namespace unime::train
