// Shared transformer blocks (STYLE.md B2): RMSNorm, RoPE, attention, SwiGLU MLP, activations.
// Architecture files only wire these. Semantics follow Hugging Face transformers' eager code
// (modeling_llama.py, modeling_clip.py) including where it changes dtype.
// Legend: B batch, T tokens, D hidden, H heads, Hkv kv heads, d head_dim, F mlp inner size.
#pragma once

#include <string>

#include "io/hf-config.h"
#include "models/linear.h"

namespace unime::models {

// ---- activations ---------------------------------------------------------------------------

/// Activation by HF name: silu, gelu (erf), gelu_new / gelu_pytorch_tanh (tanh), quick_gelu, relu.
torch::Tensor activation(const std::string& name, const torch::Tensor& x);

// ---- RMSNorm (HF LlamaRMSNorm) ----------------------------------------------------------------

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  // x: [..., D] -> [..., D]; variance in float32, then weight * x.to(input dtype)
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // <prefix>.weight [D]
 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// ---- rotary position embedding (rotate-half form, HF LlamaRotaryEmbedding) ------------------

struct Rope {
  torch::Tensor cos, sin;  // [B, T, d] in the model dtype
};

/// inv_freq [d/2] (float32) for the config's rope type (default / linear / llama3).
torch::Tensor rope_inv_freq(const io::DecoderConfig& c);
/// cos/sin for integer positions [B, T] -> Rope with [B, T, d] tensors cast to dtype;
/// attention_scaling multiplies cos and sin in float32 before the cast (Phi-3 LongRope).
Rope rope_tables(const torch::Tensor& inv_freq, const torch::Tensor& positions,
                 torch::ScalarType dtype, double attention_scaling = 1.0);
/// Phi-3 LongRope / Phi3Yarn: inv_freq / short_factor (short = true) or / long_factor, [d/2] float32.
torch::Tensor rope_inv_freq_phi3(const io::DecoderConfig& c, bool long_factors);
/// M-RoPE (Qwen2VLRotaryEmbedding + apply_multimodal_rotary_pos_emb): positions [3, B, T]
/// (temporal, height, width); frequency i < d/2 takes its position from the component whose
/// mrope_section run holds i. Equal positions on all three = plain RoPE. -> Rope [B, T, d]
Rope rope_tables_mrope(const torch::Tensor& inv_freq, const torch::Tensor& positions3,
                       const std::vector<int64_t>& mrope_section, torch::ScalarType dtype);
/// x: [B, H, T, d] -> x*cos + rotate_half(x)*sin
torch::Tensor apply_rope(const torch::Tensor& x, const Rope& rope);

// ---- attention masks -------------------------------------------------------------------------

/// Additive mask [B, 1, T, T] in dtype: 0 where query i may see key j (j <= i, key j real, and
/// i - j < window when window > 0), the dtype's lowest value elsewhere (as HF does).
/// key_real: [B, T] bool.
torch::Tensor causal_mask(const torch::Tensor& key_real, int64_t window, torch::ScalarType dtype);

/// softmax(q k^T * scale + mask) v with HF's dtype handling (scores in the model dtype, softmax
/// in float32). q: [B, H, T, d]; k, v: [B, Hkv, S, d] (GQA: query head h uses kv head h / (H/Hkv));
/// mask: [B, 1, T, S] or undefined -> [B, H, T, d]
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& mask, double scale);

// ---- Llama-family decoder layer (LlamaDecoderLayer; Mistral, Qwen2 identical in wiring) -----

/// Packed sequences: x is [1, N, D] holding several sequences back to back (no padding);
/// attention runs per segment, each with its own [1, 1, L, L] additive mask.
struct Segments {
  std::vector<int64_t> lens;          // L per sequence, sum = N
  std::vector<torch::Tensor> masks;   // per sequence: causal (+ window) mask [1, 1, L, L]
};

class DecoderAttentionImpl : public torch::nn::Module {
 public:
  explicit DecoderAttentionImpl(const io::DecoderConfig& c);
  // x: [B, T, D] -> [B, T, D]; with segs, x is packed [1, N, D] and mask is ignored
  torch::Tensor forward(const torch::Tensor& x, const Rope& rope, const torch::Tensor& mask,
                        const Segments* segs = nullptr);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  /// Phi-3: one fused projection (self_attn.qkv_proj [H*d + 2*Hkv*d, D]) instead of q/k/v_proj;
  /// its output splits as [q | k | v] (modeling_phi3_v.py Phi3Attention.forward).
  Linear qkv_proj{nullptr};
 private:
  int64_t n_head_, n_head_kv_, head_dim_;
};
TORCH_MODULE(DecoderAttention);

class SwiGluMlpImpl : public torch::nn::Module {
 public:
  /// fused: Phi-3's mlp.gate_up_proj [2F, D] whose output splits as [gate | up] (Phi3MLP).
  SwiGluMlpImpl(int64_t dim, int64_t inner, bool bias, bool fused = false);
  // x: [B, T, D] -> down(silu(gate(x)) * up(x)): [B, T, D]
  torch::Tensor forward(const torch::Tensor& x);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  Linear gate_up_proj{nullptr};  // fused (Phi-3) instead of gate_proj / up_proj
};
TORCH_MODULE(SwiGluMlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const io::DecoderConfig& c);
  // x: [B, T, D] -> [B, T, D] (pre-norm residual blocks); segs: packed sequences (see Segments)
  torch::Tensor forward(const torch::Tensor& x, const Rope& rope, const torch::Tensor& mask,
                        const Segments* segs = nullptr);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  DecoderAttention self_attn{nullptr};
  SwiGluMlp mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

}  // namespace unime::models
