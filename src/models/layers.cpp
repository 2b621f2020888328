// Shared transformer blocks; see layers.h. References: transformers/models/llama/modeling_llama.py
// (LlamaRMSNorm, LlamaRotaryEmbedding, rotate_half, repeat_kv, eager_attention_forward),
// modeling_rope_utils.py (_compute_llama3_parameters), activations.py.
#include "models/layers.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "models/linear.h"

namespace unime::models {

namespace F = torch::nn::functional;

torch::Tensor activation(const std::string& name, const torch::Tensor& x) {
  if (name == "silu") return torch::silu(x);
  if (name == "gelu") return F::gelu(x);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh")
    return F::gelu(x, F::GELUFuncOptions().approximate("tanh"));
  if (name == "quick_gelu") return x * torch::sigmoid(1.702 * x);
  if (name == "relu") return torch::relu(x);
  TORCH_CHECK(false, "activation: unknown name ", name);  // configs are validated in io/
}

// ---- RMSNorm -----------------------------------------------------------------------------------

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  const auto dtype = x.scalar_type();
  auto h = x.to(torch::kFloat32);
  auto var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * torch::rsqrt(var + eps_);
  return weight * h.to(dtype);
}

// ---- RoPE --------------------------------------------------------------------------------------

torch::Tensor rope_inv_freq(const io::DecoderConfig& c) {
  const int64_t d = c.head_dim;
  auto idx = torch::arange(0, d, 2, torch::kInt64).to(torch::kFloat32);
  auto inv_freq = 1.0 / torch::pow(torch::tensor(c.rope_theta, torch::kFloat32), idx / static_cast<double>(d));
  inv_freq = inv_freq.to(torch::kFloat32);
  switch (c.rope_type) {
    case io::RopeType::Default:
    case io::RopeType::LongRope:  // the factors are applied per sequence (rope_inv_freq_phi3)
    case io::RopeType::Phi3Yarn:
      break;
    case io::RopeType::Linear:
      inv_freq = inv_freq / c.rope_factor;
      break;
    case io::RopeType::Llama3: {
      const double factor = c.rope_factor, lo = c.rope_low_freq_factor, hi = c.rope_high_freq_factor;
      const double old_ctx = static_cast<double>(c.rope_original_max_position_embeddings);
      const double low_freq_wavelen = old_ctx / lo, high_freq_wavelen = old_ctx / hi;
      auto wavelen = 2.0 * M_PI / inv_freq;
      auto inv_llama = torch::where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq);
      auto smooth = (old_ctx / wavelen - lo) / (hi - lo);
      auto smoothed = (1.0 - smooth) * inv_llama / factor + smooth * inv_llama;
      auto is_medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
      inv_freq = torch::where(is_medium, smoothed, inv_llama);
      break;
    }
  }
  return inv_freq;
}

Rope rope_tables(const torch::Tensor& inv_freq, const torch::Tensor& positions,
                 torch::ScalarType dtype, double attention_scaling) {
  // freqs[b, t, i] = pos[b, t] * inv_freq[i], in float32 as HF (autocast disabled there)
  auto pos = positions.to(torch::kFloat32).unsqueeze(-1);           // [B, T, 1]
  auto freqs = pos * inv_freq.to(positions.device()).view({1, 1, -1});  // [B, T, d/2]
  auto emb = torch::cat({freqs, freqs}, -1);                         // [B, T, d]
  if (attention_scaling == 1.0) return Rope{emb.cos().to(dtype), emb.sin().to(dtype)};
  return Rope{(emb.cos() * attention_scaling).to(dtype), (emb.sin() * attention_scaling).to(dtype)};
}

// Phi3SuScaledRotaryEmbedding.forward: inv_freq = 1 / (ext_factors * base^(arange(0, d, 2) / d)),
// all float32; ext_factors = long_factor when max(position) + 1 > original_max_position_embeddings
torch::Tensor rope_inv_freq_phi3(const io::DecoderConfig& c, bool long_factors) {
  const int64_t d = c.head_dim;
  const auto& f = long_factors ? c.rope_long_factor : c.rope_short_factor;
  TORCH_CHECK(static_cast<int64_t>(f.size()) * 2 == d, "rope_inv_freq_phi3: ", f.size(), " factors for head_dim ", d);
  auto shape = torch::arange(0, d, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(d);
  auto ext = torch::tensor(f, torch::kFloat64).to(torch::kFloat32);
  return 1.0 / (ext * torch::pow(c.rope_theta, shape));
}

Rope rope_tables_mrope(const torch::Tensor& inv_freq, const torch::Tensor& positions3,
                       const std::vector<int64_t>& mrope_section, torch::ScalarType dtype) {
  TORCH_CHECK(positions3.dim() == 3 && positions3.size(0) == 3, "rope_tables_mrope: positions must be [3, B, T]");
  auto pos = positions3.to(torch::kFloat32);
  auto inv = inv_freq.to(positions3.device());
  std::vector<torch::Tensor> parts;
  int64_t off = 0;
  for (size_t s = 0; s < mrope_section.size(); ++s) {  // component s for its run of frequencies
    const int64_t n = mrope_section[s];
    parts.push_back(pos[s].unsqueeze(-1) * inv.narrow(0, off, n).view({1, 1, n}));  // [B, T, n]
    off += n;
  }
  auto freqs = torch::cat(parts, -1);                                 // [B, T, d/2]
  auto emb = torch::cat({freqs, freqs}, -1);                          // [B, T, d]
  return Rope{emb.cos().to(dtype), emb.sin().to(dtype)};
}

static torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, h), x2 = x.narrow(-1, h, h);
  return torch::cat({-x2, x1}, -1);
}

torch::Tensor apply_rope(const torch::Tensor& x, const Rope& rope) {
  auto cos = rope.cos.unsqueeze(1), sin = rope.sin.unsqueeze(1);  // [B, 1, T, d]
  return x * cos + rotate_half(x) * sin;
}

// ---- masks + attention -------------------------------------------------------------------------

torch::Tensor causal_mask(const torch::Tensor& key_real, int64_t window, torch::ScalarType dtype) {
  const int64_t T = key_real.size(1);
  auto opts = torch::TensorOptions().device(key_real.device());
  auto i = torch::arange(T, opts.dtype(torch::kInt64)).view({T, 1});
  auto j = torch::arange(T, opts.dtype(torch::kInt64)).view({1, T});
  auto allowed = (j <= i);                                            // [T, T]
  if (window > 0) allowed = allowed.logical_and((i - j) < window);
  allowed = allowed.unsqueeze(0).logical_and(key_real.to(torch::kBool).unsqueeze(1));  // [B, T, T]
  const double lowest = dtype == torch::kBFloat16 ? -3.3895313892515355e38
                        : dtype == torch::kFloat16 ? -65504.0
                        // float64 too: softmax runs in float32, where double's lowest is -inf
                        // and a fully masked padding row would turn into NaN
                                                   : static_cast<double>(std::numeric_limits<float>::lowest());
  auto mask = torch::zeros(allowed.sizes(), opts.dtype(dtype));
  mask.masked_fill_(allowed.logical_not(), lowest);
  return mask.unsqueeze(1);                                           // [B, 1, T, T]
}

constexpr int64_t kAttnBlockRows = 2 * kFastRows;

// softmax(q k^T * scale + mask) v for q [B, H, T, d], kt = k^T [B, Hkv, d, S], v [B, Hkv, S, d],
// mask [Bm, (1,) T, S] or undefined -> [B, H, T, d]
static torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& kt, const torch::Tensor& v,
                            const torch::Tensor& mask, double scale, bool no_grad) {
  // (Padding the query rows to a multiple of 64, as models::Linear does, was measured here too:
  // neutral on average over 70..1300 rows, up to 2x either way, so not done; the blocks below
  // give long inputs 128-row products anyway.)
  // GQA without copying k/v: fold each kv head's g query heads into the row dimension.
  // q [B, H, T, d] -> [B, Hkv, g*T, d]; scores [B, Hkv, g*T, S] viewed as [B, Hkv, g, T, S].
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), d = q.size(3);
  const int64_t Hkv = kt.size(1), S = kt.size(3), g = H / Hkv;
  auto qg = g == 1 ? q : q.reshape({B, Hkv, g * T, d});
  auto scores = torch::matmul(qg, kt);                              // [B, Hkv, g*T, S], model dtype
  if (no_grad) scores.mul_(scale);
  else scores = scores * scale;
  if (mask.defined()) {
    auto s5 = scores.view({B, Hkv, g, T, S});
    auto m5 = mask.view({mask.size(0), 1, 1, T, S});
    if (no_grad) s5.add_(m5);
    else scores = (s5 + m5).view({B, Hkv, g * T, S});
  }
  auto p = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
  auto y = torch::matmul(p, v);                                     // [B, Hkv, g*T, d]
  return g == 1 ? y : y.view({B, H, T, d});                         // [B, H, T, d]
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& mask, double scale) {
  const bool no_grad = !torch::GradMode::is_enabled() || c10::InferenceMode::is_enabled();
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), S = k.size(2);
  // Without autograd, long inputs go through in blocks of 128 query rows against one contiguous k^T:
  // the float32 scores of a block stay small (a 672-px Qwen2-VL image: 2304 x 2304 scores x 16
  // heads per layer, 340 MB at once), and the softmax and its casts run on cached data. Rows are
  // independent, so the result is the same up to the matmul's blocking.
  if (no_grad && q.device().is_cpu() && T > kAttnBlockRows && B * H * T * S > (int64_t{1} << 22)) {
    const auto kt = k.transpose(-2, -1).contiguous();
    const auto m3 = mask.defined() ? mask.view({mask.size(0), T, S}) : torch::Tensor();
    std::vector<torch::Tensor> parts;
    for (int64_t i = 0; i < T; i += kAttnBlockRows) {
      const int64_t n = std::min(kAttnBlockRows, T - i);
      parts.push_back(attend(q.narrow(2, i, n), kt, v, m3.defined() ? m3.narrow(1, i, n) : m3, scale, no_grad));
    }
    return torch::cat(parts, 2);
  }
  return attend(q, k.transpose(-2, -1), v, mask, scale, no_grad);
}

// ---- decoder layer -----------------------------------------------------------------------------

DecoderAttentionImpl::DecoderAttentionImpl(const io::DecoderConfig& c)
    : n_head_(c.num_attention_heads), n_head_kv_(c.num_key_value_heads), head_dim_(c.head_dim) {
  const int64_t D = c.hidden_size;
  if (c.model_type == "phi3") {
    qkv_proj = register_module("qkv_proj", Linear(D, (n_head_ + 2 * n_head_kv_) * head_dim_, false));
  } else {
    q_proj = register_module("q_proj", Linear(D, n_head_ * head_dim_, c.qkv_bias));
    k_proj = register_module("k_proj", Linear(D, n_head_kv_ * head_dim_, c.qkv_bias));
    v_proj = register_module("v_proj", Linear(D, n_head_kv_ * head_dim_, c.qkv_bias));
  }
  o_proj = register_module("o_proj", Linear(n_head_ * head_dim_, D, c.o_bias));
}

torch::Tensor DecoderAttentionImpl::forward(const torch::Tensor& x, const Rope& rope,
                                            const torch::Tensor& mask, const Segments* segs) {
  const int64_t B = x.size(0), T = x.size(1);
  torch::Tensor q, k, v;
  if (qkv_proj) {  // Phi-3: [q | k | v] along the output features
    auto qkv = qkv_proj(x);                                                  // [B, T, (H+2Hkv)*d]
    const int64_t nq = n_head_ * head_dim_, nk = n_head_kv_ * head_dim_;
    q = qkv.narrow(-1, 0, nq).reshape({B, T, n_head_, head_dim_}).transpose(1, 2);
    k = qkv.narrow(-1, nq, nk).reshape({B, T, n_head_kv_, head_dim_}).transpose(1, 2);
    v = qkv.narrow(-1, nq + nk, nk).reshape({B, T, n_head_kv_, head_dim_}).transpose(1, 2);
  } else {
    q = q_proj(x).view({B, T, n_head_, head_dim_}).transpose(1, 2);     // [B, H, T, d]
    k = k_proj(x).view({B, T, n_head_kv_, head_dim_}).transpose(1, 2);  // [B, Hkv, T, d]
    v = v_proj(x).view({B, T, n_head_kv_, head_dim_}).transpose(1, 2);  // [B, Hkv, T, d]
  }
  q = apply_rope(q, rope);
  k = apply_rope(k, rope);
  // GQA: each kv head serves H/Hkv consecutive query heads (HF repeat_kv); attention() folds
  // them instead of copying k and v.
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  torch::Tensor y;
  if (segs == nullptr) {
    y = attention(q, k, v, mask, scale);                                     // [B, H, T, d]
  } else {  // packed: each sequence attends only to itself
    std::vector<torch::Tensor> parts;
    int64_t off = 0;
    for (size_t i = 0; i < segs->lens.size(); ++i) {
      const int64_t L = segs->lens[i];
      parts.push_back(attention(q.narrow(2, off, L), k.narrow(2, off, L), v.narrow(2, off, L),
                                segs->masks[i], scale));                     // [1, H, L, d]
      off += L;
    }
    y = parts.size() == 1 ? parts[0] : torch::cat(parts, 2);                 // [1, H, N, d]
  }
  return o_proj(y.transpose(1, 2).reshape({B, T, n_head_ * head_dim_}));    // [B, T, D]
}

SwiGluMlpImpl::SwiGluMlpImpl(int64_t dim, int64_t inner, bool bias, bool fused) {
  if (fused) {
    gate_up_proj = register_module("gate_up_proj", Linear(dim, 2 * inner, bias));
  } else {
    gate_proj = register_module("gate_proj", Linear(dim, inner, bias));
    up_proj = register_module("up_proj", Linear(dim, inner, bias));
  }
  down_proj = register_module("down_proj", Linear(inner, dim, bias));
}

torch::Tensor SwiGluMlpImpl::forward(const torch::Tensor& x) {
  if (gate_up_proj) {  // Phi3MLP: gate, up = gate_up_proj(x).chunk(2); down(up * silu(gate))
    auto gu = gate_up_proj(x);                                       // [B, T, 2F]
    const int64_t F = gu.size(-1) / 2;
    return down_proj(gu.narrow(-1, F, F) * torch::silu(gu.narrow(-1, 0, F)));
  }
  if (!torch::GradMode::is_enabled() || c10::InferenceMode::is_enabled()) {
    auto g = gate_proj(x);  // in place: no autograd graph to keep
    auto u = up_proj(x);
    torch::silu_(g);
    return down_proj(g.mul_(u));
  }
  // gate before up in both paths: the LoRA dropout draws its masks in the same order, so a
  // no-grad forward (GradCache's first pass) replays exactly in the autograd forward
  auto g = gate_proj(x);
  auto u = up_proj(x);
  return down_proj(torch::silu(g) * u);
}

DecoderLayerImpl::DecoderLayerImpl(const io::DecoderConfig& c) {
  self_attn = register_module("self_attn", DecoderAttention(c));
  mlp = register_module("mlp", SwiGluMlp(c.hidden_size, c.intermediate_size, c.mlp_bias,
                                         /*fused=*/c.model_type == "phi3"));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const Rope& rope,
                                        const torch::Tensor& mask, const Segments* segs) {
  auto h = x + self_attn(input_layernorm(x), rope, mask, segs);
  return h + mlp(post_attention_layernorm(h));
}

}  // namespace unime::models
