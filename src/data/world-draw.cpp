// src/data/world-draw.cpp - rasteriser and PNG encoder of the procedural world. See world-draw.h.
#include "data/world-draw.h"

#include <algorithm>
#include <cmath>

// The one definition of stb_image_write in the library (stb_image.h's lives in src/io/).
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#endif
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace unime::data::world {

namespace {

constexpr double kRadiusLarge = 0.40;  // x cell
constexpr double kRadiusSmall = 0.26;
constexpr double kJitter      = 0.09;  // max centre offset, x cell
constexpr double kCropMargin  = 1.35;  // crop half-side, x radius

// 5-pointed star, tip up: 10 vertices at -90 + 36k degrees, outer radius 1.1, inner 0.5.
// cos/sin are written out so that no libm call decides a pixel.
constexpr double kStarCos[10] = {0.0,           0.5877852523,  0.9510565163,  0.9510565163,
                                 0.5877852523,  0.0,           -0.5877852523, -0.9510565163,
                                 -0.9510565163, -0.5877852523};
constexpr double kStarSin[10] = {-1.0,          -0.8090169944, -0.3090169944, 0.3090169944,
                                 0.8090169944,  1.0,           0.8090169944,  0.3090169944,
                                 -0.3090169944, -0.8090169944};

bool star_covers(double u, double v) {
  double xs[10], ys[10];
  for (int k = 0; k < 10; ++k) {
    const double r = (k % 2 == 0) ? 1.1 : 0.5;
    xs[k] = r * kStarCos[k];
    ys[k] = r * kStarSin[k];
  }
  bool inside = false;  // even-odd rule
  for (int i = 0, j = 9; i < 10; j = i++) {
    if ((ys[i] > v) != (ys[j] > v) &&
        u < (xs[j] - xs[i]) * (v - ys[i]) / (ys[j] - ys[i]) + xs[i])
      inside = !inside;
  }
  return inside;
}

// Small integer noise in [-amp, amp] from a per-pixel hash.
int pixel_noise(uint64_t seed, int x, int y, int amp) {
  if (amp <= 0) return 0;
  const uint64_t h = mix_seed(seed, (static_cast<uint64_t>(y) << 32) | static_cast<uint32_t>(x));
  return static_cast<int>(h % static_cast<uint64_t>(2 * amp + 1)) - amp;
}

uint8_t clamp_u8(int v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }

}  // namespace

Footprint footprint(const Object& o, int n) {
  const double cell = static_cast<double>(n) / kGrid;
  Footprint f;
  f.cx = (o.col + 0.5) * cell + (o.jx / 100.0) * kJitter * cell;
  f.cy = (o.row + 0.5) * cell + (o.jy / 100.0) * kJitter * cell;
  f.radius = (o.size == 1 ? kRadiusLarge : kRadiusSmall) * cell;
  return f;
}

bool shape_covers(int shape, double u, double v) {
  const double au = u < 0 ? -u : u, av = v < 0 ? -v : v;
  switch (shape) {
    case 0: return u * u + v * v <= 1.0;                           // circle
    case 1: return au <= 0.82 && av <= 0.82;                       // square (area ~ circle)
    case 2: return v <= 0.8 && v >= -0.95 && au <= (v + 0.95) / 1.75;  // triangle, apex up
    case 3: return (au <= 0.32 && av <= 0.95) || (av <= 0.32 && au <= 0.95);  // cross
    case 4: return star_covers(u, v);                                          // star
    case 5: {                                                                  // ring
      const double r2 = u * u + v * v;
      return r2 <= 1.0 && r2 >= 0.36;
    }
    default: return false;
  }
}

Image render_scene(const Scene& s, int n) {
  Image img;
  img.width = img.height = n;
  img.rgb.resize(static_cast<size_t>(n) * n * 3);
  const uint8_t* tone = kToneRgb[s.tone];
  const int stripe = std::max(2, n / 16);
  for (int y = 0; y < n; ++y) {
    for (int x = 0; x < n; ++x) {
      int delta = 0;
      switch (s.texture) {
        case 0: delta = pixel_noise(s.noise_seed, x, y, 3); break;   // plain
        case 1: delta = pixel_noise(s.noise_seed, x, y, 16); break;  // speckled
        default:                                                     // striped (diagonal)
          delta = (((x + y) / stripe) % 2 == 0 ? 12 : -12) + pixel_noise(s.noise_seed, x, y, 2);
      }
      uint8_t* p = &img.rgb[(static_cast<size_t>(y) * n + x) * 3];
      for (int c = 0; c < 3; ++c) p[c] = clamp_u8(tone[c] + delta);
    }
  }
  for (size_t k = 0; k < s.objects.size(); ++k) {
    const Object& o = s.objects[k];
    const Footprint f = footprint(o, n);
    const int x0 = std::max(0, static_cast<int>(f.cx - 1.2 * f.radius) - 1);
    const int x1 = std::min(n - 1, static_cast<int>(f.cx + 1.2 * f.radius) + 1);
    const int y0 = std::max(0, static_cast<int>(f.cy - 1.2 * f.radius) - 1);
    const int y1 = std::min(n - 1, static_cast<int>(f.cy + 1.2 * f.radius) + 1);
    const uint8_t* rgb = kColourRgb[o.colour];
    for (int y = y0; y <= y1; ++y) {
      for (int x = x0; x <= x1; ++x) {
        const double u = (x + 0.5 - f.cx) / f.radius, v = (y + 0.5 - f.cy) / f.radius;
        if (!shape_covers(o.shape, u, v)) continue;
        const int delta = o.shade + pixel_noise(s.noise_seed ^ (k + 1), x, y, 2);
        uint8_t* p = &img.rgb[(static_cast<size_t>(y) * n + x) * 3];
        for (int c = 0; c < 3; ++c) p[c] = clamp_u8(rgb[c] + delta);
      }
    }
  }
  return img;
}

Image crop_object(const Image& img, const Object& o, int n) {
  const Footprint f = footprint(o, img.width);
  const double half = kCropMargin * f.radius + 1.0;
  const int side = std::clamp(static_cast<int>(2.0 * half), 1, std::min({img.width, img.height, n}));
  const int x0 = std::clamp(static_cast<int>(f.cx - half), 0, img.width - side);
  const int y0 = std::clamp(static_cast<int>(f.cy - half), 0, img.height - side);
  // the window keeps its scale and sits at the centre of a neutral grey n x n canvas
  Image out;
  out.width = out.height = n;
  out.rgb.assign(static_cast<size_t>(n) * n * 3, 128);
  const int ox = (n - side) / 2, oy = (n - side) / 2;
  for (int y = 0; y < side; ++y)
    for (int x = 0; x < side; ++x) {
      const uint8_t* p = img.at(x0 + x, y0 + y);
      uint8_t* q = &out.rgb[(static_cast<size_t>(oy + y) * n + ox + x) * 3];
      q[0] = p[0];
      q[1] = p[1];
      q[2] = p[2];
    }
  return out;
}

// Filter type 2 ("up") for every row instead of trying all five per row: 30% faster on these
// noisy backgrounds for ~2% larger files. stb_image_write lives in this file only, so the
// setting concerns only this encoder.
static const bool kPngFilterSet = (stbi_write_force_png_filter = 2, true);

std::vector<uint8_t> encode_png(const Image& img) {
  (void)kPngFilterSet;
  std::vector<uint8_t> out;
  auto append = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<uint8_t>*>(ctx);
    const auto* b = static_cast<const uint8_t*>(data);
    v->insert(v->end(), b, b + size);
  };
  stbi_write_png_to_func(append, &out, img.width, img.height, 3, img.rgb.data(), img.width * 3);
  return out;
}

}  // namespace unime::data::world
