// models::Linear: the one linear layer every architecture uses (instead of torch::nn::Linear), so
// that adapters and quantised storage need no change to the architecture files (llama.cpp's
// build_lora_mm idea). Parameters keep HF key names: <prefix>.weight [out, in], <prefix>.bias [out].
// With a LoRA adapter attached (PEFT semantics):
//   y = x W^T + b + dropout(x) A^T B^T * (alpha / r),   A = lora_A.weight [r, in], B = lora_B.weight [out, r]
// Legend: N rows (any leading dims), I in_features, O out_features, r LoRA rank.
#pragma once

#include <cstdint>

namespace unime::models {

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);
  /// x: [..., I] -> [..., O]
  torch::Tensor forward(const torch::Tensor& x);

  /// The base weight as a dense tensor (dequantised when the storage is quantised). [O, I]
  torch::Tensor dense_weight() const;

  int64_t in_features, out_features;
  torch::Tensor weight;  // [O, I]
  torch::Tensor bias;    // [O] or undefined

  // ---- LoRA (attached by train/lora.cpp; absent by default) ----
  torch::Tensor lora_A;  // [r, I], registered as "lora_A.weight" when attached
  torch::Tensor lora_B;  // [O, r], "lora_B.weight"
  double lora_scaling = 0.0;  // alpha / r
  double lora_dropout = 0.0;  // dropout probability on the LoRA input (training only)
  bool has_lora() const { return lora_A.defined(); }
};
TORCH_MODULE(Linear);

}  // namespace unime::models
