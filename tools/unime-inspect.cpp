// `unime inspect --model DIR`: architecture, parameter counts per part, dtypes, template in use.
// Reads config.json and the safetensors headers only (no weights are loaded).
#include <cstdio>
#include <map>

#include "common.h"
#include "io/hf-config.h"
#include "io/safetensors.h"
#include "unime/embedder.h"

void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "describe a model folder");
  auto model = std::make_shared<std::string>();
  cmd->add_option("--model", *model, "Hugging Face model folder")->required();
  cmd->callback([model]() {
    using namespace unime;
    const io::ModelConfig c = io::load_model_config(*model);
    const io::Checkpoint ck = io::Checkpoint::open(*model);
    std::printf("architecture: %s\n", c.architecture.c_str());
    if (c.text) {
      const auto& t = *c.text;
      std::printf("decoder: %s, %lld layers, hidden %lld, heads %lld (kv %lld), head_dim %lld, "
                  "mlp %lld, vocab %lld, context %lld, rope_theta %g%s\n",
                  t.model_type.c_str(), (long long)t.num_hidden_layers, (long long)t.hidden_size,
                  (long long)t.num_attention_heads, (long long)t.num_key_value_heads,
                  (long long)t.head_dim, (long long)t.intermediate_size, (long long)t.vocab_size,
                  (long long)t.max_position_embeddings, t.rope_theta,
                  t.sliding_window > 0 ? str(", sliding window ", t.sliding_window).c_str() : "");
    }
    if (c.vision) {
      const auto& v = *c.vision;
      std::printf("vision: CLIP ViT, %lld layers, hidden %lld, heads %lld, image %lldpx, patch %lld, "
                  "%lld patches\n",
                  (long long)v.num_hidden_layers, (long long)v.hidden_size,
                  (long long)v.num_attention_heads, (long long)v.image_size, (long long)v.patch_size,
                  (long long)v.num_patches());
    }
    if (c.is_llava_family()) {
      std::string layers;
      for (auto l : c.llava.vision_feature_layer) layers += (layers.empty() ? "" : ",") + std::to_string(l);
      std::printf("llava: feature layer %s, strategy %s, %lld tokens per image%s, image token id %lld, "
                  "projector act %s\n",
                  layers.c_str(), c.llava.vision_feature_select_strategy.c_str(),
                  (long long)c.image_feature_tokens(),
                  c.arch == io::Arch::LlavaNext ? " (base image; AnyRes tiles add more)" : "",
                  (long long)c.llava.image_token_id, c.llava.projector_hidden_act.c_str());
    }
    if (c.qwen2vl_vision) {
      const auto& v = *c.qwen2vl_vision;
      std::string sec;
      for (auto x : c.text->mrope_section) sec += (sec.empty() ? "" : ",") + std::to_string(x);
      std::printf("vision: Qwen2-VL ViT, %lld layers, hidden %lld, heads %lld, patch %lld, temporal patch "
                  "%lld, merge %lldx%lld -> %lld\n",
                  (long long)v.depth, (long long)v.embed_dim, (long long)v.num_heads, (long long)v.patch_size,
                  (long long)v.temporal_patch_size, (long long)v.spatial_merge_size,
                  (long long)v.spatial_merge_size, (long long)v.hidden_size);
      std::printf("qwen2-vl: M-RoPE mrope_section %s, image token id %lld, vision start/end %lld/%lld\n",
                  sec.c_str(), (long long)c.qwen2vl.image_token_id, (long long)c.qwen2vl.vision_start_token_id,
                  (long long)c.qwen2vl.vision_end_token_id);
    }
    if (c.arch == io::Arch::Phi3V) {
      const auto& t = *c.text;
      const char* rope = t.rope_type == io::RopeType::LongRope ? "su/longrope"
                         : t.rope_type == io::RopeType::Phi3Yarn ? "yarn" : "none";
      std::printf("phi3-v: rope scaling %s (original context %lld, attention factor %.4f)%s\n", rope,
                  (long long)t.rope_original_max_position_embeddings, t.rope_attention_factor,
                  c.vision ? str("; HD transform: CLIP layer ", c.phi3v.layer_idx, ", 2x2 merge to ",
                                 4 * c.vision->hidden_size, " channels, glb_GN / sub_GN, img_projection")
                                 .c_str()
                           : "; text only (no image embd_layer)");
    }
    if (c.arch == io::Arch::LlavaNext) {
      std::string pins;
      for (const auto& [h, w] : c.llava.image_grid_pinpoints)
        pins += str(pins.empty() ? "" : ", ", h, "x", w);
      std::printf("anyres: image_grid_pinpoints (h x w) %s; image_newline after each tile row\n",
                  pins.c_str());
    }
    // parameters per part, by checkpoint key
    std::map<std::string, int64_t> parts;
    std::map<std::string, int64_t> dtypes;
    int64_t total = 0;
    for (const auto& name : ck.names()) {
      const auto& t = ck.get(name);
      int64_t n = 1;
      for (auto d : t.shape) n *= d;
      std::string part = "other";
      const bool phi3v_proj = name.find("img_projection") != std::string::npos || name.find("_GN") != std::string::npos;
      if ((name.find("vision") != std::string::npos && !phi3v_proj) || name.rfind("visual.", 0) == 0 ||
          name.find(".visual.") != std::string::npos)
        part = "vision";
      else if (name.find("multi_modal_projector") != std::string::npos || name.find("image_newline") != std::string::npos ||
               phi3v_proj)
        part = "projector";
      else if (name.find("multi_modal_projector") != std::string::npos || name.find("visual_projection") != std::string::npos) part = "projector";
      else if (name.find("lm_head") != std::string::npos) part = "lm_head";
      else if (name.find("embed_tokens") != std::string::npos) part = "embed_tokens";
      else if (name.find("layers.") != std::string::npos || name.find("norm") != std::string::npos) part = "decoder";
      parts[part] += n;
      dtypes[io::dtype_name(t.dtype)] += n;
      total += n;
    }
    std::printf("parameters: %lld (%.1f M)\n", (long long)total, total / 1e6);
    for (auto& [k, n] : parts) std::printf("  %-13s %lld\n", k.c_str(), (long long)n);
    std::string ds;
    for (auto& [k, n] : dtypes) ds += (ds.empty() ? "" : ", ") + k + " " + std::to_string(n);
    std::printf("dtypes: %s\n", ds.c_str());
    if (c.text) std::printf("template: %s\n", default_template_name(*model).c_str());
  });
}
