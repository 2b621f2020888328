// src/data/world-tasks.cpp - MMEB-style task generators of the procedural world. See
// world-tasks.h. Each generator draws its own scene(s) from `rng`; nothing here renders.
#include "data/world-tasks.h"

#include <algorithm>
#include <set>

namespace unime::data::world {

namespace {

// ---- instructions (VLM2Vec / MMEB wording) -----------------------------------------------------

constexpr const char* kInstrCls = "<|image_1|>\nRepresent the given image for classification";
constexpr const char* kInstrCount = "<|image_1|>\nIdentify the number of objects shown in the image";
constexpr const char* kInstrScene = "<|image_1|>\nIdentify the scene shown in the image";
constexpr const char* kInstrColour =
    "<|image_1|>\nIdentify the colour of the object shown in the image";
constexpr const char* kInstrVqa =
    "<|image_1|>\nRepresent the given image with the following question: ";
constexpr const char* kInstrT2I = "Find me an everyday image that matches the given caption: ";
constexpr const char* kInstrEdit =
    "<|image_1|>\nGiven an image, find a similar everyday image with the described changes: ";
constexpr const char* kInstrSimilar =
    "<|image_1|>\nFind a day-to-day image that looks similar to the provided image.";
constexpr const char* kInstrDialog =
    "Represent the given dialogue about an image, which is used for image retrieval: ";
constexpr const char* kInstrGround =
    "<|image_1|>\nSelect the portion of the image that isolates the object labeled as ";
constexpr const char* kInstrRefExpr =
    "<|image_1|>\nSelect the portion of the image that follows the language expressions: ";

// ---- targets -----------------------------------------------------------------------------------

Target text_target(const std::string& text) {
  Target t;
  t.text = text;
  t.key = text;
  return t;
}

ImageSpec whole(const Scene& s) {
  ImageSpec im;
  im.scene = s;
  return im;
}

}  // namespace

ImageSpec object_crop(const Scene& s, int object) {
  ImageSpec im;
  im.scene = s;
  im.is_crop = true;
  im.box = s.objects[object];
  im.object = object;
  return im;
}

namespace {

Target image_target(const Scene& s) {
  Target t;
  t.text = kTgtImage;
  t.image = whole(s);
  return t;
}

Target crop_target(const Scene& s, int object) {
  Target t;
  t.text = kTgtCrop;
  t.image = object_crop(s, object);
  return t;
}

Target empty_crop_target(const Scene& s, int row, int col) {
  Target t;
  t.text = kTgtCrop;
  ImageSpec im;
  im.scene = s;
  im.is_crop = true;
  im.box.row = row;
  im.box.col = col;
  im.box.size = 1;
  im.object = -1;
  t.image = im;
  return t;
}

Target caption_target(const Description& d, const TextStyle& st) {
  Target t;
  t.text = render_caption(d, st);
  t.key = t.text;
  t.desc = d;
  return t;
}

std::function<bool(const Target&)> accepts_key(const std::string& key) {
  return [key](const Target& t) { return t.key == key; };
}

// A whole-image candidate whose scene satisfies d.
std::function<bool(const Target&)> accepts_description(const Description& d) {
  return [d](const Target& t) { return t.image && !t.image->is_crop && holds(d, t.image->scene); };
}

// A crop showing an object that looks like `o` (same shape and colour).
std::function<bool(const Target&)> accepts_crop_of(const Object& o) {
  return [o](const Target& t) {
    if (!t.image || !t.image->is_crop || t.image->object < 0) return false;
    const Object& c = t.image->scene.objects[t.image->object];
    return c.shape == o.shape && c.colour == o.colour;
  };
}

int objects_between(Rng& rng, const Rules& rules, int lo) {
  return rng.range(lo, std::max(lo, rules.max_objects));
}

std::vector<std::string> all_combo_names() {
  std::vector<std::string> out;
  for (int c = 0; c < kNumColours; ++c)
    for (int s = 0; s < kNumShapes; ++s) out.push_back(combo_name(c, s));
  return out;
}

void add_unique(std::vector<std::string>& v, const std::string& x, const std::string& gold) {
  if (x != gold && std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
}

// Scene edits that make `reject` false, de-duplicated by content (and distinct from `s`).
std::vector<Scene> scene_negatives(const Scene& s, Rng& rng, int max_count, int attempts,
                                   const std::function<bool(const Scene&)>& accept) {
  std::vector<Scene> out;
  std::set<std::string> seen{content_key(s)};
  for (int a = 0; a < attempts && static_cast<int>(out.size()) < max_count; ++a) {
    Scene e = s;
    if (!random_edit(e, rng)) continue;
    if (accept(e) || !seen.insert(content_key(e)).second) continue;
    out.push_back(e);
  }
  return out;
}

// ---- classification ----------------------------------------------------------------------------

Item object_cls(const Rules& rules, Rng& rng, Split split) {
  const Scene s = sample_scene(rng, rules, 1, split);
  const Object& o = s.objects[0];
  Item it;
  it.qry_text = kInstrCls;
  it.qry_image = whole(s);
  it.pos = text_target(combo_name(o.colour, o.shape));
  std::vector<int> colours, shapes;
  for (int c = 0; c < kNumColours; ++c)
    if (c != o.colour) colours.push_back(c);
  for (int sh = 0; sh < kNumShapes; ++sh)
    if (sh != o.shape) shapes.push_back(sh);
  rng.shuffle(colours);
  rng.shuffle(shapes);
  for (int k = 0; k < 3; ++k) {
    it.hard.push_back(text_target(combo_name(colours[k], o.shape)));
    it.hard.push_back(text_target(combo_name(o.colour, shapes[k])));
  }
  std::vector<std::string> rest;
  for (const auto& name : all_combo_names()) {
    bool used = name == it.pos.key;
    for (const auto& h : it.hard) used = used || h.key == name;
    if (!used) rest.push_back(name);
  }
  rng.shuffle(rest);
  for (const auto& name : rest) it.fill.push_back(text_target(name));
  it.accepts = accepts_key(it.pos.key);
  return it;
}

Item count_cls(const Rules& rules, Rng& rng, Split split) {
  const int n = objects_between(rng, rules, 1);
  const Scene s = sample_scene(rng, rules, n, split);
  Item it;
  it.qry_text = kInstrCount;
  it.qry_image = whole(s);
  it.pos = text_target(count_phrase(n));
  std::vector<int> others;
  for (int k = 1; k <= rules.max_objects; ++k)
    if (k != n) others.push_back(k);
  // nearest counts are the hardest
  std::stable_sort(others.begin(), others.end(),
                   [n](int a, int b) { return std::abs(a - n) < std::abs(b - n); });
  for (int k : others) it.hard.push_back(text_target(count_phrase(k)));
  it.accepts = accepts_key(it.pos.key);
  return it;
}

std::string background_label(int texture, int tone) {
  return std::string(kTextureNames[texture]) + " " + kToneNames[tone] + " background";
}

Item background_cls(const Rules& rules, Rng& rng, Split split) {
  const Scene s = sample_scene(rng, rules, rng.range(1, 2), split);
  Item it;
  it.qry_text = kInstrScene;
  it.qry_image = whole(s);
  it.pos = text_target(background_label(s.texture, s.tone));
  for (int tx = 0; tx < kNumTextures; ++tx)
    if (tx != s.texture) it.hard.push_back(text_target(background_label(tx, s.tone)));
  for (int tn = 0; tn < kNumTones; ++tn)
    if (tn != s.tone) it.hard.push_back(text_target(background_label(s.texture, tn)));
  rng.shuffle(it.hard);
  for (int tx = 0; tx < kNumTextures; ++tx)
    for (int tn = 0; tn < kNumTones; ++tn)
      if (tx != s.texture && tn != s.tone) it.fill.push_back(text_target(background_label(tx, tn)));
  rng.shuffle(it.fill);
  it.accepts = accepts_key(it.pos.key);
  return it;
}

Item colour_cls(const Rules& rules, Rng& rng, Split split) {
  const Scene s = sample_scene(rng, rules, 1, split);
  Item it;
  it.qry_text = kInstrColour;
  it.qry_image = whole(s);
  it.pos = text_target(kColourNames[s.objects[0].colour]);
  for (int c = 0; c < kNumColours; ++c)
    if (c != s.objects[0].colour) it.hard.push_back(text_target(kColourNames[c]));
  rng.shuffle(it.hard);
  it.accepts = accepts_key(it.pos.key);
  return it;
}

// ---- VQA ---------------------------------------------------------------------------------------

Item vqa_item(const Rules& rules, Rng& rng, Split split, int min_objects,
              bool (*make)(const Scene&, Rng&, const Rules&, Split, QA&)) {
  for (;;) {
    const Scene s = sample_scene(rng, rules, objects_between(rng, rules, min_objects), split);
    QA qa;
    if (!make(s, rng, rules, split, qa)) continue;
    Item it;
    it.qry_text = std::string(kInstrVqa) + qa.question;
    it.qry_image = whole(s);
    it.pos = text_target(qa.answer);
    for (const auto& h : qa.hard) it.hard.push_back(text_target(h));
    std::vector<std::string> pool;
    for (const auto& p : qa.pool)
      if (p != qa.answer && std::find(qa.hard.begin(), qa.hard.end(), p) == qa.hard.end())
        pool.push_back(p);
    rng.shuffle(pool);
    for (const auto& p : pool) it.fill.push_back(text_target(p));
    it.accepts = accepts_key(it.pos.key);
    return it;
  }
}

Item attribute_vqa(const Rules& r, Rng& g, Split s) { return vqa_item(r, g, s, 1, attribute_qa); }
Item relation_vqa(const Rules& r, Rng& g, Split s) { return vqa_item(r, g, s, 2, relation_qa); }
Item position_vqa(const Rules& r, Rng& g, Split s) { return vqa_item(r, g, s, 1, position_qa); }

// ---- retrieval ---------------------------------------------------------------------------------

DescribeOptions caption_options() {
  DescribeOptions opt;
  opt.size_percent = 40;
  opt.max_facts = 2;
  opt.fact_percent = 70;
  return opt;
}

Item caption_t2i(const Rules& rules, Rng& rng, Split split) {
  const Scene s = sample_scene(rng, rules, objects_between(rng, rules, 1), split);
  const Description d = describe(s, rng, caption_options());
  const TextStyle st = random_style(rng);
  Item it;
  it.qry_text = std::string(kInstrT2I) + render_caption(d, st);
  it.pos = image_target(s);
  it.accepts = accepts_description(d);
  for (const Scene& e : scene_negatives(s, rng, 6, 40, [&](const Scene& x) { return holds(d, x); }))
    it.hard.push_back(image_target(e));
  return it;
}

Item caption_i2t(const Rules& rules, Rng& rng, Split split) {
  const Scene s = sample_scene(rng, rules, objects_between(rng, rules, 1), split);
  const Description d = describe(s, rng, caption_options());
  const TextStyle st = random_style(rng);
  Item it;
  it.qry_text = kInstrI2T;
  it.qry_image = whole(s);
  it.pos = caption_target(d, st);
  for (const Description& e : false_descriptions(d, s, rng, 6))
    it.hard.push_back(caption_target(e, st));
  it.accepts = [s](const Target& t) { return t.desc && holds(*t.desc, s); };
  return it;
}

// Every object of `s` with all attributes and its cell, plus the exact count.
Description exact_description(const Scene& s) {
  Description d;
  for (const auto& o : s.objects) {
    Mention m;
    m.shape = o.shape;
    m.colour = o.colour;
    m.size = o.size;
    m.row = o.row;
    m.col = o.col;
    d.mentions.push_back(m);
  }
  d.count = static_cast<int>(s.objects.size());
  return d;
}

// CIRR-style modification text for one edit of `s`; fills `target` and `want` (what the
// target must satisfy). Returns false if the drawn edit was impossible.
bool draw_modification(const Scene& s, Rng& rng, Scene& target, Description& want,
                       std::string& text) {
  target = s;
  const int i = rng.below(static_cast<int>(s.objects.size()));
  const Object o = s.objects[i];
  const std::string shape = kShapeNames[o.shape];
  bool added = false;
  switch (rng.below(6)) {
    case 0: {
      const auto cs = unused_colours(s, rng);
      if (cs.empty() || !edit_recolour(target, i, cs[0])) return false;
      text = "make the " + shape + " " + kColourNames[cs[0]];
      break;
    }
    case 1: {
      const auto ss = unused_shapes(s, rng);
      if (ss.empty() || !edit_reshape(target, i, ss[0])) return false;
      text = "turn the " + shape + " into a " + kShapeNames[ss[0]];
      break;
    }
    case 2:
      edit_resize(target, i);
      text = "make the " + shape + " " + kSizeNames[target.objects[i].size];
      break;
    case 3:
      if (!edit_remove(target, i)) return false;
      text = "remove the " + combo_name(o.colour, o.shape);
      break;
    case 4: {
      const auto cells = empty_cells(s, rng);
      if (cells.empty() || !edit_move(target, i, cells[0].first, cells[0].second)) return false;
      text = "move the " + shape + " to the " + position_name(cells[0].first, cells[0].second);
      break;
    }
    default: {
      const auto cs = unused_colours(s, rng);
      const auto ss = unused_shapes(s, rng);
      const auto cells = empty_cells(s, rng);
      if (cs.empty() || ss.empty() || cells.empty()) return false;
      Object a = s.objects[i];
      a.shape = ss[0];
      a.colour = cs[0];
      a.size = rng.below(kNumSizes);
      a.row = cells[0].first;
      a.col = cells[0].second;
      if (!edit_add(target, a)) return false;
      text = std::string("add a ") + kSizeNames[a.size] + " " + combo_name(a.colour, a.shape);
      added = true;
    }
  }
  want = exact_description(target);
  if (added) {  // the added object may be anywhere
    want.mentions.back().row = -1;
    want.mentions.back().col = -1;
  }
  return true;
}

Item edit_i2i(const Rules& rules, Rng& rng, Split split) {
  for (;;) {
    Scene query, target;
    Description want;
    std::string mod;
    if (split == Split::Ood) {
      // The target shows a held-out combination that the edit creates from a training one.
      target = sample_scene(rng, rules, objects_between(rng, rules, 1), Split::Ood);
      query = target;
      const Object f = target.objects[0];
      bool ok = false;
      if (rng.chance(1, 2)) {
        for (int c : unused_colours(target, rng))
          if (!rules.is_heldout(c, f.shape) && edit_recolour(query, 0, c)) {
            mod = "make the " + std::string(kShapeNames[f.shape]) + " " + kColourNames[f.colour];
            ok = true;
            break;
          }
      } else {
        for (int sh : unused_shapes(target, rng))
          if (!rules.is_heldout(f.colour, sh) && edit_reshape(query, 0, sh)) {
            mod = "turn the " + combo_name(f.colour, sh) + " into a " + kShapeNames[f.shape];
            ok = true;
            break;
          }
      }
      if (!ok) continue;
      want = exact_description(target);
    } else {
      query = sample_scene(rng, rules, objects_between(rng, rules, 1), split);
      if (!draw_modification(query, rng, target, want, mod)) continue;
    }
    Item it;
    it.qry_text = std::string(kInstrEdit) + mod;
    it.qry_image = whole(query);
    const Scene shown = rejitter(target, rng);  // another photo of the edited scene
    it.pos = image_target(shown);
    it.accepts = accepts_description(want);
    // the unedited reference itself is the hardest wrong answer, then other edits of it
    std::set<std::string> seen{content_key(target)};
    if (!holds(want, query) && seen.insert(content_key(query)).second)
      it.hard.push_back(image_target(rejitter(query, rng)));
    for (const Scene& e : scene_negatives(query, rng, 5, 40, [&](const Scene& x) {
           return holds(want, x) || seen.count(content_key(x)) > 0;
         }))
      it.hard.push_back(image_target(rejitter(e, rng)));
    return it;
  }
}

Item similar_i2i(const Rules& rules, Rng& rng, Split split) {
  const Scene s = sample_scene(rng, rules, objects_between(rng, rules, 1), split);
  Item it;
  it.qry_text = kInstrSimilar;
  it.qry_image = whole(s);
  it.pos = image_target(rejitter(s, rng));
  it.pos.text = kTgtImage;
  it.accepts = [s](const Target& t) {
    return t.image && !t.image->is_crop && same_content(t.image->scene, s);
  };
  for (const Scene& e : scene_negatives(s, rng, 6, 40, [&](const Scene& x) { return same_content(x, s); }))
    it.hard.push_back(image_target(rejitter(e, rng)));
  return it;
}

Item dialog_t2i(const Rules& rules, Rng& rng, Split split) {
  const int n = objects_between(rng, rules, 1);
  const Scene s = sample_scene(rng, rules, n, split);
  Description d;
  d.count = n;
  std::string dialog = "Q: how many objects are there? A: " + count_word(n) + ".";
  std::vector<int> mention_of(s.objects.size(), -1);
  auto mention = [&](int i) -> Mention& {
    if (mention_of[i] < 0) {
      mention_of[i] = static_cast<int>(d.mentions.size());
      Mention m;
      m.shape = s.objects[i].shape;
      d.mentions.push_back(m);
    }
    return d.mentions[mention_of[i]];
  };
  const int turns = rng.range(2, 3);
  std::set<int> asked;  // (object, question type) pairs, so that no question repeats
  for (int t = 0, tries = 0; t < turns && tries < 20; ++tries) {
    const int i = rng.below(n);
    const int type = rng.below(5);
    if (!asked.insert(type == 3 ? 3 : i * 8 + type).second) continue;
    ++t;
    const Object& o = s.objects[i];
    const std::string shape = kShapeNames[o.shape];
    switch (type) {
      case 0:
        dialog += " Q: what colour is the " + shape + "? A: " + kColourNames[o.colour] + ".";
        mention(i).colour = o.colour;
        break;
      case 1:
        dialog += " Q: where is the " + shape + "? A: " + position_name(o.row, o.col) + ".";
        mention(i).row = o.row;
        mention(i).col = o.col;
        break;
      case 2:
        dialog += " Q: what size is the " + shape + "? A: " + kSizeNames[o.size] + ".";
        mention(i).size = o.size;
        break;
      case 3: {
        const auto absent = unused_shapes(s, rng);
        if (absent.empty()) break;
        dialog += std::string(" Q: is there a ") + kShapeNames[absent[0]] + "? A: no.";
        if (std::find(d.absent_shapes.begin(), d.absent_shapes.end(), absent[0]) ==
            d.absent_shapes.end())
          d.absent_shapes.push_back(absent[0]);
        break;
      }
      default:
        dialog += " Q: is there a " + combo_name(o.colour, o.shape) + "? A: yes.";
        mention(i).colour = o.colour;
    }
  }
  Item it;
  it.qry_text = std::string(kInstrDialog) + dialog;
  it.pos = image_target(s);
  it.accepts = accepts_description(d);
  for (const Scene& e : scene_negatives(s, rng, 6, 40, [&](const Scene& x) { return holds(d, x); }))
    it.hard.push_back(image_target(e));
  return it;
}

// ---- grounding ---------------------------------------------------------------------------------

// Crops of the other objects, of the focus object after a recolour / reshape, of an empty cell.
void grounding_negatives(const Scene& s, int focus, Rng& rng, Item& it) {
  for (int j = 0; j < static_cast<int>(s.objects.size()); ++j)
    if (j != focus) it.hard.push_back(crop_target(s, j));
  Scene recoloured = s, reshaped = s;
  const auto cs = unused_colours(s, rng);
  if (!cs.empty() && edit_recolour(recoloured, focus, cs[0]))
    it.hard.push_back(crop_target(recoloured, focus));
  const auto ss = unused_shapes(s, rng);
  if (!ss.empty() && edit_reshape(reshaped, focus, ss[0]))
    it.hard.push_back(crop_target(reshaped, focus));
  const auto cells = empty_cells(s, rng);
  if (!cells.empty()) it.hard.push_back(empty_crop_target(s, cells[0].first, cells[0].second));
  rng.shuffle(it.hard);
}

Item ref_ground(const Rules& rules, Rng& rng, Split split) {
  const Scene s = sample_scene(rng, rules, objects_between(rng, rules, 2), split);
  const Object& f = s.objects[0];
  Item it;
  it.qry_text = std::string(kInstrGround) + "\"" + combo_name(f.colour, f.shape) + "\"";
  it.qry_image = whole(s);
  it.pos = crop_target(s, 0);
  it.accepts = accepts_crop_of(f);
  grounding_negatives(s, 0, rng, it);
  return it;
}

Item rel_ref_ground(const Rules& rules, Rng& rng, Split split) {
  for (;;) {
    const Scene s = sample_scene(rng, rules, objects_between(rng, rules, 2), split);
    const int n = static_cast<int>(s.objects.size());
    std::vector<int> anchors(n), rels = {kLeftOf, kRightOf, kAbove, kBelow};
    for (int i = 0; i < n; ++i) anchors[i] = i;
    rng.shuffle(anchors);
    rng.shuffle(rels);
    for (int a : anchors) {
      for (int r : rels) {
        int found = -1, count = 0;
        for (int j = 0; j < n; ++j)
          if (j != a && relation_holds(r, s.objects[j], s.objects[a])) {
            found = j;
            ++count;
          }
        if (count != 1) continue;
        const Object& anchor = s.objects[a];
        Item it;
        it.qry_text = std::string(kInstrRefExpr) + "\"the object " +
                      relation_phrase(r, rng.below(2)) + " the " +
                      combo_name(anchor.colour, anchor.shape) + "\"";
        it.qry_image = whole(s);
        it.pos = crop_target(s, found);
        it.accepts = accepts_crop_of(s.objects[found]);
        grounding_negatives(s, found, rng, it);
        return it;
      }
    }
  }
}

}  // namespace

// ---- question answering ------------------------------------------------------------------------

static std::vector<std::string> attribute_pool(const Rules& rules) {
  std::vector<std::string> pool;
  for (int c = 0; c < kNumColours; ++c) pool.push_back(kColourNames[c]);
  for (int s = 0; s < kNumShapes; ++s) pool.push_back(kShapeNames[s]);
  for (int z = 0; z < kNumSizes; ++z) pool.push_back(kSizeNames[z]);
  for (int k = 1; k <= rules.max_objects; ++k) pool.push_back(count_word(k));
  pool.push_back("yes");
  pool.push_back("no");
  return pool;
}

bool attribute_qa(const Scene& s, Rng& rng, const Rules& rules, Split split, QA& qa) {
  const Object& f = s.objects[0];
  const int n = static_cast<int>(s.objects.size());
  const bool train = split == Split::Train;
  qa = QA{};
  qa.pool = attribute_pool(rules);
  // count questions do not involve the focus object, so OOD items skip them
  const int type = split == Split::Ood ? rng.pick(std::vector<int>{0, 1, 2, 4}) : rng.below(5);
  switch (type) {
    case 0: {
      qa.question = std::string("What colour is the ") + kShapeNames[f.shape] + "?";
      qa.answer = kColourNames[f.colour];
      std::vector<int> cs;
      for (int c = 0; c < kNumColours; ++c)
        if (c != f.colour && !(train && rules.is_heldout(c, f.shape))) cs.push_back(c);
      rng.shuffle(cs);
      for (int c : cs) qa.hard.push_back(kColourNames[c]);
      break;
    }
    case 1: {
      qa.question = std::string("What shape is the ") + kColourNames[f.colour] + " object?";
      qa.answer = kShapeNames[f.shape];
      std::vector<int> ss;
      for (int sh = 0; sh < kNumShapes; ++sh)
        if (sh != f.shape && !(train && rules.is_heldout(f.colour, sh))) ss.push_back(sh);
      rng.shuffle(ss);
      for (int sh : ss) qa.hard.push_back(kShapeNames[sh]);
      break;
    }
    case 2:
      qa.question = std::string("What size is the ") + kShapeNames[f.shape] + "?";
      qa.answer = kSizeNames[f.size];
      qa.hard.push_back(kSizeNames[1 - f.size]);
      break;
    case 3: {
      qa.question = "How many objects are there?";
      qa.answer = count_word(n);
      std::vector<int> ks;
      for (int k = 1; k <= rules.max_objects; ++k)
        if (k != n) ks.push_back(k);
      std::stable_sort(ks.begin(), ks.end(),
                       [n](int a, int b) { return std::abs(a - n) < std::abs(b - n); });
      for (int k : ks) qa.hard.push_back(count_word(k));
      break;
    }
    default: {
      if (rng.chance(1, 2)) {
        qa.question = "Is there a " + combo_name(f.colour, f.shape) + "?";
        qa.answer = "yes";
        qa.hard.push_back("no");
        break;
      }
      // "no": the focus colour on a shape that is present in another colour, or absent
      std::vector<int> ss;
      for (int sh = 0; sh < kNumShapes; ++sh)
        if (sh != f.shape && !rules.is_heldout(f.colour, sh)) ss.push_back(sh);
      if (ss.empty()) return false;
      rng.shuffle(ss);
      std::stable_sort(ss.begin(), ss.end(),
                       [&](int a, int b) { return find_shape(s, a) >= 0 && find_shape(s, b) < 0; });
      qa.question = "Is there a " + combo_name(f.colour, ss[0]) + "?";
      qa.answer = "no";
      qa.hard.push_back("yes");
    }
  }
  return true;
}

bool relation_qa(const Scene& s, Rng& rng, const Rules& rules, Split split, QA& qa) {
  const int n = static_cast<int>(s.objects.size());
  if (n < 2) return false;
  const Object& f = s.objects[0];
  const bool train = split == Split::Train;
  qa = QA{};
  for (int r = 0; r < kNumRelations; ++r) qa.pool.push_back(kRelationNames[r]);
  qa.pool.push_back("yes");
  qa.pool.push_back("no");
  for (const auto& name : all_combo_names())
    if (!train || !text_has_heldout(name, rules)) qa.pool.push_back(name);
  const int variant = rng.below(2);
  std::vector<int> types = {0, 1, 2};
  rng.shuffle(types);
  for (int type : types) {
    if (type == 0) {  // "What is left of the X?" with a unique answer; X or the answer is f
      std::vector<int> rels = {kLeftOf, kRightOf, kAbove, kBelow};
      rng.shuffle(rels);
      const bool about_f = rng.chance(1, 2);
      for (int r : rels) {
        for (int a = 0; a < n; ++a) {
          if (a == 0 && !about_f) continue;
          if (a != 0 && about_f) continue;
          int found = -1, count = 0;
          for (int j = 0; j < n; ++j)
            if (j != a && relation_holds(r, s.objects[j], s.objects[a])) {
              found = j;
              ++count;
            }
          if (count != 1 || (!about_f && found != 0)) continue;
          const Object& anchor = s.objects[a];
          const Object& ans = s.objects[found];
          qa.question = "What is " + relation_phrase(r, variant) + " the " +
                        combo_name(anchor.colour, anchor.shape) + "?";
          qa.answer = combo_name(ans.colour, ans.shape);
          for (int j = 0; j < n; ++j)
            if (j != found) add_unique(qa.hard, combo_name(s.objects[j].colour, s.objects[j].shape), qa.answer);
          std::vector<std::string> near;
          for (int c = 0; c < kNumColours; ++c) near.push_back(combo_name(c, ans.shape));
          for (int sh = 0; sh < kNumShapes; ++sh) near.push_back(combo_name(ans.colour, sh));
          rng.shuffle(near);
          for (const auto& x : near)
            if (!(train && text_has_heldout(x, rules))) add_unique(qa.hard, x, qa.answer);
          return true;
        }
      }
    } else if (type == 1) {  // "Is the f left of the X?"
      const int j = rng.range(1, n - 1);
      const Object& o = s.objects[j];
      std::vector<int> yes, no;
      for (int r = 0; r < kNumRelations; ++r) (relation_holds(r, f, o) ? yes : no).push_back(r);
      const bool ask_yes = !yes.empty() && (no.empty() || rng.chance(1, 2));
      const int r = ask_yes ? rng.pick(yes) : rng.pick(no);
      qa.question = "Is the " + combo_name(f.colour, f.shape) + " " + relation_phrase(r, variant) +
                    " the " + combo_name(o.colour, o.shape) + "?";
      qa.answer = ask_yes ? "yes" : "no";
      qa.hard.push_back(ask_yes ? "no" : "yes");
      return true;
    } else {  // "Where is the f relative to the X?" when exactly one relation holds
      for (int j = 1; j < n; ++j) {
        const Object& o = s.objects[j];
        std::vector<int> yes;
        for (int r = 0; r < kNumRelations; ++r)
          if (relation_holds(r, f, o)) yes.push_back(r);
        if (yes.size() != 1) continue;
        qa.question = "Where is the " + combo_name(f.colour, f.shape) + " relative to the " +
                      combo_name(o.colour, o.shape) + "?";
        qa.answer = kRelationNames[yes[0]];
        qa.hard.push_back(kRelationNames[opposite(yes[0])]);
        for (int r = 0; r < kNumRelations; ++r)
          if (r != yes[0] && r != opposite(yes[0])) qa.hard.push_back(kRelationNames[r]);
        return true;
      }
    }
  }
  return false;
}

bool position_qa(const Scene& s, Rng& rng, const Rules& rules, Split split, QA& qa) {
  const Object& f = s.objects[0];
  const bool train = split == Split::Train;
  qa = QA{};
  for (int r = 0; r < kGrid; ++r)
    for (int c = 0; c < kGrid; ++c) qa.pool.push_back(position_name(r, c));
  if (rng.chance(1, 2)) {
    qa.question = "Where is the " + combo_name(f.colour, f.shape) + "?";
    qa.answer = position_name(f.row, f.col);
    // neighbouring cells first
    std::vector<std::pair<int, std::string>> others;
    for (int r = 0; r < kGrid; ++r)
      for (int c = 0; c < kGrid; ++c)
        if (r != f.row || c != f.col)
          others.emplace_back(std::abs(r - f.row) + std::abs(c - f.col), position_name(r, c));
    rng.shuffle(others);
    std::stable_sort(others.begin(), others.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& o : others) qa.hard.push_back(o.second);
    return true;
  }
  qa.question = "What is in the " + position_name(f.row, f.col) + " of the image?";
  qa.answer = combo_name(f.colour, f.shape);
  qa.pool.clear();
  for (const auto& name : all_combo_names())
    if (!train || !text_has_heldout(name, rules)) qa.pool.push_back(name);
  for (size_t j = 1; j < s.objects.size(); ++j)
    add_unique(qa.hard, combo_name(s.objects[j].colour, s.objects[j].shape), qa.answer);
  std::vector<std::string> near;
  for (int c = 0; c < kNumColours; ++c) near.push_back(combo_name(c, f.shape));
  for (int sh = 0; sh < kNumShapes; ++sh) near.push_back(combo_name(f.colour, sh));
  rng.shuffle(near);
  for (const auto& x : near)
    if (!(train && text_has_heldout(x, rules))) add_unique(qa.hard, x, qa.answer);
  return true;
}

// ---- edits -------------------------------------------------------------------------------------

bool random_edit(Scene& s, Rng& rng) {
  const int n = static_cast<int>(s.objects.size());
  const int i = rng.below(n);
  switch (rng.below(8)) {
    case 0: {
      const auto cs = unused_colours(s, rng);
      return !cs.empty() && edit_recolour(s, i, cs[0]);
    }
    case 1: {
      const auto ss = unused_shapes(s, rng);
      return !ss.empty() && edit_reshape(s, i, ss[0]);
    }
    case 2: return edit_resize(s, i);
    case 3: {
      const auto cells = empty_cells(s, rng);
      return !cells.empty() && edit_move(s, i, cells[0].first, cells[0].second);
    }
    case 4: return n >= 2 && edit_swap_colours(s, i, (i + 1 + rng.below(n - 1)) % n);
    case 5: return n >= 2 && edit_swap_cells(s, i, (i + 1 + rng.below(n - 1)) % n);
    case 6: return edit_remove(s, i);
    default: {
      const auto cs = unused_colours(s, rng);
      const auto ss = unused_shapes(s, rng);
      const auto cells = empty_cells(s, rng);
      if (cs.empty() || ss.empty() || cells.empty()) return false;
      Object o = s.objects[i];
      o.shape = ss[0];
      o.colour = cs[0];
      o.size = rng.below(kNumSizes);
      o.row = cells[0].first;
      o.col = cells[0].second;
      o.jx = rng.range(-100, 100);
      o.jy = rng.range(-100, 100);
      return edit_add(s, o);
    }
  }
}

std::vector<Description> false_descriptions(const Description& d, const Scene& s, Rng& rng,
                                            int max_count, bool allow_add) {
  std::vector<Description> out;
  std::set<std::string> seen;
  const int n_m = static_cast<int>(d.mentions.size());
  if (n_m == 0) return out;
  auto key = [](const Description& x) { return render_caption(x, TextStyle{}); };
  seen.insert(key(d));
  for (int attempt = 0; attempt < 60 && static_cast<int>(out.size()) < max_count; ++attempt) {
    Description e = d;
    const int i = rng.below(n_m);
    Mention& m = e.mentions[i];
    switch (rng.below(allow_add ? 6 : 5)) {
      case 0:  // replace a colour
        if (m.colour < 0) continue;
        m.colour = (m.colour + 1 + rng.below(kNumColours - 1)) % kNumColours;
        break;
      case 1: {  // replace a shape with an absent one
        const auto ss = unused_shapes(s, rng);
        if (ss.empty()) continue;
        m.shape = ss[0];
        break;
      }
      case 2:  // flip a stated size
        if (m.size < 0) continue;
        m.size = 1 - m.size;
        break;
      case 3: {  // swap the colours of two mentions
        if (n_m < 2) continue;
        const int j = (i + 1 + rng.below(n_m - 1)) % n_m;
        if (e.mentions[i].colour < 0 || e.mentions[j].colour < 0) continue;
        std::swap(e.mentions[i].colour, e.mentions[j].colour);
        break;
      }
      case 4: {  // replace a relation with its opposite
        if (e.facts.empty()) continue;
        Fact& f = e.facts[rng.below(static_cast<int>(e.facts.size()))];
        f.relation = opposite(f.relation);
        break;
      }
      default: {  // add an object that is not there
        const auto ss = unused_shapes(s, rng);
        if (ss.empty()) continue;
        Mention a;
        a.shape = ss[0];
        a.colour = rng.below(kNumColours);
        e.mentions.push_back(a);
      }
    }
    if (holds(e, s) || !seen.insert(key(e)).second) continue;
    out.push_back(e);
  }
  return out;
}

std::vector<std::string> instruction_texts() {
  return {kInstrCls,     kInstrCount,  kInstrScene,  kInstrColour,  kInstrVqa,
          kInstrT2I,     kInstrI2T,    kInstrEdit,   kInstrSimilar, kInstrDialog,
          kInstrGround,  kInstrRefExpr, kTgtImage,   kTgtCrop};
}

// ---- registry ----------------------------------------------------------------------------------

const std::vector<TaskDef>& task_defs() {
  // MMEB has 36 datasets (10 classification, 10 VQA, 12 retrieval, 4 grounding; 20 IND used
  // for training, 16 OOD). Ours: every IND dataset is also a training source; OOD datasets
  // hold out colour-shape combinations (Novel*) or an expression type (RelRefGround).
  static const std::vector<TaskDef> defs = {
      {"ObjectCls", "classification", "IND", Split::Ind, "", true, object_cls},
      {"CountCls", "classification", "IND", Split::Ind, "", true, count_cls},
      {"BackgroundCls", "classification", "IND", Split::Ind, "", true, background_cls},
      {"NovelObjectCls", "classification", "OOD", Split::Ood, "heldout-combination", false, object_cls},
      {"NovelColourCls", "classification", "OOD", Split::Ood, "heldout-combination", false, colour_cls},
      {"AttributeVQA", "vqa", "IND", Split::Ind, "", true, attribute_vqa},
      {"RelationVQA", "vqa", "IND", Split::Ind, "", true, relation_vqa},
      {"PositionVQA", "vqa", "IND", Split::Ind, "", true, position_vqa},
      {"NovelAttributeVQA", "vqa", "OOD", Split::Ood, "heldout-combination", false, attribute_vqa},
      {"NovelRelationVQA", "vqa", "OOD", Split::Ood, "heldout-combination", false, relation_vqa},
      {"CaptionT2I", "retrieval", "IND", Split::Ind, "", true, caption_t2i},
      {"CaptionI2T", "retrieval", "IND", Split::Ind, "", true, caption_i2t},
      {"EditI2I", "retrieval", "IND", Split::Ind, "", true, edit_i2i},
      {"SimilarI2I", "retrieval", "IND", Split::Ind, "", true, similar_i2i},
      {"DialogT2I", "retrieval", "IND", Split::Ind, "", true, dialog_t2i},
      {"NovelCaptionT2I", "retrieval", "OOD", Split::Ood, "heldout-combination", false, caption_t2i},
      {"NovelCaptionI2T", "retrieval", "OOD", Split::Ood, "heldout-combination", false, caption_i2t},
      {"NovelEditI2I", "retrieval", "OOD", Split::Ood, "heldout-combination", false, edit_i2i},
      {"RefGround", "grounding", "IND", Split::Ind, "", true, ref_ground},
      {"NovelRefGround", "grounding", "OOD", Split::Ood, "heldout-combination", false, ref_ground},
      {"RelRefGround", "grounding", "OOD", Split::Ind, "heldout-expression", false, rel_ref_ground},
  };
  return defs;
}

}  // namespace unime::data::world
