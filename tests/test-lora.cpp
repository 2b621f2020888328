// LoRA / QLoRA (train/lora.h, models/linear.h) and `unime merge`: PEFT key names and config, the
// PEFT initialisation (step 0 equals the base), the adapter forward against a hand formula, save ->
// load round trips (both LLaVA key layouts), a PEFT-format adapter written by Python (rank_pattern,
// alpha_pattern) merged by the CLI against Python's W + (alpha/r) B A, merge == adapter forward,
// errors, and NF4 quantisation against an independent scalar implementation.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/layers.h"
#include "models/model.h"
#include "test-util.h"
#include "train/lora.h"
#include "train/merge.h"

namespace F = torch::nn::functional;
using namespace unime;
using nlohmann::json;

namespace {

const test::TempDir& models_dir() {
  static test::TempDir dir;
  static bool made = false;
  if (!made) {
    for (auto [preset, name, dtype] : std::vector<std::tuple<std::string, std::string, std::string>>{
             {"tiny-llama", "llama", "f32"}, {"tiny-llama", "llama-bf16", "bf16"}, {"tiny-llava", "llava", "f32"}}) {
      auto r = test::run_cmd(test::unime_bin() + " random-model --preset " + preset + " --seed 2 --dtype " +
                             dtype + " --output " + dir / name);
      if (r.status != 0) throw std::runtime_error("random-model failed: " + r.output);
    }
    for (const char* layout : {"legacy", "new"}) {
      auto r = test::run_cmd(test::python() + " " + test::gen_script("tiny_models.py") +
                             " --arch llava --seed 4 --layout " + layout + " --out " + dir / (std::string("llava-") + layout));
      if (r.status != 0) throw std::runtime_error("tiny_models.py failed: " + r.output);
    }
    made = true;
  }
  return dir;
}

std::string model(const std::string& name) { return models_dir() / name; }

/// Text-only batch: [B, T] ids in [1, 400), left padding.
models::TokenBatch text_batch(int64_t B, int64_t T, uint64_t seed) {
  torch::manual_seed(seed);
  auto ids = torch::randint(1, 400, {B, T}, torch::kInt64);
  auto real = torch::ones({B, T}, torch::kBool);
  for (int64_t i = 0; i < B; ++i)
    if (i % 2) real[i].narrow(0, 0, i % T).fill_(false);
  return {ids, real, {}};
}

torch::Tensor embed(models::Model& m, const models::TokenBatch& b) {
  torch::NoGradGuard ng;
  return m.last_token_hidden(b);
}

void randomize(train::LoraSet& s, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard ng;
  for (auto& p : s.parameters()) p.normal_(0.0, 0.1);
}

std::set<std::string> keys_of(const std::string& file) {
  std::set<std::string> k;
  for (auto& n : io::Checkpoint::open(file).names()) k.insert(n);
  return k;
}

torch::Tensor read(const io::Checkpoint& ck, const std::string& key) {
  const auto& t = ck.get(key);
  auto dt = t.dtype == io::DType::BF16 ? torch::kBFloat16 : torch::kFloat32;
  auto out = torch::empty(t.shape, dt);
  std::memcpy(out.data_ptr(), t.data, t.nbytes);
  return out.to(torch::kFloat32);
}

}  // namespace

// ---- wrapping, names, initialisation ---------------------------------------------------------

TEST(Lora, PeftNamesShapesAndInit) {
  auto m = models::Model::load(model("llama"), torch::kFloat32);
  train::LoraConfig c;  // r 16, alpha 64, q k v o gate up down
  auto lora = train::apply_lora(*m, c, 1);
  const auto named = lora.named_parameters();
  ASSERT_EQ(named.size(), 2u * 7 * 2);  // 2 layers x 7 modules x (A, B)
  EXPECT_EQ(named[0].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(named[1].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_EQ(named.back().first, "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight");
  for (auto& [name, t] : named) {
    EXPECT_TRUE(t.requires_grad()) << name;
    const bool is_a = name.find("lora_A") != std::string::npos;
    auto mod = std::find_if(lora.modules().begin(), lora.modules().end(),
                            [&](auto& x) { return name.find("." + x.name + ".") != std::string::npos; });
    ASSERT_NE(mod, lora.modules().end());
    const int64_t I = mod->linear->in_features, O = mod->linear->out_features;
    if (is_a) {
      EXPECT_EQ(t.sizes(), (std::vector<int64_t>{16, I}));
      EXPECT_LE(t.abs().max().item<double>(), 1.0 / std::sqrt(static_cast<double>(I)));
      EXPECT_GT(t.abs().max().item<double>(), 0.5 / std::sqrt(static_cast<double>(I)));  // not all tiny
    } else {
      EXPECT_EQ(t.sizes(), (std::vector<int64_t>{O, 16}));
      EXPECT_EQ(t.abs().max().item<double>(), 0.0);
    }
    EXPECT_NEAR(mod->linear->lora_scaling, 4.0, 0) << "alpha / r";
  }
  // base frozen
  for (auto& [name, p] : m->named_parameters())
    if (name.find("lora_") == std::string::npos) EXPECT_FALSE(p.requires_grad()) << name;
  // the model's own parameter list sees the adapters under the PEFT suffixes
  int n_lora = 0;
  for (auto& [name, p] : m->named_parameters()) n_lora += name.find(".lora_A.weight") != std::string::npos;
  EXPECT_EQ(n_lora, 14);
  // seeded: same seed same A, other seed other A
  auto m2 = models::Model::load(model("llama"), torch::kFloat32);
  auto m3 = models::Model::load(model("llama"), torch::kFloat32);
  auto l2 = train::apply_lora(*m2, c, 1), l3 = train::apply_lora(*m3, c, 2);
  EXPECT_TRUE(torch::equal(l2.parameters()[0], lora.parameters()[0]));
  EXPECT_FALSE(torch::equal(l3.parameters()[0], lora.parameters()[0]));
  EXPECT_THROW(train::apply_lora(*m, c, 1), unime::Error);  // already attached
}

TEST(Lora, StepZeroEqualsBase) {
  auto m = models::Model::load(model("llava"), torch::kFloat32);
  auto b = text_batch(3, 6, 1);
  auto before = embed(*m, b);
  train::LoraConfig c;
  c.include_vision = true;
  auto lora = train::apply_lora(*m, c, 3);
  for (auto& [prefix, mod] : m->modules()) mod->train();  // dropout active
  EXPECT_TRUE(torch::equal(embed(*m, b), before));
  randomize(lora, 4);
  EXPECT_FALSE(torch::allclose(embed(*m, b), before));
}

TEST(Lora, ScopeOnLlava) {
  auto m = models::Model::load(model("llava"), torch::kFloat32);
  train::LoraConfig c;
  auto dec = train::apply_lora(*m, c, 1);
  EXPECT_EQ(dec.modules().size(), 14u);
  for (auto& x : dec.modules()) EXPECT_EQ(x.name.rfind("model.language_model.layers.", 0), 0u) << x.name;

  auto m2 = models::Model::load(model("llava"), torch::kFloat32);
  c.include_vision = true;
  auto all = train::apply_lora(*m2, c, 1);
  std::set<std::string> names;
  for (auto& x : all.modules()) names.insert(x.name);
  EXPECT_EQ(names.size(), 14u + 2 * 6 + 2);
  EXPECT_TRUE(names.count("model.vision_tower.vision_model.encoder.layers.1.self_attn.out_proj"));
  EXPECT_TRUE(names.count("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1"));
  EXPECT_TRUE(names.count("model.multi_modal_projector.linear_2"));

  // saved target_modules select exactly the wrapped modules under PEFT's rules (checked in Python)
  test::TempDir tmp;
  for (auto* set : {&dec, &all}) {
    set->save(tmp / "a", "tiny-llava");
    json cfg = json::parse(test::read_text(tmp / "a/adapter_config.json"));
    std::string all_names;
    for (auto& l : train::find_linears(set == &dec ? *m : *m2, true)) all_names += l.name + "\n";
    test::write_text(tmp / "names.txt", all_names);
    test::write_text(tmp / "target.json", cfg["target_modules"].dump());
    test::write_text(tmp / "check.py", R"(import json, re, sys
t = json.load(open(sys.argv[1])); names = open(sys.argv[2]).read().split()
def hit(n):
    if isinstance(t, str): return re.fullmatch(t, n) is not None
    return n in t or any(n.endswith("." + k) for k in t)
print("\n".join(n for n in names if hit(n)))
)");
    auto r = test::run_cmd(test::python() + " " + tmp / "check.py" + " " + tmp / "target.json" + " " + tmp / "names.txt");
    ASSERT_EQ(r.status, 0) << r.output;
    std::set<std::string> got, want;
    std::istringstream is(r.output);
    for (std::string line; std::getline(is, line);)
      if (!line.empty()) got.insert(line);
    for (auto& x : set->modules()) want.insert(x.name);
    EXPECT_EQ(got, want) << cfg["target_modules"].dump();
    EXPECT_EQ(cfg["target_modules"].is_string(), set == &dec) << cfg["target_modules"].dump();
  }
}

TEST(Lora, ForwardMatchesHandFormula) {
  torch::manual_seed(0);
  models::Linear lin(6, 5, /*bias=*/true);
  lin->to(torch::kFloat64);
  auto A = torch::randn({3, 6}, torch::kFloat64), B = torch::randn({5, 3}, torch::kFloat64);
  lin->attach_lora(A, B, 0.75, 0.0);
  auto x = torch::randn({2, 4, 6}, torch::kFloat64);
  auto want = torch::empty({2, 4, 5}, torch::kFloat64);
  auto W = lin->weight, b = lin->bias;
  for (int i = 0; i < 2; ++i)
    for (int t = 0; t < 4; ++t)
      for (int o = 0; o < 5; ++o) {
        double y = b[o].item<double>();
        for (int k = 0; k < 6; ++k) y += x[i][t][k].item<double>() * W[o][k].item<double>();
        for (int r = 0; r < 3; ++r) {
          double ax = 0;
          for (int k = 0; k < 6; ++k) ax += x[i][t][k].item<double>() * A[r][k].item<double>();
          y += 0.75 * ax * B[o][r].item<double>();
        }
        want[i][t][o] = y;
      }
  EXPECT_TRUE(torch::allclose(lin(x), want, 1e-12, 1e-12));
  // merge folds the same map into W
  lin->merge_lora();
  EXPECT_FALSE(lin->has_lora());
  EXPECT_TRUE(torch::allclose(lin(x), want, 1e-12, 1e-12));
}

// ---- save / load / merge -------------------------------------------------------------------------

TEST(Lora, SaveLoadRoundTrip) {
  test::TempDir tmp;
  auto m = models::Model::load(model("llama"), torch::kFloat32);
  train::LoraConfig c;
  c.r = 4;
  c.alpha = 16;
  auto lora = train::apply_lora(*m, c, 5);
  randomize(lora, 6);
  auto b = text_batch(4, 5, 2);
  auto want = embed(*m, b);
  lora.save(tmp / "adapter", "org/tiny-llama");

  json cfg = json::parse(test::read_text(tmp / "adapter/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_EQ(cfg["lora_alpha"], 16.0);
  EXPECT_EQ(cfg["base_model_name_or_path"], "org/tiny-llama");
  EXPECT_EQ(cfg["target_modules"], json({"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}));
  std::set<std::string> want_keys;
  for (auto& [n, t] : lora.named_parameters()) want_keys.insert(n);
  EXPECT_EQ(keys_of(tmp / "adapter/adapter_model.safetensors"), want_keys);

  auto m2 = models::Model::load(model("llama"), torch::kFloat32);
  auto back = train::load_lora(*m2, tmp / "adapter");
  EXPECT_EQ(back.modules().size(), 14u);
  EXPECT_FALSE(back.parameters()[0].requires_grad());
  EXPECT_TRUE(torch::equal(embed(*m2, b), want));
  auto m3 = models::Model::load(model("llama"), torch::kFloat32);
  EXPECT_TRUE(train::load_lora(*m3, tmp / "adapter", /*trainable=*/true).parameters()[0].requires_grad());
}

TEST(Lora, LlavaLayoutsShareAdapters) {
  test::TempDir tmp;
  auto legacy = models::Model::load(model("llava-legacy"), torch::kFloat32);
  auto fresh = models::Model::load(model("llava-new"), torch::kFloat32);
  auto b = text_batch(2, 5, 3);
  ASSERT_TRUE(torch::equal(embed(*legacy, b), embed(*fresh, b)));
  train::LoraConfig c;
  c.r = 2;
  auto lora = train::apply_lora(*legacy, c, 1);
  randomize(lora, 2);
  EXPECT_EQ(lora.named_parameters()[0].first,
            "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight");
  lora.save(tmp / "a", "legacy");
  train::load_lora(*fresh, tmp / "a");
  EXPECT_TRUE(torch::allclose(embed(*fresh, b), embed(*legacy, b), 1e-6, 1e-6));
}

namespace {

// A PEFT adapter folder as Python writes it, and the expected merged weights.
const char* kPeftScript = R"PY(import json, os, sys
import torch
sys.path.insert(0, sys.argv[1])
import st
base, out = sys.argv[2], sys.argv[3]
W = st.load_torch(os.path.join(base, "model.safetensors"))[0]
g = torch.Generator().manual_seed(7)

def adapter(path, mods, cfg):
    os.makedirs(path, exist_ok=True)
    tensors, deltas = {}, {}
    for name, (r, alpha) in mods.items():
        O, I = W[name + ".weight"].shape
        A = torch.randn(r, I, generator=g) * 0.3
        B = torch.randn(O, r, generator=g) * 0.3
        tensors["base_model.model." + name + ".lora_A.weight"] = A
        tensors["base_model.model." + name + ".lora_B.weight"] = B
        scaling = alpha / (r ** 0.5 if cfg["use_rslora"] else r)  # peft LoraLayer.update_layer
        deltas[name + ".weight"] = (B @ A) * scaling              # peft get_delta_weight
    st.save_torch(tensors, os.path.join(path, "adapter_model.safetensors"), {"format": "pt"})
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return deltas

cfg1 = {"peft_type": "LORA", "task_type": None, "r": 4, "lora_alpha": 8, "lora_dropout": 0.05,
        "target_modules": ["q_proj", "v_proj"], "rank_pattern": {"v_proj": 2},
        "alpha_pattern": {"layers.1.self_attn.v_proj": 6}, "bias": "none", "use_rslora": False,
        "fan_in_fan_out": False, "modules_to_save": None, "base_model_name_or_path": "tiny",
        "inference_mode": True, "init_lora_weights": True}
d1 = adapter(os.path.join(out, "a1"), {
    "model.layers.0.self_attn.q_proj": (4, 8), "model.layers.1.self_attn.q_proj": (4, 8),
    "model.layers.0.self_attn.v_proj": (2, 8), "model.layers.1.self_attn.v_proj": (2, 6)}, cfg1)
cfg2 = dict(cfg1, r=2, lora_alpha=2, target_modules="model\\.layers\\.0\\.mlp\\.up_proj|model\\.layers\\.0\\.self_attn\\.q_proj",
            rank_pattern={}, alpha_pattern={}, use_rslora=True)
d2 = adapter(os.path.join(out, "a2"), {"model.layers.0.self_attn.q_proj": (2, 2),
                                        "model.layers.0.mlp.up_proj": (2, 2)}, cfg2)
# expected: peft merge, in place on the base dtype, adapter after adapter
one, two = {}, {}
for k, d in d1.items():
    one[k] = (W[k].float() + d).to(W[k].dtype)
two = dict(one)
for k, d in d2.items():
    w = two.get(k, W[k])
    two[k] = (w.float() + d).to(W[k].dtype)
st.save_torch(one, os.path.join(out, "expected1.safetensors"))
st.save_torch(two, os.path.join(out, "expected2.safetensors"))
)PY";

void check_merged(const std::string& base, const std::string& merged, const std::string& expected,
                  double rtol) {
  auto ck_base = io::Checkpoint::open(base), ck_m = io::Checkpoint::open(merged);
  auto ck_e = io::Checkpoint::open(expected);
  EXPECT_EQ(ck_m.names(), ck_base.names());
  for (const auto& key : ck_base.names()) {
    const auto& tb = ck_base.get(key);
    const auto& tm = ck_m.get(key);
    EXPECT_EQ(tm.dtype, tb.dtype) << key;
    EXPECT_EQ(tm.shape, tb.shape) << key;
    if (!ck_e.has(key)) {
      EXPECT_EQ(std::memcmp(tm.data, tb.data, tb.nbytes), 0) << key << " must be copied unchanged";
      continue;
    }
    auto got = read(ck_m, key), want = read(ck_e, key);
    const double err = (got - want).abs().max().item<double>(), scale = want.abs().max().item<double>();
    EXPECT_LE(err, rtol * scale) << key;
    EXPECT_GT((got - read(ck_base, key)).abs().max().item<double>(), 10 * rtol * scale) << key << " unchanged";
  }
}

}  // namespace

TEST(Merge, PythonPeftAdaptersThroughTheCli) {
  for (const std::string base_name : {"llama", "llama-bf16"}) {
    SCOPED_TRACE(base_name);
    test::TempDir tmp;
    const std::string base = model(base_name);
    test::write_text(tmp / "peft.py", kPeftScript);
    auto py = test::run_cmd(test::python() + " " + tmp / "peft.py" + " " + std::string(UNIME_SOURCE_DIR) +
                            "/tests/gen " + base + " " + tmp.path().string());
    ASSERT_EQ(py.status, 0) << py.output;
    const double rtol = base_name == "llama" ? 1e-6 : 8e-3;  // f32; bf16 allows one rounding step

    auto r = test::run_cmd(test::unime_bin() + " merge --model " + base + " --lora " + tmp / "a1" +
                           " --output " + tmp / "m1");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("into 4 layer(s)"), std::string::npos) << r.output;
    check_merged(base + "/model.safetensors", tmp / "m1/model.safetensors", tmp / "expected1.safetensors", rtol);
    EXPECT_EQ(test::read_text(tmp / "m1/config.json"), test::read_text(base + "/config.json"));

    r = test::run_cmd(test::unime_bin() + " merge --model " + base + " --lora " + tmp / "a1" + " --lora " +
                      tmp / "a2" + " --output " + tmp / "m2");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("merged 2 adapter(s) into 5 layer(s)"), std::string::npos) << r.output;
    check_merged(base + "/model.safetensors", tmp / "m2/model.safetensors", tmp / "expected2.safetensors", rtol);

    if (base_name != "llama") continue;
    // merge == adapter forward
    auto with_adapter = models::Model::load(base, torch::kFloat32);
    auto set = train::load_lora(*with_adapter, tmp / "a1");
    ASSERT_EQ(set.modules().size(), 4u);
    EXPECT_NEAR(set.modules()[1].linear->lora_scaling, 4.0, 1e-12);  // layer 0 v_proj: r 2 alpha 8
    EXPECT_NEAR(set.modules()[3].linear->lora_scaling, 3.0, 1e-12);  // layer 1 v_proj: alpha_pattern 6
    auto merged = models::Model::load(tmp / "m1", torch::kFloat32);
    auto b = text_batch(3, 6, 4);
    auto e1 = embed(*with_adapter, b), e2 = embed(*merged, b);
    EXPECT_TRUE(torch::allclose(e1, e2, 1e-5, 1e-5)) << (e1 - e2).abs().max().item<double>();
    EXPECT_FALSE(torch::allclose(embed(*models::Model::load(base, torch::kFloat32), b), e2, 1e-3, 1e-3));
    // saving a loaded set keeps the per-module rank / alpha
    set.save(tmp / "resaved", "tiny");
    json cfg = json::parse(test::read_text(tmp / "resaved/adapter_config.json"));
    EXPECT_EQ(cfg["rank_pattern"]["model.layers.0.self_attn.v_proj"], 2);
    EXPECT_EQ(cfg["alpha_pattern"]["model.layers.1.self_attn.v_proj"], 6.0);
    auto again = models::Model::load(base, torch::kFloat32);
    train::load_lora(*again, tmp / "resaved");
    EXPECT_TRUE(torch::equal(embed(*again, b), e1));
  }
}

TEST(Merge, Errors) {
  test::TempDir tmp;
  const std::string base = model("llama");
  auto run = [&](const std::string& args) { return test::run_cmd(test::unime_bin() + " merge " + args); };
  auto expect_error = [&](const test::CmdResult& r, const std::string& needle) {
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_EQ(r.output.rfind("error: ", 0), 0u) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << "one line: " << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
  };
  expect_error(run("--model " + base + " --lora " + tmp / "nope" + " --output " + tmp / "o"), "nope");

  // a valid adapter to corrupt
  auto m = models::Model::load(base, torch::kFloat32);
  train::LoraConfig c;
  c.r = 2;
  c.target_modules = {"q_proj"};
  train::apply_lora(*m, c, 1).save(tmp / "good", "tiny");
  expect_error(run("--model " + base + " --lora " + tmp / "good" + " --output " + base), "output folder is the model folder");

  std::filesystem::create_directories(tmp / "noconfig");
  std::filesystem::copy_file(tmp / "good/adapter_model.safetensors", tmp / "noconfig/adapter_model.safetensors");
  expect_error(run("--model " + base + " --lora " + tmp / "noconfig" + " --output " + tmp / "o"), "adapter_config.json");

  auto write_adapter = [&](const std::string& dir, const std::string& key_a, std::vector<int64_t> shape_a) {
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(tmp / "good/adapter_config.json", dir + "/adapter_config.json");
    std::vector<float> a(shape_a[0] * shape_a[1], 0.1f), b(64 * 2, 0.1f);
    io::write_safetensors(dir + "/adapter_model.safetensors",
                          {{key_a, io::DType::F32, shape_a, a.data()},
                           {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", io::DType::F32, {64, 2}, b.data()}});
  };
  write_adapter(tmp / "badkey", "base_model.model.model.layers.0.self_attn.qq_proj.lora_A.weight", {2, 64});
  expect_error(run("--model " + base + " --lora " + tmp / "badkey" + " --output " + tmp / "o"), "qq_proj");
  write_adapter(tmp / "badshape", "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {2, 63});
  expect_error(run("--model " + base + " --lora " + tmp / "badshape" + " --output " + tmp / "o"), "expected lora_A [r, 64]");
  write_adapter(tmp / "badrank", "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {3, 64});
  expect_error(run("--model " + base + " --lora " + tmp / "badrank" + " --output " + tmp / "o"), "lora_B [64, r]");
  EXPECT_FALSE(std::filesystem::exists(tmp / "o/model.safetensors"));
}

// ---- NF4 / QLoRA ---------------------------------------------------------------------------------

namespace {

/// Independent scalar NF4 round trip: per block absmax, nearest level (ties to the lower one).
std::vector<float> nf4_reference(const std::vector<float>& x, int64_t block) {
  const auto& L = models::nf4_levels();
  std::vector<float> out(x.size());
  for (size_t b0 = 0; b0 < x.size(); b0 += block) {
    const size_t b1 = std::min(x.size(), b0 + block);
    float amax = 0;
    for (size_t i = b0; i < b1; ++i) amax = std::max(amax, std::abs(x[i]));
    for (size_t i = b0; i < b1; ++i) {
      const float v = amax > 0 ? x[i] / amax : 0.0f;
      size_t best = 0;
      for (size_t k = 1; k < L.size(); ++k)
        if (std::abs(v - L[k]) < std::abs(v - L[best])) best = k;
      out[i] = static_cast<float>(L[best]) * amax;
    }
  }
  return out;
}

}  // namespace

TEST(Nf4, MatchesScalarReference) {
  torch::manual_seed(3);
  auto w = torch::randn({37, 50});  // 1850 values: the last block is partial
  w[5].zero_();
  auto q = models::quantize_nf4(w, 64, false);
  EXPECT_EQ(q.codes.numel(), 29 * 64 / 2);
  EXPECT_EQ(q.absmax.numel(), 29);
  auto deq = models::dequantize_nf4(q);
  EXPECT_EQ(deq.sizes(), w.sizes());
  std::vector<float> x(w.data_ptr<float>(), w.data_ptr<float>() + w.numel());
  auto ref = nf4_reference(x, 64);
  int64_t mismatches = 0;
  for (int64_t i = 0; i < w.numel(); ++i) mismatches += deq.view({-1})[i].item<float>() != ref[i];
  EXPECT_EQ(mismatches, 0);
  // the packing: first value of a pair in the high nibble
  const int hi = q.codes[0].item<uint8_t>() >> 4;
  EXPECT_NEAR(models::nf4_levels()[hi] * q.absmax[0].item<float>(), deq.view({-1})[0].item<float>(), 1e-7);
}

// A weight larger than quantize_nf4's chunk (2^20 values) with a partial last block: the same
// codes as the scalar reference across chunk boundaries.
TEST(Nf4, LargeWeightQuantisedInChunks) {
  torch::manual_seed(5);
  auto w = torch::randn({1031, 1029});  // 1,060,899 values: 16,577 blocks, the last one partial
  auto q = models::quantize_nf4(w, 64, false);
  EXPECT_EQ(q.absmax.numel(), 16577);
  auto deq = models::dequantize_nf4(q).view({-1});
  std::vector<float> x(w.data_ptr<float>(), w.data_ptr<float>() + w.numel());
  auto ref = nf4_reference(x, 64);
  const float* d = deq.data_ptr<float>();
  int64_t mismatches = 0;
  for (int64_t i = 0; i < w.numel(); ++i) mismatches += d[i] != ref[i];
  EXPECT_EQ(mismatches, 0);
}

TEST(Nf4, DoubleQuantisation) {
  const auto& map = models::dynamic_map_8bit();
  ASSERT_EQ(map.size(), 256u);
  for (size_t i = 1; i < map.size(); ++i) EXPECT_LT(map[i - 1], map[i]);
  EXPECT_EQ(map.back(), 1.0);
  EXPECT_NEAR(map.front(), -0.99297, 1e-5);
  EXPECT_TRUE(std::find(map.begin(), map.end(), 0.0) != map.end());

  torch::manual_seed(4);
  auto w = torch::randn({300, 200}) * torch::rand({300, 1});  // uneven block scales, 938 blocks
  auto plain = models::quantize_nf4(w, 64, false), dq = models::quantize_nf4(w, 64, true);
  EXPECT_TRUE(dq.double_quant());
  EXPECT_EQ(dq.absmax_q.numel(), 938);
  EXPECT_EQ(dq.absmax2.numel(), 4);
  EXPECT_LT(dq.nbytes(), plain.nbytes());
  auto a = models::dequantize_nf4(plain), b = models::dequantize_nf4(dq);
  // the scales are 8-bit now: the weights move by a small fraction of their size
  EXPECT_LT((a - b).abs().max().item<double>(), 0.02 * w.abs().max().item<double>());
  EXPECT_GT((a - b).abs().max().item<double>(), 0.0);
  EXPECT_LT((b - w).abs().mean().item<double>(), 0.1 * w.abs().mean().item<double>());
}

TEST(Nf4, LinearForwardBackwardEqualsDenseDequantised) {
  torch::manual_seed(6);
  models::Linear q(64, 40, /*bias=*/true), d(64, 40, /*bias=*/true);
  q->quantize_nf4(/*double_quant=*/true);
  EXPECT_TRUE(q->is_quantized());
  for (auto& item : q->named_parameters()) EXPECT_NE(item.key(), "weight");
  {
    torch::NoGradGuard ng;
    d->weight.copy_(q->dense_weight());
    d->bias.copy_(q->bias);
  }
  auto A = torch::randn({4, 64}) * 0.1, B = torch::randn({40, 4}) * 0.1;
  q->attach_lora(A.clone().requires_grad_(true), B.clone().requires_grad_(true), 2.0, 0.0);
  d->attach_lora(A.clone().requires_grad_(true), B.clone().requires_grad_(true), 2.0, 0.0);
  auto xq = torch::randn({3, 5, 64}).requires_grad_(true);
  auto xd = xq.detach().clone().requires_grad_(true);
  auto yq = q(xq), yd = d(xd);
  EXPECT_TRUE(torch::allclose(yq, yd, 1e-5, 1e-5));
  auto g = torch::randn_like(yq);
  yq.backward(g);
  yd.backward(g);
  EXPECT_TRUE(torch::allclose(xq.grad(), xd.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(q->lora_A.grad(), d->lora_A.grad(), 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(q->lora_B.grad(), d->lora_B.grad(), 1e-4, 1e-5));
  EXPECT_THROW(q->merge_lora(), c10::Error);
}

// The CPU bf16 path pads more than 64 rows to a multiple of 64 (libtorch 1.13's slow row counts,
// models/linear.cpp): results must stay those of the unpadded product, in shape and value, for
// dense and NF4 weights, forward and backward. Attention in bf16 with GQA and a mask stays close to
// float32, and without autograd long inputs run in blocks of query rows: equal to one block.
TEST(Linear, Bf16RowPaddingKeepsResults) {
  torch::manual_seed(8);
  for (bool nf4 : {false, true}) {
    models::Linear l(96, 48, /*bias=*/true);
    l->to(torch::kBFloat16);
    if (nf4) l->quantize_nf4(false);
    torch::Tensor w32, b32;
    {
      torch::NoGradGuard ng;
      w32 = (nf4 ? l->dense_weight() : l->weight).to(torch::kFloat32);
      b32 = l->bias.to(torch::kFloat32);
    }
    for (int64_t rows : {61, 70, 130, 610}) {
      auto x = torch::randn({2, rows, 96}).to(torch::kBFloat16).requires_grad_(true);
      auto y = l(x);
      ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, rows, 48})) << rows;
      auto ref = torch::nn::functional::linear(x.detach().to(torch::kFloat32), w32, b32);
      EXPECT_LT((y.to(torch::kFloat32) - ref).abs().max().item<double>(), 0.05 * ref.abs().max().item<double>())
          << "nf4 " << nf4 << " rows " << rows;
      auto g = torch::randn({2, rows, 48});
      y.backward(g.to(torch::kBFloat16));
      ASSERT_EQ(x.grad().sizes(), x.sizes());
      auto gref = torch::matmul(g, w32);
      EXPECT_LT((x.grad().to(torch::kFloat32) - gref).abs().max().item<double>(), 0.05 * gref.abs().max().item<double>())
          << "nf4 " << nf4 << " rows " << rows;
    }
  }
  // attention: 4 query heads over 2 kv heads, causal mask with the lowest value, 70 and 130 rows
  for (int64_t T : {70, 130}) {
    auto q = torch::randn({2, 4, T, 16}), k = torch::randn({2, 2, T, 16}), v = torch::randn({2, 2, T, 16});
    auto real = torch::ones({2, T}, torch::kBool);
    real.index_put_({1, torch::indexing::Slice(T - 9, torch::indexing::None)}, false);
    auto m32 = models::causal_mask(real, 0, torch::kFloat32), m16 = models::causal_mask(real, 0, torch::kBFloat16);
    auto ref = models::attention(q, k, v, m32, 0.25);
    auto y = models::attention(q.to(torch::kBFloat16), k.to(torch::kBFloat16), v.to(torch::kBFloat16), m16, 0.25);
    ASSERT_EQ(y.sizes(), ref.sizes());
    EXPECT_LT((y.to(torch::kFloat32) - ref).abs().max().item<double>(), 0.05) << T;
    auto y2 = models::attention(q.to(torch::kBFloat16), k.to(torch::kBFloat16), v.to(torch::kBFloat16),
                                torch::Tensor(), 0.25);
    auto ref2 = models::attention(q, k, v, torch::Tensor(), 0.25);
    EXPECT_LT((y2.to(torch::kFloat32) - ref2).abs().max().item<double>(), 0.05) << T;
  }
  // blocks of query rows (no autograd, B * H * T * S above 4M): 520 rows = 4 blocks of 128 + 8
  const int64_t T = 520;
  auto q = torch::randn({2, 8, T, 16}), k = torch::randn({2, 4, T, 16}), v = torch::randn({2, 4, T, 16});
  auto real = torch::ones({2, T}, torch::kBool);
  real.index_put_({0, torch::indexing::Slice(T - 37, torch::indexing::None)}, false);
  auto m32 = models::causal_mask(real, 0, torch::kFloat32);
  auto whole = models::attention(q, k, v, m32, 0.25);  // autograd on: one block
  torch::Tensor blocks, blocks16;
  {
    torch::NoGradGuard ng;
    blocks = models::attention(q, k, v, m32, 0.25);
    blocks16 = models::attention(q.to(torch::kBFloat16), k.to(torch::kBFloat16), v.to(torch::kBFloat16),
                                 models::causal_mask(real, 0, torch::kBFloat16), 0.25);
  }
  ASSERT_EQ(blocks.sizes(), whole.sizes());
  EXPECT_LT((blocks - whole).abs().max().item<double>(), 1e-5);
  EXPECT_LT((blocks16.to(torch::kFloat32) - whole).abs().max().item<double>(), 0.05);
}

TEST(Nf4, QloraModel) {
  auto m = models::Model::load(model("llama"), torch::kFloat32);
  auto dense = models::Model::load(model("llama"), torch::kFloat32);
  const auto mem_dense = train::model_memory(*m);
  train::LoraConfig c;
  c.qlora = true;
  auto lora = train::apply_lora(*m, c, 1);
  const auto mem_q = train::model_memory(*m);
  EXPECT_EQ(mem_q.linear_dense, 0);
  EXPECT_GT(mem_q.linear_nf4, 0);
  EXPECT_NEAR(static_cast<double>(mem_q.linear_nf4) / mem_dense.linear_dense, (0.5 + 4.0 / 64) / 4, 1e-3);
  EXPECT_EQ(mem_q.lora, lora.n_parameters() * 4);
  // the QLoRA model computes with the dequantised weights
  {
    torch::NoGradGuard ng;
    auto ql = train::find_linears(*m, false), dl = train::find_linears(*dense, false);
    ASSERT_EQ(ql.size(), dl.size());
    for (size_t i = 0; i < ql.size(); ++i) dl[i].linear->weight.copy_(ql[i].linear->dense_weight());
  }
  auto b = text_batch(3, 5, 7);
  EXPECT_TRUE(torch::allclose(embed(*m, b), embed(*dense, b), 1e-5, 1e-5));
  // gradients reach the adapters through the NF4 layers
  randomize(lora, 8);
  for (auto& [prefix, mod] : m->modules()) mod->train();
  m->last_token_hidden(b).pow(2).sum().backward();
  for (auto& [name, p] : lora.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0) << name;
  }
}

// Memory of a real-size model in f32, bf16 and NF4 (only when UNIME_QLORA_MEMORY_MODEL names a
// model folder, e.g. `unime random-model --preset qwen2-0.5b --dtype bf16 --output DIR`).
TEST(Nf4, MemoryReport) {
  const char* dir = std::getenv("UNIME_QLORA_MEMORY_MODEL");
  if (!dir) GTEST_SKIP() << "set UNIME_QLORA_MEMORY_MODEL=<model dir> to measure";
  auto mib = [](int64_t b) { return static_cast<double>(b) / (1 << 20); };
  auto report = [&](const char* what, const train::ModelMemory& r) {
    std::printf("%-22s total %8.1f MiB  linear dense %8.1f  linear nf4 %7.1f  lora %6.1f  other %7.1f\n", what,
                mib(r.total()), mib(r.linear_dense), mib(r.linear_nf4), mib(r.lora), mib(r.other));
  };
  report("f32", train::model_memory(*models::Model::load(dir, torch::kFloat32)));
  report("bf16", train::model_memory(*models::Model::load(dir, torch::kBFloat16)));
  for (bool dq : {false, true}) {
    auto m = models::Model::load(dir, torch::kBFloat16);
    train::LoraConfig c;
    c.qlora = true;
    c.double_quant = dq;
    const auto t0 = std::chrono::steady_clock::now();
    auto lora = train::apply_lora(*m, c, 1);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    report(dq ? "nf4+dq (bf16 rest)" : "nf4 (bf16 rest)", train::model_memory(*m));
    std::printf("  quantise + attach: %.1f s, %lld LoRA parameters\n", s, static_cast<long long>(lora.n_parameters()));
  }
}
