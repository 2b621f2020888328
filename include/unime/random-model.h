/// Random-weight checkpoints in the real Hugging Face layout, at tiny or real configs: for
/// benchmarks (real weights cannot be downloaded here), for smoke tests and for the interim demo.
///
///   unime::write_random_model("llava-qwen2-0.5b", "out/dir", "bf16", /*seed=*/1);
///
/// The folder gets config.json, model.safetensors (HF key names; sharded with an index above 5 GB)
/// and, for image models, preprocessor_config.json. Torch-free header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace unime {

/// Names of the built-in configurations (e.g. "tiny-llava", "qwen2-0.5b", "llava-qwen2-0.5b").
std::vector<std::string> random_model_presets();
/// The config.json text of a preset.
std::string random_model_config(const std::string& preset);
/// preprocessor_config.json of OpenAI CLIP's image processor at a square size (mean/std, bicubic).
std::string clip_preprocessor_config(int size);
struct RandomModelOptions {
  std::string dtype = "f32";  ///< f32 | bf16 | f16
  uint64_t seed = 1;
  /// Shards as transformers' save_pretrained (max_shard_size "5GB"): model-0000k-of-0000n
  /// .safetensors + model.safetensors.index.json once the weights pass this many bytes.
  int64_t max_shard_bytes = 5'000'000'000;
  /// Draw each tensor's values on its own and write it before the next, so that memory stays at
  /// the largest tensor (a 7B model in bf16 is 15 GB). Automatic above 1 GiB of float32
  /// parameters; smaller models take their values from the modules' initialisers (the same files,
  /// bit for bit, as before streaming existed), unless this is set.
  bool stream = false;
};

/// Writes a random checkpoint for a preset name, a config.json path, or a folder holding a
/// config.json (its other *.json files, e.g. preprocessor_config.json and tokenizer_config.json,
/// are copied beside the weights: bench/configs/).
void write_random_model(const std::string& preset_or_config, const std::string& out_dir,
                        const RandomModelOptions& options);
/// As above with the default shard size. dtype: f32 | bf16 | f16.
void write_random_model(const std::string& preset_or_config, const std::string& out_dir,
                        const std::string& dtype, uint64_t seed);

}  // namespace unime
