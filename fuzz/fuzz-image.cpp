// libFuzzer target for image decoding (stb_image behind our header checks) and the CLIP
// preprocessing of whatever decodes: errors must be unime::Error, never a crash or an
// allocation beyond the pixel limit. Run: build-fuzz/bin/fuzz-image corpus/ -rss_limit_mb=1024
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "io/image.h"
#include "vision/clip-processor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const unime::io::Image img = unime::io::decode_image(data, size, "fuzz", /*max_pixels=*/1 << 20);
    if (img.rgb.size() != static_cast<size_t>(img.width) * img.height * 3) std::abort();
    unime::vision::ClipProcessorConfig cfg;
    cfg.shortest_edge = 16;
    cfg.crop_height = cfg.crop_width = 16;
    cfg.resample = static_cast<unime::vision::Resample>(size % 6);
    int h = 0, w = 0;
    const auto px = unime::vision::clip_preprocess(img, cfg, &h, &w);
    if (h != 16 || w != 16 || px.size() != 3u * 16 * 16) std::abort();
  } catch (const unime::Error&) {
  }
  return 0;
}
