/// Random-weight checkpoints in the real Hugging Face layout, at tiny or real configs: for
/// benchmarks (real weights cannot be downloaded here), for smoke tests and for the interim demo.
///
///   unime::write_random_model("llava-qwen2-0.5b", "out/dir", "bf16", /*seed=*/1);
///
/// The folder gets config.json, model.safetensors (HF key names) and, for image models,
/// preprocessor_config.json. Torch-free header.
#pragma once

#include <string>
#include <vector>

namespace unime {

/// Names of the built-in configurations (e.g. "tiny-llava", "qwen2-0.5b", "llava-qwen2-0.5b").
std::vector<std::string> random_model_presets();
/// The config.json text of a preset.
std::string random_model_config(const std::string& preset);
/// preprocessor_config.json of OpenAI CLIP's image processor at a square size (mean/std, bicubic).
std::string clip_preprocessor_config(int size);
/// Writes a random checkpoint for a preset name or a config.json path. dtype: f32 | bf16.
void write_random_model(const std::string& preset_or_config, const std::string& out_dir,
                        const std::string& dtype, uint64_t seed);

}  // namespace unime
