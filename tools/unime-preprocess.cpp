// `unime preprocess --model DIR --image PATH --output OUT.npy`: the pixel tensor exactly as fed
// to the vision tower (HF pixel_values for one image, float32 [1, 3, H, W]). Reads only
// DIR/config.json (to check the model uses a CLIP-style processor) and
// DIR/preprocessor_config.json; no weights.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "common.h"
#include "io/fs.h"
#include "io/image.h"
#include "io/npy.h"
#include "vision/clip-processor.h"

namespace {

// Architectures whose HF processor is a CLIPImageProcessor.
const std::set<std::string> kClipArchitectures = {
    "LlavaForConditionalGeneration", "CLIPModel", "CLIPVisionModel", "CLIPVisionModelWithProjection"};
const std::set<std::string> kClipModelTypes = {"llava", "clip", "clip_vision_model"};

void check_model_config(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(unime::io::read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw unime::Error(unime::str(path, ": not valid JSON: ", e.what()));
  }
  UNIME_CHECK(j.is_object(), path, ": must be a JSON object");
  std::string found;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array()) {
    for (const auto& a : *it) {
      if (!a.is_string()) continue;
      if (kClipArchitectures.count(a.get<std::string>())) return;
      found += (found.empty() ? "" : ", ") + a.get<std::string>();
    }
  } else if (auto mt = j.find("model_type"); mt != j.end() && mt->is_string()) {
    if (kClipModelTypes.count(mt->get<std::string>())) return;
    found = "model_type " + mt->get<std::string>();
  }
  throw unime::Error(unime::str(path, ": model '", found.empty() ? "(no architectures)" : found,
                                "' has no CLIP-style image processor (supported: "
                                "LlavaForConditionalGeneration, CLIPModel, CLIPVisionModel, "
                                "CLIPVisionModelWithProjection)"));
}

}  // namespace

void register_preprocess(CLI::App& app) {
  struct Opts {
    std::string model, image, output;
    int64_t max_pixels = unime::io::kDefaultMaxPixels;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "preprocess", "write the vision tower's pixel_values for one image as float32 .npy [1, 3, H, W]");
  cmd->add_option("--model", opts->model, "model folder (config.json + preprocessor_config.json)")
      ->required();
  cmd->add_option("--image", opts->image, "image file (PNG, JPEG, BMP, GIF)")->required();
  cmd->add_option("--output", opts->output, "output .npy path")->required();
  cmd->add_option("--max-pixels", opts->max_pixels, "refuse images with more pixels than this")
      ->capture_default_str();
  cmd->callback([opts]() {
    using namespace unime;
    check_model_config(io::join_path(opts->model, "config.json"));
    const auto cfg =
        vision::load_clip_processor_config(io::join_path(opts->model, "preprocessor_config.json"));
    const io::Image img = io::load_image(opts->image, opts->max_pixels);
    int h = 0, w = 0;
    const std::vector<float> px = vision::clip_preprocess(img, cfg, &h, &w);
    io::write_npy_f32(opts->output, px.data(), {1, 3, h, w});
    std::printf("%s: [1, 3, %d, %d] float32 from %s (%dx%d)\n", opts->output.c_str(), h, w,
                opts->image.c_str(), img.width, img.height);
  });
}
