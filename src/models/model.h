// A loaded model of any supported architecture (the registry's product): an optional CLIP vision
// tower (+ LLaVA projector or CLIP visual_projection) and an optional Llama-family decoder.
// Tools stay model-agnostic: they see only this class (STYLE.md B1 rule 2).
// Legend: B batch, T tokens, D decoder hidden, N images, C channels, S image size,
//         F feature tokens per image, Dv vision hidden.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/hf-config.h"
#include "io/safetensors.h"
#include "models/decoder.h"
#include "models/vision-clip.h"
#include "models/vision-phi3v.h"
#include "models/vision-qwen2vl.h"

namespace unime::models {

/// LLaVA's multi-modal projector: linear_1 -> act -> linear_2 (HF LlavaMultiModalProjector).
class ProjectorImpl : public torch::nn::Module {
 public:
  ProjectorImpl(int64_t in_dim, int64_t out_dim, const std::string& act, bool bias);
  torch::Tensor forward(const torch::Tensor& x);  // [N, F, Dv*k] -> [N, F, D]
  Linear linear_1{nullptr}, linear_2{nullptr};
 private:
  std::string act_;
};
TORCH_MODULE(Projector);

/// One input batch for the decoder, already tokenized, image tokens expanded, left padded.
struct TokenBatch {
  torch::Tensor ids;       // [B, T] int64
  torch::Tensor key_real;  // [B, T] bool: false at padding
  torch::Tensor pixels;    // [N, C, S, S] float32, images in order of appearance; may be undefined
                           // LLaVA-NeXT: [sum of crops, C, S, S], each image's base + tiles
  torch::Tensor image_sizes;  // LLaVA-NeXT: [N, 2] int64 original (height, width) of each image
                              // Phi-3-V: [N, 2] int64 HD-transformed (height, width), pixels
                              // [sum (1 + crops), C, S, S] (global crop first)
  torch::Tensor image_grid_thw;  // Qwen2-VL: [N, 3] int64 patch grid; pixels [sum t*h*w, C*tp*p*p]
};

class Model {
 public:
  /// Builds the architecture of `cfg` with uninitialised weights in dtype.
  Model(const io::ModelConfig& cfg, torch::ScalarType dtype);

  /// Loads config.json + safetensors weights from a Hugging Face folder.
  static std::shared_ptr<Model> load(const std::string& dir, torch::ScalarType dtype);

  const io::ModelConfig& config() const { return cfg_; }
  torch::ScalarType dtype() const { return dtype_; }
  bool has_decoder() const { return static_cast<bool>(decoder_); }
  bool has_vision() const { return static_cast<bool>(vision_) || static_cast<bool>(qwen2vl_vision_); }
  /// The token id marking image-feature positions in TokenBatch ids (Phi-3-V: negative ids).
  int64_t image_token_id() const;

  /// LLaVA: image features as the decoder sees them. pixels [N, C, S, S] -> [N, F, D]
  torch::Tensor image_features(const torch::Tensor& pixels);
  /// Image features of every image in order, as the decoder's image-token rows receive them:
  /// LLaVA [N * F, D]; LLaVA-NeXT (pixels [sum crops, C, S, S], image_sizes [N, 2]) [sum F_i, D].
  torch::Tensor image_features(const torch::Tensor& pixels, const torch::Tensor& image_sizes);
  /// Image features of a batch's images for any vision-language architecture: [sum F_i, D]
  torch::Tensor image_features(const TokenBatch& batch);
  /// Qwen2-VL get_rope_index for one unpadded sequence: ids [T], grid_thw [n, 3] of its images
  /// (consumed from row `*next_image`, advanced past the images found) -> positions [3, T] int64.
  torch::Tensor mrope_positions(const std::vector<int64_t>& ids, const torch::Tensor& grid_thw,
                                int64_t* next_image) const;
  /// Feature tokens an image of height x width contributes (LLaVA: fixed; LLaVA-NeXT: AnyRes).
  int64_t image_feature_tokens(int64_t height, int64_t width) const;
  /// CLIP*: pooled vision output, projected for CLIPModel. pixels -> [N, Dv or proj]
  torch::Tensor clip_image_embeds(const torch::Tensor& pixels);
  /// CLIP* vision hidden states (HF output_hidden_states) up to the last layer.
  std::vector<torch::Tensor> clip_hidden_states(const torch::Tensor& pixels);

  /// Decoder input embeddings with image features scattered into the image-token rows:
  /// the batch must hold exactly N * F image tokens. -> [B, T, D]
  torch::Tensor input_embeddings(const TokenBatch& batch);
  /// Last hidden state after the final norm: [B, T, D]
  torch::Tensor hidden(const TokenBatch& batch);
  /// Final-norm hidden state at each row's last real token (right-most key_real): [B, D]
  torch::Tensor last_token_hidden(const TokenBatch& batch);

  /// As last_token_hidden, with the sequences packed back to back (no padding; attention per
  /// sequence): ids [1, N] holding sequences of `lens`, pixels in order. -> [B, D], B = lens.size()
  torch::Tensor last_token_hidden_packed(const torch::Tensor& ids, const std::vector<int64_t>& lens,
                                         const torch::Tensor& pixels);
  /// As above with every image input of `packed` (ids [1, N]; key_real is ignored).
  torch::Tensor last_token_hidden_packed(const TokenBatch& packed, const std::vector<int64_t>& lens);

  /// Every module, for parameter counts and LoRA wrapping: (prefix in HF keys, module).
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> modules() const;
  /// Parameters under their HF checkpoint key names (the layout this model was loaded from).
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;

  Decoder decoder_{nullptr};
  ClipVision vision_{nullptr};
  Qwen2VLVision qwen2vl_vision_{nullptr};  // Qwen2-VL (under prefix_vision_)
  Phi3VImageEmbed phi3v_image_{nullptr};   // Phi-3-V separators + img_projection (prefix_phi3v_)
  Projector projector_{nullptr};
  Linear visual_projection_{nullptr};  // CLIPModel only
  Linear lm_head_{nullptr};            // decoder LMs; tied -> shares embed_tokens
  /// LLaVA-NeXT: holds `image_newline` [D] (key "image_newline" legacy, "model.image_newline" new)
  std::shared_ptr<torch::nn::Module> extras_;
  torch::Tensor image_newline_;
  std::string prefix_decoder_, prefix_vision_, prefix_projector_, key_lm_head_, prefix_extras_,
      prefix_phi3v_;

 private:
  io::ModelConfig cfg_;
  torch::ScalarType dtype_;
};

/// Expands image placeholders in one token sequence: with n_images images and F feature tokens
/// each, a sequence holding exactly n_images*F image tokens is returned unchanged (used in place);
/// one holding n_images single tokens gets each expanded to F copies. Anything else is an Error
/// naming `where`.
std::vector<int64_t> expand_image_tokens(const std::vector<int64_t>& ids, int64_t image_token,
                                         int64_t n_images, int64_t n_feat, const std::string& where);
/// As above with a feature count per image (LLaVA-NeXT: counts depend on each image's size): a
/// sequence holding sum(n_feat) image tokens is used in place; one holding one token per image
/// gets the i-th expanded to n_feat[i] copies.
std::vector<int64_t> expand_image_tokens(const std::vector<int64_t>& ids, int64_t image_token,
                                         const std::vector<int64_t>& n_feat, const std::string& where);

/// The default dtype for this machine: bf16 where the CPU has native bf16 (AMX / avx512_bf16) or a
/// CUDA device is used, else f32.
torch::ScalarType default_dtype();
/// "f32" | "bf16" | "f16" | "auto" -> ScalarType; unknown -> Error.
torch::ScalarType parse_dtype(const std::string& s);
const char* dtype_short_name(torch::ScalarType t);
/// The torch type of a safetensors element type; `where` names the tensor in the error.
torch::ScalarType torch_dtype_of(io::DType d, const std::string& where);
/// The safetensors element type of a float torch type (F64, F32, F16, BF16).
io::DType io_dtype_of(torch::ScalarType t);

}  // namespace unime::models
