// CLIP vision transformer: HF CLIPVisionTransformer (CLIPVisionModel, CLIPModel's vision_model,
// LLaVA's vision_tower.vision_model). Parameters under HF key names below `vision_model.`:
// embeddings.{class_embedding, patch_embedding.weight, position_embedding.weight}, pre_layrnorm,
// encoder.layers.N.{self_attn.{q,k,v,out}_proj, layer_norm1, mlp.{fc1,fc2}, layer_norm2},
// post_layernorm.
// Legend: N images, C channels, S image_size, P patches, Dv hidden_size.
#pragma once

#include <vector>

#include "models/layers.h"

namespace unime::models {

class ClipAttentionImpl : public torch::nn::Module {
 public:
  explicit ClipAttentionImpl(const io::ClipVisionConfig& c);
  // x: [N, P+1, Dv] -> [N, P+1, Dv] (no mask: every patch sees every patch)
  torch::Tensor forward(const torch::Tensor& x);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
 private:
  int64_t n_head_, head_dim_;
};
TORCH_MODULE(ClipAttention);

class ClipLayerImpl : public torch::nn::Module {
 public:
  explicit ClipLayerImpl(const io::ClipVisionConfig& c);
  torch::Tensor forward(const torch::Tensor& x);  // [N, P+1, Dv] -> same
  ClipAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  Linear fc1{nullptr}, fc2{nullptr};  // mlp.fc1, mlp.fc2
 private:
  std::string act_;
};
TORCH_MODULE(ClipLayer);

class ClipVisionImpl : public torch::nn::Module {
 public:
  explicit ClipVisionImpl(const io::ClipVisionConfig& c);

  /// pixels: [N, C, S, S] -> hidden states: entry 0 = embeddings after pre_layrnorm, entry l =
  /// output of layer l (HF's output_hidden_states). Only layers up to max_layer are run.
  std::vector<torch::Tensor> hidden_states(const torch::Tensor& pixels, int64_t max_layer);
  /// pooled output: post_layernorm(last_hidden[:, 0]) -> [N, Dv]
  torch::Tensor pooled(const torch::Tensor& last_hidden);

  const io::ClipVisionConfig& config() const { return cfg_; }

  // registered under "embeddings" / "encoder" holder modules so names equal HF keys
  torch::Tensor class_embedding;                 // embeddings.class_embedding [Dv]
  torch::nn::Conv2d patch_embedding{nullptr};    // embeddings.patch_embedding.weight [Dv, C, p, p]
  torch::nn::Embedding position_embedding{nullptr};  // embeddings.position_embedding.weight [P+1, Dv]
  torch::nn::LayerNorm pre_layrnorm{nullptr}, post_layernorm{nullptr};
  torch::nn::ModuleList layers{nullptr};         // encoder.layers.N.*

 private:
  io::ClipVisionConfig cfg_;
};
TORCH_MODULE(ClipVision);

}  // namespace unime::models
