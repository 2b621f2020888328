// `unime merge` entry point, free of torch so that tools/ compile fast (implemented in lora.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace unime::train {

struct MergeSummary {
  int64_t n_adapters = 0;       ///< adapter folders folded in
  int64_t n_modules = 0;        ///< linear layers whose weight changed (counted once)
  int64_t n_tensors = 0;        ///< tensors written to model.safetensors
  std::string dtype;            ///< the dtype the base was merged in ("f32", "bf16", "f16")
};

/// Loads the Hugging Face checkpoint in model_dir, folds each PEFT LoRA adapter folder in order
/// (W += (B A) * alpha / r, as PEFT's merge_and_unload), and writes a plain checkpoint to out_dir:
/// model.safetensors with every original key and dtype (untouched tensors copied bit for bit) and
/// the other files of model_dir (config.json, tokenizer, processor) copied. Bad input ->
/// unime::Error naming the file.
MergeSummary merge_checkpoint(const std::string& model_dir, const std::vector<std::string>& lora_dirs,
                              const std::string& out_dir);

}  // namespace unime::train
