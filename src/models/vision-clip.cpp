// CLIP vision transformer; see vision-clip.h. Reference: transformers/models/clip/modeling_clip.py
// (CLIPVisionEmbeddings, CLIPAttention, CLIPMLP, CLIPEncoderLayer, CLIPVisionTransformer).
#include "models/vision-clip.h"

#include <cmath>

namespace unime::models {


ClipAttentionImpl::ClipAttentionImpl(const io::ClipVisionConfig& c)
    : n_head_(c.num_attention_heads), head_dim_(c.hidden_size / c.num_attention_heads) {
  const int64_t D = c.hidden_size;
  k_proj = register_module("k_proj", Linear(D, D, true));
  v_proj = register_module("v_proj", Linear(D, D, true));
  q_proj = register_module("q_proj", Linear(D, D, true));
  out_proj = register_module("out_proj", Linear(D, D, true));
}

torch::Tensor ClipAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t N = x.size(0), L = x.size(1);
  auto q = q_proj(x).view({N, L, n_head_, head_dim_}).transpose(1, 2);  // [N, H, L, d]
  auto k = k_proj(x).view({N, L, n_head_, head_dim_}).transpose(1, 2);
  auto v = v_proj(x).view({N, L, n_head_, head_dim_}).transpose(1, 2);
  auto y = attention(q, k, v, torch::Tensor(), 1.0 / std::sqrt(static_cast<double>(head_dim_)));
  return out_proj(y.transpose(1, 2).reshape({N, L, n_head_ * head_dim_}));  // [N, L, Dv]
}

ClipLayerImpl::ClipLayerImpl(const io::ClipVisionConfig& c) : act_(c.hidden_act) {
  const int64_t D = c.hidden_size;
  auto ln = [&](int64_t d) {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(c.layer_norm_eps));
  };
  self_attn = register_module("self_attn", ClipAttention(c));
  layer_norm1 = register_module("layer_norm1", ln(D));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  fc1 = mlp->register_module("fc1", Linear(D, c.intermediate_size, true));
  fc2 = mlp->register_module("fc2", Linear(c.intermediate_size, D, true));
  layer_norm2 = register_module("layer_norm2", ln(D));
}

torch::Tensor ClipLayerImpl::forward(const torch::Tensor& x) {
  auto h = x + self_attn(layer_norm1(x));
  return h + fc2(activation(act_, fc1(layer_norm2(h))));
}

ClipVisionImpl::ClipVisionImpl(const io::ClipVisionConfig& c) : cfg_(c) {
  const int64_t D = c.hidden_size;
  auto emb = register_module("embeddings", std::make_shared<torch::nn::Module>());
  class_embedding = emb->register_parameter("class_embedding", torch::randn({D}));
  patch_embedding = emb->register_module(
      "patch_embedding",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(c.num_channels, D, c.patch_size)
                            .stride(c.patch_size)
                            .bias(false)));
  position_embedding =
      emb->register_module("position_embedding", torch::nn::Embedding(c.num_patches() + 1, D));
  auto ln = torch::nn::LayerNormOptions({D}).eps(c.layer_norm_eps);
  pre_layrnorm = register_module("pre_layrnorm", torch::nn::LayerNorm(ln));
  auto enc = register_module("encoder", std::make_shared<torch::nn::Module>());
  layers = enc->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(ClipLayer(c));
  post_layernorm = register_module("post_layernorm", torch::nn::LayerNorm(ln));
}

std::vector<torch::Tensor> ClipVisionImpl::hidden_states(const torch::Tensor& pixels,
                                                         int64_t max_layer) {
  const int64_t N = pixels.size(0);
  auto w = patch_embedding->weight;
  auto patches = patch_embedding(pixels.to(w.scalar_type()));         // [N, Dv, S/p, S/p]
  patches = patches.flatten(2).transpose(1, 2);                        // [N, P, Dv]
  auto cls = class_embedding.view({1, 1, -1}).expand({N, 1, patches.size(2)});
  auto h = torch::cat({cls.to(patches.scalar_type()), patches}, 1);    // [N, P+1, Dv]
  h = h + position_embedding->weight.unsqueeze(0);
  h = pre_layrnorm(h);
  std::vector<torch::Tensor> states{h};
  const int64_t L = std::min<int64_t>(max_layer, static_cast<int64_t>(layers->size()));
  for (int64_t i = 0; i < L; ++i) {
    h = layers[i]->as<ClipLayer>()->forward(h);
    states.push_back(h);
  }
  return states;
}

torch::Tensor ClipVisionImpl::pooled(const torch::Tensor& last_hidden) {
  return post_layernorm(last_hidden.select(1, 0));  // [N, Dv]
}

}  // namespace unime::models
