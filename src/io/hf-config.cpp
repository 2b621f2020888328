// config.json parsing with Hugging Face's class defaults (see hf-config.h).
#include "io/hf-config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace unime::io {

using nlohmann::json;

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "LlamaForCausalLM";
    case Arch::Mistral: return "MistralForCausalLM";
    case Arch::Qwen2: return "Qwen2ForCausalLM";
    case Arch::ClipVision: return "CLIPVisionModel";
    case Arch::Clip: return "CLIPModel";
    case Arch::Llava: return "LlavaForConditionalGeneration";
    case Arch::LlavaNext: return "LlavaNextForConditionalGeneration";
    case Arch::Qwen2VL: return "Qwen2VLForConditionalGeneration";
    case Arch::Phi3V: return "Phi3VForCausalLM";
  }
  return "?";
}

static const Arch kAllArchs[] = {Arch::Llama, Arch::Mistral,   Arch::Qwen2,   Arch::ClipVision,
                                 Arch::Clip,  Arch::Llava,     Arch::LlavaNext, Arch::Qwen2VL,
                                 Arch::Phi3V};

std::string supported_arch_names() {
  std::string s;
  for (Arch a : kAllArchs) s += (s.empty() ? "" : ", ") + std::string(arch_name(a));
  return s;
}

namespace {

// Typed field readers: absent or null -> keep the default; wrong type -> clear error.
struct Reader {
  const json& j;
  std::string where;  // "config.json: text_config"

  bool has(const char* key) const { return j.contains(key) && !j.at(key).is_null(); }

  template <class T>
  void get(const char* key, T& out) const {
    if (!has(key)) return;
    const json& v = j.at(key);
    try {
      if constexpr (std::is_same_v<T, bool>) {
        UNIME_CHECK(v.is_boolean(), where, ": '", key, "' must be a boolean, got ", v.dump());
        out = v.get<bool>();
      } else if constexpr (std::is_integral_v<T>) {
        UNIME_CHECK(v.is_number_integer(), where, ": '", key, "' must be an integer, got ", v.dump());
        out = v.get<T>();
      } else if constexpr (std::is_floating_point_v<T>) {
        UNIME_CHECK(v.is_number(), where, ": '", key, "' must be a number, got ", v.dump());
        out = v.get<T>();
      } else {
        UNIME_CHECK(v.is_string(), where, ": '", key, "' must be a string, got ", v.dump());
        out = v.get<std::string>();
      }
    } catch (const json::exception& e) {
      throw Error(str(where, ": '", key, "': ", e.what()));
    }
  }
  void get_opt(const char* key, std::optional<int64_t>& out) const {
    if (!has(key)) return;
    const json& v = j.at(key);
    if (v.is_array() && !v.empty() && v[0].is_number_integer()) {  // eos_token_id may be a list
      out = v[0].get<int64_t>();
      return;
    }
    UNIME_CHECK(v.is_number_integer(), where, ": '", key, "' must be an integer, got ", v.dump());
    out = v.get<int64_t>();
  }
};

void require_positive(const std::string& where, const char* key, int64_t v) {
  UNIME_CHECK(v > 0, where, ": '", key, "' must be positive, got ", v);
}

// Phi-3 rope_scaling (modeling_phi3_v.py Phi3SuScaledRotaryEmbedding / Phi3YarnScaledRotaryEmbedding):
// {"type": "su" | "longrope" | "yarn", "short_factor": [d/2], "long_factor": [d/2]} with the
// top-level original_max_position_embeddings; null = plain RoPE.
void parse_phi3_rope(const json& j, DecoderConfig& c, const std::string& where) {
  Reader r{j, where};
  r.get("original_max_position_embeddings", c.rope_original_max_position_embeddings);
  require_positive(where, "original_max_position_embeddings", c.rope_original_max_position_embeddings);
  if (!j.contains("rope_scaling") || j.at("rope_scaling").is_null()) return;
  const json& rs = j.at("rope_scaling");
  UNIME_CHECK(rs.is_object(), where, ": rope_scaling must be an object, got ", rs.dump());
  std::string type;
  Reader rr{rs, where + ": rope_scaling"};
  rr.get("type", type);
  rr.get("rope_type", type);
  UNIME_CHECK(type == "su" || type == "longrope" || type == "yarn", where, ": rope_scaling type '", type,
              "' is not supported for Phi-3 (su, longrope, yarn)");
  c.rope_type = type == "yarn" ? RopeType::Phi3Yarn : RopeType::LongRope;
  const size_t half = static_cast<size_t>(c.head_dim / 2);
  for (auto [key, out] : {std::pair{"short_factor", &c.rope_short_factor}, {"long_factor", &c.rope_long_factor}}) {
    UNIME_CHECK(rs.contains(key) && rs.at(key).is_array(), where, ": rope_scaling needs '", key,
                "' (a list of head_dim / 2 = ", half, " numbers)");
    for (const json& x : rs.at(key)) {
      UNIME_CHECK(x.is_number() && x.get<double>() > 0, where, ": rope_scaling.", key,
                  " entries must be positive numbers, got ", x.dump());
      out->push_back(x.get<double>());
    }
    UNIME_CHECK(out->size() == half, where, ": rope_scaling.", key, " has ", out->size(),
                " entries; expected head_dim / 2 = ", half);
  }
  // the attention factor multiplying cos and sin, from the context extension ratio
  const double scale = static_cast<double>(c.max_position_embeddings) /
                       static_cast<double>(c.rope_original_max_position_embeddings);
  if (scale <= 1.0) c.rope_attention_factor = 1.0;
  else if (c.rope_type == RopeType::LongRope)
    c.rope_attention_factor = std::sqrt(1.0 + std::log(scale) /
                                                  std::log(static_cast<double>(c.rope_original_max_position_embeddings)));
  else
    c.rope_attention_factor = 0.1 * std::log(scale) + 1.0;
}

DecoderConfig parse_decoder(const json& j, const std::string& model_type, const std::string& where) {
  DecoderConfig c;
  c.model_type = model_type;
  // HF class defaults that differ from LlamaConfig's
  if (model_type == "mistral") {
    c.intermediate_size = 14336;
    c.num_key_value_heads = 8;
    c.max_position_embeddings = 4096 * 32;
    c.sliding_window = 4096;
  } else if (model_type == "qwen2") {
    c.vocab_size = 151936;
    c.intermediate_size = 22016;
    c.max_position_embeddings = 32768;
    c.qkv_bias = true;
    c.max_window_layers = 28;
  } else if (model_type == "phi3") {  // Phi3VConfig (configuration_phi3_v.py) defaults
    c.vocab_size = 32064;
    c.hidden_size = 3072;
    c.intermediate_size = 8192;
    c.max_position_embeddings = 4096;
    c.rms_norm_eps = 1e-5;
    c.rope_original_max_position_embeddings = 4096;
  } else if (model_type != "llama") {
    throw Error(str(where, ": unsupported decoder model_type '", model_type,
                    "'; supported: llama, mistral, qwen2, phi3"));
  }
  Reader r{j, where};
  r.get("vocab_size", c.vocab_size);
  r.get("hidden_size", c.hidden_size);
  r.get("intermediate_size", c.intermediate_size);
  r.get("num_hidden_layers", c.num_hidden_layers);
  r.get("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = model_type == "llama" || model_type == "phi3" ? c.num_attention_heads
                                                                        : c.num_key_value_heads;
  if (model_type == "qwen2") c.num_key_value_heads = c.num_attention_heads;
  r.get("num_key_value_heads", c.num_key_value_heads);
  r.get("max_position_embeddings", c.max_position_embeddings);
  r.get("rms_norm_eps", c.rms_norm_eps);
  r.get("rope_theta", c.rope_theta);
  r.get("hidden_act", c.hidden_act);
  r.get("tie_word_embeddings", c.tie_word_embeddings);
  r.get_opt("bos_token_id", c.bos_token_id);
  r.get_opt("eos_token_id", c.eos_token_id);
  r.get_opt("pad_token_id", c.pad_token_id);
  for (auto [k, v] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                      {"intermediate_size", c.intermediate_size},
                      {"num_hidden_layers", c.num_hidden_layers},
                      {"num_attention_heads", c.num_attention_heads},
                      {"num_key_value_heads", c.num_key_value_heads},
                      {"max_position_embeddings", c.max_position_embeddings}})
    require_positive(where, k, v);
  UNIME_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, where,
              ": num_attention_heads (", c.num_attention_heads,
              ") must be a multiple of num_key_value_heads (", c.num_key_value_heads, ")");
  c.head_dim = c.hidden_size / c.num_attention_heads;
  r.get("head_dim", c.head_dim);
  require_positive(where, "head_dim", c.head_dim);
  UNIME_CHECK(c.head_dim % 2 == 0, where, ": head_dim must be even for RoPE, got ", c.head_dim);
  UNIME_CHECK(c.hidden_act == "silu", where, ": hidden_act '", c.hidden_act,
              "' is not supported for ", model_type, " (expected silu)");
  if (model_type == "llama") {
    r.get("attention_bias", c.attention_bias);
    r.get("mlp_bias", c.mlp_bias);
    c.qkv_bias = c.o_bias = c.attention_bias;
  } else if (model_type == "mistral" || model_type == "phi3") {
    // Phi-3: sliding_window (default null) windows every layer, as Mistral's does
    if (j.contains("sliding_window")) {
      const json& sw = j.at("sliding_window");
      if (sw.is_null()) c.sliding_window = 0;
      else r.get("sliding_window", c.sliding_window);
    }
  } else {  // qwen2: window only when use_sliding_window, on layers >= max_window_layers
    bool use_sw = false;
    r.get("use_sliding_window", use_sw);
    int64_t sw = 4096;
    r.get("sliding_window", sw);
    r.get("max_window_layers", c.max_window_layers);
    c.sliding_window = use_sw ? sw : 0;
  }
  UNIME_CHECK(c.sliding_window >= 0, where, ": sliding_window must be >= 0");
  if (model_type == "phi3") {
    parse_phi3_rope(j, c, where);
    return c;
  }
  // rope_scaling: {"rope_type"|"type": ..., "factor": ...}
  if (j.contains("rope_scaling") && !j.at("rope_scaling").is_null()) {
    const json& rs = j.at("rope_scaling");
    UNIME_CHECK(rs.is_object(), where, ": rope_scaling must be an object, got ", rs.dump());
    Reader rr{rs, where + ": rope_scaling"};
    std::string type = "default";
    rr.get("type", type);
    rr.get("rope_type", type);
    if (type == "default") {
      c.rope_type = RopeType::Default;
    } else if (type == "linear") {
      c.rope_type = RopeType::Linear;
      rr.get("factor", c.rope_factor);
    } else if (type == "llama3") {
      c.rope_type = RopeType::Llama3;
      rr.get("factor", c.rope_factor);
      rr.get("low_freq_factor", c.rope_low_freq_factor);
      rr.get("high_freq_factor", c.rope_high_freq_factor);
      rr.get("original_max_position_embeddings", c.rope_original_max_position_embeddings);
      UNIME_CHECK(c.rope_high_freq_factor != c.rope_low_freq_factor, where,
                  ": rope_scaling high_freq_factor must differ from low_freq_factor");
    } else {
      throw Error(str(where, ": rope_scaling type '", type,
                      "' is not supported; supported: default, linear, llama3"));
    }
    UNIME_CHECK(c.rope_factor > 0, where, ": rope_scaling factor must be positive");
  }
  return c;
}

ClipVisionConfig parse_clip_vision(const json& j, const std::string& where, bool llava_defaults) {
  ClipVisionConfig c;
  if (llava_defaults) {  // LlavaConfig's vision_config default: CLIP ViT-L/14-336
    c.intermediate_size = 4096;
    c.hidden_size = 1024;
    c.patch_size = 14;
    c.image_size = 336;
    c.num_hidden_layers = 24;
    c.num_attention_heads = 16;
    c.projection_dim = 768;
  }
  Reader r{j, where};
  r.get("hidden_size", c.hidden_size);
  r.get("intermediate_size", c.intermediate_size);
  r.get("num_hidden_layers", c.num_hidden_layers);
  r.get("num_attention_heads", c.num_attention_heads);
  r.get("num_channels", c.num_channels);
  r.get("image_size", c.image_size);
  r.get("patch_size", c.patch_size);
  r.get("projection_dim", c.projection_dim);
  r.get("layer_norm_eps", c.layer_norm_eps);
  r.get("hidden_act", c.hidden_act);
  for (auto [k, v] : {std::pair{"hidden_size", c.hidden_size},
                      {"intermediate_size", c.intermediate_size},
                      {"num_hidden_layers", c.num_hidden_layers},
                      {"num_attention_heads", c.num_attention_heads},
                      {"num_channels", c.num_channels}, {"image_size", c.image_size},
                      {"patch_size", c.patch_size}})
    require_positive(where, k, v);
  UNIME_CHECK(c.hidden_size % c.num_attention_heads == 0, where, ": hidden_size (", c.hidden_size,
              ") must be a multiple of num_attention_heads (", c.num_attention_heads, ")");
  UNIME_CHECK(c.image_size % c.patch_size == 0, where, ": image_size (", c.image_size,
              ") must be a multiple of patch_size (", c.patch_size, ")");
  UNIME_CHECK(c.hidden_act == "quick_gelu" || c.hidden_act == "gelu" ||
                  c.hidden_act == "gelu_pytorch_tanh" || c.hidden_act == "gelu_new",
              where, ": vision hidden_act '", c.hidden_act,
              "' is not supported (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)");
  return c;
}

// LlavaNextConfig: image_grid_pinpoints (default below), and the AnyRes packing's constraints:
// pack_image_features views each tile's features as a (S/p) x (S/p) grid, which only the
// "default" strategy (CLS dropped) satisfies, and the processor cuts the best-fit canvas into
// S x S tiles, so every pinpoint must be a multiple of the vision image_size S.
void parse_llava_next(const json& j, ModelConfig& mc, const std::string& where) {
  LlavaFields& L = mc.llava;
  L.image_grid_pinpoints = {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
  if (j.contains("image_grid_pinpoints") && !j.at("image_grid_pinpoints").is_null()) {
    const json& g = j.at("image_grid_pinpoints");
    UNIME_CHECK(g.is_array() && !g.empty(), where,
                ": image_grid_pinpoints must be a non-empty list of [height, width] pairs");
    L.image_grid_pinpoints.clear();
    for (const json& p : g) {
      UNIME_CHECK(p.is_array() && p.size() == 2 && p[0].is_number_integer() && p[1].is_number_integer(),
                  where, ": image_grid_pinpoints entries must be [height, width] integer pairs, got ",
                  p.dump());
      L.image_grid_pinpoints.push_back({p[0].get<int64_t>(), p[1].get<int64_t>()});
    }
  }
  const int64_t S = mc.vision->image_size;
  for (const auto& [h, w] : L.image_grid_pinpoints)
    UNIME_CHECK(h > 0 && w > 0 && h % S == 0 && w % S == 0, where, ": image_grid_pinpoints entry [",
                h, ", ", w, "] must be positive multiples of the vision image_size ", S);
  UNIME_CHECK(L.vision_feature_select_strategy == "default", where,
              ": LLaVA-NeXT needs vision_feature_select_strategy 'default' (the AnyRes packing views "
              "each tile as a patch grid without CLS), got '", L.vision_feature_select_strategy, "'");
}

// Qwen2VLConfig: the text fields sit at the top level (and, from transformers 4.52, also in
// text_config, which wins); rope_scaling {"type": "mrope" | "default", "mrope_section": [...]}.
void parse_qwen2vl(const json& j, ModelConfig& mc, const std::string& where) {
  json t = j;
  t.erase("vision_config");
  t.erase("text_config");
  if (j.contains("text_config") && j.at("text_config").is_object())
    for (const auto& [k, v] : j.at("text_config").items()) t[k] = v;
  // Qwen2VLConfig's text defaults where they differ from Qwen2Config's (Qwen2-VL-72B sizes)
  const std::pair<const char*, json> kDefaults[] = {
      {"vocab_size", 152064},        {"hidden_size", 8192},           {"intermediate_size", 29568},
      {"num_hidden_layers", 80},     {"num_attention_heads", 64},     {"num_key_value_heads", 8},
      {"rms_norm_eps", 1e-5},        {"rope_theta", 1000000.0},       {"max_window_layers", 80},
      {"max_position_embeddings", 32768}};
  for (const auto& [k, v] : kDefaults)
    if (!t.contains(k) || t.at(k).is_null()) t[k] = v;
  std::vector<int64_t> section;
  if (t.contains("rope_scaling") && !t.at("rope_scaling").is_null()) {
    const json& rs = t.at("rope_scaling");
    UNIME_CHECK(rs.is_object(), where, ": rope_scaling must be an object, got ", rs.dump());
    std::string type = "default";
    Reader rr{rs, where + ": rope_scaling"};
    rr.get("type", type);
    rr.get("rope_type", type);
    UNIME_CHECK(type == "mrope" || type == "default", where, ": rope_scaling type '", type,
                "' is not supported for Qwen2-VL (mrope or default)");
    UNIME_CHECK(rs.contains("mrope_section") && rs.at("mrope_section").is_array(), where,
                ": rope_scaling needs 'mrope_section' (a list of 3 integers) for Qwen2-VL");
    for (const json& x : rs.at("mrope_section")) {
      UNIME_CHECK(x.is_number_integer() && x.get<int64_t>() > 0, where,
                  ": rope_scaling.mrope_section entries must be positive integers, got ", x.dump());
      section.push_back(x.get<int64_t>());
    }
    t.erase("rope_scaling");
  }
  mc.text = parse_decoder(t, "qwen2", where);
  DecoderConfig& d = *mc.text;
  UNIME_CHECK(section.size() == 3, where, ": rope_scaling.mrope_section must have 3 entries "
              "(temporal, height, width), got ", section.size());
  int64_t sum = 0;
  for (int64_t x : section) sum += x;
  UNIME_CHECK(sum * 2 == d.head_dim, where, ": rope_scaling.mrope_section sums to ", sum,
              "; expected head_dim / 2 = ", d.head_dim / 2);
  d.mrope_section = section;

  Qwen2VLFields& q = mc.qwen2vl;
  for (const json* src : {static_cast<const json*>(&t), &j}) {  // text_config (merged), then the top level
    Reader r{*src, where};
    r.get("image_token_id", q.image_token_id);
    r.get("video_token_id", q.video_token_id);
    r.get("vision_start_token_id", q.vision_start_token_id);
    r.get("vision_end_token_id", q.vision_end_token_id);
  }
  for (auto [k, v] : {std::pair{"image_token_id", q.image_token_id},
                      {"vision_start_token_id", q.vision_start_token_id}})
    UNIME_CHECK(v >= 0 && v < d.vocab_size, where, ": ", k, " ", v, " is outside the vocabulary (vocab_size ",
                d.vocab_size, ")");

  Qwen2VLVisionConfig v;
  const json vj = j.contains("vision_config") && j.at("vision_config").is_object() ? j.at("vision_config")
                                                                                    : json::object();
  const std::string vw = where + ": vision_config";
  Reader r{vj, vw};
  r.get("depth", v.depth);
  r.get("embed_dim", v.embed_dim);
  r.get("hidden_size", v.hidden_size);
  r.get("hidden_act", v.hidden_act);
  r.get("mlp_ratio", v.mlp_ratio);
  r.get("num_heads", v.num_heads);
  r.get("in_chans", v.in_channels);
  r.get("in_channels", v.in_channels);
  r.get("patch_size", v.patch_size);
  r.get("spatial_merge_size", v.spatial_merge_size);
  r.get("temporal_patch_size", v.temporal_patch_size);
  for (auto [k, x] : {std::pair{"depth", v.depth}, {"embed_dim", v.embed_dim}, {"hidden_size", v.hidden_size},
                      {"num_heads", v.num_heads}, {"in_channels", v.in_channels}, {"patch_size", v.patch_size},
                      {"spatial_merge_size", v.spatial_merge_size},
                      {"temporal_patch_size", v.temporal_patch_size}})
    require_positive(vw, k, x);
  UNIME_CHECK(v.mlp_ratio > 0, vw, ": mlp_ratio must be positive");
  UNIME_CHECK(v.embed_dim % v.num_heads == 0 && (v.embed_dim / v.num_heads) % 4 == 0, vw,
              ": embed_dim / num_heads must be a multiple of 4 (2-D rotary), got ", v.embed_dim, " / ",
              v.num_heads);
  UNIME_CHECK(v.hidden_size == d.hidden_size, vw, ": hidden_size ", v.hidden_size,
              " (the merger's output) must equal the decoder hidden_size ", d.hidden_size);
  UNIME_CHECK(v.hidden_act == "quick_gelu" || v.hidden_act == "gelu" || v.hidden_act == "gelu_pytorch_tanh" ||
                  v.hidden_act == "gelu_new" || v.hidden_act == "silu",
              vw, ": hidden_act '", v.hidden_act, "' is not supported");
  mc.qwen2vl_vision = v;
}

// Phi3VConfig: the Phi-3 text fields at the top level; `embd_layer` (a dict = the image embedding,
// "default" = text only) and `img_processor`. The remote code always builds CLIP ViT-L/14-336
// (image_embedding_phi3_v.py CLIP_VIT_LARGE_PATCH14_336_CONFIG) and ignores any size given in
// config.json; unime reads an optional img_processor.vision_config (CLIPVisionConfig keys) over
// those sizes, so that tiny test checkpoints can use a small tower.
void parse_phi3v(const json& j, ModelConfig& mc, const std::string& where) {
  mc.text = parse_decoder(j, "phi3", where);
  if (!j.contains("embd_layer") || !j.at("embd_layer").is_object()) return;  // text-only Phi-3
  const json& el = j.at("embd_layer");
  const std::string ew = where + ": embd_layer";
  Reader er{el, ew};
  std::string cls = "image", order = "glb_sub", proj = "linear";
  bool hd = false, sep = false;
  er.get("embedding_cls", cls);
  er.get("hd_transform_order", order);
  er.get("projection_cls", proj);
  er.get("use_hd_transform", hd);
  er.get("with_learnable_separator", sep);
  UNIME_CHECK(cls == "image", ew, ": embedding_cls '", cls, "' is not supported (image)");
  UNIME_CHECK(hd && sep, ew, ": only use_hd_transform = with_learnable_separator = true is supported "
              "(Phi-3-vision / Phi-3.5-vision)");
  UNIME_CHECK(order == "sub_glb", ew, ": hd_transform_order '", order, "' is not supported (sub_glb)");
  UNIME_CHECK(proj == "mlp", ew, ": projection_cls '", proj, "' is not supported with the HD transform (mlp)");
  const std::string iw = where + ": img_processor";
  UNIME_CHECK(j.contains("img_processor") && j.at("img_processor").is_object(), iw,
              ": missing; Phi3VForCausalLM with an image embd_layer needs it");
  const json& ip = j.at("img_processor");
  Reader ir{ip, iw};
  std::string name, type_feature = "patch";
  ir.get("name", name);
  ir.get("type_feature", type_feature);
  UNIME_CHECK(name == "clip_vision_model", iw, ": name '", name, "' is not supported (clip_vision_model)");
  UNIME_CHECK(type_feature == "patch", iw, ": type_feature '", type_feature, "' is not supported (patch)");
  Phi3VFields& p = mc.phi3v;
  ir.get("image_dim_out", p.image_dim_out);
  ir.get("num_img_tokens", p.num_img_tokens);
  ir.get("layer_idx", p.layer_idx);
  UNIME_CHECK(ip.contains("image_dim_out"), iw, ": 'image_dim_out' is required");
  json v = ip.contains("vision_config") && ip.at("vision_config").is_object() ? ip.at("vision_config")
                                                                             : json::object();
  mc.vision = parse_clip_vision(v, iw + ": vision_config", /*llava_defaults=*/true);  // ViT-L/14-336
  const auto& vc = *mc.vision;
  UNIME_CHECK(p.image_dim_out == vc.hidden_size, iw, ": image_dim_out ", p.image_dim_out,
              " differs from the CLIP hidden_size ", vc.hidden_size);
  const int64_t g = vc.image_size / vc.patch_size;
  UNIME_CHECK(g % 2 == 0, iw, ": the 2x2 patch merge needs an even patch grid; image_size ", vc.image_size,
              " / patch_size ", vc.patch_size, " = ", g);
  const int64_t n_states = vc.num_hidden_layers + 1;
  UNIME_CHECK(p.layer_idx >= -n_states && p.layer_idx < n_states, iw, ": layer_idx ", p.layer_idx,
              " is out of range for a CLIP tower with ", vc.num_hidden_layers, " layers");
  if (p.layer_idx < 0) p.layer_idx += n_states;
}

}  // namespace

int64_t ModelConfig::image_feature_tokens() const {
  if (!vision) return 0;
  return vision->num_patches() + (llava.vision_feature_select_strategy == "full" ? 1 : 0);
}

ModelConfig parse_model_config(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(str(where, ": not valid JSON: ", e.what()));
  }
  UNIME_CHECK(j.is_object(), where, ": expected a JSON object");
  ModelConfig mc;
  Reader r{j, where};
  r.get("model_type", mc.model_type);
  r.get("torch_dtype", mc.torch_dtype);
  if (j.contains("architectures")) {
    const json& a = j.at("architectures");
    UNIME_CHECK(a.is_array() && !a.empty() && a[0].is_string(), where,
                ": 'architectures' must be a non-empty list of strings");
    mc.architecture = a[0].get<std::string>();
  } else {
    // a few configs omit it: infer from model_type
    static const std::pair<const char*, const char*> kByType[] = {
        {"llama", "LlamaForCausalLM"},     {"mistral", "MistralForCausalLM"},
        {"qwen2", "Qwen2ForCausalLM"},     {"clip_vision_model", "CLIPVisionModel"},
        {"clip", "CLIPModel"},             {"llava", "LlavaForConditionalGeneration"},
        {"llava_next", "LlavaNextForConditionalGeneration"},
        {"qwen2_vl", "Qwen2VLForConditionalGeneration"}, {"phi3_v", "Phi3VForCausalLM"}};
    for (auto [t, a] : kByType)
      if (mc.model_type == t) mc.architecture = a;
    UNIME_CHECK(!mc.architecture.empty(), where, ": no 'architectures' and unknown model_type '",
                mc.model_type, "'; supported architectures: ", supported_arch_names());
  }
  bool found = false;
  for (Arch a : kAllArchs)
    if (mc.architecture == arch_name(a)) {
      mc.arch = a;
      found = true;
    }
  UNIME_CHECK(found, where, ": unsupported architecture '", mc.architecture,
              "'; supported: ", supported_arch_names());

  switch (mc.arch) {
    case Arch::Llama:
    case Arch::Mistral:
    case Arch::Qwen2: {
      std::string type = mc.arch == Arch::Llama ? "llama" : mc.arch == Arch::Mistral ? "mistral" : "qwen2";
      mc.text = parse_decoder(j, type, where);
      break;
    }
    case Arch::ClipVision: {
      // CLIPVisionModel configs are flat (model_type clip_vision_model); some nest vision_config
      const json& v = j.contains("vision_config") && j.at("vision_config").is_object() ? j.at("vision_config") : j;
      mc.vision = parse_clip_vision(v, where, false);
      break;
    }
    case Arch::Clip: {
      json v = j.contains("vision_config") && j.at("vision_config").is_object() ? j.at("vision_config") : json::object();
      ClipVisionConfig vc = parse_clip_vision(v, where + ": vision_config", false);
      // CLIPConfig.projection_dim (top level, default 512) is the visual_projection output
      int64_t proj = 512;
      r.get("projection_dim", proj);
      vc.projection_dim = proj;
      mc.vision = vc;
      break;
    }
    case Arch::Llava:
    case Arch::LlavaNext: {
      json t = j.contains("text_config") && j.at("text_config").is_object() ? j.at("text_config") : json::object();
      std::string ttype = "llama";
      if (t.contains("model_type") && t.at("model_type").is_string()) ttype = t.at("model_type").get<std::string>();
      mc.text = parse_decoder(t, ttype, where + ": text_config");
      json v = j.contains("vision_config") && j.at("vision_config").is_object() ? j.at("vision_config") : json::object();
      if (v.contains("model_type") && v.at("model_type").is_string()) {
        std::string vt = v.at("model_type").get<std::string>();
        UNIME_CHECK(vt == "clip_vision_model", where, ": vision_config model_type '", vt,
                    "' is not supported (clip_vision_model)");
      }
      // LlavaConfig: vision_config=None -> CLIP ViT-L/14-336; a given dict -> CLIPVisionConfig(**d)
      mc.vision = parse_clip_vision(v, where + ": vision_config", !j.contains("vision_config") ||
                                                                      !j.at("vision_config").is_object());
      LlavaFields& L = mc.llava;
      if (r.has("image_token_index")) r.get("image_token_index", L.image_token_id);
      if (r.has("image_token_id")) r.get("image_token_id", L.image_token_id);
      r.get("projector_hidden_act", L.projector_hidden_act);
      r.get("multimodal_projector_bias", L.multimodal_projector_bias);
      r.get("vision_feature_select_strategy", L.vision_feature_select_strategy);
      r.get("image_seq_length", L.image_seq_length);
      UNIME_CHECK(L.vision_feature_select_strategy == "default" || L.vision_feature_select_strategy == "full",
                  where, ": vision_feature_select_strategy must be 'default' or 'full', got '",
                  L.vision_feature_select_strategy, "'");
      UNIME_CHECK(L.projector_hidden_act == "gelu" || L.projector_hidden_act == "gelu_pytorch_tanh" ||
                      L.projector_hidden_act == "gelu_new" || L.projector_hidden_act == "quick_gelu" ||
                      L.projector_hidden_act == "silu" || L.projector_hidden_act == "relu",
                  where, ": projector_hidden_act '", L.projector_hidden_act, "' is not supported");
      if (r.has("vision_feature_layer")) {
        const json& fl = j.at("vision_feature_layer");
        L.vision_feature_layer.clear();
        if (fl.is_number_integer()) {
          L.vision_feature_layer.push_back(fl.get<int64_t>());
        } else {
          UNIME_CHECK(fl.is_array() && !fl.empty(), where,
                      ": vision_feature_layer must be an integer or a list of integers");
          for (const json& x : fl) {
            UNIME_CHECK(x.is_number_integer(), where, ": vision_feature_layer entries must be integers");
            L.vision_feature_layer.push_back(x.get<int64_t>());
          }
        }
      }
      const int64_t n_states = mc.vision->num_hidden_layers + 1;  // embeddings + each layer
      for (int64_t& l : L.vision_feature_layer) {
        UNIME_CHECK(l >= -n_states && l < n_states, where, ": vision_feature_layer ", l,
                    " is out of range for a vision tower with ", n_states - 1, " layers");
        if (l < 0) l += n_states;
      }
      UNIME_CHECK(L.image_token_id >= 0 && L.image_token_id < mc.text->vocab_size, where,
                  ": image token id ", L.image_token_id, " is outside the vocabulary (vocab_size ",
                  mc.text->vocab_size, ")");
      if (mc.arch == Arch::LlavaNext) parse_llava_next(j, mc, where);
      break;
    }
    case Arch::Qwen2VL:
      parse_qwen2vl(j, mc, where);
      break;
    case Arch::Phi3V:
      parse_phi3v(j, mc, where);
      break;
  }
  return mc;
}

ModelConfig load_model_config(const std::string& dir_or_file) {
  std::string path = dir_or_file;
  if (path.size() < 5 || path.substr(path.size() - 5) != ".json") path += "/config.json";
  std::ifstream in(path, std::ios::binary);
  UNIME_CHECK(in.good(), path, ": cannot open (is this a Hugging Face model folder?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_model_config(ss.str(), path);
}

}  // namespace unime::io
