// GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
// Setup", https://github.com/luyug/GradCache): contrastive training with a large global batch whose
// activation memory depends on the chunk size only. For each side (queries, candidates, ...):
//   1. embed every chunk and keep only the detached embeddings (the chunk's graph is freed at
//      once), remembering the random state before each chunk. Unlike the reference this pass
//      runs in grad mode: the models take no-grad-only fast paths whose random draws come in
//      another order, and the re-forward must replay the very same dropout masks;
//   2. compute the loss on the detached full-batch embeddings and its gradient w.r.t. each
//      embedding (one backward through the loss only);
//   3. re-run each chunk with autograd from the same random state (so dropout draws the same
//      masks) and backpropagate the cached embedding gradients into the parameters.
// The parameter gradients equal those of full-batch training. A side with chunk 0 is not cached:
// it runs once with autograd and its graph lives until the loss backward (all sides at 0 is plain
// full-batch training). Gradient accumulation is NOT a substitute: it does not add negatives.
// The random state restored before a re-forward is that of the default generators (CPU, and the
// current CUDA device when CUDA is available): models::Linear's LoRA dropout draws from them.
// After the step the generators are left where the first pass left them.
// Legend: n rows on a side, D embedding dim.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace unime::train {

/// A snapshot of the default random generators of some devices (GradCache's RandContext).
class RngState {
 public:
  /// CPU, plus the current CUDA device when CUDA is available.
  static std::vector<torch::Device> default_devices();
  static RngState capture(const std::vector<torch::Device>& devices);
  void restore() const;

 private:
  std::vector<std::pair<torch::Device, torch::Tensor>> states_;
};

/// Rows [begin, end) of one side -> their embeddings [end - begin, D] (normalised for the UniME
/// losses). Called twice per chunk, both times in grad mode (first pass: the result is detached at
/// once; re-forward: backpropagated); it must be a pure function of the rows, the parameters and
/// the random state.
using EmbedFn = std::function<torch::Tensor(int64_t begin, int64_t end)>;

struct GradCacheSide {
  int64_t n = 0;      ///< rows on this side
  int64_t chunk = 0;  ///< rows per chunk; 0 = off (one forward with autograd)
  EmbedFn embed;
};

/// The full-batch embeddings of every side, in order -> scalar loss.
using LossFn = std::function<torch::Tensor(const std::vector<torch::Tensor>& reps)>;

struct GradCacheResult {
  torch::Tensor loss;               ///< detached scalar
  std::vector<torch::Tensor> reps;  ///< detached full-batch embeddings per side
};

/// Runs forward and backward of one step; gradients accumulate into the parameters' .grad as
/// loss.backward() of full-batch training would. Throws unime::Error for a negative chunk size.
GradCacheResult grad_cache_step(const std::vector<GradCacheSide>& sides, const LossFn& loss_fn,
                                const std::vector<torch::Device>& rng_devices = RngState::default_devices());

}  // namespace unime::train
