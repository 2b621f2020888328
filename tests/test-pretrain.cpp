// Stage-0 pretraining (src/train/pretrain.*) on a tiny generated world: the vision-tower warm-up
// learns the scene labels, the LLaVA stage writes a loadable HF folder, and bad label files get
// one line naming the file and the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "data/world.h"
#include "io/fs.h"
#include "io/safetensors.h"
#include "text/bpe-train.h"
#include "train/pretrain.h"
#include "train/trainer.h"
#include "unime/random-model.h"

namespace fs = std::filesystem;
using namespace unime;

namespace {

struct Fixture {
  fs::path dir, world, tok;
};

const Fixture& fixture() {
  static Fixture f = [] {
    Fixture x;
    x.dir = fs::temp_directory_path() / "unime-test-pretrain";
    fs::remove_all(x.dir);
    x.world = x.dir / "world";
    x.tok = x.dir / "tok";
    auto cfg = data::quick_world_config(5);
    cfg.pretrain_scenes = 640;
    cfg.image_size = 96;  // 32-px patches: one per grid cell, as the demo
    data::generate_world(cfg, x.world.string(), false);
    std::vector<std::string> lines;
    std::istringstream in(io::read_file((x.world / "corpus.txt").string()));
    for (std::string l; std::getline(in, l);)
      if (!l.empty()) lines.push_back(l);
    text::BpeTrainOptions bo;
    bo.vocab_size = 512;
    auto t = text::train_bpe(lines, bo);
    fs::create_directories(x.tok);
    io::write_file_atomic((x.tok / "tokenizer.json").string(), t.tokenizer_json);
    io::write_file_atomic((x.tok / "tokenizer_config.json").string(), t.tokenizer_config_json);
    return x;
  }();
  return f;
}

train::PretrainOptions options(const std::string& out) {
  const auto& f = fixture();
  const int64_t vocab = nlohmann::json::parse(io::read_file((f.tok / "tokenizer.json").string()))["model"]["vocab"].size();
  nlohmann::json text{{"model_type", "llama"}, {"hidden_size", 64}, {"intermediate_size", 128},
                      {"num_hidden_layers", 2}, {"num_attention_heads", 2}, {"num_key_value_heads", 2},
                      {"vocab_size", vocab}, {"max_position_embeddings", 512}, {"rms_norm_eps", 1e-5},
                      {"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", 3}};
  nlohmann::json vision{{"model_type", "clip_vision_model"}, {"hidden_size", 64}, {"intermediate_size", 128},
                        {"num_hidden_layers", 2}, {"num_attention_heads", 2}, {"image_size", 96},
                        {"patch_size", 32}, {"hidden_act", "quick_gelu"}};
  nlohmann::json cfg{{"architectures", {"LlavaForConditionalGeneration"}}, {"model_type", "llava"},
                     {"image_token_index", 4}, {"projector_hidden_act", "gelu"},
                     {"vision_feature_layer", -2}, {"vision_feature_select_strategy", "default"},
                     {"text_config", text}, {"vision_config", vision}, {"torch_dtype", "float32"}};
  train::PretrainOptions o;
  o.config = cfg.dump();
  o.tokenizer_dir = f.tok.string();
  o.preprocessor_config = clip_preprocessor_config(96);
  o.data = {(f.world / "captions.jsonl").string(), (f.world / "vqa.jsonl").string()};
  o.output = (f.dir / out).string();
  o.steps = 4;
  o.batch_size = 8;
  o.quiet = true;
  return o;
}

std::string error_of(const train::PretrainOptions& o) {
  try {
    train::run_pretrain(o);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Pretrain, VisionWarmupLearnsTheSceneLabels) {
  auto o = options("warm");
  o.vision_labels = (fixture().world / "scenes.jsonl").string();
  o.vision_steps = 150;
  o.vision_batch = 32;
  o.vision_lr = 2e-3;
  auto r = train::run_pretrain(o);
  std::printf("vision warm-up: loss %.3f -> %.3f, occupied-cell colour+shape accuracy %.3f\n",
              r.vision_first_loss, r.vision_last_loss, r.vision_accuracy);
  EXPECT_LT(r.vision_last_loss, 0.7 * r.vision_first_loss);
  // accuracies are on held-out images; chance is at most 1/6 (shape) and 1/9 (colour) on occupied cells
  EXPECT_GT(r.vision_accuracy, 0.3);
  EXPECT_GT(r.vision_colour_accuracy, 0.8);
  std::printf("  colour %.3f, shape %.3f\n", r.vision_colour_accuracy, r.vision_shape_accuracy);
  EXPECT_NEAR(r.vision_accuracy, 0.5 * (r.vision_colour_accuracy + r.vision_shape_accuracy), 1e-9);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"})
    EXPECT_TRUE(fs::exists(fs::path(o.output) / f)) << f;
  EXPECT_FALSE(fs::exists(o.output + ".tmp"));
  EXPECT_EQ(r.vision_position_accuracy, 0);  // not asked for
}

TEST(Pretrain, VisionWarmupCanTeachEachFeatureWhichCellItIs) {
  auto o = options("warm-position");
  o.vision_labels = (fixture().world / "scenes.jsonl").string();
  o.vision_steps = 60;
  o.vision_batch = 32;
  o.vision_lr = 2e-3;
  o.vision_position = true;
  o.steps = 1;
  auto r = train::run_pretrain(o);
  std::printf("vision warm-up with positions: held-out cells named right %.3f (chance 1/9)\n",
              r.vision_position_accuracy);
  EXPECT_GT(r.vision_position_accuracy, 0.9);
}

// A second phase (PretrainOptions::init) starts from the earlier run's weights, not random ones: at
// learning rate 0 it writes them back bit for bit, and a config of another shape is refused by name.
TEST(Pretrain, ALaterPhaseStartsFromAnEarlierRunsWeights) {
  auto a = options("phase1");
  train::run_pretrain(a);
  auto b = options("phase2");
  b.init = a.output;
  b.lr = 0;
  b.schedule = "constant";
  b.steps = 2;
  b.seed = 7;  // another seed: a fresh initialisation would differ
  train::run_pretrain(b);
  auto c = options("phase2-scratch");
  c.lr = 0;
  c.schedule = "constant";
  c.steps = 2;
  c.seed = 7;
  train::run_pretrain(c);
  const auto one = io::Checkpoint::open(a.output), two = io::Checkpoint::open(b.output),
             scratch = io::Checkpoint::open(c.output);
  ASSERT_EQ(one.names(), two.names());
  size_t differ_from_scratch = 0;
  for (const auto& name : one.names()) {
    const auto &x = one.get(name), &y = two.get(name), &z = scratch.get(name);
    ASSERT_EQ(x.shape, y.shape) << name;
    EXPECT_EQ(0, std::memcmp(x.data, y.data, x.nbytes)) << name;
    differ_from_scratch += std::memcmp(x.data, z.data, x.nbytes) != 0;
  }
  EXPECT_GT(differ_from_scratch, one.names().size() / 2);

  auto wide = options("phase2-wide");
  auto cfg = nlohmann::json::parse(wide.config);
  cfg["text_config"]["intermediate_size"] = 96;
  wide.config = cfg.dump();
  wide.init = a.output;
  const std::string e = error_of(wide);
  EXPECT_NE(e.find(a.output), std::string::npos) << e;
  EXPECT_NE(e.find("mlp"), std::string::npos) << e;
  EXPECT_NE(e.find("[96, 64]"), std::string::npos) << e;
  auto missing = options("phase2-missing");
  missing.init = (fixture().dir / "no-such-run").string();
  EXPECT_NE(error_of(missing).find("no-such-run"), std::string::npos) << error_of(missing);
}

TEST(Pretrain, BadLabelFilesNameTheProblem) {
  const auto& f = fixture();
  auto o = options("bad");
  o.vision_steps = 2;
  o.vision_batch = 4;
  const fs::path bad = f.dir / "bad-scenes.jsonl";
  auto expect_error = [&](const std::string& content, const std::string& want) {
    { std::ofstream(bad) << content; }
    o.vision_labels = bad.string();
    const std::string e = error_of(o);
    EXPECT_NE(e.find(want), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  };
  expect_error("{\"image\": \"world/images/pretrain/00000.png\", \"tone\": \"grey\"}\n", "bad-scenes.jsonl:1");
  expect_error("{\"image\": \"x.png\", \"tone\": \"grey\", \"texture\": \"plain\", \"objects\": "
               "[{\"shape\": \"star\", \"colour\": \"red\", \"size\": \"small\", \"row\": -1, \"col\": 0}]}\n",
               "'row' and 'col'");
  expect_error("{\"image\": \"x.png\", \"tone\": \"grey\", \"texture\": \"plain\", \"crop_object\": 1, \"objects\": "
               "[{\"shape\": \"star\", \"colour\": \"red\", \"size\": \"small\", \"row\": 0, \"col\": 0}]}\n",
               "'crop_object' must be -1 or an index");
  // labels that cover none of the training images
  expect_error("{\"image\": \"x.png\", \"tone\": \"grey\", \"texture\": \"plain\", \"objects\": "
               "[{\"shape\": \"star\", \"colour\": \"red\", \"size\": \"small\", \"row\": 0, \"col\": 0}]}\n",
               "labels for 0 of the training images");
  expect_error("{not json\n", "bad-scenes.jsonl");
}

TEST(Pretrain, SceneSummaryObjectiveLearnsFromTheEmbeddingToken) {
  auto o = options("summary");
  o.vision_labels = (fixture().world / "scenes.jsonl").string();
  o.summary_prompts = {"<image>\nSummary above image in one word:", "<image>\nRepresent the given image."};
  o.summary_weight = 1.0;
  o.steps = 80;
  o.lr = 2e-3;
  o.warmup_steps = 5;
  auto r = train::run_pretrain(o);
  std::printf("scene summary: loss %.3f -> %.3f\n", r.summary_first_loss, r.summary_last_loss);
  EXPECT_LT(r.summary_last_loss, 0.6 * r.summary_first_loss);
  EXPECT_TRUE(fs::exists(fs::path(o.output) / "model.safetensors"));
  // the temporary head is not part of the checkpoint: the same tensors as without the objective
  auto keys = [](const fs::path& f) {
    std::vector<std::string> k;
    const auto file = io::SafetensorsFile::open(f.string());
    for (const auto& [name, info] : file->tensors()) k.push_back(name);
    return k;
  };
  auto plain = options("summary-off");
  train::run_pretrain(plain);
  EXPECT_EQ(keys(fs::path(o.output) / "model.safetensors"), keys(fs::path(plain.output) / "model.safetensors"));

  auto bad = options("summary-bad");
  bad.vision_labels = o.vision_labels;
  bad.summary_weight = 1.0;
  bad.summary_prompts = {"Summary above image in one word:"};
  const std::string e = error_of(bad);
  EXPECT_NE(e.find("must hold the image placeholder"), std::string::npos) << e;
  bad.summary_prompts.clear();
  EXPECT_NE(error_of(bad).find("needs scene labels and at least one prompt"), std::string::npos);
}

TEST(Pretrain, SummaryPairTargetsMarkEachColourShapePairOnce) {
  // 4 cells, colours {empty, blue, red}, shapes {empty, circle, square, star}; layout [colour x 4, shape x 4, ...]
  const std::vector<int64_t> labels = {1, 2, 0, 1, /*shapes*/ 2, 2, 0, 2, /*sizes*/ 1, 1, 0, 1, /*tone, texture*/ 0, 0};
  // blue square (cells 0 and 3: counted once), red square; colour-major over (colour-1) x (shape-1)
  EXPECT_EQ(train::summary_pair_targets(labels, 4, 3, 4), (std::vector<float>{0, 1, 0, 0, 1, 0}));
  // an empty cell with a stray shape label, and the reverse, mark nothing
  EXPECT_EQ(train::summary_pair_targets({0, 1, 3, 0}, 2, 3, 4), (std::vector<float>(6, 0.f)));
  EXPECT_THROW(train::summary_pair_targets({3, 1}, 1, 3, 4), std::exception);  // colour class 3 of 3
  EXPECT_THROW(train::summary_pair_targets({1}, 1, 3, 4), std::exception);     // too few labels
}

TEST(Pretrain, CaptionPairTargetsMarkTheColourShapePairsACaptionNames) {
  const std::vector<std::string> colours = {"blue", "red"}, shapes = {"circle", "square", "star"};
  // colour-major over colours x shapes, as summary_pair_targets; case and punctuation do not matter,
  // a size word between colour and shape does not occur in the world ("a small red square")
  EXPECT_EQ(train::caption_pair_targets("A small Red square left of a blue circle. There is also a red-star.",
                                        colours, shapes),
            (std::vector<float>{1, 0, 0, /*red*/ 0, 1, 1}));
  // a shape before its colour, a colour with no shape and unknown words name no pair
  EXPECT_EQ(train::caption_pair_targets("square red, blue; a reddish circle, a redstar", colours, shapes),
            (std::vector<float>(6, 0.f)));
  EXPECT_EQ(train::caption_pair_targets("", colours, shapes), (std::vector<float>(6, 0.f)));
  EXPECT_THROW(train::caption_pair_targets("red square", {}, shapes), std::exception);
}

TEST(Pretrain, RelationTargetsFollowTheScenesCellsAndTheCaptionsWords) {
  // 4 cells on a 2 x 2 grid, colours {empty, blue, red}, shapes {empty, circle, square}: P = 4 pairs
  // (blue circle 0, blue square 1, red circle 2, red square 3); index (a * 4 + b) * 4 + r, r = left
  // of, right of, above, below
  auto at = [](const std::vector<float>& t, int a, int b, int r) { return t[static_cast<size_t>((a * 4 + b) * 4 + r)]; };
  // a blue circle top-left (cell 0), a red square bottom-right (cell 3)
  const auto t = train::summary_relation_targets({1, 0, 0, 2, /*shapes*/ 1, 0, 0, 2, /*sizes*/ 1, 0, 0, 1, 0, 0}, 4, 3, 3);
  ASSERT_EQ(t.size(), 4u * 4 * 4);
  EXPECT_EQ(at(t, 0, 3, 0), 1);  // blue circle left of the red square
  EXPECT_EQ(at(t, 0, 3, 1), 0);
  EXPECT_EQ(at(t, 0, 3, 2), 1);  // and above it
  EXPECT_EQ(at(t, 0, 3, 3), 0);
  EXPECT_EQ(at(t, 3, 0, 1), 1);  // the converse
  EXPECT_EQ(at(t, 3, 0, 3), 1);
  EXPECT_EQ(at(t, 3, 0, 0), 0);
  int known = 0;
  for (float v : t) known += v >= 0;
  EXPECT_EQ(known, 8);  // two ordered pairs x four relations; nothing about absent pairs
  // same column: neither left nor right of each other, both known
  const auto u = train::summary_relation_targets({1, 0, 2, 0, /*shapes*/ 1, 0, 1, 0, 1, 0, 1, 0, 0, 0}, 4, 3, 3);
  EXPECT_EQ(at(u, 0, 2, 0), 0);
  EXPECT_EQ(at(u, 0, 2, 1), 0);
  EXPECT_EQ(at(u, 0, 2, 2), 1);
  EXPECT_THROW(train::summary_relation_targets({1, 0, 0}, 3, 3, 3), std::exception);  // not a square grid

  const std::vector<std::string> colours = {"blue", "red"}, shapes = {"circle", "square"};
  // the world's forms: "A left of B", "to the right of", "over", "The A is below the B."
  const auto c = train::caption_relation_targets(
      "A small red square to the right of a blue circle. There is also a red circle. The red circle is under the "
      "blue circle.",
      colours, shapes);
  EXPECT_EQ(at(c, 3, 0, 1), 1);  // red square right of blue circle
  EXPECT_EQ(at(c, 0, 3, 0), 1);  // so the blue circle is left of the red square
  EXPECT_EQ(at(c, 3, 0, 0), 0);
  EXPECT_EQ(at(c, 0, 3, 1), 0);
  EXPECT_EQ(at(c, 3, 0, 2), -1);  // not stated
  EXPECT_EQ(at(c, 2, 0, 3), 1);   // red circle under the blue circle
  EXPECT_EQ(at(c, 0, 2, 2), 1);
  EXPECT_EQ(at(c, 0, 2, 3), 0);
  // "blue circle. There is also a red circle": no relation word between them
  EXPECT_EQ(at(c, 0, 2, 0), -1);
  known = 0;
  for (float v : c) known += v >= 0;
  EXPECT_EQ(known, 8);
  // swapping the objects turns the facts round
  const auto d = train::caption_relation_targets("A blue circle to the right of a small red square.", colours, shapes);
  EXPECT_EQ(at(d, 0, 3, 1), 1);
  EXPECT_EQ(at(d, 3, 0, 1), 0);
  // a list, or two relation words between one pair, states nothing
  for (const char* none : {"A red square and a blue circle.", "A red square above and left of a blue circle.", ""}) {
    known = 0;
    for (float v : train::caption_relation_targets(none, colours, shapes)) known += v >= 0;
    EXPECT_EQ(known, 0) << none;
  }
}

TEST(Pretrain, PositionTargetsPlaceEachPairFromTheSceneOrFromTheCaptionsRelations) {
  // 9 cells on a 3 x 3 grid, colours {empty, blue, red}, shapes {empty, circle, square}: P = 4;
  // index (p * 2 + axis) * 3 + position, axis 0 = column, 1 = row
  auto at = [](const std::vector<float>& t, int p, int axis) {
    return std::vector<float>(t.begin() + (p * 2 + axis) * 3, t.begin() + (p * 2 + axis) * 3 + 3);
  };
  // a blue circle in cell 0 (row 0, col 0) and cell 5 (row 1, col 2), a red square in cell 7 (row 2, col 1)
  std::vector<int64_t> labels(9 * 3 + 2, 0);
  labels[0] = 1, labels[9 + 0] = 1, labels[5] = 1, labels[9 + 5] = 1, labels[7] = 2, labels[9 + 7] = 2;
  const auto t = train::summary_position_targets(labels, 9, 3, 3);
  ASSERT_EQ(t.size(), 4u * 2 * 3);
  EXPECT_EQ(at(t, 0, 0), (std::vector<float>{0.5f, 0, 0.5f}));  // twice: averaged
  EXPECT_EQ(at(t, 0, 1), (std::vector<float>{0.5f, 0.5f, 0}));
  EXPECT_EQ(at(t, 3, 0), (std::vector<float>{0, 1, 0}));
  EXPECT_EQ(at(t, 3, 1), (std::vector<float>{0, 0, 1}));
  EXPECT_EQ(at(t, 1, 0), (std::vector<float>(3, -1.f)));  // no blue square: unknown
  EXPECT_THROW(train::summary_position_targets({1, 0}, 2, 3, 3), std::exception);

  const std::vector<std::string> colours = {"blue", "red"}, shapes = {"circle", "square"};
  const float third = 1.f / 3, two = 2.f / 3;
  auto near = [](const std::vector<float>& a, const std::vector<float>& b) {
    for (size_t i = 0; i < a.size(); ++i)
      if (std::abs(a[i] - b[i]) > 1e-6) return false;
    return a.size() == b.size();
  };
  // "red square left of blue circle": the square's column is likely small, the circle's large
  const auto c = train::caption_position_targets("A red square left of a blue circle.", colours, shapes, 3);
  EXPECT_TRUE(near(at(c, 3, 0), {two, third, 0}));
  EXPECT_TRUE(near(at(c, 0, 0), {0, third, two}));
  EXPECT_EQ(at(c, 3, 1), (std::vector<float>(3, -1.f)));  // nothing said about rows
  // the swap turns them round; "below" is about rows, the first object's row large
  const auto d = train::caption_position_targets("A blue circle left of a red square.", colours, shapes, 3);
  EXPECT_TRUE(near(at(d, 0, 0), {two, third, 0}));
  const auto e = train::caption_position_targets("The red square is below the blue circle.", colours, shapes, 3);
  EXPECT_TRUE(near(at(e, 3, 1), {0, third, two}));
  EXPECT_TRUE(near(at(e, 0, 1), {two, third, 0}));
  // in two facts on one axis: unknown; on a 4-wide grid the chances are (3, 2, 1, 0) / 6
  const auto f = train::caption_position_targets(
      "A red square left of a blue circle. The blue circle is right of the red circle.", colours, shapes, 3);
  EXPECT_EQ(at(f, 0, 0), (std::vector<float>(3, -1.f)));
  EXPECT_TRUE(near(at(f, 3, 0), {two, third, 0}));
  const auto g = train::caption_position_targets("A red square above a blue circle.", colours, shapes, 4);
  EXPECT_TRUE(near(std::vector<float>(g.begin() + (3 * 2 + 1) * 4, g.begin() + (3 * 2 + 1) * 4 + 4),
                   {0.5f, third, 1.f / 6, 0}));
}

TEST(Pretrain, CaptionColourSwapExchangesTwoPairsColours) {
  const std::vector<std::string> colours = {"blue", "orange", "red"}, shapes = {"circle", "square", "star"};
  std::mt19937_64 rng(1);
  // one eligible swap: the articles follow the new colours
  EXPECT_EQ(train::caption_colour_swap("A red square left of an orange circle.", colours, shapes, rng),
            "An orange square left of a red circle.");
  // no two pairs that differ in both colour and shape: nothing to swap
  EXPECT_EQ(train::caption_colour_swap("A red square and a red circle.", colours, shapes, rng), "");
  EXPECT_EQ(train::caption_colour_swap("A red square and a blue square.", colours, shapes, rng), "");
  EXPECT_EQ(train::caption_colour_swap("A red square.", colours, shapes, rng), "");
  // three pairs, two eligible swaps: every draw is one of them, the letters stay, the pairs change
  const std::string three = "There is a blue star, a red square and a blue circle.";
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    const std::string s = train::caption_colour_swap(three, colours, shapes, rng);
    seen.insert(s);
    auto bag = [](std::string x) { std::sort(x.begin(), x.end()); return x; };
    EXPECT_EQ(bag(s), bag(three)) << s;
    EXPECT_NE(train::caption_pair_targets(s, colours, shapes), train::caption_pair_targets(three, colours, shapes));
  }
  EXPECT_EQ(seen, (std::set<std::string>{"There is a red star, a blue square and a blue circle.",
                                         "There is a blue star, a blue square and a red circle."}));
}

TEST(Pretrain, CaptionRelationSwapExchangesTheObjectsOfAStatedRelation) {
  const std::vector<std::string> colours = {"blue", "orange", "red", "green"},
                                 shapes = {"circle", "square", "star", "ring", "triangle"};
  std::mt19937_64 rng(1);
  const auto swap = [&](const std::string& c) { return train::caption_relation_swap(c, colours, shapes, rng); };
  // whole objects move, sizes with them; the articles follow their new words; the rest stays
  EXPECT_EQ(swap("An image showing an orange circle left of a red star. There is also a blue square."),
            "An image showing a red star left of an orange circle. There is also a blue square.");
  EXPECT_EQ(swap("A large green triangle to the right of a blue ring."),
            "A blue ring to the right of a large green triangle.");
  EXPECT_EQ(swap("There is a blue ring above a small orange triangle."),
            "There is a small orange triangle above a blue ring.");
  EXPECT_EQ(swap("The red star is under the large blue circle."), "The large blue circle is under the red star.");
  // no relation word between two named objects, the same object on both sides, or two relation
  // words between them: nothing to swap
  EXPECT_EQ(swap("A red circle and a blue square."), "");
  EXPECT_EQ(swap("A red circle left of a red circle."), "");
  EXPECT_EQ(swap("A red circle left of and above a blue square."), "");
  EXPECT_EQ(swap("A red circle left of something."), "");
  // two stated relations: every draw reverses one of them, and the pairs it names stay the same
  const std::string two = "A red star above a blue circle. The blue circle is left of a green ring.";
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    const std::string x = swap(two);
    seen.insert(x);
    EXPECT_EQ(train::caption_pair_targets(x, colours, shapes), train::caption_pair_targets(two, colours, shapes));
    EXPECT_NE(train::caption_relation_targets(x, colours, shapes), train::caption_relation_targets(two, colours, shapes));
  }
  EXPECT_EQ(seen, (std::set<std::string>{"A blue circle above a red star. The blue circle is left of a green ring.",
                                         "A red star above a blue circle. The green ring is left of a blue circle."}));
}

TEST(Pretrain, SceneSummaryPairsTrainOnImagesAndOnCaptionsThroughTextPrompts) {
  auto o = options("summary-text");
  o.vision_labels = (fixture().world / "scenes.jsonl").string();
  o.summary_prompts = {"<image>\nSummary above image in one word:"};
  o.summary_text_prompts = {"{text}\nSummary above sentence in one word:"};
  o.summary_weight = 1.0;
  o.summary_target = "pairs";
  o.steps = 80;
  o.lr = 2e-3;
  o.warmup_steps = 5;
  auto r = train::run_pretrain(o);
  std::printf("scene summary (pairs, captions too): loss %.3f -> %.3f, captions %.3f -> %.3f\n", r.summary_first_loss,
              r.summary_last_loss, r.summary_text_first_loss, r.summary_text_last_loss);
  EXPECT_GT(r.summary_text_first_loss, 0);  // caption rows were trained
  // (at this size and length the head mostly learns how often each pair occurs; that it reads the
  // pairs from the caption's token is measured at the demo's size, README "A stage 0 whose ...")
  EXPECT_LT(r.summary_text_last_loss, 0.5 * r.summary_text_first_loss);
  EXPECT_LT(r.summary_last_loss, 0.5 * r.summary_first_loss);
  auto pairs_only = o;  // the pairs target on images alone
  pairs_only.output = o.output + "-off";
  pairs_only.summary_text_prompts.clear();
  auto p = train::run_pretrain(pairs_only);
  std::printf("scene summary (pairs, images only): loss %.3f -> %.3f\n", p.summary_first_loss, p.summary_last_loss);
  EXPECT_LT(p.summary_last_loss, 0.5 * p.summary_first_loss);
  EXPECT_EQ(p.summary_text_first_loss, 0);  // no caption rows without text prompts
  auto swapped = o;  // every caption row that can be swapped is (CaptionColourSwap... tests the swap)
  swapped.output = o.output + "-swap";
  swapped.summary_text_swap = 1.0;
  swapped.steps = 4;
  EXPECT_GT(train::run_pretrain(swapped).summary_text_first_loss, 0);

  auto bad = o;
  bad.summary_text_prompts = {"Summary above sentence in one word:"};
  EXPECT_NE(error_of(bad).find("must hold '{text}' and no image placeholder"), std::string::npos);
  bad.summary_text_prompts = {"<image>\n{text}"};
  EXPECT_NE(error_of(bad).find("must hold '{text}' and no image placeholder"), std::string::npos);
  bad = o;
  bad.summary_text_swap = 1.5;
  EXPECT_NE(error_of(bad).find("swap chance must be in [0, 1]"), std::string::npos);
  bad = pairs_only;
  bad.summary_text_swap = 0.5;
  EXPECT_NE(error_of(bad).find("needs text summary prompts"), std::string::npos);
  bad = o;
  bad.summary_target = "cells";
  EXPECT_NE(error_of(bad).find("need the 'pairs' or 'pairs+cells' summary target"), std::string::npos);
  bad.summary_target = "objects";
  EXPECT_NE(error_of(bad).find("must be 'cells', 'pairs' or 'pairs+cells'"), std::string::npos);
  EXPECT_EQ(p.summary_cells_first_loss, 0);  // no cells part in the pairs target
}

TEST(Pretrain, SceneSummaryPairsPlusCellsTrainsWhereEachObjectIs) {
  auto o = options("summary-both");
  o.vision_labels = (fixture().world / "scenes.jsonl").string();
  o.summary_prompts = {"<image>\nSummary above image in one word:"};
  o.summary_text_prompts = {"{text}\nSummary above sentence in one word:"};
  o.summary_weight = 1.0;
  o.summary_target = "pairs+cells";
  o.summary_text_swap = 0.5;
  o.steps = 80;
  o.lr = 2e-3;
  o.warmup_steps = 5;
  auto r = train::run_pretrain(o);
  std::printf("scene summary (pairs+cells, captions too): loss %.3f -> %.3f, cells part %.3f -> %.3f, captions %.3f -> %.3f\n",
              r.summary_first_loss, r.summary_last_loss, r.summary_cells_first_loss, r.summary_cells_last_loss,
              r.summary_text_first_loss, r.summary_text_last_loss);
  // the cells part: one cross-entropy per label group (9 cells x colour / shape / size, tone,
  // texture), near the mean of log(classes) at the start, and it is learned
  EXPECT_GT(r.summary_cells_first_loss, 1.0);
  EXPECT_LT(r.summary_cells_last_loss, 0.6 * r.summary_cells_first_loss);
  // the total adds the pairs part (binary cross-entropy, log 2 at the start) to the cells part
  EXPECT_GT(r.summary_first_loss, r.summary_cells_first_loss + 0.3);
  EXPECT_LT(r.summary_last_loss, 0.6 * r.summary_first_loss);
  EXPECT_GT(r.summary_text_first_loss, 0);  // caption rows trained the pairs part
  EXPECT_LT(r.summary_text_last_loss, 0.5 * r.summary_text_first_loss);
  // the head predicts the same cells as the "cells" target: its cells part starts where that does
  auto c = o;
  c.output = o.output + "-cells";
  c.summary_target = "cells";
  c.summary_text_prompts.clear();
  c.summary_text_swap = 0;
  c.steps = 10;
  const auto rc = train::run_pretrain(c);
  EXPECT_NEAR(rc.summary_first_loss, r.summary_cells_first_loss, 0.25 * rc.summary_first_loss);
}

TEST(Pretrain, ImageCaptionContrastTrainsWithColourOrRelationSwapNegatives) {
  auto o = options("contrast");
  o.vision_labels = (fixture().world / "scenes.jsonl").string();
  o.summary_prompts = {"<image>\nSummary above image in one word:"};
  o.summary_text_prompts = {"{text}\nSummary above sentence in one word:"};
  o.summary_weight = 1.0;
  o.summary_target = "pairs";
  o.summary_contrast = 1.0;
  o.batch_size = 16;
  o.steps = 160;
  o.lr = 2e-3;
  o.warmup_steps = 5;
  auto r = train::run_pretrain(o);
  std::printf("image-caption contrast: loss %.3f -> %.3f, own caption first %.2f, above its colour swap %.2f\n",
              r.contrast_first_loss, r.contrast_last_loss, r.contrast_accuracy, r.contrast_swap_accuracy);
  // at the start every candidate is alike: the loss is near log(candidates) (16 captions + swaps,
  // or 16 images), and it falls as images and captions find each other
  EXPECT_GT(r.contrast_first_loss, 0.8 * std::log(16.0));
  EXPECT_LT(r.contrast_last_loss, 0.8 * r.contrast_first_loss);
  // images find their own caption among 16 captions and their swaps (chance: 1/16 at best; a run
  // that pairs each image with a neighbour's caption scored 0.06, this one 0.29)
  EXPECT_GT(r.contrast_accuracy, 3.0 / 16);
  EXPECT_GT(r.contrast_swap_accuracy, 0);  // swaps were drawn and scored
  EXPECT_GT(r.summary_text_first_loss, 0);

  auto bad = o;
  bad.summary_text_swap = 0.5;  // the swaps are the contrast's negatives, not replacements
  EXPECT_NE(error_of(bad).find("and no text summary swap"), std::string::npos);
  bad = o;
  bad.summary_text_prompts.clear();
  EXPECT_NE(error_of(bad).find("needs a weight >= 0, a temperature > 0, text summary prompts"), std::string::npos);
  bad = o;
  bad.summary_contrast_temperature = 0;
  EXPECT_NE(error_of(bad).find("a temperature > 0"), std::string::npos);
  // relation negatives: the captions that state a relation get it reversed as their negative
  auto rel = o;
  rel.output = (fixture().dir / "contrast-relations").string();
  rel.summary_contrast_negatives = "relation";
  rel.steps = 20;
  const auto rr = train::run_pretrain(rel);
  EXPECT_GT(rr.contrast_first_loss, 0.8 * std::log(16.0));
  EXPECT_GT(rr.contrast_swap_accuracy, 0);  // relation swaps were drawn and scored
  bad = rel;
  bad.summary_contrast_negatives = "shape";
  EXPECT_NE(error_of(bad).find("'colour' or (with a contrast weight > 0) 'relation'"), std::string::npos) << error_of(bad);
  bad = rel;
  bad.summary_contrast = 0;
  EXPECT_NE(error_of(bad).find("got 'relation'"), std::string::npos) << error_of(bad);
  bad = o;  // the text rows and the contrast are parts of the summary objective, never silently dropped
  bad.summary_weight = 0;
  EXPECT_NE(error_of(bad).find("they need a summary weight > 0"), std::string::npos);
  bad.summary_contrast = 0;
  EXPECT_NE(error_of(bad).find("they need a summary weight > 0"), std::string::npos);
  bad.summary_text_prompts.clear();
  bad.summary_relations = true;
  EXPECT_NE(error_of(bad).find("they need a summary weight > 0"), std::string::npos);
  bad.summary_relations = false;
  bad.summary_positions = 1;
  EXPECT_NE(error_of(bad).find("they need a summary weight > 0"), std::string::npos);
}

TEST(Pretrain, SceneSummaryRelationsTrainOnImagesAndCaptions) {
  auto o = options("summary-relations");
  o.vision_labels = (fixture().world / "scenes.jsonl").string();
  o.summary_prompts = {"<image>\nSummary above image in one word:"};
  o.summary_text_prompts = {"{text}\nSummary above sentence in one word:"};
  o.summary_weight = 1.0;
  o.summary_target = "pairs";
  o.summary_relations = true;
  o.steps = 80;
  o.lr = 2e-3;
  o.warmup_steps = 5;
  auto r = train::run_pretrain(o);
  std::printf("scene summary (pairs + relations): loss %.3f -> %.3f, relations part %.3f -> %.3f\n",
              r.summary_first_loss, r.summary_last_loss, r.summary_relations_first_loss, r.summary_relations_last_loss);
  // binary cross-entropy over the known relations of image and caption rows: near log 2 from the
  // start (a linear read-out of one token does not learn to compare two objects' positions; README
  // "What is left on a base that binds"), and the pairs part adds to it
  EXPECT_GT(r.summary_relations_first_loss, 0.6);
  EXPECT_LT(r.summary_relations_first_loss, 0.8);
  EXPECT_GT(r.summary_relations_last_loss, 0.5);
  EXPECT_GT(r.summary_first_loss, r.summary_relations_first_loss + 0.3);
  auto bad = o;
  bad.summary_target = "cells";
  bad.summary_text_prompts.clear();
  EXPECT_NE(error_of(bad).find("the relations summary needs the 'pairs' or 'pairs+cells' target"), std::string::npos);
}

TEST(Pretrain, SceneSummaryPositionsTrainOnImagesAndCaptions) {
  auto o = options("summary-positions");
  o.vision_labels = (fixture().world / "scenes.jsonl").string();
  o.vision_steps = 40;  // features that know their cell (VisionWarmupCanTeach...)
  o.vision_batch = 32;
  o.vision_lr = 2e-3;
  o.vision_position = true;
  o.summary_prompts = {"<image>\nSummary above image in one word:"};
  o.summary_text_prompts = {"{text}\nSummary above sentence in one word:"};
  o.summary_weight = 1.0;
  o.summary_target = "pairs";
  o.summary_positions = 1;
  o.steps = 80;
  o.lr = 2e-3;
  o.warmup_steps = 5;
  auto r = train::run_pretrain(o);
  std::printf("scene summary (pairs + positions): loss %.3f -> %.3f, positions part %.3f -> %.3f\n",
              r.summary_first_loss, r.summary_last_loss, r.summary_positions_first_loss, r.summary_positions_last_loss);
  // cross-entropy to 3-way distributions: about log 3 at the start, and it falls
  EXPECT_GT(r.summary_positions_first_loss, 0.9);
  // (a run that leaves this part out of the loss falls 1.211 -> 1.145 through the head's shared
  // features; this one 1.224 -> 1.045)
  EXPECT_LT(r.summary_positions_last_loss, 0.9 * r.summary_positions_first_loss);
  EXPECT_GT(r.summary_first_loss, r.summary_positions_first_loss + 0.3);  // the pairs part
  auto bad = o;
  bad.summary_target = "cells";
  bad.summary_text_prompts.clear();
  EXPECT_NE(error_of(bad).find("the positions summary needs the 'pairs' or 'pairs+cells' target"), std::string::npos);
  bad = o;
  bad.summary_positions = -1;
  EXPECT_NE(error_of(bad).find("positions summary weight must be >= 0"), std::string::npos);
}

TEST(Schedule, LearningRatesFollowHuggingFaceSchedulers) {
  // HF get_{linear,cosine,constant}_schedule_with_warmup at lr 1, 10 steps, 2 of warm-up; optimizer
  // step s uses lambda(s - 1): 0, 0.5, then linear (10 - c) / 8, cosine 0.5 (1 + cos(pi (c - 2) / 8)), 1
  const double pi = std::acos(-1.0);
  for (int64_t s = 1; s <= 10; ++s) {
    const double c = static_cast<double>(s - 1);
    const double warm = c < 2 ? c / 2 : -1;
    EXPECT_NEAR(train::schedule_lr("linear", 1.0, s, 10, 2), warm >= 0 ? warm : (10 - c) / 8, 1e-12) << s;
    EXPECT_NEAR(train::schedule_lr("cosine", 1.0, s, 10, 2), warm >= 0 ? warm : 0.5 * (1 + std::cos(pi * (c - 2) / 8)),
                1e-12) << s;
    EXPECT_NEAR(train::schedule_lr("constant", 1.0, s, 10, 2), warm >= 0 ? warm : 1.0, 1e-12) << s;
  }
  EXPECT_DOUBLE_EQ(train::schedule_lr("cosine", 3e-4, 3, 10, 2), 3e-4);  // the peak right after warm-up
  EXPECT_THROW(train::schedule_lr("cosine-with-restarts", 1.0, 1, 10, 2), std::exception);
  auto o = options("bad-schedule");  // stage 0 names a bad schedule instead of training on linear
  o.schedule = "Cosine";
  EXPECT_NE(error_of(o).find("must be linear, cosine or constant, got 'Cosine'"), std::string::npos);
}
