// Model::load without a second copy of the weights, and the random-checkpoint writer behind the
// real-size memory bench (bench/bench-memory.cpp): streamed + sharded checkpoints load, bf16
// weights view the mapped shards (checked in /proc/self/maps), a write into one stays in the
// process (copy-on-write), an f32 load converts into owned memory, NF4 quantisation of a mapped
// model runs, and a preset folder's extra files are copied beside the weights.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/safetensors.h"
#include "models/model.h"
#include "train/lora.h"
#include "unime/random-model.h"

#include "test-util.h"

namespace fs = std::filesystem;
using unime::models::Model;
using unime::test::TempDir;

namespace {

/// The file backing address p in this process (from /proc/self/maps), or "" for anonymous memory.
std::string mapping_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::ifstream f("/proc/self/maps");
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream s(line);
    std::string range, perms, off, dev, inode, path;
    s >> range >> perms >> off >> dev >> inode;
    std::getline(s >> std::ws, path);
    const auto dash = range.find('-');
    const uintptr_t lo = std::stoull(range.substr(0, dash), nullptr, 16);
    const uintptr_t hi = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (a >= lo && a < hi) return path;
  }
  return "";
}

/// Last-token hidden states of one text + one image input (tiny-llava: 32 px image, 16 features).
torch::Tensor embed(Model& m) {
  torch::NoGradGuard ng;
  std::vector<int64_t> ids = {1};
  ids.insert(ids.end(), 16, m.config().llava.image_token_id);
  ids.insert(ids.end(), {5, 6, 7});
  auto t = torch::tensor(ids, torch::kInt64).view({1, -1});
  torch::manual_seed(0);
  auto px = torch::randn({1, 3, 32, 32});
  return m.last_token_hidden_packed(t, {static_cast<int64_t>(ids.size())}, px).to(torch::kFloat32);
}

}  // namespace

TEST(ModelLoad, StreamedShardedCheckpointLoadsWithoutCopies) {
  TempDir d;
  unime::RandomModelOptions o;
  o.dtype = "bf16";
  o.stream = true;
  o.max_shard_bytes = 60'000;  // tiny-llava is ~170 kB in bf16
  const std::string dir = d / "m";
  unime::write_random_model("tiny-llava", dir, o);
  ASSERT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  const auto idx = nlohmann::json::parse(unime::test::read_text(dir + "/model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [k, v] : idx["weight_map"].items()) shards.insert(v.get<std::string>());
  ASSERT_GE(shards.size(), 2u);
  for (const auto& s : shards) {
    EXPECT_TRUE(fs::exists(dir + "/" + s)) << s;
    EXPECT_NE(s.find("-of-0000"), std::string::npos) << s;  // model-0000k-of-0000n.safetensors
  }
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));

  auto m = Model::load(dir, torch::kBFloat16);
  int64_t viewed = 0;
  for (auto& [name, p] : m->named_parameters()) {
    if (p.numel() == 0) continue;
    const std::string file = mapping_of(p.data_ptr());
    EXPECT_NE(file.find(".safetensors"), std::string::npos) << name << " is not a view of its shard: '" << file << "'";
    viewed += file.find(".safetensors") != std::string::npos;
  }
  EXPECT_GT(viewed, 20);
  const auto h = embed(*m);
  EXPECT_TRUE(torch::isfinite(h).all().item<bool>());

  // copy-on-write: an in-place change (what a LoRA merge does) stays in this process
  auto w = m->decoder_->embed_tokens->weight;
  const float before = w[3][0].item<float>();
  {
    torch::NoGradGuard ng;
    w.add_(1.0);
  }
  EXPECT_NEAR(w[3][0].item<float>(), before + 1.0f, 0.02);
  auto again = Model::load(dir, torch::kBFloat16);
  EXPECT_EQ(again->decoder_->embed_tokens->weight[3][0].item<float>(), before);

  // f32 from a bf16 checkpoint: converted into owned memory, same values
  auto f = Model::load(dir, torch::kFloat32);
  auto fw = f->decoder_->embed_tokens->weight;
  EXPECT_EQ(fw.scalar_type(), torch::kFloat32);
  EXPECT_EQ(mapping_of(fw.data_ptr()).find(".safetensors"), std::string::npos);
  EXPECT_TRUE(torch::equal(fw, again->decoder_->embed_tokens->weight.to(torch::kFloat32)));
  const auto hf = embed(*f);
  EXPECT_GT(torch::cosine_similarity(hf, embed(*again), 1).min().item<float>(), 0.99);
}

TEST(ModelLoad, Nf4QuantisationOfAMappedModel) {
  TempDir d;
  unime::RandomModelOptions o;
  o.dtype = "bf16";
  unime::write_random_model("tiny-llava", d / "m", o);
  EXPECT_TRUE(fs::exists(d / "m/model.safetensors"));  // below the shard size: one file
  auto dense = Model::load(d / "m", torch::kBFloat16);
  auto q = Model::load(d / "m", torch::kBFloat16);
  unime::train::freeze(*q);
  unime::train::quantize_nf4(*q, /*include_vision=*/false, /*double_quant=*/false);
  const auto hq = embed(*q), hd = embed(*dense);
  EXPECT_TRUE(torch::isfinite(hq).all().item<bool>());
  EXPECT_GT(torch::cosine_similarity(hq, hd, 1).min().item<float>(), 0.8);
}

TEST(ModelLoad, PresetFolderFilesAreCopied) {
  TempDir d;
  fs::create_directories(d / "preset");
  unime::test::write_text(d / "preset/config.json", unime::random_model_config("tiny-llama"));
  unime::test::write_text(d / "preset/tokenizer_config.json", R"({"add_bos_token": true})");
  unime::test::write_text(d / "preset/notes.md", "not copied");
  auto r = unime::test::run_cmd(unime::test::unime_bin() + " random-model --preset " + (d / "preset") +
                                " --dtype bf16 --output " + (d / "out"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(unime::test::read_text(d / "out/tokenizer_config.json"), R"({"add_bos_token": true})");
  EXPECT_FALSE(fs::exists(d / "out/notes.md"));
  EXPECT_TRUE(fs::exists(d / "out/model.safetensors"));
  const auto cfg = nlohmann::json::parse(unime::test::read_text(d / "out/config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
}
