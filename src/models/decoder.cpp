// Llama-family decoder; see decoder.h. Reference: transformers/models/llama/modeling_llama.py
// (LlamaModel.forward), mistral (sliding window mask), qwen2 (q/k/v biases, windowed layers),
// Phi-3-V's remote modeling_phi3_v.py (Phi3Model: fused projections, su/longrope/yarn scaling).
#include "models/decoder.h"

#include <map>

namespace unime::models {

DecoderImpl::DecoderImpl(const io::DecoderConfig& c) : cfg_(c) {
  auto eo = torch::nn::EmbeddingOptions(c.vocab_size, c.hidden_size);
  if (auto dt = skip_init_dtype())  // Model::load: uninitialised, the checkpoint fills it (linear.h)
    eo._weight(torch::empty({c.vocab_size, c.hidden_size}, torch::TensorOptions().dtype(*dt)));
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(eo));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(DecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  inv_freq_ = rope_inv_freq(c);
  if (phi3_scaled()) {
    inv_freq_ = rope_inv_freq_phi3(c, /*long_factors=*/false);
    inv_freq_long_ = rope_inv_freq_phi3(c, /*long_factors=*/true);
  }
}

torch::Tensor DecoderImpl::embed(const torch::Tensor& ids) { return embed_tokens(ids); }

bool DecoderImpl::phi3_scaled() const {
  return cfg_.rope_type == io::RopeType::LongRope || cfg_.rope_type == io::RopeType::Phi3Yarn;
}

Rope DecoderImpl::rope(const torch::Tensor& positions, torch::ScalarType dtype) const {
  if (positions.dim() == 3) return rope_tables_mrope(inv_freq_, positions, cfg_.mrope_section, dtype);
  if (!phi3_scaled()) return rope_tables(inv_freq_, positions, dtype);
  // Phi-3 LongRope: short or long factors by max(position) + 1 vs original_max_position_embeddings.
  // HF decides once for the whole batch; here each row decides for itself, as it would alone
  // (a vector never depends on its batch).
  std::vector<torch::Tensor> cos, sin;
  for (int64_t b = 0; b < positions.size(0); ++b) {
    auto row = positions.narrow(0, b, 1);                           // [1, T]
    const bool is_long = row.max().item<int64_t>() + 1 > cfg_.rope_original_max_position_embeddings;
    Rope r = rope_tables(is_long ? inv_freq_long_ : inv_freq_, row, dtype, cfg_.rope_attention_factor);
    cos.push_back(r.cos);
    sin.push_back(r.sin);
  }
  return Rope{torch::cat(cos, 0), torch::cat(sin, 0)};              // [B, T, d]
}

torch::Tensor DecoderImpl::forward(const torch::Tensor& embeds, const torch::Tensor& positions,
                                   const torch::Tensor& key_real) {
  return forward(embeds, rope(positions, embeds.scalar_type()), key_real);
}

torch::Tensor DecoderImpl::forward(const torch::Tensor& embeds, const Rope& rope,
                                   const torch::Tensor& key_real) {
  const auto dtype = embeds.scalar_type();
  // Mistral windows every layer; Qwen2 only layers >= max_window_layers; Llama none.
  torch::Tensor full = causal_mask(key_real, 0, dtype);
  torch::Tensor windowed;
  if (cfg_.sliding_window > 0 && cfg_.sliding_window < embeds.size(1))
    windowed = causal_mask(key_real, cfg_.sliding_window, dtype);
  auto h = embeds;
  for (int64_t i = 0; i < static_cast<int64_t>(layers->size()); ++i) {
    bool use_window = windowed.defined() &&
                      (cfg_.model_type != "qwen2" || i >= cfg_.max_window_layers);
    h = layers[i]->as<DecoderLayer>()->forward(h, rope, use_window ? windowed : full);
  }
  return h;
}

torch::Tensor DecoderImpl::forward_packed(const torch::Tensor& embeds, const std::vector<int64_t>& lens) {
  std::vector<torch::Tensor> pos;
  for (int64_t L : lens)
    pos.push_back(torch::arange(L, torch::TensorOptions().dtype(torch::kInt64).device(embeds.device())));
  if (phi3_scaled()) {  // each sequence picks its own LongRope factors: tables per sequence
    std::vector<torch::Tensor> cos, sin;
    for (auto& p : pos) {
      Rope r = rope(p.unsqueeze(0), embeds.scalar_type());           // [1, L, d]
      cos.push_back(r.cos);
      sin.push_back(r.sin);
    }
    return forward_packed(embeds, lens, Rope{torch::cat(cos, 1), torch::cat(sin, 1)});
  }
  return forward_packed(embeds, lens, rope_tables(inv_freq_, torch::cat(pos).unsqueeze(0), embeds.scalar_type()));
}

torch::Tensor DecoderImpl::forward_packed(const torch::Tensor& embeds, const std::vector<int64_t>& lens,
                                          const Rope& rope) {
  const auto dtype = embeds.scalar_type();
  auto dev = embeds.device();
  // one mask per distinct length (and window), shared by every layer
  std::map<int64_t, torch::Tensor> full_by_len, win_by_len;
  Segments full, windowed;
  full.lens = windowed.lens = lens;
  const bool has_window = cfg_.sliding_window > 0;
  for (int64_t L : lens) {
    auto real = torch::ones({1, L}, torch::TensorOptions().dtype(torch::kBool).device(dev));
    if (!full_by_len.count(L)) full_by_len[L] = causal_mask(real, 0, dtype);
    full.masks.push_back(full_by_len[L]);
    if (has_window) {
      if (!win_by_len.count(L)) win_by_len[L] = causal_mask(real, cfg_.sliding_window, dtype);
      windowed.masks.push_back(win_by_len[L]);
    }
  }
  auto h = embeds;
  for (int64_t i = 0; i < static_cast<int64_t>(layers->size()); ++i) {
    bool use_window = has_window && (cfg_.model_type != "qwen2" || i >= cfg_.max_window_layers);
    h = layers[i]->as<DecoderLayer>()->forward(h, rope, torch::Tensor(), use_window ? &windowed : &full);
  }
  return h;
}

torch::Tensor positions_from_mask(const torch::Tensor& key_real) {
  auto m = key_real.to(torch::kInt64);
  return (m.cumsum(1) - 1).clamp_min(0) * m;
}

}  // namespace unime::models
