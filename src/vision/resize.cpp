// Pillow-compatible resampling: see resize.h. Comments cite Pillow's Resample.c / Geometry.c
// (https://github.com/python-pillow/Pillow/tree/main/src/libImaging); the code is our own.
#include "vision/resize.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace unime::vision {

namespace {

// ---- filters (Resample.c) ---------------------------------------------------

double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

double bilinear_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_filter(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * M_PI;
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));  // float constants, as in Pillow
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}

double lanczos_filter(double x) {
  return (-3.0 <= x && x < 3.0) ? sinc_filter(x) * sinc_filter(x / 3) : 0.0;
}

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_for(Resample r) {
  switch (r) {
    case Resample::Box: return {box_filter, 0.5};
    case Resample::Bilinear: return {bilinear_filter, 1.0};
    case Resample::Hamming: return {hamming_filter, 1.0};
    case Resample::Bicubic: return {bicubic_filter, 2.0};
    case Resample::Lanczos: return {lanczos_filter, 3.0};
    case Resample::Nearest: break;
  }
  return {nullptr, 0.0};
}

// 8 bits of result, 2 bits of headroom for negative lobes / overshoot.
constexpr int kPrecisionBits = 32 - 8 - 2;

// Fixed-point taps for output positions [o0, o0 + n) of a 1-D resize in_size -> out_size
// (precompute_coeffs + normalize_coeffs_8bpc with box = (0, in_size)).
struct Taps {
  int ksize = 0;
  std::vector<int> xmin, count;  // first input index and number of taps per output
  std::vector<int32_t> k;        // [n, ksize]
};

Taps make_taps(int in_size, int out_size, int o0, int n, const Filter& f) {
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = f.support * filterscale;
  Taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.xmin.resize(n);
  t.count.resize(n);
  t.k.assign(static_cast<size_t>(n) * t.ksize, 0);
  std::vector<double> w(t.ksize);
  const double ss = 1.0 / filterscale;
  for (int i = 0; i < n; ++i) {
    const int xx = o0 + i;
    const double center = in0 + (xx + 0.5) * scale;
    int xmin = static_cast<int>(center - support + 0.5);  // truncation, as Pillow "rounds"
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = f.fn((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    int32_t* k = &t.k[static_cast<size_t>(i) * t.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      k[x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                   : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    t.xmin[i] = xmin;
    t.count[i] = xmax;
  }
  return t;
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;  // arithmetic shift, as Pillow's lookup table index
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// ---- nearest (Geometry.c ImagingScaleAffine) --------------------------------

// Source index of each output position [0, o0 + n), accumulated exactly as Pillow does
// (xo += a0, not a multiply), then the last n kept.
std::vector<int> nearest_index(int in_size, int out_size, int o0, int n) {
  const float box1 = static_cast<float>(in_size);
  const double a = static_cast<double>(box1 - 0.0f) / out_size;
  double xo = 0.0 + a * 0.5;
  std::vector<int> idx(n);
  for (int x = 0; x < o0 + n; ++x) {
    const int xin = xo < 0.0 ? -1 : static_cast<int>(xo);
    if (x >= o0) idx[x - o0] = (xin >= 0 && xin < in_size) ? xin : -1;
    xo += a;
  }
  return idx;
}

io::Image nearest_window(const io::Image& img, int width, int height, int x0, int y0, int w, int h) {
  const std::vector<int> xi = nearest_index(img.width, width, x0, w);
  const std::vector<int> yi = nearest_index(img.height, height, y0, h);
  io::Image out;
  out.width = w;
  out.height = h;
  out.rgb.assign(static_cast<size_t>(w) * h * 3, 0);  // Pillow fills outside pixels with 0
  for (int y = 0; y < h; ++y) {
    if (yi[y] < 0) continue;
    const uint8_t* src = &img.rgb[static_cast<size_t>(yi[y]) * img.width * 3];
    uint8_t* dst = &out.rgb[static_cast<size_t>(y) * w * 3];
    for (int x = 0; x < w; ++x) {
      if (xi[x] < 0) continue;
      std::copy_n(src + 3 * xi[x], 3, dst + 3 * x);
    }
  }
  return out;
}

}  // namespace

const char* resample_name(Resample r) {
  switch (r) {
    case Resample::Nearest: return "NEAREST";
    case Resample::Lanczos: return "LANCZOS";
    case Resample::Bilinear: return "BILINEAR";
    case Resample::Bicubic: return "BICUBIC";
    case Resample::Box: return "BOX";
    case Resample::Hamming: return "HAMMING";
  }
  return "?";
}

io::Image resize_pil_window(const io::Image& img, int width, int height, Resample filter, int x0,
                            int y0, int w, int h) {
  UNIME_CHECK(img.width > 0 && img.height > 0 &&
                  img.rgb.size() == static_cast<size_t>(img.width) * img.height * 3,
              "resize: invalid input image ", img.width, "x", img.height);
  UNIME_CHECK(width > 0 && height > 0, "resize: invalid output size ", width, "x", height);
  UNIME_CHECK(x0 >= 0 && y0 >= 0 && w > 0 && h > 0 && x0 <= width - w && y0 <= height - h,
              "resize: window ", w, "x", h, "+", x0, "+", y0, " outside ", width, "x", height);
  // Pillow's own overflow guard on the coefficient buffer (precompute_coeffs)
  UNIME_CHECK(width < (1 << 28) && height < (1 << 28), "resize: output size ", width, "x", height,
              " too large");

  if (width == img.width && height == img.height) {  // Image.resize returns a copy
    io::Image out;
    out.width = w;
    out.height = h;
    out.rgb.resize(static_cast<size_t>(w) * h * 3);
    for (int y = 0; y < h; ++y)
      std::copy_n(&img.rgb[(static_cast<size_t>(y + y0) * img.width + x0) * 3], static_cast<size_t>(w) * 3,
                  &out.rgb[static_cast<size_t>(y) * w * 3]);
    return out;
  }
  if (filter == Resample::Nearest) return nearest_window(img, width, height, x0, y0, w, h);
  const Filter f = filter_for(filter);

  const bool need_h = width != img.width;
  const bool need_v = height != img.height;

  // Horizontal pass over the input rows the vertical pass will read: [H rows used, w, 3].
  const Taps tv = make_taps(img.height, height, y0, h, f);
  const int row_first = need_v ? tv.xmin[0] : y0;
  const int row_last = need_v ? tv.xmin[h - 1] + tv.count[h - 1] : y0 + h;
  const int rows = row_last - row_first;
  io::Image tmp;
  if (need_h) {
    const Taps th = make_taps(img.width, width, x0, w, f);
    tmp.width = w;
    tmp.height = rows;
    tmp.rgb.resize(static_cast<size_t>(w) * rows * 3);
    for (int y = 0; y < rows; ++y) {
      const uint8_t* src = &img.rgb[static_cast<size_t>(y + row_first) * img.width * 3];
      uint8_t* dst = &tmp.rgb[static_cast<size_t>(y) * w * 3];
      for (int x = 0; x < w; ++x) {
        const int32_t* k = &th.k[static_cast<size_t>(x) * th.ksize];
        const uint8_t* s = src + static_cast<size_t>(th.xmin[x]) * 3;
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int i = 0; i < th.count[x]; ++i) {
          s0 += s[3 * i + 0] * k[i];
          s1 += s[3 * i + 1] * k[i];
          s2 += s[3 * i + 2] * k[i];
        }
        dst[3 * x + 0] = clip8(s0);
        dst[3 * x + 1] = clip8(s1);
        dst[3 * x + 2] = clip8(s2);
      }
    }
  } else {
    // no horizontal pass: the window's columns of the used rows, unchanged
    tmp.width = w;
    tmp.height = rows;
    tmp.rgb.resize(static_cast<size_t>(w) * rows * 3);
    for (int y = 0; y < rows; ++y)
      std::copy_n(&img.rgb[(static_cast<size_t>(y + row_first) * img.width + x0) * 3],
                  static_cast<size_t>(w) * 3, &tmp.rgb[static_cast<size_t>(y) * w * 3]);
  }
  if (!need_v) return tmp;  // rows == h, starting at y0

  io::Image out;
  out.width = w;
  out.height = h;
  out.rgb.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    const int32_t* k = &tv.k[static_cast<size_t>(y) * tv.ksize];
    const int ymin = tv.xmin[y] - row_first;
    uint8_t* dst = &out.rgb[static_cast<size_t>(y) * w * 3];
    for (int x = 0; x < w; ++x) {
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int i = 0; i < tv.count[y]; ++i) {
        const uint8_t* s = &tmp.rgb[(static_cast<size_t>(ymin + i) * w + x) * 3];
        s0 += s[0] * k[i];
        s1 += s[1] * k[i];
        s2 += s[2] * k[i];
      }
      dst[3 * x + 0] = clip8(s0);
      dst[3 * x + 1] = clip8(s1);
      dst[3 * x + 2] = clip8(s2);
    }
  }
  return out;
}

io::Image resize_pil(const io::Image& img, int width, int height, Resample filter) {
  return resize_pil_window(img, width, height, filter, 0, 0, width, height);
}

io::Image resize_bicubic_pil(const io::Image& img, int width, int height) {
  return resize_pil(img, width, height, Resample::Bicubic);
}

namespace {
int floor_div2(int v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }
}  // namespace

io::Image center_crop(const io::Image& img, int width, int height) {
  UNIME_CHECK(width > 0 && height > 0, "center_crop: invalid crop size ", width, "x", height);
  const int top = floor_div2(img.height - height), left = floor_div2(img.width - width);
  io::Image out;
  out.width = width;
  out.height = height;
  out.rgb.assign(static_cast<size_t>(width) * height * 3, 0);
  for (int y = 0; y < height; ++y) {
    const int sy = y + top;
    if (sy < 0 || sy >= img.height) continue;
    const int x_begin = std::max(0, -left), x_end = std::min(width, img.width - left);
    if (x_begin >= x_end) continue;
    std::copy_n(&img.rgb[(static_cast<size_t>(sy) * img.width + x_begin + left) * 3],
                static_cast<size_t>(x_end - x_begin) * 3,
                &out.rgb[(static_cast<size_t>(y) * width + x_begin) * 3]);
  }
  return out;
}

}  // namespace unime::vision
