// LLaVA-NeXT AnyRes processing; see llava-next-processor.h.
#include "vision/llava-next-processor.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"
#include "vision/resize.h"

namespace unime::vision {

using nlohmann::json;

LlavaNextProcessorConfig parse_llava_next_processor_config(const std::string& text,
                                                           const std::string& name) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(str(name, ": not valid JSON: ", e.what()));
  }
  UNIME_CHECK(j.is_object(), name, ": must be a JSON object");
  auto type = j.find("image_processor_type");
  UNIME_CHECK(type != j.end() && type->is_string() &&
                  (type->get<std::string>() == "LlavaNextImageProcessor" ||
                   type->get<std::string>() == "LlavaNextImageProcessorFast"),
              name, ": image_processor_type is ",
              type == j.end() ? std::string("missing") : "'" + type->dump() + "'",
              "; a LlavaNextForConditionalGeneration model needs LlavaNextImageProcessor");
  LlavaNextProcessorConfig c;
  // LlavaNextImageProcessor.__init__ defaults where the file is silent
  json clip = j;
  clip.erase("image_processor_type");
  clip.erase("image_grid_pinpoints");
  if (!clip.contains("size") || clip["size"].is_null()) clip["size"] = {{"shortest_edge", 224}};
  if (!clip.contains("crop_size") || clip["crop_size"].is_null())
    clip["crop_size"] = {{"height", 224}, {"width", 224}};
  c.clip = parse_clip_processor_config(clip.dump(), name);
  c.base_size = c.clip.shortest_edge > 0 ? c.clip.shortest_edge
                                         : std::min(c.clip.size_height, c.clip.size_width);
  c.tile_size = c.clip.crop_height;
  UNIME_CHECK(c.clip.crop_height == c.clip.crop_width, name, ": crop_size must be square for AnyRes "
              "tiles, got ", c.clip.crop_height, "x", c.clip.crop_width);
  if (auto it = j.find("image_grid_pinpoints"); it != j.end() && !it->is_null()) {
    UNIME_CHECK(it->is_array() && !it->empty(), name,
                ": image_grid_pinpoints must be a non-empty list of [height, width] pairs");
    c.image_grid_pinpoints.clear();
    for (const json& p : *it) {
      UNIME_CHECK(p.is_array() && p.size() == 2 && p[0].is_number_integer() &&
                      p[1].is_number_integer() && p[0].get<int64_t>() > 0 && p[1].get<int64_t>() > 0,
                  name, ": image_grid_pinpoints entries must be positive [height, width] pairs, got ",
                  p.dump());
      c.image_grid_pinpoints.push_back({p[0].get<int64_t>(), p[1].get<int64_t>()});
    }
  }
  for (const auto& [h, w] : c.image_grid_pinpoints)
    UNIME_CHECK(h % c.tile_size == 0 && w % c.tile_size == 0, name, ": image_grid_pinpoints entry [",
                h, ", ", w, "] is not a multiple of the tile size crop_size ", c.tile_size);
  return c;
}

LlavaNextProcessorConfig load_llava_next_processor_config(const std::string& path) {
  return parse_llava_next_processor_config(io::read_file(path), path);
}

std::array<int64_t, 2> select_best_resolution(int64_t height, int64_t width, const Pinpoints& pins) {
  std::array<int64_t, 2> best{0, 0};
  int64_t max_effective = 0;
  double min_wasted = std::numeric_limits<double>::infinity();
  for (const auto& [h, w] : pins) {
    const double scale = std::min(static_cast<double>(w) / width, static_cast<double>(h) / height);
    const int64_t dw = static_cast<int64_t>(width * scale), dh = static_cast<int64_t>(height * scale);
    const int64_t effective = std::min(dw * dh, width * height);
    const double wasted = static_cast<double>(w * h - effective);
    if (effective > max_effective || (effective == max_effective && wasted < min_wasted)) {
      max_effective = effective;
      min_wasted = wasted;
      best = {h, w};
    }
  }
  UNIME_CHECK(best[0] > 0, "select_best_resolution: no pinpoint fits a ", width, "x", height, " image");
  return best;
}

int64_t anyres_num_crops(int64_t height, int64_t width, const Pinpoints& pins, int64_t tile) {
  const auto [bh, bw] = select_best_resolution(height, width, pins);
  return 1 + (bh / tile) * (bw / tile);
}

std::array<int64_t, 2> anyres_unpadded_grid(int64_t height, int64_t width, const Pinpoints& pins,
                                            int64_t tile, int64_t grid) {
  const auto [bh, bw] = select_best_resolution(height, width, pins);
  int64_t ch = (bh / tile) * grid, cw = (bw / tile) * grid;
  // unpad_image: Python float division, int(round(x, 7))
  auto round7 = [](double x) { return static_cast<int64_t>(std::round(x * 1e7) / 1e7); };
  const double orig_ar = static_cast<double>(width) / height, cur_ar = static_cast<double>(cw) / ch;
  if (orig_ar > cur_ar) {
    const int64_t new_h = round7(height * (static_cast<double>(cw) / width));
    const int64_t pad = (ch - new_h) / 2;
    ch -= 2 * pad;
  } else {
    const int64_t new_w = round7(width * (static_cast<double>(ch) / height));
    const int64_t pad = (cw - new_w) / 2;
    cw -= 2 * pad;
  }
  return {ch, cw};
}

int64_t anyres_feature_tokens(int64_t height, int64_t width, const Pinpoints& pins, int64_t tile,
                              int64_t grid) {
  const auto [rows, cols] = anyres_unpadded_grid(height, width, pins, tile, grid);
  return grid * grid + rows * (cols + 1);
}

std::vector<float> llava_next_preprocess(const io::Image& img, const LlavaNextProcessorConfig& cfg,
                                         int64_t* n_crops) {
  const int64_t H = img.height, W = img.width, S = cfg.tile_size;
  const auto [bh, bw] = select_best_resolution(H, W, cfg.image_grid_pinpoints);
  // _get_patch_output_size: fit inside (bh, bw) keeping the aspect ratio (ceil on the short fit)
  const double scale_w = static_cast<double>(bw) / W, scale_h = static_cast<double>(bh) / H;
  int64_t nh, nw;
  if (scale_w < scale_h) {
    nw = bw;
    nh = std::min<int64_t>(static_cast<int64_t>(std::ceil(H * scale_w)), bh);
  } else {
    nh = bh;
    nw = std::min<int64_t>(static_cast<int64_t>(std::ceil(W * scale_h)), bw);
  }
  io::Image resized = resize_pil(img, static_cast<int>(nw), static_cast<int>(nh), cfg.clip.resample);
  // _pad_for_patching: centred on a zero canvas, the odd pixel going to the bottom / right
  const int64_t py = (bh - nh) / 2, px = (bw - nw) / 2;
  io::Image canvas;
  canvas.width = static_cast<int>(bw);
  canvas.height = static_cast<int>(bh);
  canvas.rgb.assign(static_cast<size_t>(bw * bh * 3), 0);
  for (int64_t y = 0; y < nh; ++y)
    std::copy_n(&resized.rgb[static_cast<size_t>(y * nw * 3)], nw * 3,
                &canvas.rgb[static_cast<size_t>(((y + py) * bw + px) * 3)]);
  // crops: the whole image resized to base x base (not aspect-preserving), then the tiles
  std::vector<io::Image> crops;
  crops.push_back(resize_pil(img, cfg.base_size, cfg.base_size, cfg.clip.resample));
  for (int64_t ty = 0; ty < bh; ty += S)
    for (int64_t tx = 0; tx < bw; tx += S) {
      io::Image t;
      t.width = t.height = static_cast<int>(S);
      t.rgb.resize(static_cast<size_t>(S * S * 3));
      for (int64_t y = 0; y < S; ++y)
        std::copy_n(&canvas.rgb[static_cast<size_t>(((ty + y) * bw + tx) * 3)], S * 3,
                    &t.rgb[static_cast<size_t>(y * S * 3)]);
      crops.push_back(std::move(t));
    }
  std::vector<float> out;
  for (const auto& c : crops) {
    int oh = 0, ow = 0;
    std::vector<float> chw = clip_preprocess(c, cfg.clip, &oh, &ow);
    UNIME_CHECK(oh == S && ow == S, "LLaVA-NeXT processor: a crop came out ", ow, "x", oh,
                " instead of ", S, "x", S, "; check size / crop_size in preprocessor_config.json");
    out.insert(out.end(), chw.begin(), chw.end());
  }
  *n_crops = static_cast<int64_t>(crops.size());
  return out;
}

}  // namespace unime::vision
