// LLaVA-NeXT (LLaVA-1.6) AnyRes image processing and token counting, after Hugging Face
// transformers' image_processing_llava_next.py (LlavaNextImageProcessor.preprocess,
// get_image_patches, _resize_for_patching, _pad_for_patching, divide_to_patches),
// image_processing_utils.select_best_resolution, and processing_llava_next.py
// (LlavaNextProcessor._get_number_of_features / _get_unpadded_features):
//   RGB uint8 [H, W, 3] -> best-fit resolution (h*, w*) from image_grid_pinpoints
//   -> aspect-preserving PIL resize into (h*, w*), centred on a zero canvas (h*, w*)
//   -> (h*/S) x (w*/S) tiles of S x S, row-major; plus the whole image resized to S x S first
//   -> each of the 1 + tiles through the CLIP steps (resize / crop / rescale / normalize).
// The decoder sees, per image: base (S/p)^2 features, then the tiles' feature grid unpadded to the
// original aspect ratio with one image_newline after each row.
// Legend: S vision image_size (= crop size), p patch size, g = S / p.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "io/image.h"
#include "vision/clip-processor.h"

namespace unime::vision {

using Pinpoints = std::vector<std::array<int64_t, 2>>;  // (height, width) candidates

/// preprocessor_config.json of a LlavaNextImageProcessor.
struct LlavaNextProcessorConfig {
  ClipProcessorConfig clip;  ///< the per-tile steps (size, crop_size, resample, mean/std, ...)
  Pinpoints image_grid_pinpoints{{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
  /// side of the square the base image is resized to: size.shortest_edge (or min(height, width))
  int base_size = 224;
  /// tile side: crop_size.height
  int tile_size = 224;
};

/// Parses a LlavaNextImageProcessor config; anything else (or a bad field) -> unime::Error naming
/// the file and key.
LlavaNextProcessorConfig parse_llava_next_processor_config(const std::string& json_text,
                                                           const std::string& name);
LlavaNextProcessorConfig load_llava_next_processor_config(const std::string& path);

/// select_best_resolution: the pinpoint keeping the most of the image's pixels when scaled to fit,
/// ties broken by the least wasted area (first such in list order). -> (height, width)
std::array<int64_t, 2> select_best_resolution(int64_t height, int64_t width, const Pinpoints& pins);

/// Number of S x S crops the vision tower sees for an image: 1 (base) + (h*/S) * (w*/S).
int64_t anyres_num_crops(int64_t height, int64_t width, const Pinpoints& pins, int64_t tile);

/// The unpadded tile-feature grid (rows, cols) of an image, as unpad_image leaves it.
/// grid: features per tile side (S / p).
std::array<int64_t, 2> anyres_unpadded_grid(int64_t height, int64_t width, const Pinpoints& pins,
                                            int64_t tile, int64_t grid);

/// Feature tokens of one image in the decoder ("default" strategy, CLS dropped):
/// grid^2 (base) + rows * (cols + 1) (unpadded tiles, image_newline after each row).
int64_t anyres_feature_tokens(int64_t height, int64_t width, const Pinpoints& pins, int64_t tile,
                              int64_t grid);

/// One image -> float32 [1 + tiles, 3, tile, tile] (CHW per crop, base image first).
std::vector<float> llava_next_preprocess(const io::Image& img, const LlavaNextProcessorConfig& cfg,
                                         int64_t* n_crops);

}  // namespace unime::vision
