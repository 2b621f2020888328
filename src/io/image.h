// Image decoding to 8-bit RGB (HWC), the input of vision/ preprocessing.
// Decoder: stb_image (Debian libstb-dev) for PNG, JPEG, BMP and GIF (first frame). Colour
// handling follows PIL's Image.open(...).convert("RGB"), which is what HF pipelines feed to the
// image processors: grey is replicated, alpha is dropped (not composited), palettes expanded,
// 16-bit RGB(A)/grey+alpha keep the high byte, 16-bit grey is clipped to 255 (PIL's I -> RGB).
// Differences from PIL, measured in tests/test-image.cpp and docs/README-dev-io.md: JPEG IDCT /
// chroma upsampling (stb vs libjpeg, a few levels), GIF transparent pixels (black in stb, the
// palette colour in PIL), CMYK JPEGs, EXIF orientation (ignored, as PIL.Image.open does).
// The pixel count is checked from the header before any pixel memory is allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace unime::io {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // [height, width, 3]
};

/// Default pixel limit: 8192 x 8192 (PIL's own bomb limit is ~89M pixels).
constexpr int64_t kDefaultMaxPixels = 8192LL * 8192;

/// Reads and decodes an image file. Missing file, not an image, truncated data, or more than
/// `max_pixels` pixels -> unime::Error naming the file.
Image load_image(const std::string& path, int64_t max_pixels = kDefaultMaxPixels);

/// As load_image on encoded bytes in memory; `name` is used in error messages.
Image decode_image(const uint8_t* data, size_t size, const std::string& name,
                   int64_t max_pixels = kDefaultMaxPixels);

}  // namespace unime::io
