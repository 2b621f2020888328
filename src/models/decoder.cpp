// Llama-family decoder; see decoder.h. Reference: transformers/models/llama/modeling_llama.py
// (LlamaModel.forward), mistral (sliding window mask), qwen2 (q/k/v biases, windowed layers).
#include "models/decoder.h"

#include <map>

namespace unime::models {

DecoderImpl::DecoderImpl(const io::DecoderConfig& c) : cfg_(c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(DecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  inv_freq_ = rope_inv_freq(c);
}

torch::Tensor DecoderImpl::embed(const torch::Tensor& ids) { return embed_tokens(ids); }

Rope DecoderImpl::rope(const torch::Tensor& positions, torch::ScalarType dtype) const {
  if (positions.dim() == 3) return rope_tables_mrope(inv_freq_, positions, cfg_.mrope_section, dtype);
  return rope_tables(inv_freq_, positions, dtype);
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
