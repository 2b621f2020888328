// Pillow-compatible resize and the CLIP image processor against references computed by
// tests/gen/pil_ref.py: Pillow's Image.resize on many sizes and all six filters (exact uint8
// equality required), and a numpy re-implementation of HF CLIPImageProcessor.preprocess for
// several preprocessor_config.json variants (bitwise float32 equality required); then the
// `unime preprocess` command end to end and its error paths.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "io/fs.h"
#include "io/image.h"
#include "io/npy.h"
#include "vision/clip-processor.h"
#include "vision/resize.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include "stb_image_write.h"
#pragma GCC diagnostic pop

#include "test-util.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace unime;
using vision::Resample;

namespace {

using unime::test::TempDir;

int run(const std::string& cmd, std::string* out) {
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  const int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void pil_ref(const TempDir& d, const json& jobs) {
  std::ofstream(d / "jobs.json") << jobs.dump();
  std::string out;
  ASSERT_EQ(run(std::string(UNIME_PYTHON) + " " + UNIME_TEST_DIR + "/gen/pil_ref.py " + (d / "jobs.json"), &out), 0) << out;
}

// Random noise (worst case for rounding) or a smooth pattern with sharp edges.
io::Image make_image(int w, int h, bool noise, std::mt19937& rng) {
  io::Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        uint8_t v;
        if (noise) {
          v = static_cast<uint8_t>(rng());
        } else {
          const int base = (x * 255 / std::max(1, w - 1) + y * 97 / std::max(1, h - 1) + c * 60) % 256;
          v = static_cast<uint8_t>(((x / 7 + y / 5) % 2) ? base : 255 - base);
        }
        img.rgb[(static_cast<size_t>(y) * w + x) * 3 + c] = v;
      }
  return img;
}

void write_png(const std::string& path, const io::Image& img) {
  ASSERT_TRUE(stbi_write_png(path.c_str(), img.width, img.height, 3, img.rgb.data(), img.width * 3));
}

void write_text(const std::string& path, const std::string& s) { std::ofstream(path) << s; }

struct ResizeCase {
  int sw, sh, dw, dh;
  Resample f;
  bool noise;
};

}  // namespace

TEST(Resize, MatchesPillowExactly) {
  TempDir d;
  std::mt19937 rng(42);
  std::vector<ResizeCase> cases;
  const int fixed[][4] = {{640, 480, 448, 336}, {480, 640, 336, 448}, {1000, 700, 224, 156},
                          {33, 17, 301, 155},   {300, 200, 37, 29},   {1, 40, 7, 3},
                          {40, 1, 3, 9},        {1, 1, 9, 4},         {257, 3, 2, 1},
                          {2, 257, 1, 100},     {100, 50, 100, 23},   {100, 50, 31, 50},
                          {5, 5, 5, 5},         {7, 9, 336, 336},     {1920, 1080, 597, 336}};
  for (const auto& c : fixed)
    for (int f = 0; f <= 5; ++f)
      if (c[0] * c[1] < 200000 || f == 2 || f == 3)  // big inputs: the filters CLIP configs use
        cases.push_back({c[0], c[1], c[2], c[3], static_cast<Resample>(f), cases.size() % 2 == 0});
  std::uniform_int_distribution<int> src(1, 120);
  for (int i = 0; i < 90; ++i) {
    const int sw = src(rng), sh = src(rng);
    const int dw = 1 + rng() % (2 * sw + 3), dh = 1 + rng() % (2 * sh + 3);
    cases.push_back({sw, sh, dw, dh, static_cast<Resample>(rng() % 6), i % 3 != 0});
  }

  json jobs = json::array();
  std::vector<io::Image> inputs;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    inputs.push_back(make_image(c.sw, c.sh, c.noise, rng));
    const std::string src = d / ("in" + std::to_string(i) + ".png");
    write_png(src, inputs.back());
    jobs.push_back({{"op", "resize"}, {"src", src}, {"width", c.dw}, {"height", c.dh},
                    {"filter", static_cast<int>(c.f)}, {"out", d / ("ref" + std::to_string(i) + ".raw")}});
  }
  pil_ref(d, jobs);

  size_t pixels = 0, mismatched = 0;
  int worst = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const io::Image in = io::load_image(d / ("in" + std::to_string(i) + ".png"));
    ASSERT_EQ(in.rgb, inputs[i].rgb);
    const io::Image out = vision::resize_pil(in, c.dw, c.dh, c.f);
    const std::string ref = io::read_file(d / ("ref" + std::to_string(i) + ".raw"));
    ASSERT_EQ(out.rgb.size(), ref.size()) << i;
    int maxdiff = 0;
    size_t bad = 0;
    for (size_t k = 0; k < ref.size(); ++k) {
      const int dl = std::abs(int(out.rgb[k]) - int(static_cast<uint8_t>(ref[k])));
      maxdiff = std::max(maxdiff, dl);
      bad += dl != 0;
    }
    pixels += ref.size();
    mismatched += bad;
    worst = std::max(worst, maxdiff);
    EXPECT_EQ(maxdiff, 0) << "case " << i << ": " << c.sw << "x" << c.sh << " -> " << c.dw << "x" << c.dh
                          << " " << vision::resample_name(c.f) << " differs in " << bad << " values";
  }
  std::printf("resize: %zu cases, %zu values, %zu differ from Pillow, max diff %d\n", cases.size(), pixels,
              mismatched, worst);

  // a window of the resize equals the same crop of the full resize
  const io::Image big = make_image(203, 151, true, rng);
  const io::Image full = vision::resize_bicubic_pil(big, 97, 120);
  const io::Image win = vision::resize_pil_window(big, 97, 120, Resample::Bicubic, 13, 21, 50, 60);
  for (int y = 0; y < 60; ++y)
    for (int x = 0; x < 50; ++x)
      for (int ch = 0; ch < 3; ++ch)
        ASSERT_EQ(win.rgb[(y * 50 + x) * 3 + ch], full.rgb[((y + 21) * 97 + x + 13) * 3 + ch]);
}

TEST(Resize, CenterCropFollowsHF) {
  io::Image img;
  img.width = 3;
  img.height = 2;
  for (int i = 0; i < 6; ++i) img.rgb.insert(img.rgb.end(), {uint8_t(10 + i), uint8_t(10 + i), uint8_t(10 + i)});
  // 3x2 -> 2x4: left = (3-2)//2 = 0; height padded: top = (2-4)//2 = -1, image rows at 1..2
  const io::Image c = vision::center_crop(img, 2, 4);
  const uint8_t want[4][2] = {{0, 0}, {10, 11}, {13, 14}, {0, 0}};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 2; ++x) EXPECT_EQ(c.rgb[(y * 2 + x) * 3], want[y][x]) << y << "," << x;
  // 3x2 -> 6x1: top = 0; left = (3-6)//2 = -2, image columns at 2..4
  const io::Image e = vision::center_crop(img, 6, 1);
  const uint8_t want2[6] = {0, 0, 10, 11, 12, 0};
  for (int x = 0; x < 6; ++x) EXPECT_EQ(e.rgb[x * 3], want2[x]) << x;
}

TEST(ClipProcessor, MatchesHFReference) {
  TempDir d;
  std::mt19937 rng(7);
  const json mean = {0.48145466, 0.4578275, 0.40821073}, std_ = {0.26862954, 0.26130258, 0.27577711};
  const std::vector<json> configs = {
      // llava-hf/llava-1.5-7b-hf
      {{"crop_size", {{"height", 336}, {"width", 336}}}, {"do_center_crop", true}, {"do_normalize", true},
       {"do_resize", true}, {"image_mean", mean}, {"image_std", std_}, {"resample", 3},
       {"rescale_factor", 0.00392156862745098}, {"size", {{"shortest_edge", 336}}},
       {"image_processor_type", "CLIPImageProcessor"}, {"processor_class", "LlavaProcessor"}},
      // openai/clip-vit-base-patch32 (legacy int sizes)
      {{"size", 224}, {"crop_size", 224}, {"feature_extractor_type", "CLIPFeatureExtractor"}, {"resample", 3}},
      {{"size", {{"height", 50}, {"width", 70}}}, {"do_center_crop", false}, {"resample", 2}},
      {{"size", {{"shortest_edge", 20}}}, {"crop_size", {{"height", 33}, {"width", 25}}}},  // pads
      {{"do_resize", false}, {"crop_size", {{"height", 64}, {"width", 16}}}},
      {{"image_mean", 0.5}, {"image_std", 0.25}, {"do_rescale", false}, {"size", {{"shortest_edge", 31}}},
       {"crop_size", 29}, {"resample", 1}},
      {{"size", {{"shortest_edge", 40}}}, {"use_square_size", true}, {"do_center_crop", false}},
      {{"resample", 0}, {"size", {{"shortest_edge", 45}}}, {"crop_size", 40}, {"do_normalize", false}},
      {{"resample", 4}, {"size", {{"shortest_edge", 17}, {"longest_edge", 1000}}}, {"crop_size", 17}},
  };
  const int sizes[][2] = {{640, 480}, {480, 640}, {37, 53}, {1, 40}, {300, 7}, {336, 336}};
  json jobs = json::array();
  struct Job {
    std::string img, cfg, ref;
  };
  std::vector<Job> todo;
  for (size_t s = 0; s < std::size(sizes); ++s) {
    const std::string img = d / ("img" + std::to_string(s) + ".png");
    write_png(img, make_image(sizes[s][0], sizes[s][1], s % 2 == 0, rng));
    for (size_t c = 0; c < configs.size(); ++c) {
      const std::string cfg = d / ("cfg" + std::to_string(c) + ".json");
      write_text(cfg, configs[c].dump());
      const std::string ref = d / ("ref" + std::to_string(s) + "_" + std::to_string(c) + ".npy");
      jobs.push_back({{"op", "clip"}, {"src", img}, {"config", cfg}, {"out", ref}});
      todo.push_back({img, cfg, ref});
    }
  }
  pil_ref(d, jobs);
  for (const auto& j : todo) {
    const auto cfg = vision::load_clip_processor_config(j.cfg);
    const io::Image img = io::load_image(j.img);
    int h = 0, w = 0;
    const std::vector<float> px = vision::clip_preprocess(img, cfg, &h, &w);
    const io::NpyArray ref = io::read_npy_f32(j.ref);
    ASSERT_EQ(ref.shape, (std::vector<int64_t>{1, 3, h, w})) << j.img << " " << j.cfg;
    ASSERT_EQ(ref.data.size(), px.size());
    float maxdiff = 0;
    for (size_t k = 0; k < px.size(); ++k) maxdiff = std::max(maxdiff, std::fabs(px[k] - ref.data[k]));
    EXPECT_EQ(maxdiff, 0.0f) << j.img << " with " << io::read_file(j.cfg);
  }
  std::printf("clip_preprocess: %zu image x config pairs compared bitwise\n", todo.size());
}

TEST(ClipProcessor, ConfigErrors) {
  auto err = [](const std::string& text) {
    try {
      vision::parse_clip_processor_config(text, "pp.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(err("{").find("pp.json: not valid JSON"), std::string::npos);
  EXPECT_NE(err(R"({"image_processor_type": "Qwen2VLImageProcessor"})")
                .find("image_processor_type is 'Qwen2VLImageProcessor', not a CLIP-style processor"),
            std::string::npos);
  EXPECT_NE(err(R"({"size": {"longest_edge": 5}})").find("\"size\" {longest_edge} is not usable"), std::string::npos);
  EXPECT_NE(err(R"({"image_mean": [1, 2]})").find("\"image_mean\" must be a number or a list of 3"), std::string::npos);
  EXPECT_NE(err(R"({"resample": 9})").find("\"resample\" must be a PIL resampling filter"), std::string::npos);
  EXPECT_NE(err(R"({"do_resize": "yes"})").find("\"do_resize\" must be true or false"), std::string::npos);
  EXPECT_NE(err(R"({"crop_size": {"height": 0, "width": 3}})").find("crop_size.height\" must be a positive"), std::string::npos);
  EXPECT_NE(err(R"({"image_std": [1, 0, 1]})").find("\"image_std\"[1] is zero"), std::string::npos);
  const auto c = vision::parse_clip_processor_config("{}", "x");
  EXPECT_EQ(c.shortest_edge, 224);
  EXPECT_EQ(c.crop_height, 224);
  EXPECT_EQ(c.resample, Resample::Bicubic);
  // int(336 * 500 / 333) = 504 for a 333-wide, 500-high image
  EXPECT_EQ(vision::clip_resize_size(500, 333, vision::parse_clip_processor_config(R"({"size": 336})", "x")),
            (std::array<int, 2>{504, 336}));
}

TEST(ClipProcessor, PreprocessCommand) {
  TempDir d;
  std::mt19937 rng(3);
  fs::create_directory(d / "llava");
  write_text(d / "llava/config.json", R"({"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava"})");
  const json pp = {{"crop_size", {{"height", 336}, {"width", 336}}}, {"size", {{"shortest_edge", 336}}},
                   {"resample", 3}, {"image_processor_type", "CLIPImageProcessor"}};
  write_text(d / "llava/preprocessor_config.json", pp.dump());
  write_png(d / "cat.png", make_image(500, 333, false, rng));
  pil_ref(d, json::array({{{"op", "clip"}, {"src", d / "cat.png"}, {"config", d / "llava/preprocessor_config.json"},
                           {"out", d / "ref.npy"}}}));
  const std::string bin = UNIME_BIN;
  std::string out;
  ASSERT_EQ(run(bin + " preprocess --model " + (d / "llava") + " --image " + (d / "cat.png") + " --output " + (d / "px.npy"), &out), 0) << out;
  const io::NpyArray got = io::read_npy_f32(d / "px.npy"), ref = io::read_npy_f32(d / "ref.npy");
  EXPECT_EQ(got.shape, (std::vector<int64_t>{1, 3, 336, 336}));
  EXPECT_EQ(got.shape, ref.shape);
  EXPECT_EQ(got.data, ref.data);

  // errors: exit 1, one line "error: <file>: <problem>"
  auto expect_fail = [&](const std::string& args, const std::string& want) {
    std::string o;
    EXPECT_EQ(run(bin + " preprocess " + args, &o), 1) << o;
    EXPECT_EQ(o.rfind("error: ", 0), 0u) << o;
    EXPECT_NE(o.find(want), std::string::npos) << "got: " << o << "want: " << want;
    EXPECT_EQ(std::count(o.begin(), o.end(), '\n'), 1) << o;
  };
  const std::string img = " --image " + (d / "cat.png") + " --output " + (d / "x.npy");
  fs::create_directory(d / "qwen");
  write_text(d / "qwen/config.json", R"({"architectures": ["Qwen2VLForConditionalGeneration"]})");
  expect_fail("--model " + (d / "qwen") + img, "model 'Qwen2VLForConditionalGeneration' has no CLIP-style image processor");
  fs::create_directory(d / "nopp");
  write_text(d / "nopp/config.json", R"({"model_type": "clip"})");
  expect_fail("--model " + (d / "nopp") + img, "preprocessor_config.json: cannot open file");
  expect_fail("--model " + (d / "missing") + img, "config.json: cannot open file");
  write_text(d / "bad.png", "not an image");
  expect_fail("--model " + (d / "llava") + " --image " + (d / "bad.png") + " --output " + (d / "x.npy"),
              "bad.png: not a supported image");
  const std::string png = io::read_file(d / "cat.png");
  write_text(d / "cut.png", png.substr(0, png.size() / 2));
  expect_fail("--model " + (d / "llava") + " --image " + (d / "cut.png") + " --output " + (d / "x.npy"), "cut.png: ");
  EXPECT_FALSE(fs::exists(d / "x.npy"));
}
