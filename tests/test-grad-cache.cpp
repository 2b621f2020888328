// GradCache (train/grad-cache.h) on a tiny Llama with LoRA adapters: the adapter gradients of a
// GradCache step equal full-batch training for several chunk sizes (stage 2 loss and stage 1 loss),
// dropout masks are replayed in the re-forward, and the random stream continues as after the first
// pass.
#include <gtest/gtest.h>

#include "core/error.h"
#include "models/model.h"
#include "test-util.h"
#include "train/grad-cache.h"
#include "train/lora.h"
#include "train/loss-contrastive.h"
#include "train/loss-distill.h"

namespace F = torch::nn::functional;
using namespace unime;

namespace {

const test::TempDir& tiny_dir() {
  static test::TempDir dir;
  static bool made = false;
  if (!made) {
    auto r = test::run_cmd(test::unime_bin() + " random-model --preset tiny-llama --seed 3 --output " +
                           dir / "llama");
    if (r.status != 0) throw std::runtime_error("random-model failed: " + r.output);
    made = true;
  }
  return dir;
}

struct Fixture {
  std::shared_ptr<models::Model> m;
  train::LoraSet lora;
  torch::Tensor ids_q, real_q, ids_c, real_c;  // [N, T]
  int64_t N = 6;
};

/// Model in float32 with LoRA (random B so every adapter gradient is non-zero), random batches.
Fixture make(double dropout) {
  Fixture f;
  f.m = models::Model::load(tiny_dir() / "llama", torch::kFloat32);
  train::LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  c.dropout = dropout;
  f.lora = train::apply_lora(*f.m, c, 11);
  torch::manual_seed(5);
  {
    torch::NoGradGuard ng;
    for (auto& p : f.lora.parameters()) p.normal_(0.0, 0.2);
  }
  for (auto& [prefix, mod] : f.m->modules()) mod->train();
  auto batch = [&](int64_t T, torch::Tensor& ids, torch::Tensor& real) {
    ids = torch::randint(1, 500, {f.N, T}, torch::kInt64);
    real = torch::ones({f.N, T}, torch::kBool);
    for (int64_t i = 0; i < f.N; ++i) {  // left padding of i % 3 tokens
      const int64_t pad = i % 3;
      if (pad) real[i].narrow(0, 0, pad).fill_(false);
    }
  };
  batch(7, f.ids_q, f.real_q);
  batch(5, f.ids_c, f.real_c);
  return f;
}

train::EmbedFn embed_fn(Fixture& f, const torch::Tensor& ids, const torch::Tensor& real,
                        std::vector<torch::Tensor>* log = nullptr) {
  return [&f, ids, real, log](int64_t b, int64_t e) {
    models::TokenBatch tb{ids.narrow(0, b, e - b), real.narrow(0, b, e - b), {}};
    auto h = F::normalize(f.m->last_token_hidden(tb), F::NormalizeFuncOptions().dim(1));
    if (log) log->push_back(h.detach().clone());
    return h;
  };
}

std::vector<torch::Tensor> grads_of(Fixture& f) {
  std::vector<torch::Tensor> g;
  for (auto& p : f.lora.parameters()) {
    g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
  return g;
}

double max_rel_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, a[i].abs().max().item<double>());
    diff = std::max(diff, (a[i] - b[i]).abs().max().item<double>());
  }
  return diff / scale;
}

train::LossFn stage2_loss() {
  return [](const std::vector<torch::Tensor>& r) { return train::loss_hard_negative(r[0], r[1], 0.05, 2, 0.1); };
}

}  // namespace

TEST(GradCache, EqualsFullBatchForAnyChunking) {
  Fixture f = make(/*dropout=*/0.0);
  auto q = embed_fn(f, f.ids_q, f.real_q), c = embed_fn(f, f.ids_c, f.real_c);
  auto full = train::grad_cache_step({{f.N, 0, q}, {f.N, 0, c}}, stage2_loss());
  auto g_full = grads_of(f);
  double norm = 0;
  for (auto& g : g_full) norm += g.abs().sum().item<double>();
  ASSERT_GT(norm, 0.0);
  for (auto [cq, cc] : std::vector<std::pair<int64_t, int64_t>>{{2, 3}, {1, 0}, {0, 4}, {6, 6}, {4, 5}}) {
    auto r = train::grad_cache_step({{f.N, cq, q}, {f.N, cc, c}}, stage2_loss());
    EXPECT_NEAR(r.loss.item<double>(), full.loss.item<double>(), 1e-5 * std::max(1.0, std::abs(full.loss.item<double>()))) << cq << "/" << cc;
    EXPECT_LT(max_rel_diff(g_full, grads_of(f)), 1e-5) << "chunks " << cq << "/" << cc;
    EXPECT_TRUE(torch::allclose(r.reps[0], full.reps[0], 1e-5, 1e-6));
  }
}

TEST(GradCache, AGradientThatDiffersIsDetected) {
  // guard against a vacuous comparison: a different loss gives different gradients
  Fixture f = make(0.0);
  auto q = embed_fn(f, f.ids_q, f.real_q), c = embed_fn(f, f.ids_c, f.real_c);
  train::grad_cache_step({{f.N, 0, q}, {f.N, 0, c}}, stage2_loss());
  auto g1 = grads_of(f);
  train::grad_cache_step({{f.N, 2, q}, {f.N, 2, c}}, [](const std::vector<torch::Tensor>& r) {
    return train::loss_hard_negative(r[0], r[1], 0.05, 1, 0.1);
  });
  EXPECT_GT(max_rel_diff(g1, grads_of(f)), 1e-3);
}

TEST(GradCache, DropoutMasksAreReplayed) {
  Fixture f = make(/*dropout=*/0.3);
  // full batch vs one chunk per side: same masks when the generator starts from the same state
  auto q = embed_fn(f, f.ids_q, f.real_q), c = embed_fn(f, f.ids_c, f.real_c);
  torch::manual_seed(42);
  auto full = train::grad_cache_step({{f.N, 0, q}, {f.N, 0, c}}, stage2_loss());
  const double next_full = torch::rand({1}).item<double>();
  auto g_full = grads_of(f);
  torch::manual_seed(42);
  auto cached = train::grad_cache_step({{f.N, f.N, q}, {f.N, f.N, c}}, stage2_loss());
  const double next_cached = torch::rand({1}).item<double>();
  EXPECT_NEAR(cached.loss.item<double>(), full.loss.item<double>(), 1e-5 * std::max(1.0, std::abs(full.loss.item<double>())));
  EXPECT_LT(max_rel_diff(g_full, grads_of(f)), 1e-5);
  EXPECT_EQ(next_full, next_cached) << "the random stream must continue as after the first pass";

  // several chunks: the re-forward of each chunk reproduces its first-pass embeddings exactly
  std::vector<torch::Tensor> log_q;
  auto q_logged = embed_fn(f, f.ids_q, f.real_q, &log_q);
  train::grad_cache_step({{f.N, 2, q_logged}, {f.N, 3, c}}, stage2_loss());
  ASSERT_EQ(log_q.size(), 6u);  // 3 chunks, twice
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(log_q[i], log_q[i + 3])) << "chunk " << i;
  // and dropout is really active: another draw gives other embeddings
  std::vector<torch::Tensor> again;
  embed_fn(f, f.ids_q, f.real_q, &again)(0, 2);
  EXPECT_FALSE(torch::equal(again[0], log_q[0]));
}

TEST(GradCache, Stage1SingleSide) {
  Fixture f = make(0.0);
  auto s = embed_fn(f, f.ids_q, f.real_q);
  torch::manual_seed(9);
  auto teacher = F::normalize(torch::randn({f.N, 10}), F::NormalizeFuncOptions().dim(1));
  auto loss = [&](const std::vector<torch::Tensor>& r) { return train::loss_distill(r[0], teacher, 0.05); };
  auto full = train::grad_cache_step({{f.N, 0, s}}, loss);
  auto g_full = grads_of(f);
  auto cached = train::grad_cache_step({{f.N, 4, s}}, loss);
  EXPECT_NEAR(cached.loss.item<double>(), full.loss.item<double>(), 1e-5 * std::max(1.0, std::abs(full.loss.item<double>())));
  EXPECT_LT(max_rel_diff(g_full, grads_of(f)), 1e-5);
}

TEST(GradCache, BadChunkSize) {
  Fixture f = make(0.0);
  auto q = embed_fn(f, f.ids_q, f.real_q);
  EXPECT_THROW(train::grad_cache_step({{f.N, -1, q}}, [](const std::vector<torch::Tensor>& r) {
                 return r[0].sum();
               }),
               unime::Error);
}
