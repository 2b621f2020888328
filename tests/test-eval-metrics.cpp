// Evaluator metrics on hand-made score matrices and tiny hand-made data sets (no model):
// tie rule, duplicate candidates, Recall@K both ways, SugarCrepe, MMEB means, readers' errors,
// the embedding cache (with a counting fake embedder) and the report comparison.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "core/error.h"
#include "eval/benchmarks.h"
#include "eval/emb-cache.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "test-util.h"

namespace ev = unime::eval;
using unime::test::TempDir;
using unime::test::write_text;

namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const unime::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// 2-D unit vector at angle a (radians): dot(v(a), v(b)) = cos(a - b).
std::vector<float> v2(double a) { return {static_cast<float>(std::cos(a)), static_cast<float>(std::sin(a))}; }

// Embedding rows for a table: each input's vector from `angle(text or image)`.
std::vector<float> embed_by(const ev::InputTable& t, const std::map<std::string, double>& angle) {
  std::vector<float> out;
  for (const auto& in : t.inputs()) {
    const std::string key = in.images.empty() ? in.text
                                              : std::filesystem::path(in.images[0]).filename().string() + "|" + in.text;
    auto it = angle.find(key);
    EXPECT_NE(it, angle.end()) << "no angle for '" << key << "'";
    auto v = v2(it == angle.end() ? 0 : it->second);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

}  // namespace

TEST(EvalMetrics, HitAt1TiesAreMisses) {
  const float a[] = {0.9f, 0.1f, 0.5f};
  const float tie[] = {0.5f, 0.1f, 0.5f};
  const float lose[] = {0.5f, 0.7f};
  const float dup_neg[] = {0.9f, 0.3f, 0.3f};
  EXPECT_TRUE(ev::hit_at_1(a, 3));
  EXPECT_FALSE(ev::hit_at_1(tie, 3));
  EXPECT_FALSE(ev::hit_at_1(lose, 2));
  EXPECT_TRUE(ev::hit_at_1(dup_neg, 3));
  const float one[] = {-0.2f};
  EXPECT_TRUE(ev::hit_at_1(one, 1));  // a single candidate is always the argmax
}

TEST(EvalMetrics, RankOfGold) {
  const float s[] = {0.1f, 0.8f, 0.5f, 0.8f, 0.3f};
  EXPECT_EQ(ev::rank_of_gold(s, 5, {2}), 3);     // 0.8, 0.8 above it
  EXPECT_EQ(ev::rank_of_gold(s, 5, {1}), 2);     // tie with index 3 counts against
  EXPECT_EQ(ev::rank_of_gold(s, 5, {1, 3}), 1);  // both golds: best gold first
  EXPECT_EQ(ev::rank_of_gold(s, 5, {0, 4}), 4);
  EXPECT_NE(error_of([&] { ev::rank_of_gold(s, 5, {5}); }).find("out of range"), std::string::npos);
}

TEST(EvalMetrics, RecallAtKHand) {
  // 3 queries x 4 candidates; gold: q0 -> 0, q1 -> {1,2}, q2 -> 3.
  const std::vector<float> s = {0.9f, 0.2f, 0.3f, 0.1f,   // q0: rank 1
                                0.9f, 0.1f, 0.8f, 0.95f,  // q1: best gold 0.8, beaten by 0.9, 0.95 -> rank 3
                                0.4f, 0.4f, 0.4f, 0.4f};  // q2: all tie -> rank 4
  const std::vector<std::vector<int64_t>> g = {{0}, {1, 2}, {3}};
  EXPECT_DOUBLE_EQ(ev::recall_at_k(s, 3, 4, g, 1), 1.0 / 3);
  EXPECT_DOUBLE_EQ(ev::recall_at_k(s, 3, 4, g, 2), 1.0 / 3);
  EXPECT_DOUBLE_EQ(ev::recall_at_k(s, 3, 4, g, 3), 2.0 / 3);
  EXPECT_DOUBLE_EQ(ev::recall_at_k(s, 3, 4, g, 4), 1.0);
}

TEST(EvalMetrics, PairwiseAccuracyAndScoreMatrix) {
  EXPECT_DOUBLE_EQ(ev::pairwise_accuracy({0.5f, 0.2f, 0.3f, 0.9f}, {0.4f, 0.3f, 0.3f, 0.1f}), 0.5);
  auto m = ev::score_matrix({1, 0, 0, 1}, {0.6f, 0.8f, 1, 0, 0, 1}, 2);  // [2 x 3]
  ASSERT_EQ(m.size(), 6u);
  EXPECT_FLOAT_EQ(m[0], 0.6f);
  EXPECT_FLOAT_EQ(m[1], 1.0f);
  EXPECT_FLOAT_EQ(m[5], 1.0f);
  EXPECT_FLOAT_EQ(m[3], 0.8f);
}

TEST(EvalMetrics, MmebMeansUnweighted) {
  std::map<std::string, ev::DatasetInfo> info = {{"A", {"classification", "IND"}},
                                                 {"B", {"classification", "OOD"}},
                                                 {"C", {"vqa", "IND"}},
                                                 {"D", {"grounding", "OOD"}}};
  auto m = ev::mmeb_means({{"A", 0.8}, {"B", 0.4}, {"C", 0.5}, {"D", 0.1}}, info);
  EXPECT_DOUBLE_EQ(m["classification"], 0.6);
  EXPECT_DOUBLE_EQ(m["vqa"], 0.5);
  EXPECT_DOUBLE_EQ(m["grounding"], 0.1);
  EXPECT_EQ(m.count("retrieval"), 0u);
  EXPECT_DOUBLE_EQ(m["IND"], 0.65);
  EXPECT_DOUBLE_EQ(m["OOD"], 0.25);
  EXPECT_DOUBLE_EQ(m["overall"], 0.45);
  EXPECT_NE(error_of([&] { ev::mmeb_means({{"E", 1.0}}, info); }).find("'E'"), std::string::npos);
}

TEST(EvalMetrics, BuiltinManifestHas36) {
  auto m = ev::builtin_mmeb_manifest();
  EXPECT_EQ(m.size(), 36u);
  int ind = 0, cls = 0, vqa = 0, ret = 0, gr = 0;
  for (const auto& [k, v] : m) {
    ind += v.split == "IND";
    cls += v.meta_task == "classification";
    vqa += v.meta_task == "vqa";
    ret += v.meta_task == "retrieval";
    gr += v.meta_task == "grounding";
  }
  EXPECT_EQ(ind, 20);
  EXPECT_EQ(cls, 10);
  EXPECT_EQ(vqa, 10);
  EXPECT_EQ(ret, 12);
  EXPECT_EQ(gr, 4);
  EXPECT_EQ(m["MSCOCO"].meta_task, "grounding");
  EXPECT_EQ(m["Wiki-SS-NQ"].split, "OOD");
}

TEST(EvalMmeb, HandMadeDataset) {
  TempDir t;
  std::filesystem::create_directories(t / "img");
  for (const char* f : {"q0.png", "q1.png", "q2.png"}) write_text(t / ("img/" + std::string(f)), "x");
  // q0: gold "cat" at angle 0.1 vs query 0 -> hit. q1: the gold is duplicated among the
  // candidates -> exact tie -> miss. q2: "dog" beats the gold -> miss. Then a manifest entry.
  write_text(t / "Toy.jsonl",
             R"({"qry_text":"<|image_1|> what","qry_img_path":"img/q0.png","tgt_text":["cat","dog","bird"],"tgt_img_path":["","",""]})"
             "\n"
             R"({"qry_text":"<|image_1|> what","qry_img_path":"img/q1.png","tgt_text":["cat","dog","cat"]})"
             "\n"
             R"({"qry_text":"<|image_1|> what","qry_img_path":"img/q2.png","tgt_text":["cat","dog","bird"],"tgt_img_path":["","",""]})"
             "\n");
  write_text(t / "manifest.json", R"({"Toy": {"meta_task": "vqa", "split": "OOD"}})");
  auto d = ev::read_mmeb(t.path().string(), "");
  ASSERT_EQ(d.datasets.size(), 1u);
  EXPECT_EQ(d.table.size(), 6);  // 3 queries + cat, dog, bird: duplicates share an id
  EXPECT_EQ(d.datasets[0].tgt[1][0], d.datasets[0].tgt[1][2]);
  auto emb = embed_by(d.table, {{"q0.png|<|image_1|> what", 0.0},
                                {"q1.png|<|image_1|> what", 0.0},
                                {"q2.png|<|image_1|> what", 1.0},
                                {"cat", 0.1},
                                {"dog", 0.9},
                                {"bird", 2.0}});
  auto r = ev::score_mmeb(d, emb, 2);
  ASSERT_EQ(r.datasets.size(), 1u);
  EXPECT_EQ(r.datasets[0].first, "Toy");
  EXPECT_DOUBLE_EQ(r.datasets[0].second, 1.0 / 3);
  EXPECT_DOUBLE_EQ(r.means["vqa"], 1.0 / 3);
  EXPECT_DOUBLE_EQ(r.means["OOD"], 1.0 / 3);
  EXPECT_EQ(r.means.count("IND"), 0u);
}

TEST(EvalMmeb, ClearErrors) {
  TempDir t;
  write_text(t / "Toy.jsonl", R"({"qry_text":"q","tgt_text":["a"]})"
                              "\n"
                              R"({"qry_text":"q","qry_img_path":"nope.png","tgt_text":["a"]})"
                              "\n");
  write_text(t / "manifest.json", R"({"Toy": {"meta_task": "vqa", "split": "IND"}})");
  std::string e = error_of([&] { ev::read_mmeb(t.path().string(), ""); });
  EXPECT_NE(e.find("Toy.jsonl:2"), std::string::npos) << e;
  EXPECT_NE(e.find("nope.png"), std::string::npos) << e;
  EXPECT_NE(e.find("not found"), std::string::npos) << e;

  write_text(t / "Toy.jsonl", R"({"qry_text":"q","tgt_text":["a", ""],"tgt_img_path":["",""]})" "\n");
  e = error_of([&] { ev::read_mmeb(t.path().string(), ""); });
  EXPECT_NE(e.find("Toy.jsonl:1"), std::string::npos) << e;
  EXPECT_NE(e.find("candidate 1 has neither text nor image"), std::string::npos) << e;

  write_text(t / "Toy.jsonl", R"({"qry_text":"","tgt_text":["a"]})" "\n");
  e = error_of([&] { ev::read_mmeb(t.path().string(), ""); });
  EXPECT_NE(e.find("Toy.jsonl:1: query has neither text nor image"), std::string::npos) << e;

  write_text(t / "Toy.jsonl", R"({"qry_text":"q","tgt_text":["a","b"],"tgt_img_path":[""]})" "\n");
  e = error_of([&] { ev::read_mmeb(t.path().string(), ""); });
  EXPECT_NE(e.find("Toy.jsonl:1: 'tgt_text' has 2 entries but 'tgt_img_path' has 1"), std::string::npos) << e;

  write_text(t / "Other.jsonl", R"({"qry_text":"q","tgt_text":["a"]})" "\n");
  e = error_of([&] { ev::read_mmeb((t / "Other.jsonl"), ""); });
  EXPECT_NE(e.find("'Other' is not a known MMEB dataset"), std::string::npos) << e;

  write_text(t / "manifest.json", R"({"Toy": {"meta_task": "vqa", "split": "both"}})");
  e = error_of([&] { ev::read_mmeb(t.path().string(), ""); });
  EXPECT_NE(e.find("split must be IND or OOD, got 'both'"), std::string::npos) << e;
}

TEST(EvalRetrieval, HandMade) {
  TempDir t;
  for (const char* f : {"a.png", "b.png", "c.png"}) write_text(t / f, "x");
  write_text(t / "r.jsonl", R"({"image":"a.png","captions":["ca1","ca2"]})"
                            "\n"
                            R"({"image":"b.png","caption":"cb"})"
                            "\n"
                            R"({"image":"c.png","captions":["cc"]})"
                            "\n");
  auto d = ev::read_retrieval(t / "r.jsonl", "");
  ASSERT_EQ(d.image.size(), 3u);
  ASSERT_EQ(d.text.size(), 4u);
  // Images at 0, 1, 2 rad; captions ca1 at 0, ca2 at 1.0 (on top of b), cb at 1.1, cc at 2.5.
  auto emb = embed_by(d.table, {{"a.png|", 0.0}, {"b.png|", 1.0}, {"c.png|", 2.0},
                                {"ca1", 0.0}, {"ca2", 1.0}, {"cb", 1.1}, {"cc", 2.5}});
  auto s = ev::score_retrieval(d, emb, 2);
  std::map<std::string, double> m(s.begin(), s.end());
  // t2i: ca1 -> a rank 1; ca2 -> a: cos(1) below b (1) -> rank >= 2 (c is about level with a,
  // so 2 or 3 after rounding: only R@1 and R@5 are asserted); cb -> b rank 1; cc -> c rank 1.
  EXPECT_DOUBLE_EQ(m["t2i_R@1"], 3.0 / 4);
  EXPECT_DOUBLE_EQ(m["t2i_R@5"], 1.0);
  // i2t: a -> best of {ca1, ca2} = ca1 (1.0) rank 1; b -> cb cos(0.1) vs ca2 cos(0) -> rank 2;
  // c -> cc cos(0.5)=0.878 vs cb cos(0.9)=0.62 -> rank 1.
  EXPECT_DOUBLE_EQ(m["i2t_R@1"], 2.0 / 3);
  EXPECT_DOUBLE_EQ(m["i2t_R@10"], 1.0);
  // t2t: only image a has two captions. ca1 -> ca2 cos(1) beats cb cos(1.1): hit; ca2 -> cb
  // cos(0.1) beats ca1 cos(1): rank 2. The query itself is never a candidate.
  auto tt = ev::score_text_to_text(d, emb, 2);
  ASSERT_EQ(tt.size(), 2u);
  EXPECT_EQ(tt[0].first, "t2t_R@1");
  EXPECT_DOUBLE_EQ(tt[0].second, 0.5);
  EXPECT_DOUBLE_EQ(tt[1].second, 1.0);

  write_text(t / "r.jsonl", R"({"image":"zz.png","captions":["x"]})" "\n");
  std::string e = error_of([&] { ev::read_retrieval(t / "r.jsonl", ""); });
  EXPECT_NE(e.find("r.jsonl:1: row image 'zz.png' not found"), std::string::npos) << e;
}

TEST(EvalSugarCrepe, HandMade) {
  TempDir t;
  std::filesystem::create_directories(t / "sc");
  for (const char* f : {"a.png", "b.png"}) write_text(t / f, "x");
  write_text(t / "sc/replace-obj.json",
             R"({"0": {"filename": "a.png", "caption": "p1", "negative_caption": "n1"},
                 "1": {"filename": "b.png", "caption": "p2", "negative_caption": "n2"}})");
  write_text(t / "sc/replace-att.json",
             R"({"0": {"filename": "a.png", "caption": "p1", "negative_caption": "n2"}})");
  write_text(t / "sc/swap-obj.json",
             R"({"0": {"filename": "b.png", "caption": "p2", "negative_caption": "n3"}})");
  auto d = ev::read_sugarcrepe(t / "sc", t.path().string());
  // a at 0: p1 0.1 vs n1 0.3 -> right; vs n2 -0.1 (tie in |angle|: equal cosines -> wrong).
  // b at 1: p2 1.2 vs n2 -0.1 -> right; vs n3 0.5 -> right.
  auto emb = embed_by(d.table, {{"a.png|", 0.0}, {"b.png|", 1.0}, {"p1", 0.1}, {"p2", 1.2},
                                {"n1", 0.3}, {"n2", -0.1}, {"n3", 0.5}});
  auto s = ev::score_sugarcrepe(d, emb, 2);
  std::map<std::string, double> m(s.begin(), s.end());
  EXPECT_DOUBLE_EQ(m["replace-obj"], 1.0);
  EXPECT_DOUBLE_EQ(m["replace-att"], 0.0);
  EXPECT_DOUBLE_EQ(m["swap-obj"], 1.0);
  EXPECT_DOUBLE_EQ(m["Replace"], 0.5);
  EXPECT_DOUBLE_EQ(m["Swap"], 1.0);
  EXPECT_EQ(m.count("Add"), 0u);
}

// --image-instruction / --text-instruction reach every input of their side, nothing else.
TEST(EvalPairInstructions, ReachTheirSide) {
  TempDir t;
  std::filesystem::create_directories(t / "sc");
  for (const char* f : {"a.png", "b.png"}) write_text(t / f, "x");
  write_text(t / "r.jsonl", R"({"image":"a.png","captions":["ca1","ca2"]})" "\n");
  write_text(t / "sc/swap-att.json",
             R"({"0": {"filename": "b.png", "caption": "p", "negative_caption": "n"}})");
  const ev::PairInstructions ins{"<|image_1|>\nFind a caption.", "Represent the caption."};
  auto r = ev::read_retrieval(t / "r.jsonl", "", ins);
  EXPECT_EQ(r.table.inputs()[r.image[0]].instruction, ins.image);
  for (int64_t id : r.text) EXPECT_EQ(r.table.inputs()[id].instruction, ins.text);
  auto s = ev::read_sugarcrepe(t / "sc", t.path().string(), ins);
  EXPECT_EQ(s.table.inputs()[s.subsets[0].image[0]].instruction, ins.image);
  EXPECT_EQ(s.table.inputs()[s.subsets[0].pos[0]].instruction, ins.text);
  EXPECT_EQ(s.table.inputs()[s.subsets[0].neg[0]].instruction, ins.text);
  auto plain = ev::read_retrieval(t / "r.jsonl", "");
  EXPECT_EQ(plain.table.inputs()[plain.image[0]].instruction, "");
}

// Counts the inputs it embeds; vector = a function of the text and the image's bytes.
class FakeEmbedder : public unime::Embedder {
 public:
  int64_t calls = 0;
  std::vector<float> embed(const std::vector<unime::EmbedInput>& in,
                           const std::function<void(const unime::EmbedProgress&)>&) override {
    std::vector<float> out;
    for (const auto& x : in) {
      ++calls;
      double a = static_cast<double>(x.text.size());
      for (const auto& p : x.images) a += static_cast<double>(unime::test::read_text(p).size()) * 0.37;
      auto v = v2(a);
      out.insert(out.end(), v.begin(), v.end());
    }
    return out;
  }
  int64_t dim() const override { return 2; }
  std::vector<int64_t> token_ids(const unime::EmbedInput&) override { return {}; }
  std::string describe() const override { return "fake"; }
};

TEST(EvalCache, SecondRunEmbedsNothingAndImagesInvalidate) {
  TempDir t;
  write_text(t / "a.png", "xx");
  std::vector<unime::EmbedInput> in(3);
  in[0].text = "hello";
  in[1].images = {t / "a.png"};
  in[2].text = "hi";
  in[2].images = {t / "a.png"};
  FakeEmbedder f;
  ev::EmbedStats st;
  const std::string key = ev::model_cache_key(t.path().string(), {}, f.describe());
  auto first = ev::embed_cached(f, in, t / "cache", key, &st);
  EXPECT_EQ(st.embedded, 3);
  EXPECT_EQ(st.cached, 0);
  auto second = ev::embed_cached(f, in, t / "cache", key, &st);
  EXPECT_EQ(st.embedded, 0);
  EXPECT_EQ(st.cached, 3);
  EXPECT_EQ(f.calls, 3);
  EXPECT_EQ(first, second);
  // Another model key: nothing shared. LoRA adapters enter the key, in order.
  ev::embed_cached(f, in, t / "cache", key + "lora=x\n", &st);
  EXPECT_EQ(st.embedded, 3);
  std::filesystem::create_directories(t / "la");
  std::filesystem::create_directories(t / "lb");
  write_text(t / "la/adapter_config.json", "{}");
  write_text(t / "lb/adapter_config.json", "{\"r\": 2}");
  unime::EmbedderOptions ab, ba;
  ab.lora = {t / "la", t / "lb"};
  ba.lora = {t / "lb", t / "la"};
  const std::string k_ab = ev::model_cache_key(t.path().string(), ab, "fake");
  EXPECT_NE(k_ab, key);
  EXPECT_NE(k_ab, ev::model_cache_key(t.path().string(), ba, "fake"));
  EXPECT_EQ(k_ab, ev::model_cache_key(t.path().string(), ab, "fake"));
  EXPECT_NE(ev::model_cache_key(t.path().string(), {}, "other"), key);
  // The image changes (size and mtime): its two inputs are embedded again, the text is not.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write_text(t / "a.png", "xxxxx");
  auto third = ev::embed_cached(f, in, t / "cache", key, &st);
  EXPECT_EQ(st.embedded, 2);
  EXPECT_EQ(st.cached, 1);
  EXPECT_NE(third[2], second[2]);
}

TEST(EvalCache, HashAndTable) {
  // FNV-1a 128 reference vectors (draft-eastlake-fnv): "" and "a".
  EXPECT_EQ(ev::hash_hex(""), "6c62272e07bb014262b821756295c58d");
  EXPECT_EQ(ev::hash_hex("a"), "d228cb696f1a8caf78912b704e4a8964");
  ev::InputTable tab;
  unime::EmbedInput a, b;
  a.text = "x";
  b.text = "x";
  b.images = {"p.png"};
  EXPECT_EQ(tab.add(a), 0);
  EXPECT_EQ(tab.add(b), 1);
  EXPECT_EQ(tab.add(a), 0);
  EXPECT_EQ(tab.size(), 2);
}

TEST(EvalReport, CompareAndMarkdown) {
  auto a = ev::make_report("mmeb", {{"X", 0.5}, {"overall", 0.25}});
  auto b = ev::make_report("mmeb", {{"X", 0.75}, {"Y", 0.1}});
  std::string md = ev::compare_markdown(a, b, "A", "B");
  EXPECT_NE(md.find("| X | 50.00 | 75.00 | +25.00 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| overall | 25.00 | - | - |"), std::string::npos) << md;
  EXPECT_NE(md.find("| Y | - | 10.00 | - |"), std::string::npos) << md;
  TempDir t;
  ev::write_report(t / "r.json", a);
  EXPECT_TRUE(std::filesystem::exists(t / "r.md"));
  auto back = ev::read_report(t / "r.json");
  EXPECT_EQ(back["scores"]["X"].get<double>(), 0.5);
  write_text(t / "bad.json", "{\"scores\": {\"X\": \"high\"}}");
  EXPECT_NE(error_of([&] { ev::read_report(t / "bad.json"); }).find("score 'X' must be a number"),
            std::string::npos);
}
