// test-world: the procedural world (`unime world`): PRNG, truth of descriptions, rendering,
// determinism (same seed -> byte-identical files), leaks (no held-out colour-shape combination in
// any training row, checked by parsing the produced files) and the formats of every output.
// The checks re-derive what they need from the files (scenes.jsonl, world.json) with their own
// parsing, and the images are decoded independently with Python/PIL.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "data/world-draw.h"
#include "data/world-scene.h"
#include "data/world-tasks.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace unime::data::world;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> rows;
  std::ifstream f(p);
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

struct RunResult {
  int code = -1;
  std::string output;
};

RunResult run(const std::string& cmd) {
  RunResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

fs::path temp_root() {
  static const fs::path root = [] {
    fs::path p = fs::temp_directory_path() / ("unime-test-world-" + std::to_string(getpid()));
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
  }();
  return root;
}

// One quick world shared by the file-level tests.
const fs::path& world_dir() {
  static const fs::path dir = [] {
    const fs::path d = temp_root() / "w7";
    const RunResult r = run(std::string(UNIME_BIN) + " world --seed 7 --quick --output " + d.string());
    EXPECT_EQ(r.code, 0) << r.output;
    return d;
  }();
  return dir;
}

// ---- independent re-implementation of the leak rule on plain words ----
std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> w;
  std::regex word("[A-Za-z]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), word); it != std::sregex_iterator(); ++it) {
    std::string s = it->str();
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    w.push_back(s);
  }
  return w;
}

struct Heldout {
  std::set<std::string> combos;  // "purple star"
  std::set<std::string> colours, shapes, sizes;
  bool text_leaks(const std::string& text) const {
    const auto w = words_of(text);
    for (size_t i = 0; i < w.size(); ++i) {
      if (!colours.count(w[i])) continue;
      size_t j = i + 1;
      if (j < w.size() && sizes.count(w[j])) ++j;
      if (j < w.size() && combos.count(w[i] + " " + w[j])) return true;
    }
    return false;
  }
};

Heldout load_heldout(const fs::path& w) {
  const json world = json::parse(read_file(w / "world.json"));
  Heldout h;
  for (const auto& c : world["heldout_combinations"]) h.combos.insert(c.get<std::string>());
  for (const auto& c : world["vocab"]["colours"]) h.colours.insert(c.get<std::string>());
  for (const auto& c : world["vocab"]["shapes"]) h.shapes.insert(c.get<std::string>());
  for (const auto& c : world["vocab"]["sizes"]) h.sizes.insert(c.get<std::string>());
  return h;
}

std::map<std::string, json> load_scenes(const fs::path& w) {
  std::map<std::string, json> m;
  for (auto& row : read_jsonl(w / "scenes.jsonl")) m[row["image"].get<std::string>()] = row;
  return m;
}

bool scene_leaks(const json& scene, const Heldout& h) {
  for (const auto& o : scene["objects"])
    if (h.combos.count(o["colour"].get<std::string>() + " " + o["shape"].get<std::string>())) return true;
  return false;
}

Object make_object(int shape, int colour, int size, int row, int col) {
  Object o;
  o.shape = shape;
  o.colour = colour;
  o.size = size;
  o.row = row;
  o.col = col;
  return o;
}

}  // namespace

// ---- PRNG ----------------------------------------------------------------------------------------

TEST(WorldRng, MatchesSplitmix64Reference) {
  // first outputs of splitmix64.c seeded with 1234567 (also recomputed with Python ints)
  Rng r(1234567);
  EXPECT_EQ(r.next(), 6457827717110365317ULL);
  EXPECT_EQ(r.next(), 3203168211198807973ULL);
  EXPECT_EQ(r.next(), 9817491932198370423ULL);
}

TEST(WorldRng, BelowIsInRangeAndRoughlyUniform) {
  Rng r(42);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 70000; ++i) {
    const int v = r.below(7);
    ASSERT_GE(v, 0);
    ASSERT_LT(v, 7);
    ++counts[v];
  }
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
  // streams are reproducible and independent of each other
  EXPECT_EQ(stream(1, "a", 3).next(), stream(1, "a", 3).next());
  EXPECT_NE(stream(1, "a", 3).next(), stream(1, "a", 4).next());
  EXPECT_NE(stream(1, "a", 3).next(), stream(1, "b", 3).next());
}

// ---- scene model ---------------------------------------------------------------------------------

TEST(WorldScene, RelationsAndHolds) {
  Scene s;
  s.objects.push_back(make_object(/*circle*/ 0, /*red*/ 0, 1, /*row*/ 0, /*col*/ 0));
  s.objects.push_back(make_object(/*square*/ 1, /*blue*/ 4, 0, 1, 2));
  s.objects.push_back(make_object(/*star*/ 4, /*green*/ 3, 0, 2, 0));
  EXPECT_TRUE(relation_holds(kLeftOf, s.objects[0], s.objects[1]));
  EXPECT_FALSE(relation_holds(kRightOf, s.objects[0], s.objects[1]));
  EXPECT_TRUE(relation_holds(kAbove, s.objects[0], s.objects[2]));
  EXPECT_FALSE(relation_holds(kLeftOf, s.objects[0], s.objects[2]));  // same column: neither
  EXPECT_FALSE(relation_holds(kRightOf, s.objects[0], s.objects[2]));

  Description d;
  d.mentions = {{0, 0, -1, -1, -1}, {1, 4, 0, -1, -1}};  // red circle, small blue square
  d.facts = {{0, 1, kLeftOf}};
  EXPECT_TRUE(holds(d, s));
  d.facts[0].relation = kRightOf;
  EXPECT_FALSE(holds(d, s));
  d.facts[0].relation = kAbove;  // row 0 vs row 1
  EXPECT_TRUE(holds(d, s));
  d.mentions[1].size = 1;  // the square is small
  EXPECT_FALSE(holds(d, s));
  d.mentions[1].size = -1;
  d.count = 3;
  EXPECT_TRUE(holds(d, s));
  d.count = 2;
  EXPECT_FALSE(holds(d, s));
  d.count = -1;
  d.absent_shapes = {2};  // no triangle: true
  EXPECT_TRUE(holds(d, s));
  d.absent_shapes = {4};  // there is a star
  EXPECT_FALSE(holds(d, s));
  // two mentions cannot bind the same object
  Description two;
  two.mentions = {{0, -1, -1, -1, -1}, {0, -1, -1, -1, -1}};
  EXPECT_FALSE(holds(two, s));

  TextStyle st;
  st.intro = 1;
  st.rel_variant = 0;
  Description cap;
  cap.mentions = {{0, 0, 1, -1, -1}, {1, 4, -1, -1, -1}, {4, 3, -1, -1, -1}};
  cap.facts = {{0, 1, kLeftOf}};
  EXPECT_EQ(render_caption(cap, st),
            "A picture of a large red circle to the left of a blue square. There is also a green star.");
  cap.mentions[1].colour = 1;  // orange takes "an"
  cap.facts.clear();
  EXPECT_EQ(render_caption(cap, TextStyle{}), "A large red circle, an orange square and a green star.");
}

TEST(WorldScene, HeldoutChoiceAndTextScan) {
  for (int n : {1, 8, 16}) {
    const auto held = choose_heldout(99, n);
    std::vector<int> per_colour(kNumColours, 0), per_shape(kNumShapes, 0);
    int total = 0;
    for (int c = 0; c < kNumColours; ++c)
      for (int s = 0; s < kNumShapes; ++s)
        if (held[combo_id(c, s)]) {
          ++total;
          ++per_colour[c];
          ++per_shape[s];
        }
    EXPECT_EQ(total, n);
    for (int v : per_colour) EXPECT_LE(v, (n + kNumColours - 1) / kNumColours);
    for (int v : per_shape) EXPECT_LE(v, (n + kNumShapes - 1) / kNumShapes);
  }
  Rules rules;
  rules.heldout[combo_id(/*purple*/ 5, /*star*/ 4)] = true;
  EXPECT_TRUE(text_has_heldout("A Purple star.", rules));
  EXPECT_TRUE(text_has_heldout("there is a purple large star", rules));
  EXPECT_FALSE(text_has_heldout("a purple circle and a red star", rules));
  EXPECT_FALSE(text_has_heldout("the star is purple", rules));
}

TEST(WorldScene, SamplingRespectsSplits) {
  Rules rules;
  rules.max_objects = 5;
  rules.heldout = choose_heldout(3, 12);
  Rng rng(5);
  for (int i = 0; i < 2000; ++i) {
    const int n = 1 + i % 5;
    const Split split = i % 3 == 0 ? Split::Ood : Split::Train;
    const Scene s = sample_scene(rng, rules, n, split);
    ASSERT_EQ(static_cast<int>(s.objects.size()), n);
    std::set<int> shapes, colours, cells;
    for (size_t k = 0; k < s.objects.size(); ++k) {
      const Object& o = s.objects[k];
      shapes.insert(o.shape);
      colours.insert(o.colour);
      cells.insert(o.row * kGrid + o.col);
      const bool held = rules.is_heldout(o.colour, o.shape);
      EXPECT_EQ(held, split == Split::Ood && k == 0) << "object " << k << " of scene " << i;
    }
    EXPECT_EQ(static_cast<int>(shapes.size()), n);
    EXPECT_EQ(static_cast<int>(colours.size()), n);
    EXPECT_EQ(static_cast<int>(cells.size()), n);
  }
}

TEST(WorldScene, FalseDescriptionsAreFalse) {
  Rules rules;
  Rng rng(11);
  DescribeOptions opt;
  opt.max_facts = 2;
  for (int i = 0; i < 300; ++i) {
    const Scene s = sample_scene(rng, rules, 1 + i % 4, Split::Ind);
    const Description d = describe(s, rng, opt);
    ASSERT_TRUE(holds(d, s));
    for (const auto& e : false_descriptions(d, s, rng, 6)) EXPECT_FALSE(holds(e, s));
  }
}

// ---- rendering -----------------------------------------------------------------------------------

TEST(WorldDraw, ObjectsAppearInTheirCellsWithTheirColour) {
  Scene s;
  s.tone = 0;
  s.texture = 0;
  s.objects.push_back(make_object(/*circle*/ 0, /*red*/ 0, /*large*/ 1, 0, 0));
  s.objects.push_back(make_object(/*square*/ 1, /*blue*/ 4, /*small*/ 0, 2, 2));
  const Image img = render_scene(s, 64);
  ASSERT_EQ(img.rgb.size(), 64u * 64 * 3);
  auto near = [](const uint8_t* p, const uint8_t* q, int tol) {
    return std::abs(p[0] - q[0]) <= tol && std::abs(p[1] - q[1]) <= tol && std::abs(p[2] - q[2]) <= tol;
  };
  // cell centres: 64/3 * (c + 0.5)
  EXPECT_TRUE(near(img.at(10, 10), kColourRgb[0], 2));
  EXPECT_TRUE(near(img.at(53, 53), kColourRgb[4], 2));
  EXPECT_TRUE(near(img.at(32, 32), kToneRgb[0], 3));  // empty centre cell: background
  EXPECT_TRUE(near(img.at(53, 10), kToneRgb[0], 3));
  // a large circle covers ~pi r^2 pixels, r = 0.40 * 64/3
  int red = 0;
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 64; ++x) red += near(img.at(x, y), kColourRgb[0], 2);
  const double r = 0.40 * 64 / 3;
  EXPECT_NEAR(red, 3.14159 * r * r, 0.08 * 3.14159 * r * r);
  // shape tests
  EXPECT_TRUE(shape_covers(5, 0.8, 0));    // ring body
  EXPECT_FALSE(shape_covers(5, 0.1, 0));   // ring hole
  EXPECT_TRUE(shape_covers(4, 0, -1.0));   // star tip
  EXPECT_FALSE(shape_covers(4, 0.7, -0.7));  // between star points
  EXPECT_TRUE(shape_covers(3, 0.0, 0.9));  // cross arm
  EXPECT_FALSE(shape_covers(3, 0.8, 0.8)); // cross corner
  // crops are upscaled to the full size and centred on the object
  const Image crop = crop_object(img, s.objects[1], 64);
  EXPECT_EQ(crop.width, 64);
  EXPECT_TRUE(near(crop.at(32, 32), kColourRgb[4], 2));
}

TEST(WorldDraw, PngDecodesToTheSamePixels) {
  Rules rules;
  Rng rng(8);
  const Scene s = sample_scene(rng, rules, 4, Split::Ind);
  const Image img = render_scene(s, 48);
  const auto png = encode_png(img);
  const fs::path p = temp_root() / "draw.png";
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(png.data()), png.size());
  std::ofstream(temp_root() / "draw.raw", std::ios::binary)
      .write(reinterpret_cast<const char*>(img.rgb.data()), img.rgb.size());
  const std::string py = std::string(UNIME_PYTHON) + " -c \"from PIL import Image; im=Image.open('" +
                         p.string() + "'); assert im.mode=='RGB' and im.size==(48,48), (im.mode, im.size); "
                         "raw=open('" + (temp_root() / "draw.raw").string() + "','rb').read(); "
                         "assert im.tobytes()==raw; print('ok')\"";
  const RunResult r = run(py);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("ok"), std::string::npos);
}

// ---- the world files -----------------------------------------------------------------------------

TEST(WorldFiles, SameSeedIsByteIdenticalAndOtherSeedDiffers) {
  const fs::path a = world_dir();
  const fs::path b = temp_root() / "w7-again";
  const fs::path c = temp_root() / "w8";
  ASSERT_EQ(run(std::string(UNIME_BIN) + " world --seed 7 --quick --threads 1 -o " + b.string()).code, 0);
  ASSERT_EQ(run(std::string(UNIME_BIN) + " world --seed 8 --quick -o " + c.string()).code, 0);
  std::vector<std::string> files_a, files_b;
  for (auto& e : fs::recursive_directory_iterator(a))
    if (e.is_regular_file()) files_a.push_back(fs::relative(e.path(), a).string());
  for (auto& e : fs::recursive_directory_iterator(b))
    if (e.is_regular_file()) files_b.push_back(fs::relative(e.path(), b).string());
  std::sort(files_a.begin(), files_a.end());
  std::sort(files_b.begin(), files_b.end());
  ASSERT_EQ(files_a, files_b);
  ASSERT_GT(files_a.size(), 500u);
  for (const auto& f : files_a) ASSERT_EQ(read_file(a / f), read_file(b / f)) << f;
  EXPECT_NE(read_file(a / "nli.jsonl"), read_file(c / "nli.jsonl"));
  EXPECT_NE(read_file(a / "images/eval/ObjectCls/00000-q.png"),
            read_file(c / "images/eval/ObjectCls/00000-q.png"));
  // --force replaces a world; a non-empty directory without it is refused
  const RunResult again = run(std::string(UNIME_BIN) + " world --seed 9 --quick -o " + b.string());
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.output.find("not empty"), std::string::npos) << again.output;
  ASSERT_EQ(run(std::string(UNIME_BIN) + " world --seed 8 --quick --force -o " + b.string()).code, 0);
  EXPECT_EQ(read_file(b / "mmeb-train.jsonl"), read_file(c / "mmeb-train.jsonl"));
}

// --nli-swap-percent: hard negatives that swap two objects' colours (same shapes in the same
// order, the same colours, a different order of colours), and nothing else in the world changes
TEST(WorldFiles, NliSwapPercentMakesColourSwapsAndChangesNothingElse) {
  const fs::path a = world_dir();
  const fs::path b = temp_root() / "w7-swap";
  ASSERT_EQ(run(std::string(UNIME_BIN) + " world --seed 7 --quick --nli-swap-percent 100 -o " + b.string()).code, 0);
  EXPECT_EQ(read_file(a / "mmeb-train.jsonl"), read_file(b / "mmeb-train.jsonl"));
  EXPECT_EQ(read_file(a / "sugarcrepe/swap-att.json"), read_file(b / "sugarcrepe/swap-att.json"));
  const json vocab = json::parse(read_file(a / "world.json"))["vocab"];
  const std::set<std::string> colours(vocab["colours"].begin(), vocab["colours"].end());
  const std::set<std::string> shapes(vocab["shapes"].begin(), vocab["shapes"].end());
  auto only = [](const std::string& text, const std::set<std::string>& keep) {
    std::vector<std::string> out;
    for (const auto& w : words_of(text))
      if (keep.count(w)) out.push_back(w);
    return out;
  };
  auto is_swap = [&](const json& r) {
    const auto c0 = only(r["sent0"], colours), c1 = only(r["hard_neg"], colours);
    auto s0 = c0, s1 = c1;
    std::sort(s0.begin(), s0.end());
    std::sort(s1.begin(), s1.end());
    return only(r["sent0"], shapes) == only(r["hard_neg"], shapes) && s0 == s1 && c0 != c1;
  };
  const auto rows_a = read_jsonl(a / "nli.jsonl"), rows_b = read_jsonl(b / "nli.jsonl");
  ASSERT_EQ(rows_a.size(), rows_b.size());
  int eligible = 0, swaps_a = 0, swaps_b = 0;
  for (size_t i = 0; i < rows_a.size(); ++i) {
    EXPECT_EQ(rows_a[i]["sent0"], rows_b[i]["sent0"]);  // the same premises and entailments
    EXPECT_EQ(rows_a[i]["sent1"], rows_b[i]["sent1"]);
    auto c = only(rows_a[i]["sent0"], colours);
    std::sort(c.begin(), c.end());
    eligible += std::unique(c.begin(), c.end()) - c.begin() >= 2;
    swaps_a += is_swap(rows_a[i]);
    swaps_b += is_swap(rows_b[i]);
  }
  ASSERT_GT(eligible, 10);
  // a swap that names a held-out colour-shape combination (or is true of the scene) falls back to
  // the other edits, so not every eligible row swaps
  EXPECT_GE(swaps_b * 2, eligible) << swaps_b << " of " << eligible;
  EXPECT_GT(swaps_b, 2 * swaps_a) << swaps_b << " vs " << swaps_a << " of " << eligible;
  const RunResult bad = run(std::string(UNIME_BIN) + " world --seed 7 --quick --nli-swap-percent 101 -o " +
                            (temp_root() / "w7-bad").string());
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.output.find("nli_swap_percent"), std::string::npos) << bad.output;
}

// --train-swap-percent: the rows' negatives become colour swaps of the positive where the row has
// such a candidate (checked on the scenes of the image pairs, independently of the generator)
TEST(WorldFiles, TrainSwapPercentPicksColourSwapNegatives) {
  const fs::path a = world_dir();
  const fs::path b = temp_root() / "w7-trainswap";
  ASSERT_EQ(run(std::string(UNIME_BIN) + " world --seed 7 --quick --train-per-source 40 --train-swap-percent 100 -o " +
                b.string()).code, 0);
  const fs::path c = temp_root() / "w7-trainswap0";
  ASSERT_EQ(run(std::string(UNIME_BIN) + " world --seed 7 --quick --train-per-source 40 -o " + c.string()).code, 0);
  EXPECT_EQ(read_file(c / "nli.jsonl"), read_file(b / "nli.jsonl"));
  EXPECT_EQ(read_file(a / "sugarcrepe/swap-att.json"), read_file(b / "sugarcrepe/swap-att.json"));
  // (shape, size, row, col) -> colour of every object; a swap keeps the keys and exchanges two colours
  auto objects = [](const json& scene) {
    std::map<std::string, std::string> m;
    for (const auto& o : scene["objects"])
      m[o["shape"].get<std::string>() + "/" + o["size"].get<std::string>() + "/" + o["row"].dump() + "/" +
        o["col"].dump()] = o["colour"];
    return m;
  };
  auto is_swap = [&](const std::map<std::string, json>& scenes, const json& r) {
    const std::string p = r["pos_image_path"], n = r["neg_image_path"];
    if (p.empty() || n.empty()) return false;
    const auto x = objects(scenes.at(p)), y = objects(scenes.at(n));
    if (x.size() != y.size()) return false;
    std::vector<std::string> changed;
    for (const auto& [k, col] : x) {
      if (!y.count(k)) return false;
      if (y.at(k) != col) changed.push_back(k);
    }
    return changed.size() == 2 && x.at(changed[0]) == y.at(changed[1]) && x.at(changed[1]) == y.at(changed[0]);
  };
  const auto sb = load_scenes(b), sc = load_scenes(c);
  const auto rb = read_jsonl(b / "mmeb-train.jsonl"), rc = read_jsonl(c / "mmeb-train.jsonl");
  ASSERT_EQ(rb.size(), rc.size());
  int swaps_b = 0, swaps_c = 0, changed = 0;
  for (size_t i = 0; i < rb.size(); ++i) {
    EXPECT_EQ(rb[i]["qry"], rc[i]["qry"]);  // the same rows, only the negative may differ
    EXPECT_EQ(rb[i]["pos_text"], rc[i]["pos_text"]);
    if (rb[i]["dataset"] != "CaptionT2I") continue;
    swaps_b += is_swap(sb, rb[i]);
    swaps_c += is_swap(sc, rc[i]);
    changed += rb[i]["neg_image_path"] != rc[i]["neg_image_path"] || read_file(b / rb[i]["neg_image_path"].get<std::string>()) !=
                                                                      read_file(c / rc[i]["neg_image_path"].get<std::string>());
  }
  EXPECT_GT(swaps_b, 2 * swaps_c + 3) << swaps_b << " vs " << swaps_c;
  EXPECT_GT(changed, 0);
}

// The objects a caption names, as sorted "size colour shape" phrases (size "" when not stated): a
// relation edit keeps them and changes the text; colour swaps, replacements and size flips do not.
std::vector<std::string> named_objects(const std::string& text, const json& vocab) {
  const std::set<std::string> colours(vocab["colours"].begin(), vocab["colours"].end());
  const std::set<std::string> shapes(vocab["shapes"].begin(), vocab["shapes"].end());
  const auto w = words_of(text);
  std::vector<std::string> out;
  for (size_t k = 0; k + 1 < w.size(); ++k)
    if (colours.count(w[k]) && shapes.count(w[k + 1])) {
      const bool sized = k > 0 && (w[k - 1] == "small" || w[k - 1] == "large");
      out.push_back((sized ? w[k - 1] : std::string()) + " " + w[k] + " " + w[k + 1]);
    }
  std::sort(out.begin(), out.end());
  return out;
}

bool states_relation(const std::string& text) {
  for (const auto& w : words_of(text))
    if (w == "left" || w == "right" || w == "above" || w == "below" || w == "over" || w == "under") return true;
  return false;
}

// --nli-relation-percent: the hard negatives of premises that state a relation reverse one (the
// same objects, another text), and the premises, entailments and the rest of the world stay
TEST(WorldFiles, NliRelationPercentReversesARelationAndChangesNothingElse) {
  const fs::path a = world_dir();
  const fs::path b = temp_root() / "w7-nlirel";
  ASSERT_EQ(run(std::string(UNIME_BIN) + " world --seed 7 --quick --nli-relation-percent 100 -o " + b.string()).code, 0);
  EXPECT_EQ(read_file(a / "mmeb-train.jsonl"), read_file(b / "mmeb-train.jsonl"));
  EXPECT_EQ(read_file(a / "sugarcrepe/swap-obj.json"), read_file(b / "sugarcrepe/swap-obj.json"));
  const json vocab = json::parse(read_file(a / "world.json"))["vocab"];
  auto is_relation_edit = [&](const json& r) {
    const std::string p = r["sent0"], n = r["hard_neg"];
    return states_relation(n) && named_objects(p, vocab) == named_objects(n, vocab) && p != n;
  };
  const auto rows_a = read_jsonl(a / "nli.jsonl"), rows_b = read_jsonl(b / "nli.jsonl");
  ASSERT_EQ(rows_a.size(), rows_b.size());
  int eligible = 0, edits_a = 0, edits_b = 0;
  for (size_t i = 0; i < rows_a.size(); ++i) {
    EXPECT_EQ(rows_a[i]["sent0"], rows_b[i]["sent0"]);
    EXPECT_EQ(rows_a[i]["sent1"], rows_b[i]["sent1"]);
    eligible += states_relation(rows_a[i]["sent0"]);
    edits_a += is_relation_edit(rows_a[i]);
    edits_b += is_relation_edit(rows_b[i]);
  }
  std::printf("relation edits among %d premises that state one: %d (default world %d)\n", eligible, edits_b, edits_a);
  ASSERT_GT(eligible, 10);
  EXPECT_GE(edits_b * 10, eligible * 8) << edits_b << " of " << eligible;
  EXPECT_GT(edits_b, 2 * edits_a) << edits_b << " vs " << edits_a << " of " << eligible;
  const RunResult bad = run(std::string(UNIME_BIN) + " world --seed 7 --quick --nli-relation-percent -1 -o " +
                            (temp_root() / "w7-bad-rel").string());
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.output.find("nli_relation_percent"), std::string::npos) << bad.output;
}

// --train-relation-percent: image negatives with two objects in each other's cells (read from the
// scenes), caption negatives with the same objects and one relation reversed
TEST(WorldFiles, TrainRelationPercentPicksNegativesThatDifferOnlyInWhereThingsAre) {
  const fs::path b = temp_root() / "w7-trainrel";
  ASSERT_EQ(run(std::string(UNIME_BIN) + " world --seed 7 --quick --train-per-source 40 --train-relation-percent 100 -o " +
                b.string()).code, 0);
  const fs::path c = temp_root() / "w7-trainswap0";
  if (!fs::exists(c / "world.json"))
    ASSERT_EQ(run(std::string(UNIME_BIN) + " world --seed 7 --quick --train-per-source 40 -o " + c.string()).code, 0);
  EXPECT_EQ(read_file(c / "nli.jsonl"), read_file(b / "nli.jsonl"));
  const json vocab = json::parse(read_file(b / "world.json"))["vocab"];
  // (shape, colour, size) -> cell of every object; a cell swap keeps the keys and exchanges two cells
  auto cells = [](const json& scene) {
    std::map<std::string, std::string> m;
    for (const auto& o : scene["objects"])
      m[o["shape"].get<std::string>() + "/" + o["colour"].get<std::string>() + "/" + o["size"].get<std::string>()] =
          o["row"].dump() + "/" + o["col"].dump();
    return m;
  };
  auto is_cell_swap = [&](const std::map<std::string, json>& scenes, const json& r) {
    const std::string p = r["pos_image_path"], n = r["neg_image_path"];
    if (p.empty() || n.empty()) return false;
    const auto x = cells(scenes.at(p)), y = cells(scenes.at(n));
    if (x.size() != y.size() || x.size() != scenes.at(p)["objects"].size()) return false;
    std::vector<std::string> moved;
    for (const auto& [k, cell] : x) {
      if (!y.count(k)) return false;
      if (y.at(k) != cell) moved.push_back(k);
    }
    return moved.size() == 2 && x.at(moved[0]) == y.at(moved[1]) && x.at(moved[1]) == y.at(moved[0]);
  };
  auto is_text_edit = [&](const json& r) {
    const std::string p = r["pos_text"], n = r["neg_text"];
    return !n.empty() && states_relation(p) && named_objects(p, vocab) == named_objects(n, vocab) && p != n;
  };
  const auto sb = load_scenes(b), sc = load_scenes(c);
  const auto rb = read_jsonl(b / "mmeb-train.jsonl"), rc = read_jsonl(c / "mmeb-train.jsonl");
  ASSERT_EQ(rb.size(), rc.size());
  int images_b = 0, images_c = 0, texts_b = 0, texts_c = 0;
  for (size_t i = 0; i < rb.size(); ++i) {
    EXPECT_EQ(rb[i]["qry"], rc[i]["qry"]);
    EXPECT_EQ(rb[i]["pos_text"], rc[i]["pos_text"]);
    if (rb[i]["dataset"] == "CaptionT2I") {
      images_b += is_cell_swap(sb, rb[i]);
      images_c += is_cell_swap(sc, rc[i]);
    } else if (rb[i]["dataset"] == "CaptionI2T") {
      texts_b += is_text_edit(rb[i]);
      texts_c += is_text_edit(rc[i]);
    }
  }
  std::printf("cell-swap image negatives %d (default %d), relation-reversed caption negatives %d (default %d)\n",
              images_b, images_c, texts_b, texts_c);
  EXPECT_GT(images_b, images_c + 4) << images_b << " vs " << images_c;
  EXPECT_GE(texts_b, texts_c + 8) << texts_b << " vs " << texts_c;
}

TEST(WorldFiles, NoHeldoutCombinationInAnyTrainingRow) {
  const fs::path w = world_dir();
  const Heldout h = load_heldout(w);
  ASSERT_EQ(h.combos.size(), 8u);
  const auto scenes = load_scenes(w);
  int images_checked = 0, texts_checked = 0;
  auto check_image = [&](const std::string& path, const std::string& where) {
    if (path.empty()) return;
    ASSERT_TRUE(scenes.count(path)) << where << ": image without a scene: " << path;
    ASSERT_TRUE(fs::exists(w / path)) << path;
    EXPECT_FALSE(scene_leaks(scenes.at(path), h)) << where << ": " << path;
    ++images_checked;
  };
  auto check_text = [&](const std::string& text, const std::string& where) {
    EXPECT_FALSE(h.text_leaks(text)) << where << ": " << text;
    ++texts_checked;
  };
  for (const auto& r : read_jsonl(w / "captions.jsonl")) {
    check_image(r["image"], "captions.jsonl");
    check_text(r["text"], "captions.jsonl");
  }
  for (const auto& r : read_jsonl(w / "vqa.jsonl")) {
    check_image(r["image"], "vqa.jsonl");
    check_text(r["question"], "vqa.jsonl");
    check_text(r["answer"], "vqa.jsonl");
    // "What colour is the star?" + "purple" would state a held-out combination too
    std::smatch m;
    const std::string q = r["question"];
    if (std::regex_match(q, m, std::regex("What colour is the ([a-z]+)\\?")))
      check_text(r["answer"].get<std::string>() + " " + m[1].str(), "vqa.jsonl implied");
    if (std::regex_match(q, m, std::regex("What shape is the ([a-z]+) object\\?")))
      check_text(m[1].str() + " " + r["answer"].get<std::string>(), "vqa.jsonl implied");
  }
  for (const auto& r : read_jsonl(w / "nli.jsonl")) {
    for (const char* k : {"sent0", "sent1", "hard_neg"}) check_text(r[k], "nli.jsonl");
  }
  std::set<std::string> sources;
  for (const auto& r : read_jsonl(w / "mmeb-train.jsonl")) {
    const std::string where = "mmeb-train.jsonl/" + r["dataset"].get<std::string>();
    sources.insert(r["dataset"]);
    for (const char* k : {"qry", "pos_text", "neg_text"}) check_text(r[k], where);
    for (const char* k : {"qry_image_path", "pos_image_path", "neg_image_path"}) check_image(r[k], where);
  }
  EXPECT_EQ(sources.size(), 12u);
  // the leak check has teeth: the OOD eval queries do contain held-out combinations
  int ood_hits = 0;
  for (const auto& r : read_jsonl(w / "mmeb-eval/NovelObjectCls.jsonl"))
    ood_hits += scene_leaks(scenes.at(r["qry_img_path"]), h) && h.text_leaks(r["tgt_text"][0]);
  EXPECT_EQ(ood_hits, 12);
  EXPECT_GT(images_checked, 300);
  EXPECT_GT(texts_checked, 500);
}

TEST(WorldFiles, EvalSplitsAndFormats) {
  const fs::path w = world_dir();
  const Heldout h = load_heldout(w);
  const auto scenes = load_scenes(w);
  const json world = json::parse(read_file(w / "world.json"));
  const json manifest = json::parse(read_file(w / "mmeb-eval/manifest.json"));
  ASSERT_EQ(manifest.size(), world["datasets"].size());
  std::map<std::string, int> per_task, per_split;
  for (auto& [name, info] : manifest.items()) {
    SCOPED_TRACE(name);
    ASSERT_EQ(info.size(), 2u);
    const std::string task = info["meta_task"], split = info["split"];
    ++per_task[task];
    ++per_split[split];
    EXPECT_TRUE(split == "IND" || split == "OOD");
    const std::string reason = world["datasets"][name]["ood_reason"];
    const auto rows = read_jsonl(w / "mmeb-eval" / (name + ".jsonl"));
    ASSERT_EQ(rows.size(), 12u);
    for (const auto& r : rows) {
      ASSERT_EQ(r.size(), 4u);
      const auto& texts = r["tgt_text"];
      const auto& paths = r["tgt_img_path"];
      ASSERT_EQ(texts.size(), paths.size());
      ASSERT_GE(texts.size(), 2u);
      ASSERT_LE(texts.size(), 10u);
      std::set<std::string> ids;
      for (size_t k = 0; k < texts.size(); ++k) {
        EXPECT_TRUE(ids.insert(texts[k].get<std::string>() + "|" + paths[k].get<std::string>()).second)
            << "duplicate candidate " << k;
        const std::string p = paths[k];
        if (!p.empty()) EXPECT_TRUE(fs::exists(w / p)) << p;
      }
      const std::string qimg = r["qry_img_path"];
      EXPECT_EQ(qimg.empty(), r["qry_text"].get<std::string>().find("<|image_1|>") == std::string::npos);
      // which scene carries the query's content: the query image, else the gold image
      const std::string content = !qimg.empty() ? qimg : paths[0].get<std::string>();
      ASSERT_TRUE(scenes.count(content)) << content;
      bool leaks = scene_leaks(scenes.at(content), h);
      if (name == "NovelEditI2I") leaks = scene_leaks(scenes.at(paths[0]), h);  // edit creates it
      if (reason == "heldout-combination") {
        EXPECT_TRUE(leaks) << "OOD query without a held-out combination: " << r.dump();
      } else {
        EXPECT_FALSE(leaks) << r.dump();
        EXPECT_FALSE(h.text_leaks(r["qry_text"])) << r.dump();
        if (!paths[0].get<std::string>().empty()) EXPECT_FALSE(scene_leaks(scenes.at(paths[0]), h));
      }
      // gold checks against the scene content, per dataset kind
      if (name == "ObjectCls" || name == "NovelObjectCls") {
        const auto& o = scenes.at(qimg)["objects"][0];
        EXPECT_EQ(texts[0], o["colour"].get<std::string>() + " " + o["shape"].get<std::string>());
      } else if (name == "CountCls") {
        const size_t n = scenes.at(qimg)["objects"].size();
        EXPECT_EQ(words_of(texts[0])[1], n == 1 ? "object" : "objects");
      } else if (name == "RefGround" || name == "NovelRefGround") {
        std::smatch m;
        const std::string q = r["qry_text"];
        ASSERT_TRUE(std::regex_search(q, m, std::regex("labeled as \"([a-z]+) ([a-z]+)\"")));
        const auto& gold = scenes.at(paths[0]);
        const auto& o = gold["objects"][gold["crop_object"].get<int>()];
        EXPECT_EQ(o["colour"], m[1].str());
        EXPECT_EQ(o["shape"], m[2].str());
        for (size_t k = 1; k < paths.size(); ++k) {  // no other candidate shows such an object
          const auto& c = scenes.at(paths[k]);
          const int idx = c["crop_object"];
          if (idx < 0) continue;
          const auto& co = c["objects"][idx];
          EXPECT_FALSE(co["colour"] == m[1].str() && co["shape"] == m[2].str()) << paths[k];
        }
      }
    }
  }
  EXPECT_EQ(per_task.size(), 4u);
  for (auto& [task, n] : per_task) EXPECT_GE(n, 3) << task;
  EXPECT_GE(per_split["IND"], 10);
  EXPECT_GE(per_split["OOD"], 6);
}

TEST(WorldFiles, RetrievalSugarcrepeCorpusAndImages) {
  const fs::path w = world_dir();
  const auto scenes = load_scenes(w);
  const auto retrieval = read_jsonl(w / "retrieval.jsonl");
  ASSERT_EQ(retrieval.size(), 12u);
  for (const auto& r : retrieval) {
    EXPECT_TRUE(fs::exists(w / r["image"].get<std::string>()));
    EXPECT_EQ(r["captions"].size(), 5u);
    // every object of the image is mentioned with its colour in each caption
    for (const auto& cap : r["captions"]) {
      const std::string c = cap;
      for (const auto& o : scenes.at(r["image"])["objects"]) {
        const std::string colour = o["colour"], shape = o["shape"];
        const std::regex re(colour + " (large |small )?" + shape);
        EXPECT_TRUE(std::regex_search(c, re)) << c;
      }
    }
  }
  for (const char* subset : {"replace-obj", "replace-att", "replace-rel", "swap-obj", "swap-att",
                             "add-obj", "add-att"}) {
    const json s = json::parse(read_file(w / "sugarcrepe" / (std::string(subset) + ".json")));
    ASSERT_EQ(s.size(), 10u) << subset;
    for (size_t i = 0; i < s.size(); ++i) {
      const json& item = s.at(std::to_string(i));
      EXPECT_TRUE(fs::exists(w / item["filename"].get<std::string>()));
      EXPECT_NE(item["caption"], item["negative_caption"]);
      // content words (articles and relation words aside)
      const std::set<std::string> skip = {"a", "an", "to", "the", "of", "left", "right",
                                          "above", "below", "over", "under"};
      auto content = [&](const std::string& t) {
        std::multiset<std::string> m;
        for (const auto& x : words_of(t))
          if (!skip.count(x)) m.insert(x);
        return m;
      };
      const auto a = content(item["caption"]), b = content(item["negative_caption"]);
      const std::string sub = subset;
      if (sub.rfind("swap", 0) == 0 || sub == "replace-rel") {  // same words, other order/relation
        EXPECT_EQ(a, b) << sub << ": " << item.dump();
      } else if (sub.rfind("add", 0) == 0) {
        EXPECT_GT(b.size(), a.size()) << sub << ": " << item.dump();
      } else {  // one word replaced
        EXPECT_EQ(a.size(), b.size()) << sub << ": " << item.dump();
        EXPECT_NE(a, b) << sub << ": " << item.dump();
      }
    }
  }
  // the tokenizer corpus covers every word used anywhere in the world
  std::set<std::string> corpus;
  for (const auto& x : words_of(read_file(w / "corpus.txt"))) corpus.insert(x);
  std::vector<std::string> texts;
  for (auto& e : fs::directory_iterator(w / "mmeb-eval")) {
    if (e.path().extension() != ".jsonl") continue;
    for (const auto& r : read_jsonl(e.path())) {
      texts.push_back(r["qry_text"]);
      for (const auto& t : r["tgt_text"]) texts.push_back(t);
    }
  }
  for (auto& e : fs::directory_iterator(w / "sugarcrepe")) {
    const json subset = json::parse(read_file(e.path()));
    for (auto& [k, item] : subset.items()) {
      texts.push_back(item["caption"]);
      texts.push_back(item["negative_caption"]);
    }
  }
  for (const auto& r : retrieval)
    for (const auto& c : r["captions"]) texts.push_back(c);
  int words_checked = 0;
  for (const auto& t : texts)
    for (const auto& x : words_of(t)) {
      EXPECT_TRUE(corpus.count(x)) << "word missing from corpus.txt: " << x << " in " << t;
      ++words_checked;
    }
  EXPECT_GT(words_checked, 1000);
}

TEST(WorldFiles, ImagesShowTheirScenes) {
  // Independent check with PIL: in each object's cell the most frequent colour (nearest palette
  // entry) is the object's colour; empty cells show none of the object colours.
  const fs::path w = world_dir();
  const fs::path script = temp_root() / "check_images.py";
  std::ofstream(script) << R"PY(
import json, sys
from PIL import Image
root = sys.argv[1]
palette = {"red": (220, 38, 38), "orange": (245, 140, 20), "yellow": (245, 222, 40),
           "green": (36, 168, 72), "blue": (40, 88, 228), "purple": (142, 58, 196),
           "white": (246, 246, 246), "black": (22, 22, 22)}
checked = 0
for line in open(root + "/scenes.jsonl"):
    s = json.loads(line)
    if "crop_object" in s:
        continue
    if checked >= int(sys.argv[2]):
        break
    im = Image.open(root + "/" + s["image"]).convert("RGB")
    n = im.size[0]
    cell = n / 3.0
    px = im.load()
    occupied = {(o["row"], o["col"]): o for o in s["objects"]}
    for r in range(3):
        for c in range(3):
            counts = {}
            for y in range(int(r * cell) + 1, int((r + 1) * cell) - 1):
                for x in range(int(c * cell) + 1, int((c + 1) * cell) - 1):
                    p = px[x, y]
                    for name, q in palette.items():
                        if max(abs(p[i] - q[i]) for i in range(3)) <= 16:
                            counts[name] = counts.get(name, 0) + 1
            o = occupied.get((r, c))
            if o is None:
                assert sum(counts.values()) <= 3, (s["image"], r, c, counts)
            else:
                best = max(counts, key=counts.get) if counts else None
                assert best == o["colour"], (s["image"], r, c, o, counts)
                assert counts[best] >= 20, (s["image"], o, counts)
    checked += 1
print("checked", checked)
)PY";
  const RunResult r = run(std::string(UNIME_PYTHON) + " " + script.string() + " " + w.string() + " 150");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("checked 150"), std::string::npos) << r.output;
}

TEST(WorldCli, BadOptionsGiveOneErrorLine) {
  const fs::path d = temp_root() / "bad";
  RunResult r = run(std::string(UNIME_BIN) + " world --seed 1 --quick --max-objects 9 -o " + d.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("error: world config: max_objects must be in [2, 5], got 9"), std::string::npos)
      << r.output;
  r = run(std::string(UNIME_BIN) + " world --seed 1 --quick --candidates 1 -o " + d.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("candidates"), std::string::npos) << r.output;
  std::ofstream(temp_root() / "afile") << "x";
  r = run(std::string(UNIME_BIN) + " world --seed 1 --quick -o " + (temp_root() / "afile").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("not a directory"), std::string::npos) << r.output;
}
