// The CLIP image processor: HF transformers CLIPImageProcessor.preprocess for one image
// (https://github.com/huggingface/transformers/blob/main/src/transformers/models/clip/image_processing_clip.py),
// used by CLIP vision towers and LLaVA-1.5 style models.
//   RGB uint8 [H, W, 3] -> resize (shortest edge, PIL resample) -> center crop
//   -> rescale (x * rescale_factor in float64, then float32) -> (x - mean) / std in float32
//   -> pixel_values float32 [3, h, w] (CHW).
#pragma once

#include <array>
#include <string>
#include <vector>

#include "io/image.h"
#include "vision/resize.h"

namespace unime::vision {

/// preprocessor_config.json of a CLIPImageProcessor. Field names follow the JSON keys; the
/// defaults are CLIPImageProcessor.__init__'s.
struct ClipProcessorConfig {
  bool do_resize = true;
  /// size {"shortest_edge": N} (or a bare int): short side -> N, long side int(N * long / short).
  int shortest_edge = 224;
  /// size {"height": h, "width": w} (or [h, w], or use_square_size): resize to exactly this;
  /// used when shortest_edge == 0.
  int size_height = 0, size_width = 0;
  Resample resample = Resample::Bicubic;
  bool do_center_crop = true;
  int crop_height = 224, crop_width = 224;  // crop_size {"height", "width"} or a bare int
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255;
  bool do_normalize = true;
  std::array<double, 3> image_mean{0.48145466, 0.4578275, 0.40821073};  // OPENAI_CLIP_MEAN
  std::array<double, 3> image_std{0.26862954, 0.26130258, 0.27577711};   // OPENAI_CLIP_STD
  bool do_convert_rgb = true;  // images are always decoded to RGB (io::Image), so a no-op
};

/// Parses preprocessor_config.json. A processor type other than CLIPImageProcessor /
/// CLIPFeatureExtractor, a size dict CLIP cannot use, a bad type or value -> unime::Error
/// naming the file and key.
ClipProcessorConfig load_clip_processor_config(const std::string& path);
/// As load_clip_processor_config on JSON text; `name` is used in error messages.
ClipProcessorConfig parse_clip_processor_config(const std::string& json_text, const std::string& name);

/// The (height, width) the resize step produces for an input of in_height x in_width
/// (get_resize_output_image_size with default_to_square=False for shortest_edge).
std::array<int, 2> clip_resize_size(int in_height, int in_width, const ClipProcessorConfig& cfg);

/// io::Image [H, W, 3] -> float32 [3, h, w]; *out_height / *out_width receive h and w.
/// Resize and crop are fused (only the cropped window is resampled; the values are those of
/// resize-then-crop). The output may hold at most io::kDefaultMaxPixels pixels.
std::vector<float> clip_preprocess(const io::Image& img, const ClipProcessorConfig& cfg,
                                   int* out_height, int* out_width);

}  // namespace unime::vision
