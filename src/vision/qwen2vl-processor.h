// Qwen2-VL image processing, after Hugging Face transformers' image_processing_qwen2_vl.py
// (smart_resize, Qwen2VLImageProcessor._preprocess) and processing_qwen2_vl.py (one
// <|image_pad|> per merged patch):
//   RGB uint8 [H, W, 3] -> smart_resize to (h, w), multiples of patch_size * merge_size, with
//   min_pixels <= h*w <= max_pixels -> PIL resize -> rescale -> normalize (float32)
//   -> the frame repeated to temporal_patch_size -> patches [t*gh*gw, C*tp*p*p] in the merge order
//   (each merge_size x merge_size block of patches consecutive), grid (t, gh, gw) = (1, h/p, w/p).
// Legend: p patch_size (14), tp temporal_patch_size (2), m merge_size (2), C channels.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "io/image.h"
#include "vision/clip-processor.h"

namespace unime::vision {

/// preprocessor_config.json of a Qwen2VLImageProcessor (field names = JSON keys, defaults =
/// Qwen2VLImageProcessor.__init__'s).
struct Qwen2VLProcessorConfig {
  int64_t min_pixels = 56 * 56;
  int64_t max_pixels = 28 * 28 * 1280;
  int64_t patch_size = 14;
  int64_t temporal_patch_size = 2;
  int64_t merge_size = 2;
  ClipProcessorConfig clip;  ///< resample, rescale_factor, image_mean / image_std, do_* flags
};

Qwen2VLProcessorConfig parse_qwen2vl_processor_config(const std::string& json_text, const std::string& name);
Qwen2VLProcessorConfig load_qwen2vl_processor_config(const std::string& path);

/// smart_resize(height, width, factor, min_pixels, max_pixels) -> (h, w); Python's round() (half
/// to even). An aspect ratio over 200 -> unime::Error naming `where`.
std::array<int64_t, 2> qwen2vl_smart_resize(int64_t height, int64_t width, int64_t factor,
                                            int64_t min_pixels, int64_t max_pixels,
                                            const std::string& where);

/// The patch grid (t, gh, gw) of an image of height x width.
std::array<int64_t, 3> qwen2vl_grid(int64_t height, int64_t width, const Qwen2VLProcessorConfig& cfg,
                                    const std::string& where);

/// <|image_pad|> tokens of an image: t * gh * gw / merge_size^2.
int64_t qwen2vl_image_tokens(int64_t height, int64_t width, const Qwen2VLProcessorConfig& cfg,
                             const std::string& where);

/// One image -> flattened patches float32 [t*gh*gw, C*tp*p*p]; *grid receives (t, gh, gw).
std::vector<float> qwen2vl_preprocess(const io::Image& img, const Qwen2VLProcessorConfig& cfg,
                                      std::array<int64_t, 3>* grid, const std::string& where);

}  // namespace unime::vision
