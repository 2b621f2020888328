// Parity of every architecture's forward with an independent reference (tests/gen/reference.py,
// plain torch following Hugging Face's modeling code) on tiny random checkpoints in the real HF
// layout (tests/gen/tiny_models.py). Also: batch == single (left padding does not move a vector),
// both LLaVA key layouts, image-token expansion vs in-place runs, bf16 close to f32.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "io/hf-config.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "test-util.h"

using namespace unime;
using nlohmann::json;

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

struct Fixture {
  test::TempDir tmp;
  std::string model_dir;
  io::ModelConfig cfg;
  json inputs = json::array();
  std::vector<std::vector<int64_t>> ids;     // as given to the reference
  std::vector<torch::Tensor> pixels;         // per input, may be undefined
  std::shared_ptr<io::SafetensorsFile> ref;
};

void make_model(Fixture& fx, const std::string& args) {
  fx.model_dir = fx.tmp / "model";
  auto r = test::run_cmd(test::python() + " " + test::gen_script("tiny_models.py") + " " + args +
                         " --out " + fx.model_dir);
  ASSERT_EQ(r.status, 0) << r.output;
  fx.cfg = io::load_model_config(fx.model_dir);
}

void run_reference(Fixture& fx, const std::string& dtype = "float32") {
  test::write_text(fx.tmp / "in.json", fx.inputs.dump());
  const std::string out = fx.tmp / ("ref-" + dtype + ".safetensors");
  auto r = test::run_cmd(test::python() + " " + test::gen_script("reference.py") + " --model " +
                         fx.model_dir + " --inputs " + (fx.tmp / "in.json") + " --output " + out +
                         " --dtype " + dtype);
  ASSERT_EQ(r.status, 0) << r.output;
  fx.ref = io::SafetensorsFile::open(out);
}

// random token sequences (+ images for LLaVA) of several lengths
void make_inputs(Fixture& fx, int n, bool images, bool expand_in_place, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto& t = *fx.cfg.text;
  const int64_t img_tok = fx.cfg.arch == io::Arch::Llava ? fx.cfg.llava.image_token_id : -1;
  for (int i = 0; i < n; ++i) {
    const int len = 3 + 4 * i + static_cast<int>(rng() % 3);
    std::vector<int64_t> seq;
    for (int k = 0; k < len; ++k) {
      int64_t id;
      do id = static_cast<int64_t>(rng() % t.vocab_size); while (id == img_tok);
      seq.push_back(id);
    }
    json row;
    torch::Tensor px;
    if (images && i % 2 == 0) {
      const int n_img = 1 + (i % 4 == 2);
      const int64_t F = fx.cfg.image_feature_tokens();
      for (int k = 0; k < n_img; ++k) {
        auto pos = seq.begin() + 1 + k;
        if (expand_in_place) seq.insert(pos, F, img_tok);
        else seq.insert(pos, img_tok);
      }
      const int64_t S = fx.cfg.vision->image_size;
      torch::manual_seed(seed + i);
      px = torch::randn({n_img, 3, S, S});
      const std::string f = "px" + std::to_string(i) + ".npy";
      io::write_npy_f32(fx.tmp / f, px.data_ptr<float>(), {n_img, 3, S, S});
      row["pixel_values"] = f;
    }
    row["input_ids"] = seq;
    fx.inputs.push_back(row);
    fx.ids.push_back(seq);
    fx.pixels.push_back(px);
  }
}

models::TokenBatch single(const Fixture& fx, size_t i) {
  auto ids = fx.ids[i];
  if (fx.pixels[i].defined())
    ids = models::expand_image_tokens(ids, fx.cfg.llava.image_token_id, fx.pixels[i].size(0),
                                      fx.cfg.image_feature_tokens(), "test");
  const int64_t T = static_cast<int64_t>(ids.size());
  return {torch::tensor(ids, torch::kInt64).view({1, T}), torch::ones({1, T}, torch::kBool),
          fx.pixels[i]};
}

// every input alone: hidden states and the pooled embedding equal the reference
void check_decoder(Fixture& fx, models::Model& m, double tol) {
  c10::InferenceMode g;
  for (size_t i = 0; i < fx.ids.size(); ++i) {
    auto b = single(fx, i);
    auto h = m.hidden(b)[0].to(torch::kFloat32);
    auto want = ref_tensor(*fx.ref, "hidden." + std::to_string(i));
    ASSERT_EQ(h.sizes(), want.sizes()) << "input " << i;
    EXPECT_LT(max_diff(h, want), tol) << "hidden." << i;
    auto e = torch::nn::functional::normalize(m.last_token_hidden(b).to(torch::kFloat32),
                                              torch::nn::functional::NormalizeFuncOptions().dim(-1))[0];
    EXPECT_LT(max_diff(e, ref_tensor(*fx.ref, "emb." + std::to_string(i))), tol) << "emb." << i;
    if (fx.pixels[i].defined()) {
      auto f = m.image_features(fx.pixels[i]).to(torch::kFloat32);
      EXPECT_LT(max_diff(f, ref_tensor(*fx.ref, "image_features." + std::to_string(i))), tol);
    }
  }
}

// all inputs in one left-padded batch: the same vectors as alone
void check_batch_equals_single(Fixture& fx, models::Model& m, double tol) {
  c10::InferenceMode g;
  std::vector<std::vector<int64_t>> rows;
  std::vector<torch::Tensor> px;
  size_t T = 0;
  for (size_t i = 0; i < fx.ids.size(); ++i) {
    auto b = single(fx, i);
    rows.emplace_back(b.ids.data_ptr<int64_t>(), b.ids.data_ptr<int64_t>() + b.ids.size(1));
    T = std::max(T, rows.back().size());
    if (fx.pixels[i].defined()) px.push_back(fx.pixels[i]);
  }
  const int64_t B = static_cast<int64_t>(rows.size());
  auto ids = torch::zeros({B, static_cast<int64_t>(T)}, torch::kInt64);
  auto real = torch::zeros({B, static_cast<int64_t>(T)}, torch::kBool);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t off = static_cast<int64_t>(T - rows[b].size());
    for (size_t k = 0; k < rows[b].size(); ++k) ids[b][off + k] = rows[b][k];
    real[b].narrow(0, off, static_cast<int64_t>(rows[b].size())).fill_(true);
  }
  models::TokenBatch batch{ids, real, px.empty() ? torch::Tensor() : torch::cat(px, 0)};
  auto e = torch::nn::functional::normalize(m.last_token_hidden(batch).to(torch::kFloat32),
                                            torch::nn::functional::NormalizeFuncOptions().dim(-1));
  for (int64_t b = 0; b < B; ++b)
    EXPECT_LT(max_diff(e[b], ref_tensor(*fx.ref, "emb." + std::to_string(b))), tol) << "batched row " << b;
  // packed back to back (the embedder's path): the same vectors
  std::vector<int64_t> flat, lens;
  for (const auto& r : rows) {
    flat.insert(flat.end(), r.begin(), r.end());
    lens.push_back(static_cast<int64_t>(r.size()));
  }
  auto p = torch::nn::functional::normalize(
      m.last_token_hidden_packed(torch::tensor(flat, torch::kInt64).view({1, -1}), lens, batch.pixels)
          .to(torch::kFloat32),
      torch::nn::functional::NormalizeFuncOptions().dim(-1));
  for (int64_t b = 0; b < B; ++b)
    EXPECT_LT(max_diff(p[b], ref_tensor(*fx.ref, "emb." + std::to_string(b))), tol) << "packed row " << b;
}

struct Case {
  std::string name, args;
  bool images = false;
};

class DecoderParity : public ::testing::TestWithParam<Case> {};

TEST_P(DecoderParity, MatchesReferenceF32AndBatchEqualsSingle) {
  const Case& c = GetParam();
  Fixture fx;
  make_model(fx, c.args);
  make_inputs(fx, 4, c.images, /*expand_in_place=*/false, 7);
  run_reference(fx);
  auto m = models::Model::load(fx.model_dir, torch::kFloat32);
  check_decoder(fx, *m, 2e-5);
  check_batch_equals_single(fx, *m, 1e-5);
}

TEST_P(DecoderParity, Bf16CloseToReferenceBf16) {
  const Case& c = GetParam();
  Fixture fx;
  make_model(fx, c.args);
  make_inputs(fx, 3, c.images, false, 11);
  run_reference(fx, "bfloat16");
  auto m = models::Model::load(fx.model_dir, torch::kBFloat16);
  c10::InferenceMode g;
  for (size_t i = 0; i < fx.ids.size(); ++i) {
    auto e = torch::nn::functional::normalize(m->last_token_hidden(single(fx, i)).to(torch::kFloat32),
                                              torch::nn::functional::NormalizeFuncOptions().dim(-1))[0];
    auto want = ref_tensor(*fx.ref, "emb." + std::to_string(i));
    const double cos = (e * want).sum().item<double>();
    EXPECT_GT(cos, 0.999) << "input " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Archs, DecoderParity,
    ::testing::Values(Case{"llama", "--arch llama --seed 1"},
                      Case{"llama3", "--arch llama3 --seed 2"},
                      Case{"mistral", "--arch mistral --seed 3"},
                      Case{"qwen2", "--arch qwen2 --seed 4"},
                      Case{"llava_legacy", "--arch llava --layout legacy --seed 5", true},
                      Case{"llava_new", "--arch llava --layout new --seed 6", true},
                      Case{"llava_full_layer_m1",
                           "--arch llava --seed 7 --set vision_feature_select_strategy=full "
                           "--set vision_feature_layer=-1",
                           true},
                      Case{"llava_qwen2", "--arch llava_qwen2 --seed 8", true}),
    [](const auto& info) { return info.param.name; });

TEST(LlavaParity, InPlaceRunEqualsExpandedPlaceholder) {
  Fixture fx;
  make_model(fx, "--arch llava --seed 9");
  make_inputs(fx, 3, true, /*expand_in_place=*/true, 13);
  run_reference(fx);
  auto m = models::Model::load(fx.model_dir, torch::kFloat32);
  check_decoder(fx, *m, 2e-5);
}

TEST(ClipParity, VisionModelAndClipModel) {
  for (std::string arch : {"clip_vision", "clip"}) {
    Fixture fx;
    make_model(fx, "--arch " + arch + " --seed 21");
    const int64_t S = fx.cfg.vision->image_size;
    torch::manual_seed(3);
    auto px = torch::randn({2, 3, S, S});
    io::write_npy_f32(fx.tmp / "px.npy", px.data_ptr<float>(), {2, 3, S, S});
    fx.inputs.push_back(json{{"pixel_values", "px.npy"}});
    run_reference(fx);
    auto m = models::Model::load(fx.model_dir, torch::kFloat32);
    c10::InferenceMode g;
    auto states = m->clip_hidden_states(px);
    EXPECT_LT(max_diff(states.back(), ref_tensor(*fx.ref, "clip_last_hidden.0")), 2e-5) << arch;
    EXPECT_LT(max_diff(m->vision_->pooled(states.back()), ref_tensor(*fx.ref, "clip_pooled.0")), 2e-5) << arch;
    if (arch == "clip")
      EXPECT_LT(max_diff(m->clip_image_embeds(px), ref_tensor(*fx.ref, "image_embeds.0")), 2e-5);
  }
}

}  // namespace
