// Stage 1 loss (train/loss-distill.h): a hand computation with loops (student and teacher of
// different widths), both KL directions, finite-difference gradients, no teacher gradient, errors.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "train/loss-distill.h"

using unime::train::KlDirection;
using unime::train::loss_distill;

namespace {

using Mat = std::vector<std::vector<double>>;

Mat normalized_rows(const Mat& m) {
  Mat out = m;
  for (auto& r : out) {
    double n = 0;
    for (double v : r) n += v * v;
    for (double& v : r) v /= std::sqrt(n);
  }
  return out;
}

torch::Tensor tensor(const Mat& m) {
  auto t = torch::empty({static_cast<int64_t>(m.size()), static_cast<int64_t>(m[0].size())}, torch::kFloat64);
  for (size_t i = 0; i < m.size(); ++i)
    for (size_t j = 0; j < m[0].size(); ++j) t[i][j] = m[i][j];
  return t;
}

/// Row-wise softmax of (x_i . x_j) / tau, by hand.
Mat sim_softmax(const Mat& x, double tau) {
  const size_t n = x.size();
  Mat p(n, std::vector<double>(n));
  for (size_t i = 0; i < n; ++i) {
    double z = 0;
    for (size_t j = 0; j < n; ++j) {
      double s = 0;
      for (size_t d = 0; d < x[i].size(); ++d) s += x[i][d] * x[j][d];
      p[i][j] = std::exp(s / tau);
      z += p[i][j];
    }
    for (double& v : p[i]) v /= z;
  }
  return p;
}

/// mean_i sum_j P[i][j] log(P[i][j] / Q[i][j])
double mean_kl(const Mat& P, const Mat& Q) {
  double s = 0;
  for (size_t i = 0; i < P.size(); ++i)
    for (size_t j = 0; j < P.size(); ++j) s += P[i][j] * std::log(P[i][j] / Q[i][j]);
  return s / P.size();
}

const Mat kStudent = normalized_rows({{1, 0.2}, {0.3, 1}, {-0.5, 0.8}, {0.9, -0.4}});
const Mat kTeacher = normalized_rows({{1, 0.1, 0.3}, {0.2, 1, -0.1}, {0.4, 0.6, 0.7}, {0.8, -0.2, 0.1}});

}  // namespace

TEST(Distill, HandComputationBothDirections) {
  const double tau = 0.2;
  const Mat Ps = sim_softmax(kStudent, tau), Pt = sim_softmax(kTeacher, tau);
  auto s = tensor(kStudent), t = tensor(kTeacher);
  EXPECT_NEAR(loss_distill(s, t, tau).item<double>(), mean_kl(Pt, Ps), 1e-12);
  EXPECT_NEAR(loss_distill(s, t, tau, KlDirection::StudentTeacher).item<double>(), mean_kl(Ps, Pt), 1e-12);
  // the two directions differ on this data (the option matters)
  EXPECT_GT(std::abs(mean_kl(Pt, Ps) - mean_kl(Ps, Pt)), 1e-3);
}

TEST(Distill, ZeroWhenSimilaritiesAgree) {
  auto s = tensor(kStudent);
  // an orthogonal change of basis (and padding) keeps every similarity
  auto t = torch::cat({s.flip(1) * torch::tensor({1.0, -1.0}, torch::kFloat64), torch::zeros({4, 3}, torch::kFloat64)}, 1);
  EXPECT_NEAR(loss_distill(s, t, 0.05).item<double>(), 0.0, 1e-12);
  EXPECT_GT(loss_distill(s, tensor(kTeacher), 0.05).item<double>(), 0.0);
}

TEST(Distill, FiniteDifferenceGradientsAndFrozenTeacher) {
  torch::manual_seed(5);
  auto s = torch::randn({5, 6}, torch::kFloat64).requires_grad_(true);
  auto t = torch::randn({5, 3}, torch::kFloat64).requires_grad_(true);
  const double tau = 0.7;
  for (auto dir : {KlDirection::TeacherStudent, KlDirection::StudentTeacher}) {
    if (s.grad().defined()) s.mutable_grad().zero_();
    auto loss = loss_distill(s, t, tau, dir);
    loss.backward();
    EXPECT_FALSE(t.grad().defined()) << "the teacher must not receive a gradient";
    const double eps = 1e-6;
    auto base = s.detach().clone();
    for (int64_t i = 0; i < base.numel(); ++i) {
      auto plus = base.clone(), minus = base.clone();
      plus.view({-1})[i] += eps;
      minus.view({-1})[i] -= eps;
      const double num = (loss_distill(plus, t.detach(), tau, dir).item<double>() -
                          loss_distill(minus, t.detach(), tau, dir).item<double>()) / (2 * eps);
      EXPECT_NEAR(s.grad().view({-1})[i].item<double>(), num, 1e-7) << "element " << i;
    }
  }
}

TEST(Distill, Errors) {
  auto s = tensor(kStudent);
  EXPECT_THROW(loss_distill(s, s.narrow(0, 0, 3), 0.05), unime::Error);
  EXPECT_THROW(loss_distill(s, s, 0.0), unime::Error);
  EXPECT_EQ(unime::train::parse_kl_direction("student-teacher"), KlDirection::StudentTeacher);
  EXPECT_THROW(unime::train::parse_kl_direction("forward"), unime::Error);
}

TEST(Distill, Float32Compute) {
  auto s = tensor(kStudent).to(torch::kBFloat16), t = tensor(kTeacher).to(torch::kBFloat16);
  auto loss = loss_distill(s, t, 0.1);
  EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
  auto ref = loss_distill(s.to(torch::kFloat64), t.to(torch::kFloat64), 0.1);
  EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-5);
}
