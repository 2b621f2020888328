// Data parallel training across processes with c10d (ProcessGroupGloo on CPU; NCCL is the CUDA
// counterpart, not wired yet). torchrun-style environment: RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT. Each rank embeds its slice of the global batch; embeddings are all-gathered so the
// loss sees the global batch (UniME's reference multiplies the loss by the world size); parameter
// gradients are averaged, so every rank takes the same step as one process with the same global
// batch would. Legend: W world size, b rows per rank, D embedding dim.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace unime::train {

class Distributed {
 public:
  /// From the environment; a world of 1 (no variables) needs no process group.
  static std::unique_ptr<Distributed> from_env();
  ~Distributed();

  int rank() const { return rank_; }
  int world() const { return world_; }
  bool active() const { return world_ > 1; }

  /// local [b, D] -> global [W*b, D]; rows of this rank are `local` itself (autograd flows to
  /// them), the other ranks' rows are constants. W == 1: local.
  torch::Tensor all_gather_rows(const torch::Tensor& local);
  /// Averages the gradients of params across ranks (in place). W == 1: nothing.
  void average_gradients(const std::vector<torch::Tensor>& params);
  void barrier();

 private:
  int rank_ = 0, world_ = 1;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace unime::train
