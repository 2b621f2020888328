// Qwen2-VL image processing; see qwen2vl-processor.h.
#include "vision/qwen2vl-processor.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"

namespace unime::vision {

using nlohmann::json;

Qwen2VLProcessorConfig parse_qwen2vl_processor_config(const std::string& text, const std::string& name) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(str(name, ": not valid JSON: ", e.what()));
  }
  UNIME_CHECK(j.is_object(), name, ": must be a JSON object");
  auto type = j.find("image_processor_type");
  UNIME_CHECK(type != j.end() && type->is_string() &&
                  (type->get<std::string>() == "Qwen2VLImageProcessor" ||
                   type->get<std::string>() == "Qwen2VLImageProcessorFast"),
              name, ": image_processor_type is ",
              type == j.end() ? std::string("missing") : type->dump(),
              "; a Qwen2VLForConditionalGeneration model needs Qwen2VLImageProcessor");
  Qwen2VLProcessorConfig c;
  auto get_int = [&](const char* key, int64_t& out) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    UNIME_CHECK(it->is_number_integer() && it->get<int64_t>() > 0, name, ": \"", key,
                "\" must be a positive integer, got ", it->dump());
    out = it->get<int64_t>();
  };
  // newer saves carry size {"shortest_edge": min_pixels, "longest_edge": max_pixels}; the
  // explicit min_pixels / max_pixels keys win (Qwen2VLImageProcessor.__init__)
  if (auto it = j.find("size"); it != j.end() && it->is_object()) {
    if (it->contains("shortest_edge") && (*it)["shortest_edge"].is_number_integer())
      c.min_pixels = (*it)["shortest_edge"].get<int64_t>();
    if (it->contains("longest_edge") && (*it)["longest_edge"].is_number_integer())
      c.max_pixels = (*it)["longest_edge"].get<int64_t>();
  }
  get_int("min_pixels", c.min_pixels);
  get_int("max_pixels", c.max_pixels);
  get_int("patch_size", c.patch_size);
  get_int("temporal_patch_size", c.temporal_patch_size);
  get_int("merge_size", c.merge_size);
  UNIME_CHECK(c.min_pixels <= c.max_pixels, name, ": min_pixels (", c.min_pixels,
              ") exceeds max_pixels (", c.max_pixels, ")");
  // the pixel steps: resize to an exact (h, w) chosen per image, no crop
  json clip = j;
  clip.erase("image_processor_type");
  for (const char* k : {"size", "min_pixels", "max_pixels", "patch_size", "temporal_patch_size",
                        "merge_size", "crop_size"})
    clip.erase(k);
  clip["do_center_crop"] = false;
  clip["size"] = {{"height", 1}, {"width", 1}};  // replaced per image
  c.clip = parse_clip_processor_config(clip.dump(), name);
  return c;
}

Qwen2VLProcessorConfig load_qwen2vl_processor_config(const std::string& path) {
  return parse_qwen2vl_processor_config(io::read_file(path), path);
}

std::array<int64_t, 2> qwen2vl_smart_resize(int64_t height, int64_t width, int64_t factor,
                                            int64_t min_pixels, int64_t max_pixels,
                                            const std::string& where) {
  const double H = static_cast<double>(height), W = static_cast<double>(width), f = static_cast<double>(factor);
  UNIME_CHECK(std::max(H, W) / std::min(H, W) <= 200, where, ": absolute aspect ratio must be smaller "
              "than 200, got ", std::max(H, W) / std::min(H, W), " (", width, "x", height, ")");
  // Python round(): half to even, which std::nearbyint does in the default rounding mode
  int64_t h_bar = static_cast<int64_t>(std::nearbyint(H / f)) * factor;
  int64_t w_bar = static_cast<int64_t>(std::nearbyint(W / f)) * factor;
  if (h_bar * w_bar > max_pixels) {
    const double beta = std::sqrt(H * W / static_cast<double>(max_pixels));
    h_bar = std::max<int64_t>(factor, static_cast<int64_t>(std::floor(H / beta / f)) * factor);
    w_bar = std::max<int64_t>(factor, static_cast<int64_t>(std::floor(W / beta / f)) * factor);
  } else if (h_bar * w_bar < min_pixels) {
    const double beta = std::sqrt(static_cast<double>(min_pixels) / (H * W));
    h_bar = static_cast<int64_t>(std::ceil(H * beta / f)) * factor;
    w_bar = static_cast<int64_t>(std::ceil(W * beta / f)) * factor;
  }
  return {h_bar, w_bar};
}

std::array<int64_t, 3> qwen2vl_grid(int64_t height, int64_t width, const Qwen2VLProcessorConfig& cfg,
                                    const std::string& where) {
  const auto [h, w] = qwen2vl_smart_resize(height, width, cfg.patch_size * cfg.merge_size,
                                           cfg.min_pixels, cfg.max_pixels, where);
  return {1, h / cfg.patch_size, w / cfg.patch_size};
}

int64_t qwen2vl_image_tokens(int64_t height, int64_t width, const Qwen2VLProcessorConfig& cfg,
                             const std::string& where) {
  const auto g = qwen2vl_grid(height, width, cfg, where);
  return g[0] * g[1] * g[2] / (cfg.merge_size * cfg.merge_size);
}

std::vector<float> qwen2vl_preprocess(const io::Image& img, const Qwen2VLProcessorConfig& cfg,
                                      std::array<int64_t, 3>* grid, const std::string& where) {
  const auto [rh, rw] = qwen2vl_smart_resize(img.height, img.width, cfg.patch_size * cfg.merge_size,
                                             cfg.min_pixels, cfg.max_pixels, where);
  ClipProcessorConfig pc = cfg.clip;
  pc.shortest_edge = 0;
  pc.size_height = static_cast<int>(rh);
  pc.size_width = static_cast<int>(rw);
  pc.do_center_crop = false;
  int oh = 0, ow = 0;
  std::vector<float> chw = clip_preprocess(img, pc, &oh, &ow);  // [C, rh, rw]
  const int64_t p = cfg.patch_size, tp = cfg.temporal_patch_size, m = cfg.merge_size, C = 3;
  const int64_t gh = oh / p, gw = ow / p;
  // patches.reshape(1, tp, C, gh/m, m, p, gw/m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
  //        .reshape(gh * gw, C * tp * p * p); the tp frames are copies of the one image
  const int64_t row = C * tp * p * p;
  std::vector<float> out(static_cast<size_t>(gh * gw * row));
  size_t o = 0;
  for (int64_t bh = 0; bh < gh / m; ++bh)
    for (int64_t bw = 0; bw < gw / m; ++bw)
      for (int64_t ih = 0; ih < m; ++ih)
        for (int64_t iw = 0; iw < m; ++iw) {
          const int64_t y0 = (bh * m + ih) * p, x0 = (bw * m + iw) * p;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t t = 0; t < tp; ++t)
              for (int64_t y = 0; y < p; ++y)
                for (int64_t x = 0; x < p; ++x)
                  out[o++] = chw[static_cast<size_t>((c * oh + y0 + y) * ow + x0 + x)];
        }
  *grid = {1, gh, gw};
  return out;
}

}  // namespace unime::vision
