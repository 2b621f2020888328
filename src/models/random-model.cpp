// Random checkpoints in the real HF layout; see include/unime/random-model.h. Weights come from the
// modules' own initialisers (Linear: Kaiming-uniform; norms: ones), scaled embeddings N(0, 0.02).
#include "unime/random-model.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"
#include "io/hf-config.h"
#include "io/safetensors.h"
#include "models/model.h"

namespace unime {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json qwen2_05b() {  // Qwen/Qwen2-0.5B's config.json (the fields the model reads)
  return json{{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"},
              {"hidden_size", 896}, {"intermediate_size", 4864}, {"num_hidden_layers", 24},
              {"num_attention_heads", 14}, {"num_key_value_heads", 2}, {"vocab_size", 151936},
              {"max_position_embeddings", 32768}, {"rms_norm_eps", 1e-6}, {"rope_theta", 1000000.0},
              {"tie_word_embeddings", true}, {"torch_dtype", "bfloat16"}};
}

json clip_b16_224() {  // openai/clip-vit-base-patch16 vision tower
  return json{{"model_type", "clip_vision_model"}, {"hidden_size", 768}, {"intermediate_size", 3072},
              {"num_hidden_layers", 12}, {"num_attention_heads", 12}, {"image_size", 224},
              {"patch_size", 16}, {"projection_dim", 512}, {"hidden_act", "quick_gelu"}};
}

json preset(const std::string& name) {
  if (name == "tiny-llama")
    return json{{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 2},
                {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"vocab_size", 512},
                {"max_position_embeddings", 256}, {"torch_dtype", "float32"}};
  if (name == "tiny-llava") {
    json t = preset("tiny-llama");
    t.erase("architectures");
    return json{{"architectures", {"LlavaForConditionalGeneration"}}, {"model_type", "llava"},
                {"image_token_index", 511}, {"projector_hidden_act", "gelu"},
                {"vision_feature_layer", -2}, {"vision_feature_select_strategy", "default"},
                {"text_config", t},
                {"vision_config", {{"model_type", "clip_vision_model"}, {"hidden_size", 32},
                                   {"intermediate_size", 64}, {"num_hidden_layers", 2},
                                   {"num_attention_heads", 2}, {"image_size", 32}, {"patch_size", 8},
                                   {"hidden_act", "quick_gelu"}}},
                {"torch_dtype", "float32"}};
  }
  if (name == "tiny-llava-qwen2") {  // Qwen2 vocabulary (151936) so real Qwen tokenizers fit
    json t{{"model_type", "qwen2"}, {"hidden_size", 64}, {"intermediate_size", 128},
           {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
           {"vocab_size", 151936}, {"max_position_embeddings", 1024}, {"tie_word_embeddings", true}};
    json j = preset("tiny-llava");
    j["text_config"] = t;
    j["image_token_index"] = 151655;  // <|image_pad|>
    return j;
  }
  if (name == "qwen2-0.5b") return qwen2_05b();
  if (name == "llava-qwen2-0.5b") {
    json t = qwen2_05b();
    t.erase("architectures");
    return json{{"architectures", {"LlavaForConditionalGeneration"}}, {"model_type", "llava"},
                {"image_token_index", 151655}, {"projector_hidden_act", "gelu"},
                {"vision_feature_layer", -2}, {"vision_feature_select_strategy", "default"},
                {"text_config", t}, {"vision_config", clip_b16_224()}, {"torch_dtype", "bfloat16"}};
  }
  if (name == "llava-1.5-7b")  // llava-hf/llava-1.5-7b-hf
    return json{{"architectures", {"LlavaForConditionalGeneration"}}, {"model_type", "llava"},
                {"image_token_index", 32000}, {"projector_hidden_act", "gelu"},
                {"vision_feature_layer", -2}, {"vision_feature_select_strategy", "default"},
                {"text_config", {{"model_type", "llama"}, {"vocab_size", 32064},
                                 {"max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5}}},
                {"vision_config", {{"model_type", "clip_vision_model"}, {"hidden_size", 1024},
                                   {"intermediate_size", 4096}, {"num_hidden_layers", 24},
                                   {"num_attention_heads", 16}, {"image_size", 336},
                                   {"patch_size", 14}, {"projection_dim", 768}}},
                {"torch_dtype", "float16"}};
  std::string names;
  for (auto& n : random_model_presets()) names += (names.empty() ? "" : ", ") + n;
  throw Error(str("unknown preset '", name, "'; presets: ", names, " (or a config.json path)"));
}

}  // namespace

std::string clip_preprocessor_config(int size) {
  json p{{"image_processor_type", "CLIPImageProcessor"}, {"do_resize", true},
         {"size", {{"shortest_edge", size}}}, {"resample", 3}, {"do_center_crop", true},
         {"crop_size", {{"height", size}, {"width", size}}}, {"do_rescale", true},
         {"rescale_factor", 1.0 / 255.0}, {"do_normalize", true},
         {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
         {"image_std", {0.26862954, 0.26130258, 0.27577711}}, {"do_convert_rgb", true}};
  return p.dump(2) + "\n";
}

std::vector<std::string> random_model_presets() {
  return {"tiny-llama", "tiny-llava", "tiny-llava-qwen2", "qwen2-0.5b", "llava-qwen2-0.5b", "llava-1.5-7b"};
}

std::string random_model_config(const std::string& name) { return preset(name).dump(2); }

void write_random_model(const std::string& preset_or_config, const std::string& out_dir,
                        const std::string& dtype_name, uint64_t seed) {
  std::string cfg_text;
  if (fs::is_regular_file(preset_or_config)) cfg_text = io::read_file(preset_or_config);
  else cfg_text = preset(preset_or_config).dump(2);
  const io::ModelConfig cfg = io::parse_model_config(cfg_text, preset_or_config);
  const auto dtype = models::parse_dtype(dtype_name);
  torch::manual_seed(seed);
  models::Model m(cfg, torch::kFloat32);
  {
    torch::NoGradGuard ng;
    if (m.decoder_) m.decoder_->embed_tokens->weight.normal_(0.0, 0.02);
  }
  fs::create_directories(out_dir);
  std::vector<torch::Tensor> keep;
  std::vector<io::TensorToWrite> tensors;
  const io::DType io_dtype = dtype == torch::kBFloat16 ? io::DType::BF16
                             : dtype == torch::kFloat16 ? io::DType::F16 : io::DType::F32;
  for (auto& [name, p] : m.named_parameters()) {
    keep.push_back(p.detach().to(dtype).contiguous());
    tensors.push_back({name, io_dtype, std::vector<int64_t>(p.sizes().begin(), p.sizes().end()),
                       keep.back().data_ptr()});
  }
  io::write_safetensors((fs::path(out_dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  json j = json::parse(cfg_text);
  j["torch_dtype"] = dtype == torch::kBFloat16 ? "bfloat16" : dtype == torch::kFloat16 ? "float16" : "float32";
  io::write_file_atomic((fs::path(out_dir) / "config.json").string(), j.dump(2) + "\n");
  if (cfg.vision) {
    const int64_t S = cfg.vision->image_size;
    io::write_file_atomic((fs::path(out_dir) / "preprocessor_config.json").string(), clip_preprocessor_config(static_cast<int>(S)));
  }
}

}  // namespace unime
