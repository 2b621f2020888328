// LoRA / QLoRA adapters on a loaded models::Model, in PEFT's semantics and file format
// (https://github.com/huggingface/peft, tuners/lora: LoraConfig, LoraModel, layer.py Linear).
//
//   auto m = models::Model::load("llava", torch::kBFloat16);
//   train::LoraConfig c;                        // r 16, alpha 64, dropout 0.1, decoder q/k/v/o/gate/up/down
//   auto lora = train::apply_lora(*m, c, /*seed=*/1);   // base frozen, A Kaiming-uniform, B = 0
//   optimizer over lora.parameters(); ... lora.save("out/adapter", "llava-hf/llava-1.5-7b-hf");
//   auto back = train::load_lora(*m2, "out/adapter");   // or merge_checkpoint (train/merge.h)
//
// Wrapping: models::Linear layers are chosen by module path (the HF key prefix of their weight,
// e.g. "model.language_model.layers.0.self_attn.q_proj"), with PEFT's list rule: a target name
// matches a module whose path equals it or ends with "." + name; "all-linear" takes every linear
// layer in scope. Scope: the decoder; with include_vision also the vision tower, the projector and
// CLIP's visual_projection (matched against vision_target_modules). The output head is never
// wrapped. Attach adapters AFTER Model::load (the loader iterates module parameters).
// Saved keys: "base_model.model.<module path>.lora_A.weight" [r, in] / ".lora_B.weight" [out, r]
// (PeftModel -> LoraModel -> the HF model; the adapter name is dropped, as PEFT saves).
// QLoRA: every linear base weight in scope is stored as NF4 (models/linear.h); adapters stay in
// LoraConfig::dtype (float32 by default, as PEFT's autocast_adapter_dtype keeps them).
// Legend: r rank, I in_features, O out_features.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/model.h"

namespace unime::train {

struct LoraConfig {
  int64_t r = 16;        ///< rank (UniME stage 2 recipe: 16; E5-V / stage 1: 64)
  double alpha = 64;     ///< lora_alpha; scaling = alpha / r
  double dropout = 0.1;  ///< dropout on the adapter input (training only)
  /// decoder layers to wrap (PEFT target_modules list rule); {"all-linear"} = every one
  /// (Phi-3: the fused qkv_proj and gate_up_proj)
  std::vector<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                             "up_proj", "down_proj", "qkv_proj", "gate_up_proj"};
  bool include_vision = false;  ///< also wrap the vision tower / projector (frozen in UniME)
  /// CLIP (q/k/v/out_proj, fc1, fc2) + LLaVA projector (linear_1/2); Qwen2-VL blocks (attn.qkv,
  /// attn.proj, mlp.fc1/fc2) + merger (mlp.0, mlp.2); Phi-3-V img_projection.0/2
  std::vector<std::string> vision_target_modules = {
      "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "linear_1", "linear_2",
      "qkv", "proj", "mlp.0", "mlp.2", "img_projection.0", "img_projection.2"};
  bool use_rslora = false;      ///< scaling = alpha / sqrt(r) (PEFT use_rslora)
  bool qlora = false;           ///< store the base linear weights in scope as NF4
  bool double_quant = false;    ///< QLoRA: also quantise the absmax scales (bnb_4bit_use_double_quant)
  torch::ScalarType dtype = torch::kFloat32;  ///< adapter dtype

  /// Throws unime::Error naming the bad field (r <= 0, dropout outside [0, 1), empty targets ...).
  void validate() const;
};

/// A linear layer under its module path.
struct NamedLinear {
  std::string name;  ///< e.g. "model.layers.0.self_attn.q_proj"
  models::Linear linear{nullptr};
};

/// Every linear layer of m (decoder first, then vision tower, projector, visual_projection),
/// restricted to the decoder unless include_vision. The output head is not included.
std::vector<NamedLinear> find_linears(const models::Model& m, bool include_vision);

/// PEFT's list rule: name == t or name ends with "." + t for some t in targets.
bool peft_target_matches(const std::vector<std::string>& targets, const std::string& module_name);

/// The adapters attached to one model.
class LoraSet {
 public:
  struct Module {
    std::string name;
    models::Linear linear{nullptr};
    int64_t r = 0;
    double alpha = 0;
  };

  const std::vector<Module>& modules() const { return mods_; }
  const LoraConfig& config() const { return cfg_; }
  /// Adapter parameters under PEFT's saved key names, A then B per module, in module order.
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;
  std::vector<torch::Tensor> parameters() const;
  int64_t n_parameters() const;

  /// Writes dir/adapter_config.json and dir/adapter_model.safetensors (atomically; dir created).
  /// target_modules is written as the list when PEFT's list rule selects exactly the wrapped
  /// modules of this model, else as a regular expression PEFT full-matches against module paths.
  void save(const std::string& dir, const std::string& base_model_name) const;
  /// Folds every adapter into its base weight (PEFT merge) and detaches it; the set is empty after.
  void merge();

 private:
  friend LoraSet apply_lora(models::Model&, const LoraConfig&, uint64_t);
  friend LoraSet load_lora(models::Model&, const std::string&, bool, torch::ScalarType);
  std::string target_modules_json() const;

  LoraConfig cfg_;
  std::vector<Module> mods_;
  std::vector<std::string> model_linears_;  // every linear of the model (all scopes), for save()
};

/// Freezes the whole model, (QLoRA) quantises the base linears in scope, and attaches fresh
/// adapters initialised as PEFT does: A ~ Kaiming-uniform(a = sqrt(5)) = U(-1/sqrt(I), 1/sqrt(I))
/// drawn from a generator seeded with `seed`, B = 0, so the model's output is unchanged at step 0.
/// No module matching -> unime::Error listing what was searched.
LoraSet apply_lora(models::Model& m, const LoraConfig& c, uint64_t seed);

/// Attaches a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) to m:
/// every lora_A / lora_B pair in the file goes onto the linear layer it names (LLaVA checkpoints
/// saved with either transformers key layout are accepted). rank_pattern / alpha_pattern and
/// use_rslora are honoured. Adapters are frozen unless `trainable`. Bad files -> unime::Error.
LoraSet load_lora(models::Model& m, const std::string& dir, bool trainable = false,
                  torch::ScalarType dtype = torch::kFloat32);

/// load_lora + merge: W += (B A) * scaling for every module of the adapter.
void merge_lora(models::Model& m, const std::string& dir);

/// Sets requires_grad = false on every parameter of m.
void freeze(models::Model& m);

/// Replaces the dense base weight of every linear in scope by NF4 storage.
void quantize_nf4(models::Model& m, bool include_vision, bool double_quant);

/// Bytes held by a model's tensors (shared storages counted once).
struct ModelMemory {
  int64_t linear_dense = 0;  ///< dense linear weights (frozen or not)
  int64_t linear_nf4 = 0;    ///< NF4 storage (codes + scales)
  int64_t lora = 0;          ///< adapter parameters
  int64_t other = 0;         ///< embeddings, norms, biases, output head
  int64_t total() const { return linear_dense + linear_nf4 + lora + other; }
};
ModelMemory model_memory(const models::Model& m);

}  // namespace unime::train
