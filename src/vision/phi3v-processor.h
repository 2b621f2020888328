// Phi-3-V image processing and token counting, after microsoft/Phi-3.5-vision-instruct's remote
// code image_processing_phi3_v.py (HD_transform, padding_336, calc_hd_transform_size,
// Phi3VImageProcessor.preprocess, calc_num_image_tokens_from_image_size):
//   RGB uint8 [H, W, 3] -> transposed when W < H -> scale = the largest s with
//   s * ceil(s / ratio) <= num_crops (ratio = W/H >= 1) -> PIL bilinear resize to (s*S, int(s*S/ratio))
//   -> height padded with white to a multiple of S, centred (top = (pad) // 2) -> transposed back
//   -> to_tensor (/255) and normalize (float32) -> the global image: torch bicubic interpolation of
//   the normalised HD image to S x S (align_corners false, no antialias) -> [global, hc*wc crops
//   row-major] of S x S. The remote code pads the crops with zeros to num_crops + 1; those
//   are never used and are not produced here.
// Tokens per image (processing_phi3_v.py, <|image_N|> -> that many -N ids):
//   (hc*wc + 1) * m^2 + 1 + (hc + 1) * m,   hc = H'/S, wc = W'/S, m = (S / patch) / 2 (12).
// Legend: S crop side (336 in the remote code: the vision image_size), H' x W' the HD size.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "io/image.h"

namespace unime::vision {

/// preprocessor_config.json of a Phi3VImageProcessor (defaults = Phi3VImageProcessor.__init__).
struct Phi3VProcessorConfig {
  int64_t num_crops = 1;  ///< hd_num: the sub-crop budget (Phi-3.5-vision-instruct saves 4)
  float image_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};   // OPENAI_CLIP_MEAN
  float image_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};   // OPENAI_CLIP_STD
};

Phi3VProcessorConfig parse_phi3v_processor_config(const std::string& json_text, const std::string& name);
Phi3VProcessorConfig load_phi3v_processor_config(const std::string& path);

/// calc_hd_transform_size: the HD size (height, width) of a height x width image, multiples of
/// `crop`. An image too elongated to keep one pixel row -> unime::Error naming `where`.
std::array<int64_t, 2> phi3v_hd_size(int64_t height, int64_t width, int64_t num_crops, int64_t crop,
                                     const std::string& where);

/// Image feature tokens of a height x width image (merged_grid m = crop / patch / 2).
int64_t phi3v_image_tokens(int64_t height, int64_t width, const Phi3VProcessorConfig& cfg, int64_t crop,
                           int64_t merged_grid, const std::string& where);

/// One image -> float32 [1 + hc*wc, 3, crop, crop] (global first); *hd receives (H', W').
std::vector<float> phi3v_preprocess(const io::Image& img, const Phi3VProcessorConfig& cfg, int64_t crop,
                                    std::array<int64_t, 2>* hd, const std::string& where);

/// torch.nn.functional.interpolate(mode="bicubic", align_corners=False) of CHW float32 planes,
/// as PyTorch's CPU kernel computes it (A = -0.75, clamped taps, float arithmetic).
std::vector<float> interpolate_bicubic_torch(const std::vector<float>& chw, int64_t channels,
                                             int64_t height, int64_t width, int64_t out_h, int64_t out_w);

}  // namespace unime::vision
