// Qwen2-VL vision transformer: HF Qwen2VisionTransformerPretrainedModel (modeling_qwen2_vl.py).
// Parameters under HF key names below `visual.` (legacy) / `model.visual.` (transformers >= 4.52):
// patch_embed.proj.weight [Dv, C, tp, p, p] (Conv3d, no bias), blocks.N.{norm1, attn.qkv,
// attn.proj, norm2, mlp.fc1, mlp.fc2}, merger.{ln_q, mlp.0, mlp.2}.
// Each frame attends within itself (cu_seqlens); 2-D rotary embeddings on (row, column) of each
// patch with the merge blocks' order; the PatchMerger concatenates each m x m block and projects
// to the decoder width.
// Legend: L patches of all images, Dv embed_dim, H heads, d head_dim, m spatial_merge_size,
//         D decoder hidden_size.
#pragma once

#include "models/layers.h"

namespace unime::models {

class Qwen2VLVisionBlockImpl : public torch::nn::Module {
 public:
  explicit Qwen2VLVisionBlockImpl(const io::Qwen2VLVisionConfig& c);
  // x: [L, Dv]; rope cos/sin: [L, d]; segs: patches per frame -> [L, Dv]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const std::vector<int64_t>& segs);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Linear qkv{nullptr}, proj{nullptr};  // attn.qkv, attn.proj
  Linear fc1{nullptr}, fc2{nullptr};   // mlp.fc1, mlp.fc2
 private:
  int64_t n_head_, head_dim_;
  std::string act_;
};
TORCH_MODULE(Qwen2VLVisionBlock);

class Qwen2VLVisionImpl : public torch::nn::Module {
 public:
  explicit Qwen2VLVisionImpl(const io::Qwen2VLVisionConfig& c);
  /// patches [L, C*tp*p*p] (the processor's order), grid_thw [N, 3] int64 -> [L / m^2, D]
  torch::Tensor forward(const torch::Tensor& patches, const torch::Tensor& grid_thw);

  torch::nn::Conv3d patch_embed{nullptr};   // patch_embed.proj
  torch::nn::ModuleList blocks{nullptr};    // blocks.N
  torch::nn::LayerNorm ln_q{nullptr};       // merger.ln_q
  Linear mlp0{nullptr}, mlp2{nullptr};      // merger.mlp.0, merger.mlp.2 (GELU between)

 private:
  io::Qwen2VLVisionConfig cfg_;
  torch::Tensor inv_freq_;  // [d/4] float32: VisionRotaryEmbedding(d / 2), theta 10000
};
TORCH_MODULE(Qwen2VLVision);

}  // namespace unime::models
