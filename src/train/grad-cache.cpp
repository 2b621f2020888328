// GradCache; see grad-cache.h. Reference: luyug/GradCache grad_cache.py (GradCache.cache_step:
// forward_no_grad with RandContext per chunk, build_cache = loss backward on detached reps,
// forward_backward = re-forward each chunk under its RandContext and backward the cached grads).
#include "train/grad-cache.h"

#include <mutex>

#include "core/error.h"

namespace unime::train {

// ---- random state ----------------------------------------------------------------------------

std::vector<torch::Device> RngState::default_devices() {
  std::vector<torch::Device> d{torch::Device(torch::kCPU)};
  if (torch::cuda::is_available()) d.emplace_back(torch::kCUDA);  // index -1: the current device
  return d;
}

RngState RngState::capture(const std::vector<torch::Device>& devices) {
  RngState s;
  for (const auto& dev : devices) {
    auto gen = at::globalContext().defaultGenerator(dev);
    std::lock_guard<std::mutex> lock(gen.mutex());
    s.states_.emplace_back(dev, gen.get_state());
  }
  return s;
}

void RngState::restore() const {
  for (const auto& [dev, state] : states_) {
    auto gen = at::globalContext().defaultGenerator(dev);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  }
}

// ---- the step --------------------------------------------------------------------------------

GradCacheResult grad_cache_step(const std::vector<GradCacheSide>& sides, const LossFn& loss_fn,
                                const std::vector<torch::Device>& rng_devices) {
  for (size_t s = 0; s < sides.size(); ++s) {
    UNIME_CHECK(sides[s].chunk >= 0, "GradCache: chunk size must be >= 0 (0 = off), got ", sides[s].chunk);
    UNIME_CHECK(sides[s].n > 0, "GradCache: side ", s, " has no rows");
  }
  // 1. first pass: cached sides chunk by chunk without autograd; uncached sides with autograd
  std::vector<torch::Tensor> reps(sides.size());
  std::vector<std::vector<RngState>> chunk_rng(sides.size());
  for (size_t s = 0; s < sides.size(); ++s) {
    const auto& side = sides[s];
    if (side.chunk == 0) {
      reps[s] = side.embed(0, side.n);                                  // [n, D], graph kept
      continue;
    }
    std::vector<torch::Tensor> parts;
    for (int64_t b = 0; b < side.n; b += side.chunk) {
      const int64_t e = std::min(side.n, b + side.chunk);
      chunk_rng[s].push_back(RngState::capture(rng_devices));
      // No autograd here (GradCache's point: activations of one chunk at a time, no graph).
      // The model draws its dropout masks in the same order with and without grad mode
      // (layers.cpp SwiGluMlp), so the re-forward replays them exactly.
      torch::NoGradGuard no_grad;
      parts.push_back(side.embed(b, e).detach());                       // [e - b, D]
    }
    reps[s] = torch::cat(parts, 0).detach().requires_grad_(true);        // [n, D] leaf
  }
  const RngState after_first_pass = RngState::capture(rng_devices);

  // 2. loss and the gradient w.r.t. every cached embedding (uncached sides backprop directly)
  torch::Tensor loss = loss_fn(reps);
  TORCH_CHECK(loss.dim() == 0, "GradCache: the loss must be a scalar, got ", loss.sizes());
  if (loss.requires_grad()) loss.backward();

  // 3. re-forward each cached chunk from its random state and backprop the cached gradients
  for (size_t s = 0; s < sides.size(); ++s) {
    const auto& side = sides[s];
    if (side.chunk == 0 || !reps[s].grad().defined()) continue;
    const torch::Tensor grad = reps[s].grad();
    size_t c = 0;
    for (int64_t b = 0; b < side.n; b += side.chunk, ++c) {
      const int64_t e = std::min(side.n, b + side.chunk);
      chunk_rng[s][c].restore();
      torch::Tensor out = side.embed(b, e);                             // [e - b, D]
      TORCH_CHECK(out.size(0) == e - b, "GradCache: embed(", b, ", ", e, ") returned ", out.sizes());
      if (out.requires_grad()) torch::autograd::backward({out}, {grad.narrow(0, b, e - b).to(out.scalar_type())});
    }
  }
  after_first_pass.restore();

  GradCacheResult r;
  r.loss = loss.detach();
  for (auto& t : reps) r.reps.push_back(t.detach());
  return r;
}

}  // namespace unime::train
