// Llama-family decoder LLM: HF LlamaModel / MistralModel / Qwen2Model and the Phi-3 model inside
// Phi3VForCausalLM (one chain of modules; they differ only in config flags: biases, sliding
// window, fused qkv_proj / gate_up_proj, rope scaling, defaults). Parameters are registered
// under HF's key names below the `model.` prefix: embed_tokens, layers.N.*, norm.
// Legend: B batch, T tokens, D hidden_size, V vocab_size.
#pragma once

#include "models/layers.h"

namespace unime::models {

class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const io::DecoderConfig& c);

  /// embeds: [B, T, D]; positions: [B, T] int64 (from the real tokens: left padding does not
  /// shift them); key_real: [B, T] bool. Returns the last layer's output BEFORE the final norm.
  torch::Tensor forward(const torch::Tensor& embeds, const torch::Tensor& positions,
                        const torch::Tensor& key_real);
  /// Packed sequences without padding: embeds [1, N, D] holding sequences of `lens` back to
  /// back (positions restart at 0 for each). Returns [1, N, D] before the final norm.
  torch::Tensor forward_packed(const torch::Tensor& embeds, const std::vector<int64_t>& lens);
  /// As forward with ready rotary tables (M-RoPE: rope_tables_mrope of [3, B, T] positions).
  torch::Tensor forward(const torch::Tensor& embeds, const Rope& rope, const torch::Tensor& key_real);
  /// As forward_packed with ready rotary tables for the packed positions ([1, N, d]).
  torch::Tensor forward_packed(const torch::Tensor& embeds, const std::vector<int64_t>& lens,
                               const Rope& rope);
  /// Rotary tables for positions [B, T] (1-D RoPE) or [3, B, T] (M-RoPE configs) in dtype.
  Rope rope(const torch::Tensor& positions, torch::ScalarType dtype) const;
  /// ids: [B, T] -> [B, T, D]
  torch::Tensor embed(const torch::Tensor& ids);

  const io::DecoderConfig& config() const { return cfg_; }

  torch::nn::Embedding embed_tokens{nullptr};  // model.embed_tokens.weight [V, D]
  torch::nn::ModuleList layers{nullptr};       // model.layers.N.*
  RMSNorm norm{nullptr};                       // model.norm.weight [D]

 private:
  io::DecoderConfig cfg_;
  torch::Tensor inv_freq_;  // [d/2] float32, a buffer not in checkpoints (HF: non-persistent)
  torch::Tensor inv_freq_long_;  // Phi-3 LongRope: inv_freq with the long factors (inv_freq_: short)
  bool phi3_scaled() const;  // LongRope / Phi3Yarn: factors chosen per sequence
};
TORCH_MODULE(Decoder);

/// Positions from a left- or right-padded mask: cumsum(mask) - 1, 0 at padding. [B, T] -> [B, T]
torch::Tensor positions_from_mask(const torch::Tensor& key_real);

}  // namespace unime::models
