// CLIPImageProcessor: see clip-processor.h. Config parsing mirrors CLIPImageProcessor.__init__
// and image_processing_utils.get_size_dict; the pixel path mirrors preprocess() with
// image_transforms.resize / center_crop / rescale / normalize.
#include "vision/clip-processor.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/fs.h"

namespace unime::vision {

using json = nlohmann::json;

namespace {

std::string keys_of(const json& j) {
  std::string s;
  for (const auto& [k, v] : j.items()) s += (s.empty() ? "" : ", ") + k;
  return "{" + s + "}";
}

bool get_bool(const json& j, const char* key, bool dflt, const std::string& name) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  UNIME_CHECK(it->is_boolean(), name, ": \"", key, "\" must be true or false, got ", it->dump());
  return it->get<bool>();
}

int positive_int(const json& v, const std::string& name, const std::string& key) {
  UNIME_CHECK(v.is_number_integer() && v.get<int64_t>() > 0 && v.get<int64_t>() <= 65536, name,
              ": \"", key, "\" must be a positive integer (<= 65536), got ", v.dump());
  return static_cast<int>(v.get<int64_t>());
}

std::array<double, 3> mean_or_std(const json& j, const char* key, std::array<double, 3> dflt,
                                  const std::string& name) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (it->is_number()) {
    const double v = it->get<double>();
    return {v, v, v};
  }
  UNIME_CHECK(it->is_array() && it->size() == 3, name, ": \"", key,
              "\" must be a number or a list of 3 numbers (one per RGB channel), got ", it->dump());
  std::array<double, 3> out{};
  for (size_t c = 0; c < 3; ++c) {
    UNIME_CHECK((*it)[c].is_number(), name, ": \"", key, "\"[", c, "] must be a number, got ",
                (*it)[c].dump());
    out[c] = (*it)[c].get<double>();
  }
  return out;
}

// Python's int(a * b / c) for positive ints: true division is one correctly rounded double op.
int int_of_ratio(int64_t num, int64_t den) {
  return static_cast<int>(static_cast<double>(num) / static_cast<double>(den));
}

}  // namespace

ClipProcessorConfig parse_clip_processor_config(const std::string& text, const std::string& name) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    std::string msg = e.what();
    if (const size_t p = msg.find("] "); p != std::string::npos) msg = msg.substr(p + 2);
    throw Error(str(name, ": not valid JSON: ", msg));
  }
  UNIME_CHECK(j.is_object(), name, ": must be a JSON object");

  for (const char* key : {"image_processor_type", "feature_extractor_type"}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) continue;
    const std::string t = it->get<std::string>();
    static const std::set<std::string> kClip = {"CLIPImageProcessor", "CLIPImageProcessorFast",
                                                "CLIPFeatureExtractor"};
    UNIME_CHECK(kClip.count(t), name, ": ", key, " is '", t,
                "', not a CLIP-style processor (supported: CLIPImageProcessor, CLIPFeatureExtractor)");
  }

  ClipProcessorConfig c;
  c.do_resize = get_bool(j, "do_resize", c.do_resize, name);
  c.do_center_crop = get_bool(j, "do_center_crop", c.do_center_crop, name);
  c.do_rescale = get_bool(j, "do_rescale", c.do_rescale, name);
  c.do_normalize = get_bool(j, "do_normalize", c.do_normalize, name);
  c.do_convert_rgb = get_bool(j, "do_convert_rgb", c.do_convert_rgb, name);

  // size: get_size_dict(size, default_to_square=False)
  if (auto it = j.find("size"); it != j.end() && !it->is_null()) {
    if (it->is_number_integer()) {
      c.shortest_edge = positive_int(*it, name, "size");
    } else if (it->is_array()) {
      UNIME_CHECK(it->size() == 2, name, ": \"size\" as a list must be [height, width], got ", it->dump());
      c.shortest_edge = 0;
      c.size_height = positive_int((*it)[0], name, "size[0]");
      c.size_width = positive_int((*it)[1], name, "size[1]");
    } else {
      UNIME_CHECK(it->is_object(), name, ": \"size\" must be an int, [h, w] or an object, got ",
                  it->dump());
      std::set<std::string> keys;
      for (const auto& [k, v] : it->items()) keys.insert(k);
      if (keys == std::set<std::string>{"shortest_edge"} ||
          keys == std::set<std::string>{"shortest_edge", "longest_edge"}) {
        c.shortest_edge = positive_int((*it)["shortest_edge"], name, "size.shortest_edge");
      } else if (keys == std::set<std::string>{"height", "width"}) {
        c.shortest_edge = 0;
        c.size_height = positive_int((*it)["height"], name, "size.height");
        c.size_width = positive_int((*it)["width"], name, "size.width");
      } else {
        throw Error(str(name, ": \"size\" ", keys_of(*it),
                        " is not usable by CLIPImageProcessor (expected {shortest_edge} or {height, width})"));
      }
    }
  }
  // Kosmos-2 backwards compatibility in CLIPImageProcessor.__init__
  if (get_bool(j, "use_square_size", false, name) && c.shortest_edge > 0) {
    c.size_height = c.size_width = c.shortest_edge;
    c.shortest_edge = 0;
  }

  // crop_size: get_size_dict(crop_size, default_to_square=True); center_crop needs height+width
  if (auto it = j.find("crop_size"); it != j.end() && !it->is_null()) {
    if (it->is_number_integer()) {
      c.crop_height = c.crop_width = positive_int(*it, name, "crop_size");
    } else if (it->is_array() && it->size() == 2) {
      c.crop_height = positive_int((*it)[0], name, "crop_size[0]");
      c.crop_width = positive_int((*it)[1], name, "crop_size[1]");
    } else {
      UNIME_CHECK(it->is_object() && it->contains("height") && it->contains("width"), name,
                  ": \"crop_size\" must be an int or {\"height\", \"width\"}, got ", it->dump());
      c.crop_height = positive_int((*it)["height"], name, "crop_size.height");
      c.crop_width = positive_int((*it)["width"], name, "crop_size.width");
    }
  }

  if (auto it = j.find("resample"); it != j.end() && !it->is_null()) {
    UNIME_CHECK(it->is_number_integer() && it->get<int64_t>() >= 0 && it->get<int64_t>() <= 5, name,
                ": \"resample\" must be a PIL resampling filter 0..5 (3 = BICUBIC), got ", it->dump());
    c.resample = static_cast<Resample>(it->get<int>());
  }
  if (auto it = j.find("rescale_factor"); it != j.end() && !it->is_null()) {
    UNIME_CHECK(it->is_number(), name, ": \"rescale_factor\" must be a number, got ", it->dump());
    c.rescale_factor = it->get<double>();
  }
  c.image_mean = mean_or_std(j, "image_mean", c.image_mean, name);
  c.image_std = mean_or_std(j, "image_std", c.image_std, name);
  if (c.do_normalize) {
    for (size_t ch = 0; ch < 3; ++ch)
      UNIME_CHECK(c.image_std[ch] != 0.0, name, ": \"image_std\"[", ch, "] is zero");
  }
  return c;
}

ClipProcessorConfig load_clip_processor_config(const std::string& path) {
  return parse_clip_processor_config(io::read_file(path), path);
}

std::array<int, 2> clip_resize_size(int in_height, int in_width, const ClipProcessorConfig& cfg) {
  if (cfg.shortest_edge == 0) return {cfg.size_height, cfg.size_width};
  const int64_t s = cfg.shortest_edge;
  const bool portrait = in_width <= in_height;
  const int64_t short_side = portrait ? in_width : in_height;
  const int64_t long_side = portrait ? in_height : in_width;
  const int64_t new_long64 = static_cast<int64_t>(static_cast<double>(s * long_side) / static_cast<double>(short_side));
  UNIME_CHECK(new_long64 < (1 << 28), "resize: an image of ", in_width, "x", in_height,
              " would become ", new_long64, " pixels long (shortest_edge ", s, ")");
  const int new_long = int_of_ratio(s * long_side, short_side);
  return portrait ? std::array<int, 2>{new_long, static_cast<int>(s)}
                  : std::array<int, 2>{static_cast<int>(s), new_long};
}

std::vector<float> clip_preprocess(const io::Image& img, const ClipProcessorConfig& cfg,
                                   int* out_height, int* out_width) {
  UNIME_CHECK(img.width > 0 && img.height > 0 &&
                  img.rgb.size() == static_cast<size_t>(img.width) * img.height * 3,
              "clip_preprocess: invalid image ", img.width, "x", img.height);
  int rh = img.height, rw = img.width;  // size after the resize step
  if (cfg.do_resize) {
    const auto hw = clip_resize_size(img.height, img.width, cfg);
    rh = hw[0];
    rw = hw[1];
  }
  const int oh = cfg.do_center_crop ? cfg.crop_height : rh;
  const int ow = cfg.do_center_crop ? cfg.crop_width : rw;
  UNIME_CHECK(static_cast<int64_t>(oh) * ow <= io::kDefaultMaxPixels, "clip_preprocess: output ",
              ow, "x", oh, " exceeds ", io::kDefaultMaxPixels, " pixels");

  // Crop window in resize coordinates (HF center_crop with zero padding): output row r reads
  // resized row r + top when that row exists.
  auto floor_div2 = [](int v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); };
  const int top = cfg.do_center_crop ? floor_div2(rh - oh) : 0;
  const int left = cfg.do_center_crop ? floor_div2(rw - ow) : 0;
  const int y_begin = std::max(0, top), y_end = std::min(rh, top + oh);
  const int x_begin = std::max(0, left), x_end = std::min(rw, left + ow);

  io::Image win;  // the resized pixels that land in the output
  if (y_begin < y_end && x_begin < x_end) {
    if (cfg.do_resize) {
      win = resize_pil_window(img, rw, rh, cfg.resample, x_begin, y_begin, x_end - x_begin,
                              y_end - y_begin);
    } else {
      win.width = x_end - x_begin;
      win.height = y_end - y_begin;
      win.rgb.resize(static_cast<size_t>(win.width) * win.height * 3);
      for (int y = 0; y < win.height; ++y)
        std::copy_n(&img.rgb[(static_cast<size_t>(y + y_begin) * img.width + x_begin) * 3],
                    static_cast<size_t>(win.width) * 3, &win.rgb[static_cast<size_t>(y) * win.width * 3]);
    }
  }

  // rescale: image.astype(float64) * scale -> float32; normalize: (x - mean) / std in float32
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    const float mean = static_cast<float>(cfg.image_mean[c]), std = static_cast<float>(cfg.image_std[c]);
    for (int v = 0; v < 256; ++v) {
      float x = cfg.do_rescale ? static_cast<float>(static_cast<double>(v) * cfg.rescale_factor)
                               : static_cast<float>(v);
      if (cfg.do_normalize) x = (x - mean) / std;
      lut[c][v] = x;
    }
  }
  const size_t plane = static_cast<size_t>(oh) * ow;
  std::vector<float> out(3 * plane);
  for (int c = 0; c < 3; ++c) std::fill_n(out.begin() + c * plane, plane, lut[c][0]);  // padding = 0
  for (int y = 0; y < win.height; ++y) {
    const int oy = y + y_begin - top;
    for (int x = 0; x < win.width; ++x) {
      const int ox = x + x_begin - left;
      const uint8_t* p = &win.rgb[(static_cast<size_t>(y) * win.width + x) * 3];
      for (int c = 0; c < 3; ++c) out[c * plane + static_cast<size_t>(oy) * ow + ox] = lut[c][p[c]];
    }
  }
  *out_height = oh;
  *out_width = ow;
  return out;
}

}  // namespace unime::vision
