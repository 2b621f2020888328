// models::Linear: the one linear layer every architecture uses (instead of torch::nn::Linear), so
// that adapters and quantised storage need no change to the architecture files (llama.cpp's
// build_lora_mm idea). Parameters keep HF key names: <prefix>.weight [out, in], <prefix>.bias [out].
//
// LoRA (PEFT semantics, peft/tuners/lora/layer.py Linear.forward):
//   y = x W^T + b + dropout(x) A^T B^T * scaling,   A = lora_A.weight [r, in], B = lora_B.weight [out, r]
// The adapter's parameters are registered under submodules "lora_A" / "lora_B", so that
// named_parameters() reads "<prefix>.lora_A.weight" as in PEFT's saved keys. The input is cast to
// the adapter's dtype and the sum is formed in the promoted dtype, then cast back (as PEFT does).
// Dropout draws from the default generator of x's device: GradCache (train/grad-cache.h) snapshots
// and restores that generator so the no-grad pass and the re-forward see the same masks.
//
// NF4 storage (QLoRA, bitsandbytes quantize_4bit / dequantize_4bit with quant_type "nf4"): the base
// weight is replaced by 4-bit indices into the 16 NormalFloat levels with one absmax per block of 64
// values; with double quantisation the absmax values themselves are stored as 8-bit indices into
// bitsandbytes' signed dynamic map, per block of 256, after subtracting their mean. The dense weight
// is rebuilt on the fly in forward AND in backward (a custom autograd function that saves only the
// 4-bit storage), so training never keeps a dense copy of a frozen weight alive.
// Legend: N rows (any leading dims), I in_features, O out_features, r LoRA rank, nb blocks.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace unime::models {

// ---- NF4 (4-bit NormalFloat) storage -----------------------------------------------------------

/// bitsandbytes' 16 NF4 levels (functional.py get_4bit_type("nf4")), ascending.
const std::vector<double>& nf4_levels();
/// bitsandbytes' signed 8-bit dynamic map (functional.py create_dynamic_map(signed=True)): 256
/// ascending values in [-0.99297, 1], used for the double quantisation of the absmax scales.
const std::vector<double>& dynamic_map_8bit();

/// A weight quantised to NF4. All tensors live on the weight's device.
struct Nf4Tensor {
  torch::Tensor codes;     // [ceil(numel/2)] uint8: two level indices per byte, first in the high nibble
  torch::Tensor absmax;    // [nb] float32 per-block scales (plain storage); undefined when double quantised
  torch::Tensor absmax_q;  // [nb] uint8 indices into dynamic_map_8bit() (double quantisation)
  torch::Tensor absmax2;   // [ceil(nb/256)] float32 scales of the absmax_q blocks (double quantisation)
  double absmax_offset = 0.0;  // mean of absmax, subtracted before the second quantisation
  std::vector<int64_t> shape;  // the dense shape, e.g. [O, I]
  torch::ScalarType dtype = torch::kFloat32;  // the dense (compute) dtype
  int64_t block = 64;          // values per absmax block
  bool double_quant() const { return absmax_q.defined(); }
  /// Bytes held by the storage tensors.
  int64_t nbytes() const;
};

/// Row multiple the CPU bf16 path pads a linear layer's input to (see LinearImpl::forward).
constexpr int64_t kFastRows = 64;
/// x W^T + b (b may be undefined) with that padding: torch::nn::functional::linear at speed.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b = {});
constexpr int64_t kNf4Block = 64;           ///< QLoRA / bitsandbytes default blocksize for NF4
constexpr int64_t kNf4DoubleQuantBlock = 256;  ///< bitsandbytes' blocksize for the absmax scales

/// Quantises w (any float dtype, any shape) to NF4: per block of `block` values, absmax = max|x|,
/// each x / absmax goes to the nearest NF4 level (ties to the lower level, as bitsandbytes'
/// dQuantizeNF4 compares with `>`). An all-zero block gets absmax 0 and decodes to zeros.
Nf4Tensor quantize_nf4(const torch::Tensor& w, int64_t block = kNf4Block, bool double_quant = false);
/// The dense tensor (shape q.shape, dtype q.dtype).
torch::Tensor dequantize_nf4(const Nf4Tensor& q);

// ---- construction without initialisation ------------------------------------------------------

/// While one is alive on this thread, Linear layers and the decoder's token embedding are built
/// with UNINITIALISED storage in `dtype` (torch::empty: no page is touched) instead of random
/// values in float32. Model::load uses it: every such weight is then replaced by the checkpoint's
/// tensor, and initialising a 7B model in f32 first would take 28 GB and a minute of random
/// numbers (the idea of transformers' `init_empty_weights` / torch.nn.utils.skip_init).
class SkipInitGuard {
 public:
  explicit SkipInitGuard(torch::ScalarType dtype);
  ~SkipInitGuard();
  SkipInitGuard(const SkipInitGuard&) = delete;
  SkipInitGuard& operator=(const SkipInitGuard&) = delete;

 private:
  std::optional<torch::ScalarType> prev_;
};
/// The dtype of the innermost live SkipInitGuard on this thread, or nullopt.
std::optional<torch::ScalarType> skip_init_dtype();

// ---- the layer ---------------------------------------------------------------------------------

/// Holder for one LoRA factor, so that its parameter is named "lora_A.weight" / "lora_B.weight".
class LoraWeightImpl : public torch::nn::Module {
 public:
  explicit LoraWeightImpl(torch::Tensor w) {
    const bool grad = w.requires_grad();
    weight = register_parameter("weight", std::move(w), /*requires_grad=*/grad);
  }
  torch::Tensor weight;
};
TORCH_MODULE(LoraWeight);

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);
  /// x: [..., I] -> [..., O]
  torch::Tensor forward(const torch::Tensor& x);

  /// The base weight as a dense tensor (dequantised when the storage is NF4). [O, I]
  torch::Tensor dense_weight() const;

  int64_t in_features, out_features;
  torch::Tensor weight;  // [O, I]; undefined (and unregistered) while the storage is NF4
  torch::Tensor bias;    // [O] or undefined

  // ---- LoRA ----
  /// Attaches an adapter: A [r, I], B [O, r] become the parameters lora_A.weight / lora_B.weight
  /// (requires_grad as given). Throws c10::Error if one is already attached or shapes disagree.
  void attach_lora(torch::Tensor A, torch::Tensor B, double scaling, double dropout);
  /// Removes the adapter (its parameters are unregistered).
  void detach_lora();
  /// Folds the adapter into the base weight as PEFT's merge does (W += (B A) * scaling, the delta
  /// formed in the adapter dtype, the in-place add rounding once to W's dtype), then detaches it.
  /// The base must be dense (not NF4).
  void merge_lora();
  bool has_lora() const { return lora_A.defined(); }

  torch::Tensor lora_A;  // [r, I], registered as "lora_A.weight" when attached
  torch::Tensor lora_B;  // [O, r], "lora_B.weight"
  double lora_scaling = 0.0;  // alpha / r (alpha / sqrt(r) with rsLoRA)
  double lora_dropout = 0.0;  // dropout probability on the LoRA input (training only)

  // ---- NF4 base storage ----
  /// Replaces the dense weight by NF4 storage (registered as buffers weight_nf4, weight_absmax or
  /// weight_absmax_q + weight_absmax2, so that module->to(device) moves them). The weight
  /// parameter is unregistered and freed; the base becomes frozen by construction. A weight that
  /// viewed a mapped checkpoint (Model::load without a copy) has its pages dropped from the
  /// resident set, so quantising at load never holds the dense model in memory.
  void quantize_nf4(bool double_quant = false, int64_t block = kNf4Block);
  bool is_quantized() const { return nf4_.codes.defined(); }
  const Nf4Tensor& nf4() const { return nf4_; }

 private:
  Nf4Tensor nf4_;
};
TORCH_MODULE(Linear);

}  // namespace unime::models
