// Stage 2 loss (train/loss-contrastive.h): hand computations on crafted similarity matrices, the
// false-negative filter and top-k selection (boundary, ties, fewer than k survivors, too small a
// batch), the VLM2Vec InfoNCE baseline, explicit hard negatives, and finite-difference gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "train/loss-contrastive.h"

using unime::train::HardNegStats;
using unime::train::loss_hard_negative;
using unime::train::loss_hard_negative_scores;
using unime::train::loss_infonce;
using unime::train::select_hard_negatives;

namespace {

torch::Tensor mat(const std::vector<std::vector<double>>& rows) {
  const int64_t n = rows.size(), m = rows[0].size();
  auto t = torch::empty({n, m}, torch::kFloat64);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) t[i][j] = rows[i][j];
  return t;
}

std::vector<std::vector<int64_t>> to_vec(const torch::Tensor& idx) {
  std::vector<std::vector<int64_t>> out(idx.size(0));
  for (int64_t i = 0; i < idx.size(0); ++i)
    for (int64_t j = 0; j < idx.size(1); ++j) out[i].push_back(idx[i][j].item<int64_t>());
  return out;
}

/// -log(exp(pos/tau) / sum over {pos} U negs of exp(x/tau)), by hand.
double ce(double pos, const std::vector<double>& negs, double tau) {
  double z = std::exp(pos / tau);
  for (double n : negs) z += std::exp(n / tau);
  return std::log(z) - pos / tau;
}

// rows: diag 0.5; margin 0.25 so the threshold 0.75 is exact in binary
const std::vector<std::vector<double>> kS = {{0.5, 0.75, 0.25},   // 0.75 == threshold: kept
                                             {0.0, 0.5, 0.5},     // tie with the positive: kept
                                             {0.875, 0.25, 0.5}};  // 0.875 > 0.75: removed

}  // namespace

TEST(HardNegative, HandComputationWithFilter) {
  const double tau = 0.5;
  HardNegStats st;
  auto loss = loss_hard_negative_scores(mat(kS), tau, /*k=*/1, /*fn_margin=*/0.25, &st);
  const double want = (ce(0.5, {0.75}, tau) + ce(0.5, {0.5}, tau) + ce(0.5, {0.25}, tau)) / 3;
  EXPECT_NEAR(loss.item<double>(), want, 1e-12);
  EXPECT_EQ(st.removed_total, 1);
  EXPECT_NEAR(st.removed_per_row, 1.0 / 3, 1e-12);
  EXPECT_NEAR(st.mean_neg_sim, (0.75 + 0.5 + 0.25) / 3, 1e-12);
  EXPECT_NEAR(st.mean_pos_sim, 0.5, 1e-12);
  EXPECT_EQ(st.rows_short, 0);
  EXPECT_EQ(st.n_neg, 3);
}

TEST(HardNegative, NoFilterKeepsFalseNegatives) {
  const double tau = 0.5;
  auto loss = loss_hard_negative_scores(mat(kS), tau, 1, std::nullopt);
  const double want = (ce(0.5, {0.75}, tau) + ce(0.5, {0.5}, tau) + ce(0.5, {0.875}, tau)) / 3;
  EXPECT_NEAR(loss.item<double>(), want, 1e-12);
  auto sel = select_hard_negatives(mat(kS), 1, std::nullopt);
  EXPECT_EQ(to_vec(sel.index), (std::vector<std::vector<int64_t>>{{1}, {2}, {0}}));
  EXPECT_EQ(sel.removed.sum().item<int64_t>(), 0);
}

TEST(HardNegative, SelectionOrderAndTies) {
  // equal similarities: the lower column wins; the positive is never a candidate
  auto S = mat({{0.5, 0.25, 0.25, 0.25},
                {0.125, 0.5, 0.375, 0.375},
                {0.25, 0.25, 0.5, 0.25},
                {0.25, 0.25, 0.25, 0.5}});
  auto sel = select_hard_negatives(S, 2, 0.1);
  EXPECT_EQ(to_vec(sel.index), (std::vector<std::vector<int64_t>>{{1, 2}, {2, 3}, {0, 1}, {0, 1}}));
  // k = 0: every surviving candidate, most similar first, the removed ones marked -1 at the end
  auto all = select_hard_negatives(mat(kS), 0, 0.25);
  EXPECT_EQ(to_vec(all.index), (std::vector<std::vector<int64_t>>{{1, 2}, {2, 0}, {1, -1}}));
}

TEST(HardNegative, FewerThanKSurvivors) {
  // margin 0: row 0 keeps only column 2; row 1 keeps nothing; row 2 keeps both
  auto S = mat({{0.5, 0.625, 0.125}, {0.75, 0.25, 0.5}, {0.0, 0.25, 0.5}});
  const double tau = 0.25;
  HardNegStats st;
  auto sel = select_hard_negatives(S, 2, 0.0);
  EXPECT_EQ(to_vec(sel.index), (std::vector<std::vector<int64_t>>{{2, -1}, {-1, -1}, {1, 0}}));
  EXPECT_EQ(to_vec(sel.removed.unsqueeze(1)), (std::vector<std::vector<int64_t>>{{1}, {2}, {0}}));
  auto Sg = S.clone().requires_grad_(true);
  auto loss = loss_hard_negative_scores(Sg, tau, 2, 0.0, &st);
  const double want = (ce(0.5, {0.125}, tau) + ce(0.25, {}, tau) + ce(0.5, {0.25, 0.0}, tau)) / 3;
  EXPECT_NEAR(loss.item<double>(), want, 1e-12);
  EXPECT_EQ(st.rows_short, 2);
  EXPECT_EQ(st.n_neg, 3);
  loss.backward();
  EXPECT_TRUE(torch::isfinite(Sg.grad()).all().item<bool>());
  // masked candidates get no gradient
  EXPECT_EQ(Sg.grad()[0][1].item<double>(), 0.0);
  EXPECT_EQ(Sg.grad()[1][0].item<double>(), 0.0);
  EXPECT_EQ(Sg.grad()[1][2].item<double>(), 0.0);
}

TEST(HardNegative, BatchTooSmallIsAnError) {
  auto S = torch::eye(4, torch::kFloat64);
  try {
    loss_hard_negative_scores(S, 0.02, 8, 0.1);
    FAIL() << "expected unime::Error";
  } catch (const unime::Error& e) {
    EXPECT_NE(std::string(e.what()).find("8 hard negatives need at least 9 candidates"), std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(loss_hard_negative_scores(torch::eye(9, torch::kFloat64), 0.02, 8, 0.1));
  EXPECT_THROW(loss_hard_negative_scores(torch::zeros({3, 2}, torch::kFloat64), 0.02, 1, 0.1), unime::Error);
  EXPECT_THROW(loss_hard_negative_scores(torch::eye(3, torch::kFloat64), 0.0, 1, 0.1), unime::Error);
}

TEST(HardNegative, PlainInfoNCEMatchesHandSum) {
  torch::manual_seed(3);
  auto q = torch::nn::functional::normalize(torch::randn({6, 5}, torch::kFloat64),
                                            torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto c = torch::nn::functional::normalize(torch::randn({6, 5}, torch::kFloat64),
                                            torch::nn::functional::NormalizeFuncOptions().dim(1));
  const double tau = 0.05;
  double want = 0;
  for (int64_t i = 0; i < 6; ++i) {
    double z = 0, pos = 0;
    for (int64_t j = 0; j < 6; ++j) {
      double s = 0;
      for (int64_t d = 0; d < 5; ++d) s += q[i][d].item<double>() * c[j][d].item<double>();
      z += std::exp(s / tau);
      if (i == j) pos = s / tau;
    }
    want += std::log(z) - pos;
  }
  want /= 6;
  EXPECT_NEAR(loss_infonce(q, c, tau).item<double>(), want, 1e-9);
  // k = N - 1 with no filter is the same set of logits
  EXPECT_NEAR(loss_hard_negative(q, c, tau, 5, std::nullopt).item<double>(), want, 1e-9);
}

TEST(HardNegative, ExplicitNegativesAreCandidates) {
  // N = 2 queries, candidates [pos0, pos1, neg0, neg1]: S is 2 x 4
  auto S = mat({{0.5, 0.125, 0.375, 0.25}, {0.25, 0.5, 0.0, 0.625}});
  const double tau = 0.5;
  auto sel = select_hard_negatives(S, 2, 0.1);
  // row 1: neg1 (0.625) > 0.5 + 0.1 is filtered even though it is an explicit negative
  EXPECT_EQ(to_vec(sel.index), (std::vector<std::vector<int64_t>>{{2, 3}, {0, 2}}));
  auto loss = loss_hard_negative_scores(S, tau, 2, 0.1);
  EXPECT_NEAR(loss.item<double>(), (ce(0.5, {0.375, 0.25}, tau) + ce(0.5, {0.25, 0.0}, tau)) / 2, 1e-12);
  // batch 2 with k = 3 works because 4 candidates exist
  EXPECT_NO_THROW(loss_hard_negative_scores(S, tau, 3, std::nullopt));
}

TEST(HardNegative, FiniteDifferenceGradients) {
  torch::manual_seed(7);
  auto q = torch::randn({5, 4}, torch::kFloat64).requires_grad_(true);
  auto c = torch::randn({7, 4}, torch::kFloat64).requires_grad_(true);
  const double tau = 0.3;
  auto f = [&](const torch::Tensor& qq, const torch::Tensor& cc) {
    return loss_hard_negative(qq, cc, tau, 3, 0.1).item<double>();
  };
  auto loss = loss_hard_negative(q, c, tau, 3, 0.1);
  loss.backward();
  const double eps = 1e-6;
  for (auto* pair : {&q, &c}) {
    auto& x = *pair;
    auto base = x.detach().clone();
    for (int64_t i = 0; i < base.numel(); ++i) {
      auto plus = base.clone(), minus = base.clone();
      plus.view({-1})[i] += eps;
      minus.view({-1})[i] -= eps;
      const double num = (&x == &q) ? (f(plus, c.detach()) - f(minus, c.detach())) / (2 * eps)
                                    : (f(q.detach(), plus) - f(q.detach(), minus)) / (2 * eps);
      EXPECT_NEAR(x.grad().view({-1})[i].item<double>(), num, 1e-6) << "element " << i;
    }
  }
}

TEST(HardNegative, LowPrecisionInputsAreLiftedToFloat32) {
  torch::manual_seed(1);
  auto q = torch::randn({4, 8}).to(torch::kBFloat16);
  auto c = torch::randn({4, 8}).to(torch::kBFloat16);
  auto loss = loss_hard_negative(q, c, 0.02, 2, 0.1);
  EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
  auto ref = loss_hard_negative(q.to(torch::kFloat64), c.to(torch::kFloat64), 0.02, 2, 0.1);
  EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-4 * std::max(1.0, ref.item<double>()));
}
