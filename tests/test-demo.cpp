// `unime demo --quick` end to end: it must finish and report every claim of the method with its
// values (the claims do not all hold yet at quick sizes: see README "The demo"; the run uses
// --no-check), and what it leaves must be real artefacts: the stage-0 checkpoint is a
// Hugging Face LLaVA folder whose embeddings equal reference.py's (plain-torch HF semantics, ids
// from the Rust tokenizers library, pixels from Pillow), the adapters are PEFT adapters that
// `unime eval` applies to reproduce the report's numbers, the pictures decode.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/world-tasks.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "test-util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace unime;

TEST(Demo, QuickRunEndToEnd) {
  test::TempDir tmp;
  const std::string D = tmp / "demo";
  auto r = test::run_cmd(test::unime_bin() + " demo --quick --no-check --seed 3 --output " + D);
  ASSERT_EQ(r.status, 0) << r.output;

  // the contract's files
  for (const char* f : {"base/config.json", "base/model.safetensors", "base/tokenizer.json",
                        "base/tokenizer_config.json", "base/preprocessor_config.json",
                        "stage1/adapter_model.safetensors", "stage1/adapter_config.json",
                        "stage2/adapter_model.safetensors", "stage2/adapter_config.json",
                        "teacher.npy", "world/world.json", "world/mmeb-eval/manifest.json",
                        "report.md", "report.html", "report.json"})
    EXPECT_TRUE(fs::exists(fs::path(D) / f)) << f;
  json rep = json::parse(test::read_text(D + "/report.json"));
  ASSERT_EQ(rep["claims"].size(), 8u);
  for (auto& c : rep["claims"]) {
    const bool holds = c["holds"].get<bool>();
    const std::string claim = c["claim"].get<std::string>();
    EXPECT_NE(r.output.find(std::string(holds ? "[holds] " : "[FAILS] ") + claim), std::string::npos) << c.dump();
    // What the method must show at quick size. The SugarCrepe-style claims are reported, not
    // asserted: 40 items per subset cannot resolve them (README "What the demo shows").
    if (claim.rfind("stage 2 beats stage 0", 0) == 0 || claim.rfind("stage 1 improves", 0) == 0 ||
        claim.rfind("the teacher is more", 0) == 0)
      EXPECT_TRUE(holds) << c.dump();
  }
  // stage 0 learned: the loss fell, and it is lower with the example's own image than with another
  const json& s0 = rep["stage0"];
  EXPECT_LT(s0["last_loss"].get<double>(), 0.3 * s0["first_loss"].get<double>()) << s0.dump();
  EXPECT_LT(s0["loss_own_image"].get<double>(), s0["loss_other_image"].get<double>()) << s0.dump();
  EXPECT_GT(s0["vision_accuracy"].get<double>(), 0.5) << s0.dump();  // the warm-up learned the cells
  for (auto& p : rep["pictures"]) {
    auto img = io::load_image(D + "/" + p["file"].get<std::string>());
    EXPECT_GT(img.width, 100) << p.dump();
  }
  const std::string md = test::read_text(D + "/report.md");
  EXPECT_NE(md.find("| + stage 2 (UniME: hard negatives) |"), std::string::npos) << md;

  // teacher.npy: one row per stage-1 sentence (3 per NLI row), unit rows
  auto te = io::read_npy_f32(D + "/teacher.npy");
  int64_t nli_rows = 0;
  {
    std::string s = test::read_text(D + "/world/nli.jsonl");
    for (char c : s) nli_rows += c == '\n';
  }
  ASSERT_EQ(te.shape.size(), 2u);
  EXPECT_EQ(te.shape[0], 3 * nli_rows);
  double n = 0;
  for (int64_t k = 0; k < te.shape[1]; ++k) n += double(te.data[k]) * te.data[k];
  EXPECT_NEAR(n, 1.0, 1e-5);

  // the adapters are applied by `unime eval` exactly as in the report
  r = test::run_cmd(test::unime_bin() + " eval sugarcrepe --model " + D + "/base --lora " + D +
                    "/stage1 --lora " + D + "/stage2 --no-cache --dtype f32 --data " + D + "/world/sugarcrepe --image-root " + D +
                    "/world --image-instruction '" + data::world::kInstrI2T + "' --output " +
                    (tmp / "sc.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  json sc = json::parse(test::read_text(tmp / "sc.json"));
  for (const char* k : {"Replace", "Swap", "Add"})
    EXPECT_NEAR(sc["scores"][k].get<double>(), rep["results"]["stage2"]["sugarcrepe"][k].get<double>(), 1e-9) << k;

  // the stage-0 checkpoint against the independent reference: a text and an image input
  const std::string base = D + "/base";
  std::vector<std::string> prompts = {"<s>A red circle left of a blue square.\nSummary above sentence in one word:",
                                      "<s><image>\nSummary above image in one word:"};
  test::write_text(tmp / "tok-in.json", json{{"texts", json{prompts[0].substr(3), prompts[1].substr(3)}}}.dump());
  r = test::run_cmd("node " + std::string(UNIME_SOURCE_DIR) + "/tests/node/hf-reference.js " + base +
                    "/tokenizer.json " + (tmp / "tok-in.json") + " " + (tmp / "tok-out.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  json ids = json::parse(test::read_text(tmp / "tok-out.json"))["with_special"];
  const std::string image = D + "/world/images/retrieval/00000.png";
  json jobs = json::array({{{"op", "clip"}, {"src", image}, {"config", base + "/preprocessor_config.json"},
                            {"out", tmp / "px.npy"}}});
  test::write_text(tmp / "jobs.json", jobs.dump());
  r = test::run_cmd(test::python() + " " + test::gen_script("pil_ref.py") + " " + (tmp / "jobs.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  json ref_in = json::array({{{"input_ids", ids[0]}}, {{"input_ids", ids[1]}, {"pixel_values", tmp / "px.npy"}}});
  test::write_text(tmp / "ref-in.json", ref_in.dump());
  r = test::run_cmd(test::python() + " " + test::gen_script("reference.py") + " --model " + base +
                    " --inputs " + (tmp / "ref-in.json") + " --output " + (tmp / "ref.safetensors"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto ref = io::SafetensorsFile::open(tmp / "ref.safetensors");
  test::write_text(tmp / "in.jsonl", json{{"text", "A red circle left of a blue square."}}.dump() + "\n" +
                                         json{{"image", image}}.dump() + "\n");
  r = test::run_cmd(test::unime_bin() + " embed --model " + base + " --dtype f32 --input " + (tmp / "in.jsonl") +
                    " --output " + (tmp / "out.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto out = io::read_npy_f32(tmp / "out.npy");
  const int64_t Dm = out.shape[1];
  for (int i = 0; i < 2; ++i) {
    const auto& t = ref->tensors().at("emb." + std::to_string(i));
    ASSERT_EQ(t.shape, (std::vector<int64_t>{Dm}));
    const float* want = reinterpret_cast<const float*>(t.data);
    double d = 0;
    for (int64_t k = 0; k < Dm; ++k) d = std::max(d, double(std::abs(out.data[i * Dm + k] - want[k])));
    EXPECT_LT(d, 1e-4) << "input " << i;
  }
}
