// src/data/world-scene.cpp - scene model of the procedural world: PRNG, vocabulary, sampling,
// edits, descriptions and their truth. See world-scene.h.
#include "data/world-scene.h"

#include <algorithm>
#include <cctype>
#include <functional>

namespace unime::data::world {

// ---- PRNG --------------------------------------------------------------------------------------

uint64_t Rng::next() {
  // reference: https://prng.di.unimi.it/splitmix64.c
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

int Rng::below(int n) {
  const uint64_t bound = static_cast<uint64_t>(n);
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % bound);  // multiple of bound
  uint64_t r = next();
  while (r >= limit) r = next();
  return static_cast<int>(r % bound);
}

uint64_t mix_seed(uint64_t a, uint64_t b) {
  Rng r(a ^ (b * 0xd1b54a32d192ed03ULL + 0x8cb92ba72f3d8dd7ULL));
  r.next();
  return r.next();
}

uint64_t hash_name(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

Rng stream(uint64_t seed, std::string_view name, uint64_t index) {
  return Rng(mix_seed(mix_seed(seed, hash_name(name)), index));
}

// ---- vocabulary --------------------------------------------------------------------------------

const char* const kShapeNames[kNumShapes] = {"circle", "square", "triangle", "cross", "star", "ring"};
const char* const kColourNames[kNumColours] = {"red",  "orange", "yellow", "green",
                                               "blue", "purple", "white",  "black"};
const char* const kSizeNames[kNumSizes] = {"small", "large"};
const char* const kToneNames[kNumTones] = {"grey", "sand", "slate", "sage"};
const char* const kTextureNames[kNumTextures] = {"plain", "speckled", "striped"};
// Palette chosen to stay distinct from each other and from every background tone at 64x64.
const uint8_t kColourRgb[kNumColours][3] = {
    {220, 38, 38},  {245, 140, 20}, {245, 222, 40},  {36, 168, 72},
    {40, 88, 228},  {142, 58, 196}, {246, 246, 246}, {22, 22, 22},
};
const uint8_t kToneRgb[kNumTones][3] = {
    {128, 128, 128}, {176, 158, 122}, {92, 108, 130}, {122, 142, 114}};
const char* const kRelationNames[kNumRelations] = {"left of", "right of", "above", "below"};

int opposite(int relation) {
  switch (relation) {
    case kLeftOf: return kRightOf;
    case kRightOf: return kLeftOf;
    case kAbove: return kBelow;
    default: return kAbove;
  }
}

std::string combo_name(int colour, int shape) {
  return std::string(kColourNames[colour]) + " " + kShapeNames[shape];
}

std::string position_name(int row, int col) {
  static const char* const kRows[kGrid] = {"top", "middle", "bottom"};
  static const char* const kCols[kGrid] = {"left", "centre", "right"};
  if (row == 1 && col == 1) return "centre";
  return std::string(kRows[row]) + " " + kCols[col];
}

std::string count_word(int n) {
  static const char* const kWords[] = {"zero", "one", "two",   "three", "four",
                                       "five", "six", "seven", "eight", "nine"};
  return (n >= 0 && n <= 9) ? kWords[n] : std::to_string(n);
}

std::string count_phrase(int n) { return count_word(n) + (n == 1 ? " object" : " objects"); }

// ---- scenes ------------------------------------------------------------------------------------

bool relation_holds(int relation, const Object& a, const Object& b) {
  switch (relation) {
    case kLeftOf: return a.col < b.col;
    case kRightOf: return a.col > b.col;
    case kAbove: return a.row < b.row;
    case kBelow: return a.row > b.row;
    default: return false;
  }
}

std::string content_key(const Scene& s) {
  std::vector<std::string> parts;
  for (const auto& o : s.objects) {
    parts.push_back(std::to_string(o.shape) + "." + std::to_string(o.colour) + "." +
                    std::to_string(o.size) + "." + std::to_string(o.row) + "." +
                    std::to_string(o.col));
  }
  std::sort(parts.begin(), parts.end());
  std::string key;
  for (const auto& p : parts) key += p + ";";
  return key;
}

bool same_content(const Scene& a, const Scene& b) { return content_key(a) == content_key(b); }

int find_shape(const Scene& s, int shape) {
  for (size_t i = 0; i < s.objects.size(); ++i)
    if (s.objects[i].shape == shape) return static_cast<int>(i);
  return -1;
}

bool cell_used(const Scene& s, int row, int col) {
  for (const auto& o : s.objects)
    if (o.row == row && o.col == col) return true;
  return false;
}

std::vector<bool> choose_heldout(uint64_t seed, int n) {
  std::vector<bool> held(kNumCombos, false);
  Rng rng = stream(seed, "heldout", 0);
  std::vector<int> order(kNumCombos);
  for (int i = 0; i < kNumCombos; ++i) order[i] = i;
  rng.shuffle(order);
  const int per_colour = (n + kNumColours - 1) / kNumColours;
  const int per_shape = (n + kNumShapes - 1) / kNumShapes;
  std::vector<int> n_colour(kNumColours, 0), n_shape(kNumShapes, 0);
  int chosen = 0;
  for (int id : order) {
    if (chosen == n) break;
    const int c = id / kNumShapes, s = id % kNumShapes;
    if (n_colour[c] >= per_colour || n_shape[s] >= per_shape) continue;
    held[id] = true;
    ++n_colour[c];
    ++n_shape[s];
    ++chosen;
  }
  return held;
}

static Object random_object(Rng& rng, int shape, int colour, int row, int col) {
  Object o;
  o.shape = shape;
  o.colour = colour;
  o.size = rng.below(kNumSizes);
  o.row = row;
  o.col = col;
  o.jx = rng.range(-100, 100);
  o.jy = rng.range(-100, 100);
  o.shade = rng.range(-12, 12);
  return o;
}

Scene sample_scene(Rng& rng, const Rules& rules, int n, Split split) {
  Scene s;
  s.tone = rng.below(kNumTones);
  s.texture = rng.below(kNumTextures);
  s.noise_seed = rng.next();
  std::vector<int> cells(kGrid * kGrid);
  for (int i = 0; i < kGrid * kGrid; ++i) cells[i] = i;
  rng.shuffle(cells);

  std::vector<int> shapes(kNumShapes), colours(kNumColours);
  for (int i = 0; i < kNumShapes; ++i) shapes[i] = i;
  for (int i = 0; i < kNumColours; ++i) colours[i] = i;

  int first = 0;  // objects [first, n) are drawn from the training combinations
  if (split == Split::Ood) {
    std::vector<int> held;
    for (int id = 0; id < kNumCombos; ++id)
      if (rules.heldout[id]) held.push_back(id);
    const int id = rng.pick(held);
    const int c = id / kNumShapes, sh = id % kNumShapes;
    s.objects.push_back(random_object(rng, sh, c, cells[0] / kGrid, cells[0] % kGrid));
    shapes.erase(std::find(shapes.begin(), shapes.end(), sh));
    colours.erase(std::find(colours.begin(), colours.end(), c));
    first = 1;
  }
  // Pair unused shapes with unused colours until no pair is held out (rejection keeps the
  // draw uniform over the allowed pairings; held-out combinations are sparse, so it ends fast).
  for (int attempt = 0;; ++attempt) {
    rng.shuffle(shapes);
    rng.shuffle(colours);
    bool ok = true;
    for (int i = first; i < n && ok; ++i)
      ok = !rules.is_heldout(colours[i - first], shapes[i - first]);
    if (ok || attempt > 1000) break;
  }
  for (int i = first; i < n; ++i) {
    s.objects.push_back(random_object(rng, shapes[i - first], colours[i - first],
                                      cells[i] / kGrid, cells[i] % kGrid));
  }
  return s;
}

Scene rejitter(const Scene& s, Rng& rng) {
  Scene t = s;
  t.noise_seed = rng.next();
  for (auto& o : t.objects) {
    o.jx = rng.range(-100, 100);
    o.jy = rng.range(-100, 100);
    o.shade = rng.range(-12, 12);
  }
  return t;
}

bool scene_has_heldout(const Scene& s, const Rules& rules) {
  for (const auto& o : s.objects)
    if (rules.is_heldout(o.colour, o.shape)) return true;
  return false;
}

static int word_index(const std::string& w, const char* const* names, int n) {
  for (int i = 0; i < n; ++i)
    if (w == names[i]) return i;
  return -1;
}

bool text_has_heldout(std::string_view text, const Rules& rules) {
  std::vector<std::string> words;
  std::string cur;
  for (char ch : text) {
    if (std::isalpha(static_cast<unsigned char>(ch))) {
      cur += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    } else if (!cur.empty()) {
      words.push_back(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) words.push_back(cur);
  for (size_t i = 0; i < words.size(); ++i) {
    const int c = word_index(words[i], kColourNames, kNumColours);
    if (c < 0) continue;
    size_t j = i + 1;
    if (j < words.size() && word_index(words[j], kSizeNames, kNumSizes) >= 0) ++j;
    if (j >= words.size()) continue;
    const int sh = word_index(words[j], kShapeNames, kNumShapes);
    if (sh >= 0 && rules.is_heldout(c, sh)) return true;
  }
  return false;
}

// ---- edits -------------------------------------------------------------------------------------

static bool valid_index(const Scene& s, int i) {
  return i >= 0 && i < static_cast<int>(s.objects.size());
}

bool edit_recolour(Scene& s, int i, int colour) {
  if (!valid_index(s, i)) return false;
  for (const auto& o : s.objects)
    if (o.colour == colour) return false;
  s.objects[i].colour = colour;
  return true;
}

bool edit_reshape(Scene& s, int i, int shape) {
  if (!valid_index(s, i) || find_shape(s, shape) >= 0) return false;
  s.objects[i].shape = shape;
  return true;
}

bool edit_resize(Scene& s, int i) {
  if (!valid_index(s, i)) return false;
  s.objects[i].size = 1 - s.objects[i].size;
  return true;
}

bool edit_move(Scene& s, int i, int row, int col) {
  if (!valid_index(s, i) || cell_used(s, row, col)) return false;
  s.objects[i].row = row;
  s.objects[i].col = col;
  return true;
}

bool edit_swap_colours(Scene& s, int i, int j) {
  if (!valid_index(s, i) || !valid_index(s, j) || i == j) return false;
  std::swap(s.objects[i].colour, s.objects[j].colour);
  return true;
}

bool edit_swap_cells(Scene& s, int i, int j) {
  if (!valid_index(s, i) || !valid_index(s, j) || i == j) return false;
  std::swap(s.objects[i].row, s.objects[j].row);
  std::swap(s.objects[i].col, s.objects[j].col);
  return true;
}

bool edit_remove(Scene& s, int i) {
  if (!valid_index(s, i) || s.objects.size() < 2) return false;
  s.objects.erase(s.objects.begin() + i);
  return true;
}

bool edit_add(Scene& s, const Object& o) {
  if (static_cast<int>(s.objects.size()) >= kMaxObjects || cell_used(s, o.row, o.col) ||
      find_shape(s, o.shape) >= 0)
    return false;
  for (const auto& p : s.objects)
    if (p.colour == o.colour) return false;
  s.objects.push_back(o);
  return true;
}

std::vector<int> unused_colours(const Scene& s, Rng& rng) {
  std::vector<int> out;
  for (int c = 0; c < kNumColours; ++c) {
    bool used = false;
    for (const auto& o : s.objects) used = used || o.colour == c;
    if (!used) out.push_back(c);
  }
  rng.shuffle(out);
  return out;
}

std::vector<int> unused_shapes(const Scene& s, Rng& rng) {
  std::vector<int> out;
  for (int sh = 0; sh < kNumShapes; ++sh)
    if (find_shape(s, sh) < 0) out.push_back(sh);
  rng.shuffle(out);
  return out;
}

std::vector<std::pair<int, int>> empty_cells(const Scene& s, Rng& rng) {
  std::vector<std::pair<int, int>> out;
  for (int r = 0; r < kGrid; ++r)
    for (int c = 0; c < kGrid; ++c)
      if (!cell_used(s, r, c)) out.emplace_back(r, c);
  rng.shuffle(out);
  return out;
}

// ---- descriptions ------------------------------------------------------------------------------

bool mention_matches(const Mention& m, const Object& o) {
  return (m.shape < 0 || m.shape == o.shape) && (m.colour < 0 || m.colour == o.colour) &&
         (m.size < 0 || m.size == o.size) && (m.row < 0 || m.row == o.row) &&
         (m.col < 0 || m.col == o.col);
}

bool holds(const Description& d, const Scene& s) {
  if (d.count >= 0 && d.count != static_cast<int>(s.objects.size())) return false;
  if (d.tone >= 0 && d.tone != s.tone) return false;
  if (d.texture >= 0 && d.texture != s.texture) return false;
  for (int sh : d.absent_shapes)
    if (find_shape(s, sh) >= 0) return false;
  const int n_m = static_cast<int>(d.mentions.size());
  std::vector<int> bind(n_m, -1);
  std::vector<bool> used(s.objects.size(), false);
  // facts whose endpoints are both bound once mention k is bound
  auto facts_ok = [&](int k) {
    for (const auto& f : d.facts) {
      if (std::max(f.a, f.b) != k) continue;
      if (!relation_holds(f.relation, s.objects[bind[f.a]], s.objects[bind[f.b]])) return false;
    }
    return true;
  };
  std::function<bool(int)> assign = [&](int k) -> bool {
    if (k == n_m) return true;
    for (size_t o = 0; o < s.objects.size(); ++o) {
      if (used[o] || !mention_matches(d.mentions[k], s.objects[o])) continue;
      bind[k] = static_cast<int>(o);
      used[o] = true;
      if (facts_ok(k) && assign(k + 1)) return true;
      used[o] = false;
    }
    return false;
  };
  for (const auto& f : d.facts)
    if (f.a < 0 || f.b < 0 || f.a >= n_m || f.b >= n_m || f.a == f.b) return false;
  return assign(0);
}

bool description_has_heldout(const Description& d, const Rules& rules) {
  for (const auto& m : d.mentions)
    if (m.colour >= 0 && m.shape >= 0 && rules.is_heldout(m.colour, m.shape)) return true;
  return false;
}

int true_relation(const Object& a, const Object& b, Rng& rng) {
  std::vector<int> rels;
  for (int r = 0; r < kNumRelations; ++r)
    if (relation_holds(r, a, b)) rels.push_back(r);
  if (rels.empty()) return -1;
  return rng.pick(rels);
}

Description describe(const Scene& s, Rng& rng, const DescribeOptions& opt) {
  Description d;
  std::vector<int> order(s.objects.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  rng.shuffle(order);
  for (int i : order) {
    const Object& o = s.objects[i];
    Mention m;
    m.shape = o.shape;
    m.colour = o.colour;
    if (rng.chance(opt.size_percent, 100)) m.size = o.size;
    d.mentions.push_back(m);
  }
  const int n = static_cast<int>(order.size());
  if (n >= 2 && opt.max_facts > 0 && rng.chance(opt.fact_percent, 100)) {
    const int k = rng.range(1, opt.max_facts);
    for (int t = 0; t < k; ++t) {
      const int a = rng.below(n);
      int b = rng.below(n - 1);
      if (b >= a) ++b;
      bool dup = false;
      for (const auto& f : d.facts) dup = dup || (f.a == a && f.b == b) || (f.a == b && f.b == a);
      if (dup) continue;
      const int r = true_relation(s.objects[order[a]], s.objects[order[b]], rng);
      if (r >= 0) d.facts.push_back({a, b, r});
    }
  }
  if (opt.background) {
    d.tone = s.tone;
    d.texture = s.texture;
  }
  return d;
}

TextStyle random_style(Rng& rng) {
  TextStyle st;
  st.intro = rng.below(kNumIntros);
  st.rel_variant = rng.below(2);
  return st;
}

std::string relation_phrase(int relation, int variant) {
  static const char* const kPhrases[kNumRelations][2] = {
      {"to the left of", "left of"},
      {"to the right of", "right of"},
      {"above", "over"},
      {"below", "under"},
  };
  return kPhrases[relation][variant & 1];
}

std::string mention_phrase(const Mention& m, bool definite) {
  std::string words;
  auto add = [&](const std::string& w) { words += (words.empty() ? "" : " ") + w; };
  if (m.size >= 0) add(kSizeNames[m.size]);
  if (m.colour >= 0) add(kColourNames[m.colour]);
  add(m.shape >= 0 ? kShapeNames[m.shape] : "object");
  if (m.row >= 0 && m.col >= 0) add("in the " + position_name(m.row, m.col));
  if (definite) return "the " + words;
  const char c = words[0];
  const bool vowel = c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
  return (vowel ? "an " : "a ") + words;
}

static std::string join_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += (i + 1 == items.size()) ? " and " : ", ";
    out += items[i];
  }
  return out;
}

std::string render_caption(const Description& d, const TextStyle& style) {
  static const char* const kIntros[kNumIntros] = {"", "a picture of ", "an image showing ",
                                                  "there is "};
  std::string body;
  if (d.facts.empty()) {
    std::vector<std::string> items;
    for (const auto& m : d.mentions) items.push_back(mention_phrase(m, false));
    body = join_list(items);
  } else {
    const Fact& f0 = d.facts[0];
    body = mention_phrase(d.mentions[f0.a], false) + " " +
           relation_phrase(f0.relation, style.rel_variant) + " " +
           mention_phrase(d.mentions[f0.b], false);
    std::vector<std::string> rest;
    for (int i = 0; i < static_cast<int>(d.mentions.size()); ++i)
      if (i != f0.a && i != f0.b) rest.push_back(mention_phrase(d.mentions[i], false));
    // a separate sentence: "X left of Y and Z" would read as "left of [Y and Z]"
    if (!rest.empty()) body += ". there is also " + join_list(rest);
  }
  std::string text = std::string(kIntros[style.intro % kNumIntros]) + body + ".";
  for (size_t k = 1; k < d.facts.size(); ++k) {
    const Fact& f = d.facts[k];
    text += " " + mention_phrase(d.mentions[f.a], true) + " is " +
            relation_phrase(f.relation, style.rel_variant) + " " +
            mention_phrase(d.mentions[f.b], true) + ".";
  }
  for (int sh : d.absent_shapes) text += std::string(" there is no ") + kShapeNames[sh] + ".";
  if (d.tone >= 0 || d.texture >= 0) {
    text += " the background is ";
    if (d.texture >= 0) text += std::string(kTextureNames[d.texture]) + (d.tone >= 0 ? " " : "");
    if (d.tone >= 0) text += kToneNames[d.tone];
    text += ".";
  }
  if (d.count >= 0) {
    text += std::string(" there ") + (d.count == 1 ? "is " : "are ") + count_phrase(d.count) +
            " in total.";
  }
  // capitalise each sentence
  bool start = true;
  for (auto& ch : text) {
    if (start && std::isalpha(static_cast<unsigned char>(ch))) {
      ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      start = false;
    } else if (ch == '.') {
      start = true;
    }
  }
  return text;
}

}  // namespace unime::data::world
