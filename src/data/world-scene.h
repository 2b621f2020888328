// src/data/world-scene.h - the procedural world's scene model (used by `unime world`).
//
// A scene is a few objects (shape, colour, size) placed on a coarse kGrid x kGrid grid over a
// plain or lightly textured background. Everything else in the world (captions, NLI sentences,
// MMEB rows, SugarCrepe edits) is built from two structures defined here:
//   Scene        what is drawn (world-draw.cpp renders it),
//   Description  a set of stated facts about a scene (mentions of objects with optional
//                attributes and positions, relations between mentions, an exact count, the
//                background); `holds(description, scene)` decides whether a caption is true.
// Hard negatives are then scene edits or description edits that make `holds` false, which
// keeps every "wrong" candidate provably wrong.
//
// Determinism: all randomness comes from Rng (splitmix64, integers only); no floating point
// decides anything here. No torch, no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace unime::data::world {

// ---- deterministic PRNG ------------------------------------------------------------------------

/// splitmix64 (Steele, Lea, Flood 2014). Integer-only, so every platform and standard library
/// draws the same numbers (std::uniform_*_distribution does not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  /// Uniform integer in [0, n) for n > 0 (rejection sampling: no modulo bias).
  int below(int n);
  /// Uniform integer in [lo, hi].
  int range(int lo, int hi) { return lo + below(hi - lo + 1); }
  /// True with probability num / den.
  bool chance(int num, int den) { return below(den) < num; }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[below(static_cast<int>(v.size()))]; }
  /// Fisher-Yates.
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(static_cast<int>(i))]);
  }

 private:
  uint64_t state_;
};

/// Mixes two 64-bit values into a new seed (splitmix64 finaliser).
uint64_t mix_seed(uint64_t a, uint64_t b);
/// FNV-1a 64-bit hash of a name.
uint64_t hash_name(std::string_view name);
/// The generator for item `index` of the named stream: items do not depend on how many other
/// items are drawn, so `--quick` worlds are prefixes of the full ones.
Rng stream(uint64_t seed, std::string_view name, uint64_t index);

// ---- vocabulary --------------------------------------------------------------------------------

inline constexpr int kNumShapes   = 6;
inline constexpr int kNumColours  = 8;
inline constexpr int kNumSizes    = 2;
inline constexpr int kNumTones    = 4;
inline constexpr int kNumTextures = 3;
inline constexpr int kNumCombos   = kNumShapes * kNumColours;  // colour-shape combinations
inline constexpr int kGrid        = 3;                         // positions: kGrid x kGrid cells
inline constexpr int kMaxObjects  = 5;  // hard limit: shapes and colours are unique per scene

extern const char* const kShapeNames[kNumShapes];      // circle square triangle cross star ring
extern const char* const kColourNames[kNumColours];    // red orange yellow green blue purple ...
extern const char* const kSizeNames[kNumSizes];        // small large
extern const char* const kToneNames[kNumTones];        // background colours
extern const char* const kTextureNames[kNumTextures];  // plain speckled striped
extern const uint8_t kColourRgb[kNumColours][3];
extern const uint8_t kToneRgb[kNumTones][3];

/// Relations between two objects, decided by grid cells (strict: same column = neither left
/// nor right), so a relation and its opposite are never both true.
enum Relation : int { kLeftOf = 0, kRightOf = 1, kAbove = 2, kBelow = 3 };
inline constexpr int kNumRelations = 4;
extern const char* const kRelationNames[kNumRelations];  // canonical: "left of", ...
int opposite(int relation);

inline int combo_id(int colour, int shape) { return colour * kNumShapes + shape; }
/// "purple star"
std::string combo_name(int colour, int shape);
/// "top left", "centre", "bottom right", ...
std::string position_name(int row, int col);
/// "one" .. "nine"
std::string count_word(int n);
/// "two objects" / "one object"
std::string count_phrase(int n);

// ---- scenes ------------------------------------------------------------------------------------

struct Object {
  int shape = 0, colour = 0, size = 0;  // indices into the name tables
  int row = 0, col = 0;                 // grid cell
  int jx = 0, jy = 0;                   // jitter in [-100, 100] percent of the maximum offset
  int shade = 0;                        // brightness offset added to the palette colour
};

struct Scene {
  int tone = 0, texture = 0;    // background
  uint64_t noise_seed = 0;      // background texture pattern
  std::vector<Object> objects;  // shapes are unique within a scene, and so are colours
};

bool relation_holds(int relation, const Object& a, const Object& b);
/// Same objects (shape, colour, size, cell), ignoring jitter, shade and background noise.
bool same_content(const Scene& a, const Scene& b);
/// A canonical string of the content (for de-duplication).
std::string content_key(const Scene& s);
/// Index of the object with this shape, or -1.
int find_shape(const Scene& s, int shape);
bool cell_used(const Scene& s, int row, int col);

/// Which colour-shape combinations exist only in OOD evaluation.
struct Rules {
  int max_objects = 4;
  std::vector<bool> heldout = std::vector<bool>(kNumCombos, false);
  bool is_heldout(int colour, int shape) const { return heldout[combo_id(colour, shape)]; }
};

/// Chooses n held-out combinations, spread so that every colour and every shape keeps most of
/// its combinations in training (at most ceil(n / kNumColours) per colour, ceil(n / kNumShapes)
/// per shape).
std::vector<bool> choose_heldout(uint64_t seed, int n);

/// Train: a training row. Ind: evaluation, training distribution. Ood: evaluation where
/// objects[0] is a held-out combination (the others are not).
enum class Split { Train, Ind, Ood };

/// A scene with n objects (n <= kMaxObjects, <= kGrid * kGrid), unique shapes and colours,
/// distinct cells, random jitter/shade/background. objects[0] is the "focus" object; under
/// Split::Ood it is a held-out combination.
Scene sample_scene(Rng& rng, const Rules& rules, int n, Split split);
/// Re-draws jitter, shade and background noise (same content): "another photo of it".
Scene rejitter(const Scene& s, Rng& rng);
bool scene_has_heldout(const Scene& s, const Rules& rules);
/// True if the text contains a colour word directly followed by a shape word (optionally with
/// a size word in between) naming a held-out combination. Case-insensitive.
bool text_has_heldout(std::string_view text, const Rules& rules);

// ---- scene edits (each returns false when the edit is impossible) -----------------------------

bool edit_recolour(Scene& s, int i, int colour);  // colour must be unused in the scene
bool edit_reshape(Scene& s, int i, int shape);    // shape must be unused in the scene
bool edit_resize(Scene& s, int i);                // flips small <-> large
bool edit_move(Scene& s, int i, int row, int col);
bool edit_swap_colours(Scene& s, int i, int j);
bool edit_swap_cells(Scene& s, int i, int j);
bool edit_remove(Scene& s, int i);
bool edit_add(Scene& s, const Object& o);
/// Colours / shapes / cells not used by the scene, in random order.
std::vector<int> unused_colours(const Scene& s, Rng& rng);
std::vector<int> unused_shapes(const Scene& s, Rng& rng);
std::vector<std::pair<int, int>> empty_cells(const Scene& s, Rng& rng);

// ---- descriptions ------------------------------------------------------------------------------

/// One stated object; -1 = attribute not stated.
struct Mention {
  int shape = -1, colour = -1, size = -1, row = -1, col = -1;
};
/// mentions[a] is <relation> mentions[b].
struct Fact {
  int a = 0, b = 0, relation = 0;
};
struct Description {
  std::vector<Mention> mentions;  // matched to distinct objects
  std::vector<Fact> facts;
  std::vector<int> absent_shapes;  // "there is no star"
  int count = -1;                  // exact number of objects, -1 = not stated
  int tone = -1, texture = -1;     // background, -1 = not stated
};

bool mention_matches(const Mention& m, const Object& o);
/// True iff the scene makes every statement true (mentions bind to distinct objects).
bool holds(const Description& d, const Scene& s);
/// True if a mention names a held-out colour-shape combination.
bool description_has_heldout(const Description& d, const Rules& rules);

struct DescribeOptions {
  int size_percent = 50;  // chance that a mention states the size
  int max_facts = 1;      // relation facts (0..max, drawn)
  int fact_percent = 60;  // chance of having any fact when there are 2+ objects
  bool background = false;
};
/// Mentions every object (shape + colour, size sometimes) in a random order, plus up to
/// max_facts true relations.
Description describe(const Scene& s, Rng& rng, const DescribeOptions& opt);
/// A true relation from a to b chosen at random, or -1 if a and b share a cell row and column
/// pattern with none (cannot happen for distinct cells).
int true_relation(const Object& a, const Object& b, Rng& rng);

/// Template choices for turning a Description into a sentence; the same style renders a
/// caption and its edited negative identically except for the edit.
struct TextStyle {
  int intro = 0;        // 0 "{S}.", 1 "A picture of {S}.", 2 "An image showing {S}.", 3 "There is {S}."
  int rel_variant = 0;  // "to the left of" / "left of", "above" / "over", ...
};
inline constexpr int kNumIntros = 4;
TextStyle random_style(Rng& rng);
/// "a large red circle" / "the red circle" (definite).
std::string mention_phrase(const Mention& m, bool definite);
std::string relation_phrase(int relation, int variant);
/// Renders a caption, e.g. "A picture of a red circle to the left of a small blue square."
std::string render_caption(const Description& d, const TextStyle& style);

}  // namespace unime::data::world
