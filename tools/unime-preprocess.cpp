// `unime preprocess --model DIR --image PATH --output OUT.npy`: the pixel tensor exactly as fed
// to the vision tower (HF pixel_values for one image, float32 [1, 3, H, W]). Reads only
// DIR/config.json (to check the model uses a CLIP-style processor) and
// DIR/preprocessor_config.json; no weights. Phi3VForCausalLM: Phi3VImageProcessor's crops
// [1 + hc*wc, 3, 336, 336] (global first; without the zero crops HF pads to num_crops + 1), and the
// HD size and feature-token count are printed.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "common.h"
#include "io/fs.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/hf-config.h"
#include "vision/clip-processor.h"
#include "vision/phi3v-processor.h"

namespace {

// Architectures whose HF processor is a CLIPImageProcessor.
const std::set<std::string> kClipArchitectures = {
    "LlavaForConditionalGeneration", "CLIPModel", "CLIPVisionModel", "CLIPVisionModelWithProjection"};
const std::set<std::string> kClipModelTypes = {"llava", "clip", "clip_vision_model"};

bool is_phi3v(const std::string& path) {
  nlohmann::json j = nlohmann::json::parse(unime::io::read_file(path), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;  // check_model_config reports it
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty())
    return (*it)[0] == "Phi3VForCausalLM";
  return j.value("model_type", std::string()) == "phi3_v";
}

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
    const std::string cfg_path = io::join_path(opts->model, "config.json");
    if (is_phi3v(cfg_path)) {
      const io::ModelConfig mc = io::load_model_config(cfg_path);
      UNIME_CHECK(mc.vision, cfg_path, ": this Phi3VForCausalLM has no image embd_layer (text only)");
      const auto pc = vision::load_phi3v_processor_config(io::join_path(opts->model, "preprocessor_config.json"));
      const io::Image img = io::load_image(opts->image, opts->max_pixels);
      const int64_t S = mc.vision->image_size;
      std::array<int64_t, 2> hd{};
      const std::vector<float> px = vision::phi3v_preprocess(img, pc, S, &hd, opts->image);
      const int64_t n = static_cast<int64_t>(px.size()) / (3 * S * S);
      io::write_npy_f32(opts->output, px.data(), {n, 3, S, S});
      std::printf("%s: [%lld, 3, %lld, %lld] float32 from %s (%dx%d), HD size %lldx%lld, %lld image tokens\n",
                  opts->output.c_str(), (long long)n, (long long)S, (long long)S, opts->image.c_str(), img.width,
                  img.height, (long long)hd[1], (long long)hd[0],
                  (long long)vision::phi3v_image_tokens(img.height, img.width, pc, S, S / mc.vision->patch_size / 2,
                                                        opts->image));
      return;
    }
    check_model_config(cfg_path);
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
