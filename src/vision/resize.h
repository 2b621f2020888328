// Pillow-compatible resizing and HF-compatible center crop for 8-bit RGB images.
// Mirrors Pillow's Image.resize(size, resample, reducing_gap=None) (src/libImaging/Resample.c:
// precompute_coeffs, normalize_coeffs_8bpc, ImagingResampleHorizontal/Vertical_8bpc,
// ImagingResampleInner; NEAREST goes through Geometry.c ImagingScaleAffine) bit for bit:
// separable convolution, horizontal pass then vertical, filter support widened by the
// downscale factor (antialiasing), coefficients in 22-bit fixed point, round-half-up, clip.
// Legend: W, H input size; w, h output size; HWC layout, 3 channels.
#pragma once

#include <cstdint>

#include "io/image.h"

namespace unime::vision {

/// PIL.Image.Resampling values (the integers stored as "resample" in preprocessor_config.json).
enum class Resample {
  Nearest = 0,   ///< nearest neighbour (Pillow's affine scale path)
  Lanczos = 1,   ///< windowed sinc, support 3
  Bilinear = 2,  ///< triangle, support 1
  Bicubic = 3,   ///< cubic convolution a = -0.5, support 2 (CLIP's default)
  Box = 4,       ///< box, support 0.5
  Hamming = 5,   ///< Hamming-windowed sinc, support 1
};

const char* resample_name(Resample r);

/// Resizes to width x height like Pillow's Image.resize with `filter`. [H, W, 3] -> [h, w, 3].
io::Image resize_pil(const io::Image& img, int width, int height, Resample filter);

/// Pillow's antialiased BICUBIC resize.
io::Image resize_bicubic_pil(const io::Image& img, int width, int height);

/// The window [x0, x0 + w) x [y0, y0 + h) of resize_pil(img, width, height, filter), computed
/// without materialising the whole resized image (each output pixel depends only on its own
/// filter taps, so the values are identical). The window must lie inside width x height.
io::Image resize_pil_window(const io::Image& img, int width, int height, Resample filter, int x0,
                            int y0, int w, int h);

/// HF image_transforms.center_crop: top = (H - height) // 2, left = (W - width) // 2 (floor
/// division); where the crop reaches outside the image the result is zero-padded, the image
/// sitting at ceil((height - H) / 2) from the top as HF places it. [H, W, 3] -> [height, width, 3].
io::Image center_crop(const io::Image& img, int width, int height);

}  // namespace unime::vision
