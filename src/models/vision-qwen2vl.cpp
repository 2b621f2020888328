// Qwen2-VL vision transformer; see vision-qwen2vl.h. Reference: transformers/models/qwen2_vl/
// modeling_qwen2_vl.py (PatchEmbed, VisionRotaryEmbedding, rot_pos_emb, VisionAttention with
// apply_rotary_pos_emb_vision in float32, Qwen2VLVisionBlock, PatchMerger).
#include "models/vision-qwen2vl.h"

#include <cmath>

namespace unime::models {

namespace F = torch::nn::functional;

static torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

Qwen2VLVisionBlockImpl::Qwen2VLVisionBlockImpl(const io::Qwen2VLVisionConfig& c)
    : n_head_(c.num_heads), head_dim_(c.embed_dim / c.num_heads), act_(c.hidden_act) {
  const int64_t D = c.embed_dim, I = static_cast<int64_t>(c.embed_dim * c.mlp_ratio);
  auto ln = torch::nn::LayerNormOptions({D}).eps(1e-6);
  norm1 = register_module("norm1", torch::nn::LayerNorm(ln));
  norm2 = register_module("norm2", torch::nn::LayerNorm(ln));
  auto attn = register_module("attn", std::make_shared<torch::nn::Module>());
  qkv = attn->register_module("qkv", Linear(D, 3 * D, true));
  proj = attn->register_module("proj", Linear(D, D, true));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  fc1 = mlp->register_module("fc1", Linear(D, I, true));
  fc2 = mlp->register_module("fc2", Linear(I, D, true));
}

torch::Tensor Qwen2VLVisionBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                              const torch::Tensor& sin, const std::vector<int64_t>& segs) {
  const int64_t L = x.size(0);
  auto h = norm1(x);
  auto qkv_ = qkv(h).view({L, 3, n_head_, head_dim_}).permute({1, 0, 2, 3});  // [3, L, H, d]
  auto q = qkv_[0], k = qkv_[1], v = qkv_[2];                                 // [L, H, d]
  // apply_rotary_pos_emb_vision: in float32, cast back
  auto c = cos.unsqueeze(1), s = sin.unsqueeze(1);                             // [L, 1, d]
  q = (q.to(torch::kFloat32) * c + rotate_half(q.to(torch::kFloat32)) * s).to(x.scalar_type());
  k = (k.to(torch::kFloat32) * c + rotate_half(k.to(torch::kFloat32)) * s).to(x.scalar_type());
  q = q.transpose(0, 1).unsqueeze(0);                                         // [1, H, L, d]
  k = k.transpose(0, 1).unsqueeze(0);
  v = v.transpose(0, 1).unsqueeze(0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  std::vector<torch::Tensor> parts;  // block-diagonal attention: one frame at a time
  int64_t off = 0;
  for (int64_t n : segs) {
    parts.push_back(attention(q.narrow(2, off, n), k.narrow(2, off, n), v.narrow(2, off, n),
                              torch::Tensor(), scale));                       // [1, H, n, d]
    off += n;
  }
  auto y = (parts.size() == 1 ? parts[0] : torch::cat(parts, 2))[0].transpose(0, 1).reshape({L, -1});
  auto out = x + proj(y);
  return out + fc2(activation(act_, fc1(norm2(out))));
}

Qwen2VLVisionImpl::Qwen2VLVisionImpl(const io::Qwen2VLVisionConfig& c) : cfg_(c) {
  const int64_t D = c.embed_dim, m = c.spatial_merge_size, hidden = D * m * m;
  auto pe = register_module("patch_embed", std::make_shared<torch::nn::Module>());
  patch_embed = pe->register_module(
      "proj", torch::nn::Conv3d(torch::nn::Conv3dOptions(c.in_channels, D,
                                                         {c.temporal_patch_size, c.patch_size, c.patch_size})
                                    .stride({c.temporal_patch_size, c.patch_size, c.patch_size})
                                    .bias(false)));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) blocks->push_back(Qwen2VLVisionBlock(c));
  auto merger = register_module("merger", std::make_shared<torch::nn::Module>());
  ln_q = merger->register_module("ln_q", torch::nn::LayerNorm(torch::nn::LayerNormOptions({D}).eps(1e-6)));
  auto mlp = merger->register_module("mlp", std::make_shared<torch::nn::Module>());
  mlp0 = mlp->register_module("0", Linear(hidden, hidden, true));
  mlp2 = mlp->register_module("2", Linear(hidden, c.hidden_size, true));
  const int64_t dim = (D / c.num_heads) / 2;  // VisionRotaryEmbedding(head_dim // 2)
  auto idx = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32);
  inv_freq_ = 1.0 / torch::pow(torch::tensor(10000.0, torch::kFloat32), idx / static_cast<double>(dim));
}

torch::Tensor Qwen2VLVisionImpl::forward(const torch::Tensor& patches, const torch::Tensor& grid_thw) {
  const int64_t m = cfg_.spatial_merge_size, C = cfg_.in_channels;
  const int64_t tp = cfg_.temporal_patch_size, p = cfg_.patch_size, D = cfg_.embed_dim;
  // PatchEmbed's Conv3d has kernel = stride = one whole patch, so it is one product with the
  // flattened kernel (the same sums in another order); the CPU's bf16 Conv3d took 0.7-1.2 s for
  // a 672-px image's 2304 patches, the product 0.02 s.
  auto w = patch_embed->weight;                                              // [Dv, C, tp, p, p]
  auto x = models::linear(patches.to(w.scalar_type()).reshape({-1, C * tp * p * p}), w.reshape({D, -1}));  // [L, Dv]
  // rot_pos_emb: (row, col) of every patch in the processor's merge-block order
  auto grid = grid_thw.to(torch::kCPU, torch::kInt64).contiguous();
  std::vector<torch::Tensor> pos;
  std::vector<int64_t> segs;
  int64_t max_grid = 0;
  for (int64_t i = 0; i < grid.size(0); ++i) {
    const int64_t t = grid[i][0].item<int64_t>(), h = grid[i][1].item<int64_t>(), wd = grid[i][2].item<int64_t>();
    max_grid = std::max({max_grid, h, wd});
    auto hpos = torch::arange(h, torch::kInt64).unsqueeze(1).expand({h, wd})
                    .reshape({h / m, m, wd / m, m}).permute({0, 2, 1, 3}).flatten();
    auto wpos = torch::arange(wd, torch::kInt64).unsqueeze(0).expand({h, wd})
                    .reshape({h / m, m, wd / m, m}).permute({0, 2, 1, 3}).flatten();
    pos.push_back(torch::stack({hpos, wpos}, -1).repeat({t, 1}));             // [t*h*w, 2]
    for (int64_t k = 0; k < t; ++k) segs.push_back(h * wd);                  // cu_seqlens
  }
  auto pos_ids = torch::cat(pos, 0);                                          // [L, 2]
  TORCH_CHECK(pos_ids.size(0) == x.size(0), "Qwen2-VL vision: ", x.size(0), " patches but grid_thw covers ",
              pos_ids.size(0));
  auto seq = torch::arange(max_grid, torch::kFloat32);
  auto full = torch::outer(seq, inv_freq_);                                   // [max, d/4]
  auto rot = full.index({pos_ids}).flatten(1);                                // [L, d/2]
  auto emb = torch::cat({rot, rot}, -1).to(x.device());                       // [L, d]
  auto cos = emb.cos(), sin = emb.sin();
  for (const auto& b : *blocks) x = b->as<Qwen2VLVisionBlock>()->forward(x, cos, sin, segs);
  // PatchMerger: ln_q, then each m*m consecutive patches concatenated -> mlp
  auto y = ln_q(x).view({-1, D * m * m});
  return mlp2(F::gelu(mlp0(y)));                                              // [L/m^2, D]
}

}  // namespace unime::models
