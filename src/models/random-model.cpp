// Random checkpoints in the real HF layout; see include/unime/random-model.h. Weights come from the
// modules' own initialisers (Linear: Kaiming-uniform; norms: ones), scaled embeddings N(0, 0.02).
#include "unime/random-model.h"

#include <malloc.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
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

namespace {

/// A parameter's random values in float32, drawn from `gen`, for checkpoints too large to build
/// whole in memory (the in-memory path uses the modules' own initialisers). The same scales:
/// token embeddings N(0, 0.02); norms ones / zeros; matrices and convolutions U(+-1/sqrt(fan_in))
/// (Kaiming-uniform with a = sqrt(5)), biases likewise with the weight's fan_in; other vectors
/// N(0, 0.02).
torch::Tensor random_values(const std::string& name, const std::vector<int64_t>& shape,
                            const std::map<std::string, std::vector<int64_t>>& shapes,
                            at::Generator& gen) {
  torch::NoGradGuard ng;
  auto t = torch::empty(shape, torch::kFloat32);
  const auto dot = name.rfind('.');
  const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  const std::string owner = dot == std::string::npos ? "" : name.substr(0, dot);
  const auto odot = owner.rfind('.');
  const std::string module = odot == std::string::npos ? owner : owner.substr(odot + 1);
  const bool norm = module.find("norm") != std::string::npos || module.rfind("ln_", 0) == 0;
  auto fan_in = [](const std::vector<int64_t>& s) {
    int64_t f = 1;
    for (size_t i = 1; i < s.size(); ++i) f *= s[i];
    return f;
  };
  if (module == "embed_tokens" || module == "wte") return t.normal_(0.0, 0.02, gen);
  if (norm) return leaf == "bias" ? t.zero_() : t.fill_(1.0);
  if (shape.size() >= 2) {
    const double b = 1.0 / std::sqrt(static_cast<double>(fan_in(shape)));
    return t.uniform_(-b, b, gen);
  }
  if (leaf == "bias")
    if (auto w = shapes.find(owner + ".weight"); w != shapes.end() && w->second.size() >= 2) {
      const double b = 1.0 / std::sqrt(static_cast<double>(fan_in(w->second)));
      return t.uniform_(-b, b, gen);
    }
  return t.normal_(0.0, 0.02, gen);
}

constexpr int64_t kInMemoryLimit = int64_t(1) << 30;  ///< f32 bytes above which values stream

}  // namespace

void write_random_model(const std::string& preset_or_config, const std::string& out_dir,
                        const std::string& dtype_name, uint64_t seed) {
  RandomModelOptions o;
  o.dtype = dtype_name;
  o.seed = seed;
  write_random_model(preset_or_config, out_dir, o);
}

void write_random_model(const std::string& preset_or_config, const std::string& out_dir,
                        const RandomModelOptions& o) {
  std::string cfg_text;
  fs::path cfg_dir;  // a preset folder: its other *.json files are copied beside the weights
  if (fs::is_directory(preset_or_config)) {
    cfg_dir = preset_or_config;
    const fs::path cj = cfg_dir / "config.json";
    UNIME_CHECK(fs::is_regular_file(cj), preset_or_config, ": a preset folder must hold config.json");
    cfg_text = io::read_file(cj.string());
  } else if (fs::is_regular_file(preset_or_config)) {
    cfg_text = io::read_file(preset_or_config);
  } else {
    cfg_text = preset(preset_or_config).dump(2);
  }
  const io::ModelConfig cfg = io::parse_model_config(cfg_text, preset_or_config);
  const auto dtype = models::parse_dtype(o.dtype);
  UNIME_CHECK(o.max_shard_bytes > 0, "random-model: the shard size must be positive");
  const io::DType io_dtype = models::io_dtype_of(dtype);

  // the parameter list (names, shapes) from a model built without initialisation (no memory)
  std::vector<std::pair<std::string, std::vector<int64_t>>> params;
  std::map<std::string, std::vector<int64_t>> shapes;
  int64_t numel = 0;
  {
    models::SkipInitGuard skip(dtype);
    models::Model skeleton(cfg, dtype);
    for (auto& [name, p] : skeleton.named_parameters()) {
      params.emplace_back(name, std::vector<int64_t>(p.sizes().begin(), p.sizes().end()));
      shapes[name] = params.back().second;
      numel += p.numel();
    }
  }
  const bool stream = o.stream || numel * 4 > kInMemoryLimit;

  // values: small models from the modules' own initialisers (the files earlier versions wrote,
  // bit for bit); large ones one tensor at a time, so memory stays at the largest tensor
  std::unique_ptr<models::Model> whole;
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  if (!stream) {
    torch::manual_seed(o.seed);
    whole = std::make_unique<models::Model>(cfg, torch::kFloat32);
    torch::NoGradGuard ng;
    if (whole->decoder_) whole->decoder_->embed_tokens->weight.normal_(0.0, 0.02);
  }
  std::map<std::string, torch::Tensor> initialised;
  if (whole)
    for (auto& [name, p] : whole->named_parameters()) initialised[name] = p;
  torch::Tensor current;  // the tensor being written; alive until the next one is produced
  auto value = [&](const std::string& name, const std::vector<int64_t>& shape) -> const void* {
    torch::NoGradGuard ng;
    current = torch::Tensor();
    ::malloc_trim(0);  // the last tensor's float32 draw: give it back (the heap does not mmap)
    auto v = whole ? initialised.at(name).detach() : random_values(name, shape, shapes, gen);
    current = v.to(dtype).contiguous();
    return current.data_ptr();
  };

  // shards as transformers' save_pretrained: in state-dict order, a new file when the next tensor
  // would pass max_shard_bytes; one file needs no index
  std::vector<std::vector<size_t>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    int64_t n = static_cast<int64_t>(io::dtype_size(io_dtype));
    for (int64_t d : params[i].second) n *= d;
    if (!shards.back().empty() && shard_bytes + n > o.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += n;
    total_bytes += n;
  }
  fs::create_directories(out_dir);
  for (const auto& e : fs::directory_iterator(out_dir)) {  // a rerun with another shard count
    const std::string f = e.path().filename().string();
    if (f.rfind("model", 0) == 0 && f.find(".safetensors") != std::string::npos) fs::remove(e.path());
  }
  json weight_map = json::object();
  for (size_t k = 0; k < shards.size(); ++k) {
    char fname[64];
    std::snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    const std::string file = shards.size() == 1 ? "model.safetensors" : fname;
    std::vector<io::TensorToWrite> tensors;
    for (size_t i : shards[k]) {
      tensors.push_back({params[i].first, io_dtype, params[i].second, nullptr});
      weight_map[params[i].first] = file;
    }
    io::write_safetensors_streamed((fs::path(out_dir) / file).string(), tensors, {{"format", "pt"}},
                                   [&](size_t i) { return value(tensors[i].name, tensors[i].shape); });
    current = torch::Tensor();
  }
  if (shards.size() > 1) {
    json idx{{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    io::write_file_atomic((fs::path(out_dir) / "model.safetensors.index.json").string(), idx.dump(2) + "\n");
  }

  json j = json::parse(cfg_text);
  j["torch_dtype"] = dtype == torch::kBFloat16 ? "bfloat16" : dtype == torch::kFloat16 ? "float16" : "float32";
  io::write_file_atomic((fs::path(out_dir) / "config.json").string(), j.dump(2) + "\n");
  bool have_preprocessor = false;
  if (!cfg_dir.empty())
    for (const auto& e : fs::directory_iterator(cfg_dir)) {
      const std::string f = e.path().filename().string();
      if (!e.is_regular_file() || f == "config.json" || f.size() < 5 || f.substr(f.size() - 5) != ".json") continue;
      fs::copy_file(e.path(), fs::path(out_dir) / f, fs::copy_options::overwrite_existing);
      have_preprocessor |= f == "preprocessor_config.json";
    }
  if (cfg.vision && !have_preprocessor) {
    const int64_t S = cfg.vision->image_size;
    io::write_file_atomic((fs::path(out_dir) / "preprocessor_config.json").string(), clip_preprocessor_config(static_cast<int>(S)));
  }
}

}  // namespace unime
