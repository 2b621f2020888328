// Hugging Face config.json -> validated config structs, with HF's class defaults applied.
// Mirrors transformers' LlamaConfig / MistralConfig / Qwen2Config / CLIPVisionConfig /
// CLIPConfig / LlavaConfig / LlavaNextConfig. Field names are the config.json keys (STYLE.md B3).
// All user-file parsing lives in io/ (STYLE.md B1): nothing past here re-validates.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace unime::io {

/// RoPE variant, from `rope_scaling` ("rope_type" or legacy "type").
enum class RopeType {
  Default,  ///< plain RoPE
  Linear,   ///< positions divided by `factor`
  Llama3,   ///< Llama-3.1 frequency-dependent scaling
  LongRope, ///< Phi-3 "su" / "longrope": per-frequency short or long factors, cos/sin scaled
  Phi3Yarn, ///< Phi-3 remote-code "yarn": as LongRope with the 0.1 ln(s) + 1 attention factor
};

/// Decoder LLM of the Llama family: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, and
/// Phi-3 (Phi3VForCausalLM's language model: fused qkv_proj / gate_up_proj).
struct DecoderConfig {
  std::string model_type = "llama";        // "llama" | "mistral" | "qwen2" | "phi3"
  int64_t vocab_size          = 32000;
  int64_t hidden_size         = 4096;      // D
  int64_t intermediate_size   = 11008;     // F (SwiGLU inner size)
  int64_t num_hidden_layers   = 32;
  int64_t num_attention_heads = 32;        // H
  int64_t num_key_value_heads = 32;        // Hkv (GQA): divides H
  int64_t head_dim            = 128;       // d: `head_dim` key, else D / H
  int64_t max_position_embeddings = 2048;
  double  rms_norm_eps        = 1e-6;
  double  rope_theta          = 10000.0;
  RopeType rope_type          = RopeType::Default;
  double  rope_factor         = 1.0;       // linear / llama3
  double  rope_low_freq_factor  = 1.0;     // llama3
  double  rope_high_freq_factor = 4.0;     // llama3
  int64_t rope_original_max_position_embeddings = 8192;  // llama3; Phi-3: top-level key
  /// Phi-3 LongRope / Phi3Yarn (rope_scaling short_factor / long_factor, d/2 each): inv_freq is
  /// divided by the long factors when a sequence is longer than original_max_position_embeddings
  /// (decided per sequence), else by the short ones; cos/sin are multiplied by rope_attention_factor.
  std::vector<double> rope_short_factor, rope_long_factor;
  double  rope_attention_factor = 1.0;
  bool    attention_bias      = false;     // q/k/v/o biases (Llama); Qwen2: q/k/v only
  bool    qkv_bias            = false;     // Qwen2: true
  bool    o_bias              = false;
  bool    mlp_bias            = false;
  std::string hidden_act      = "silu";
  bool    tie_word_embeddings = false;
  /// M-RoPE (Qwen2-VL `rope_scaling.mrope_section`): the d/2 frequencies split into consecutive
  /// temporal / height / width runs; empty = plain 1-D RoPE.
  std::vector<int64_t> mrope_section;
  int64_t sliding_window      = 0;         // 0 = none (Mistral default 4096)
  int64_t max_window_layers   = 0;         // Qwen2: layers >= this use the window
  std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;
};

/// CLIP vision tower: CLIPVisionModel, the vision half of CLIPModel, LLaVA's vision_tower.
struct ClipVisionConfig {
  int64_t hidden_size         = 768;       // Dv
  int64_t intermediate_size   = 3072;
  int64_t num_hidden_layers   = 12;
  int64_t num_attention_heads = 12;
  int64_t num_channels        = 3;
  int64_t image_size          = 224;
  int64_t patch_size          = 32;
  int64_t projection_dim      = 512;       // CLIPModel visual_projection output
  double  layer_norm_eps      = 1e-5;
  std::string hidden_act      = "quick_gelu";
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
};

/// Qwen2-VL vision transformer (Qwen2VLVisionConfig; config.json "vision_config").
struct Qwen2VLVisionConfig {
  int64_t depth               = 32;
  int64_t embed_dim           = 1280;      // Dv
  int64_t hidden_size         = 3584;      // merger output = decoder hidden_size
  std::string hidden_act      = "quick_gelu";
  double  mlp_ratio           = 4;
  int64_t num_heads           = 16;
  int64_t in_channels         = 3;         // `in_channels` (or the older `in_chans`)
  int64_t patch_size          = 14;
  int64_t spatial_merge_size  = 2;
  int64_t temporal_patch_size = 2;
};

/// Qwen2-VL special tokens (Qwen2VLConfig).
struct Qwen2VLFields {
  int64_t image_token_id        = 151655;  // <|image_pad|>
  int64_t video_token_id        = 151656;
  int64_t vision_start_token_id = 151652;  // <|vision_start|>
  int64_t vision_end_token_id   = 151653;
};

/// Supported top-level architectures (config.json "architectures"[0]). Listed explicitly.
enum class Arch {
  Llama,      ///< LlamaForCausalLM
  Mistral,    ///< MistralForCausalLM
  Qwen2,      ///< Qwen2ForCausalLM
  ClipVision, ///< CLIPVisionModel
  Clip,       ///< CLIPModel (vision tower + visual_projection used)
  Llava,      ///< LlavaForConditionalGeneration
  LlavaNext,  ///< LlavaNextForConditionalGeneration (LLaVA-1.6: AnyRes tiles + image_newline)
  Qwen2VL,    ///< Qwen2VLForConditionalGeneration (native-resolution ViT, M-RoPE Qwen2 decoder)
  Phi3V,      ///< Phi3VForCausalLM (Phi-3/3.5-vision remote code: CLIP ViT-L/14-336 + HD transform)
};

const char* arch_name(Arch a);
/// The supported class names, comma separated (for error messages).
std::string supported_arch_names();

struct LlavaFields {
  std::vector<int64_t> vision_feature_layer = {-2};  // int or list of ints (concatenated)
  std::string vision_feature_select_strategy = "default";  // "default" drops CLS, "full" keeps it
  std::string projector_hidden_act = "gelu";
  bool multimodal_projector_bias = true;
  int64_t image_token_id = 32000;          // `image_token_index` (older) / `image_token_id`
  int64_t image_seq_length = 576;
  /// LLaVA-NeXT: candidate (height, width) resolutions of the AnyRes grid, each a multiple of the
  /// vision image_size (LlavaNextConfig default: 336x672, 672x336, 672x672, 1008x336, 336x1008).
  std::vector<std::array<int64_t, 2>> image_grid_pinpoints;
};

/// Phi-3-V image embedding (Phi3VConfig `img_processor` / `embd_layer`, image_embedding_phi3_v.py).
/// Image positions are marked by negative ids in input_ids (-k for image k); unime uses one
/// marker, kImageToken, internally.
struct Phi3VFields {
  static constexpr int64_t kImageToken = -1;
  int64_t layer_idx = -2;          ///< img_processor.layer_idx: CLIP hidden state (-2), made >= 0 at parse
  int64_t image_dim_out = 1024;    ///< img_processor.image_dim_out (= CLIP hidden size)
  int64_t num_img_tokens = 144;    ///< img_processor.num_img_tokens (merged tokens per 336 crop)
};

/// A whole model's config.json.
struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string architecture;                // the class name as written
  std::string model_type;                  // top-level model_type
  std::string torch_dtype;                 // as written ("float32", "bfloat16", ...) or ""
  std::optional<DecoderConfig> text;       // decoder (LLMs, LLaVA)
  std::optional<ClipVisionConfig> vision;  // CLIP tower (CLIP*, LLaVA)
  LlavaFields llava;                       // LLaVA, LLaVA-NeXT
  std::optional<Qwen2VLVisionConfig> qwen2vl_vision;  // Qwen2-VL
  Qwen2VLFields qwen2vl;                   // Qwen2-VL
  Phi3VFields phi3v;                       // Phi-3-V (vision present when `vision` is set)

  /// LLaVA and LLaVA-NeXT (both use the `llava` fields, the projector and a CLIP tower).
  bool is_llava_family() const { return arch == Arch::Llava || arch == Arch::LlavaNext; }
  /// Number of feature tokens one image contributes to the decoder (LLaVA). LLaVA-NeXT: the base
  /// image's share only; the full count depends on the image size (vision/llava-next-processor.h).
  int64_t image_feature_tokens() const;
};

/// Parses <dir>/config.json (or a config.json path). Throws unime::Error naming the file.
ModelConfig load_model_config(const std::string& dir_or_file);

/// Parses config JSON text; `where` names the file in errors.
ModelConfig parse_model_config(const std::string& json_text, const std::string& where);

}  // namespace unime::io
