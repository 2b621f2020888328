// Phi-3-V image processing; see phi3v-processor.h.
#include "vision/phi3v-processor.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"
#include "vision/resize.h"

namespace unime::vision {

using nlohmann::json;

Phi3VProcessorConfig parse_phi3v_processor_config(const std::string& text, const std::string& name) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(str(name, ": not valid JSON: ", e.what()));
  }
  UNIME_CHECK(j.is_object(), name, ": must be a JSON object");
  auto type = j.find("image_processor_type");
  UNIME_CHECK(type != j.end() && type->is_string() && type->get<std::string>() == "Phi3VImageProcessor", name,
              ": image_processor_type is ", type == j.end() ? std::string("missing") : type->dump(),
              "; a Phi3VForCausalLM model needs Phi3VImageProcessor");
  Phi3VProcessorConfig c;
  if (auto it = j.find("num_crops"); it != j.end() && !it->is_null()) {
    UNIME_CHECK(it->is_number_integer() && it->get<int64_t>() > 0, name,
                ": \"num_crops\" must be a positive integer, got ", it->dump());
    c.num_crops = it->get<int64_t>();
  }
  for (auto [key, out] : {std::pair{"image_mean", c.image_mean}, {"image_std", c.image_std}}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    UNIME_CHECK(it->is_array() && it->size() == 3, name, ": \"", key, "\" must be a list of 3 numbers, got ",
                it->dump());
    for (int k = 0; k < 3; ++k) {
      UNIME_CHECK((*it)[k].is_number(), name, ": \"", key, "\" must be a list of 3 numbers, got ", it->dump());
      out[k] = static_cast<float>((*it)[k].get<double>());
    }
  }
  for (float s : c.image_std) UNIME_CHECK(s != 0.0f, name, ": image_std must not contain 0");
  return c;
}

Phi3VProcessorConfig load_phi3v_processor_config(const std::string& path) {
  return parse_phi3v_processor_config(io::read_file(path), path);
}

// ---- HD transform geometry ------------------------------------------------------------------------

namespace {

struct HdPlan {
  bool transposed;        // the image was taller than wide
  int64_t new_w, new_h;   // resize target in the (possibly transposed) frame
  int64_t padded_h, top;  // after padding_336 in that frame
};

HdPlan hd_plan(int64_t height, int64_t width, int64_t num_crops, int64_t crop, const std::string& where) {
  UNIME_CHECK(height > 0 && width > 0, where, ": empty image");
  HdPlan p{};
  p.transposed = width < height;
  if (p.transposed) std::swap(width, height);
  const double ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t scale = 1;
  while (static_cast<double>(scale) * std::ceil(static_cast<double>(scale) / ratio) <=
         static_cast<double>(num_crops))
    ++scale;
  --scale;
  p.new_w = scale * crop;
  p.new_h = static_cast<int64_t>(static_cast<double>(p.new_w) / ratio);  // Python int(): truncation
  UNIME_CHECK(p.new_h > 0, where, ": a ", p.transposed ? height : width, "x", p.transposed ? width : height,
              " image (width x height) is too elongated for the Phi-3-V HD transform (it would be resized "
              "to 0 pixels across)");
  p.padded_h = static_cast<int64_t>(std::ceil(static_cast<double>(p.new_h) / static_cast<double>(crop))) * crop;
  p.top = (p.padded_h - p.new_h) / 2;
  return p;
}

io::Image transpose(const io::Image& a) {  // PIL Image.TRANSPOSE: (x, y) -> (y, x)
  io::Image b;
  b.width = a.height;
  b.height = a.width;
  b.rgb.resize(a.rgb.size());
  for (int y = 0; y < a.height; ++y)
    for (int x = 0; x < a.width; ++x)
      std::copy_n(&a.rgb[(static_cast<size_t>(y) * a.width + x) * 3], 3,
                  &b.rgb[(static_cast<size_t>(x) * b.width + y) * 3]);
  return b;
}

}  // namespace

std::array<int64_t, 2> phi3v_hd_size(int64_t height, int64_t width, int64_t num_crops, int64_t crop,
                                     const std::string& where) {
  const HdPlan p = hd_plan(height, width, num_crops, crop, where);
  return p.transposed ? std::array<int64_t, 2>{p.new_w, p.padded_h} : std::array<int64_t, 2>{p.padded_h, p.new_w};
}

int64_t phi3v_image_tokens(int64_t height, int64_t width, const Phi3VProcessorConfig& cfg, int64_t crop,
                           int64_t m, const std::string& where) {
  const auto [h, w] = phi3v_hd_size(height, width, cfg.num_crops, crop, where);
  const int64_t hc = h / crop, wc = w / crop;
  return (hc * wc + 1) * m * m + 1 + (hc + 1) * m;
}

// ---- bicubic (PyTorch upsample_bicubic2d, CPU, align_corners=False) ---------------------------------

namespace {

// aten/src/ATen/native/UpSample.h: cubic_convolution1/2 and get_cubic_upsample_coefficients, A = -0.75
struct Taps {
  int64_t idx[4];
  float w[4];
};

std::vector<Taps> cubic_taps(int64_t in, int64_t out) {
  const float A = -0.75f;
  auto conv1 = [&](float x) { return ((A + 2) * x - (A + 3)) * x * x + 1; };
  auto conv2 = [&](float x) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; };
  const float scale = static_cast<float>(in) / static_cast<float>(out);  // area_pixel_compute_scale
  std::vector<Taps> taps(static_cast<size_t>(out));
  for (int64_t i = 0; i < out; ++i) {
    // area_pixel_compute_source_index(cubic=true): no clamping at 0
    const float real = scale * (static_cast<float>(i) + 0.5f) - 0.5f;
    const int64_t i0 = static_cast<int64_t>(std::floor(real));
    const float t = real - static_cast<float>(i0);
    Taps& tp = taps[static_cast<size_t>(i)];
    tp.w[0] = conv2(t + 1.0f);
    tp.w[1] = conv1(t);
    tp.w[2] = conv1(1.0f - t);
    tp.w[3] = conv2((1.0f - t) + 1.0f);
    for (int k = 0; k < 4; ++k) tp.idx[k] = std::clamp<int64_t>(i0 - 1 + k, 0, in - 1);
  }
  return taps;
}

}  // namespace

std::vector<float> interpolate_bicubic_torch(const std::vector<float>& chw, int64_t C, int64_t H, int64_t W,
                                             int64_t oh, int64_t ow) {
  const auto ty = cubic_taps(H, oh), tx = cubic_taps(W, ow);
  std::vector<float> out(static_cast<size_t>(C * oh * ow));
  for (int64_t c = 0; c < C; ++c) {
    const float* src = chw.data() + c * H * W;
    for (int64_t y = 0; y < oh; ++y) {
      const Taps& a = ty[static_cast<size_t>(y)];
      for (int64_t x = 0; x < ow; ++x) {
        const Taps& b = tx[static_cast<size_t>(x)];
        // rows outer, columns inner, accumulated in order (cpu_upsample_generic's Interpolate)
        float acc = 0.0f;
        for (int j = 0; j < 4; ++j) {
          const float* row = src + a.idx[j] * W;
          float r = row[b.idx[0]] * b.w[0];
          for (int k = 1; k < 4; ++k) r += row[b.idx[k]] * b.w[k];
          acc = j == 0 ? r * a.w[0] : acc + r * a.w[j];
        }
        out[static_cast<size_t>((c * oh + y) * ow + x)] = acc;
      }
    }
  }
  return out;
}

// ---- preprocess -----------------------------------------------------------------------------------

std::vector<float> phi3v_preprocess(const io::Image& img, const Phi3VProcessorConfig& cfg, int64_t crop,
                                    std::array<int64_t, 2>* hd, const std::string& where) {
  const HdPlan p = hd_plan(img.height, img.width, cfg.num_crops, crop, where);
  // HD_transform: torchvision resize of a PIL image = PIL bilinear (antialiased) in the frame
  // where width >= height, then padding_336 with white, then transposed back
  io::Image frame = p.transposed ? transpose(img) : img;
  io::Image resized = resize_pil(frame, static_cast<int>(p.new_w), static_cast<int>(p.new_h), Resample::Bilinear);
  io::Image padded;
  padded.width = static_cast<int>(p.new_w);
  padded.height = static_cast<int>(p.padded_h);
  padded.rgb.assign(static_cast<size_t>(p.new_w * p.padded_h * 3), 255);
  std::copy(resized.rgb.begin(), resized.rgb.end(), padded.rgb.begin() + p.top * p.new_w * 3);
  if (p.transposed) padded = transpose(padded);
  const int64_t H = padded.height, W = padded.width;
  // ToTensor (uint8 / 255 in float32) + Normalize ((x - mean) / std in float32), CHW
  std::vector<float> chw(static_cast<size_t>(3 * H * W));
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t c = 0; c < 3; ++c) {
        const float v = static_cast<float>(padded.rgb[static_cast<size_t>((y * W + x) * 3 + c)]) / 255.0f;
        chw[static_cast<size_t>((c * H + y) * W + x)] = (v - cfg.image_mean[c]) / cfg.image_std[c];
      }
  const int64_t hc = H / crop, wc = W / crop, S = crop;
  std::vector<float> out = interpolate_bicubic_torch(chw, 3, H, W, S, S);  // the global image
  out.resize(static_cast<size_t>((1 + hc * wc) * 3 * S * S));
  // [1, 3, hc, S, wc, S] -> [hc, wc, 3, S, S]: crops row-major
  float* dst = out.data() + 3 * S * S;
  for (int64_t r = 0; r < hc; ++r)
    for (int64_t q = 0; q < wc; ++q)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < S; ++y) {
          const float* src = chw.data() + (c * H + r * S + y) * W + q * S;
          dst = std::copy_n(src, S, dst);
        }
  if (hd) *hd = {H, W};
  return out;
}

}  // namespace unime::vision
