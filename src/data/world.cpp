// src/data/world.cpp - `unime world` driver: draws every data set of the procedural world from
// the seed, renders the images (in parallel, each image a pure function of its scene) and writes
// the files. See world.h for the layout and docs/README-dev-world.md for the rules.
//
// Determinism: every item is drawn from its own named stream (`stream(seed, name, index)`), all
// JSON is written in a fixed key order, and images are independent of thread scheduling, so the
// same config gives byte-identical output.
#include "data/world.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <thread>

#include "core/error.h"
#include "data/world-draw.h"
#include "data/world-scene.h"
#include "data/world-tasks.h"

namespace unime::data {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using namespace world;

WorldConfig quick_world_config(uint64_t seed) {
  WorldConfig c;
  c.seed = seed;
  c.pretrain_scenes = 40;
  c.nli_rows = 60;
  c.train_per_source = 12;
  c.eval_queries = 12;
  c.candidates = 10;
  c.retrieval_images = 12;
  c.sugarcrepe_items = 10;
  return c;
}

void validate_world_config(const WorldConfig& c) {
  auto in = [](const char* name, int v, int lo, int hi) {
    UNIME_CHECK(v >= lo && v <= hi, "world config: ", name, " must be in [", lo, ", ", hi,
                "], got ", v);
  };
  in("image_size", c.image_size, 32, 1024);  // below 32 px small shapes are blobs
  in("max_objects", c.max_objects, 2, kMaxObjects);
  in("heldout", c.heldout, 1, 16);
  in("pretrain_scenes", c.pretrain_scenes, 0, 1000000);
  in("captions_per_scene", c.captions_per_scene, 0, 10);
  in("vqa_per_scene", c.vqa_per_scene, 0, 10);
  in("nli_rows", c.nli_rows, 0, 10000000);
  in("nli_swap_percent", c.nli_swap_percent, 0, 100);
  in("train_swap_percent", c.train_swap_percent, 0, 100);
  in("nli_relation_percent", c.nli_relation_percent, 0, 100);
  in("train_relation_percent", c.train_relation_percent, 0, 100);
  in("train_per_source", c.train_per_source, 0, 1000000);
  in("eval_queries", c.eval_queries, 2, 100000);
  in("candidates", c.candidates, 2, 1000);
  in("retrieval_images", c.retrieval_images, 0, 1000000);
  in("retrieval_captions", c.retrieval_captions, 1, 10);
  in("sugarcrepe_items", c.sugarcrepe_items, 0, 1000000);
  in("threads", c.threads, 0, 256);
}

namespace {

// True when `t` shows or states the same objects as `pos` with the colours of exactly two of them
// (of different shapes and colours) exchanged: an attribute-binding negative.
bool colour_swap_of(const Target& t, const Target& pos) {
  auto swapped = [](const auto& a, const auto& b, auto same_but_colour) {
    if (a.size() != b.size()) return false;
    std::vector<size_t> diff;
    for (size_t k = 0; k < a.size(); ++k) {
      if (!same_but_colour(a[k], b[k])) return false;
      if (a[k].colour != b[k].colour) diff.push_back(k);
    }
    return diff.size() == 2 && a[diff[0]].colour == b[diff[1]].colour && a[diff[1]].colour == b[diff[0]].colour &&
           a[diff[0]].shape != a[diff[1]].shape;
  };
  if (t.image && pos.image && !t.image->is_crop && !pos.image->is_crop) {
    const Scene &a = t.image->scene, &b = pos.image->scene;
    return a.tone == b.tone && a.texture == b.texture &&
           swapped(a.objects, b.objects, [](const Object& x, const Object& y) {
             return x.shape == y.shape && x.size == y.size && x.row == y.row && x.col == y.col;
           });
  }
  if (t.desc && pos.desc)
    return t.desc->facts.size() == pos.desc->facts.size() &&
           swapped(t.desc->mentions, pos.desc->mentions,
                   [](const Mention& x, const Mention& y) { return x.shape == y.shape && x.size == y.size; });
  return false;
}

// True when `t` shows the same objects as `pos` with two of them in each other's cells (images), or
// states the same objects and relations as `pos` but one relation reversed - its two objects
// exchanged or the opposite relation (captions): a negative only where things are tells apart.
bool relation_edit_of(const Target& t, const Target& pos) {
  if (t.image && pos.image && !t.image->is_crop && !pos.image->is_crop) {
    const Scene &a = t.image->scene, &b = pos.image->scene;
    if (a.tone != b.tone || a.texture != b.texture || a.objects.size() != b.objects.size()) return false;
    std::vector<size_t> moved;
    for (size_t k = 0; k < a.objects.size(); ++k) {
      const Object &x = a.objects[k], &y = b.objects[k];
      if (x.shape != y.shape || x.colour != y.colour || x.size != y.size) return false;
      if (x.row != y.row || x.col != y.col) moved.push_back(k);
    }
    if (moved.size() != 2) return false;
    const Object &x0 = a.objects[moved[0]], &x1 = a.objects[moved[1]];
    const Object &y0 = b.objects[moved[0]], &y1 = b.objects[moved[1]];
    return x0.row == y1.row && x0.col == y1.col && x1.row == y0.row && x1.col == y0.col;
  }
  if (t.desc && pos.desc) {
    const Description &a = *t.desc, &b = *pos.desc;
    if (a.mentions.size() != b.mentions.size() || a.facts.size() != b.facts.size() || a.count != b.count ||
        a.tone != b.tone || a.texture != b.texture || a.absent_shapes != b.absent_shapes)
      return false;
    for (size_t k = 0; k < a.mentions.size(); ++k) {
      const Mention &x = a.mentions[k], &y = b.mentions[k];
      if (x.shape != y.shape || x.colour != y.colour || x.size != y.size || x.row != y.row || x.col != y.col)
        return false;
    }
    int reversed = 0;
    for (size_t k = 0; k < a.facts.size(); ++k) {
      const Fact &x = a.facts[k], &y = b.facts[k];
      if (x.a == y.a && x.b == y.b && x.relation == y.relation) continue;
      const bool swapped = x.a == y.b && x.b == y.a && x.relation == y.relation;
      const bool flipped = x.a == y.a && x.b == y.b && x.relation == opposite(y.relation);
      if (!swapped && !flipped) return false;
      ++reversed;
    }
    return reversed == 1;
  }
  return false;
}

// ---- output ------------------------------------------------------------------------------------

void write_file_atomic(const fs::path& path, const std::string& data) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    UNIME_CHECK(f.good(), tmp.string(), ": cannot open for writing: ", std::strerror(errno));
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
    UNIME_CHECK(f.good(), tmp.string(), ": write failed: ", std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  UNIME_CHECK(!ec, path.string(), ": cannot rename from ", tmp.string(), ": ", ec.message());
}

struct Jsonl {
  std::string text;
  int64_t rows = 0;
  void add(const json& row) {
    text += row.dump();
    text += '\n';
    ++rows;
  }
};

json object_json(const Object& o) {
  json j;
  j["shape"] = kShapeNames[o.shape];
  j["colour"] = kColourNames[o.colour];
  j["size"] = kSizeNames[o.size];
  j["row"] = o.row;
  j["col"] = o.col;
  return j;
}

// Collects the images to render; every image gets a row in scenes.jsonl.
struct Images {
  std::vector<std::pair<std::string, ImageSpec>> jobs;
  Jsonl scenes;
  std::set<std::string> paths;

  const std::string& emit(const ImageSpec& im, const std::string& path, const char* part) {
    if (!paths.insert(path).second) throw std::logic_error("world: image path emitted twice: " + path);
    jobs.emplace_back(path, im);
    json row;
    row["image"] = path;
    row["part"] = part;
    row["tone"] = kToneNames[im.scene.tone];
    row["texture"] = kTextureNames[im.scene.texture];
    json objs = json::array();
    for (const auto& o : im.scene.objects) objs.push_back(object_json(o));
    row["objects"] = objs;
    if (im.is_crop) {
      row["crop_object"] = im.object;
      row["crop_cell"] = json::array({im.box.row, im.box.col});
    }
    scenes.add(row);
    return jobs.back().first;
  }
};

ImageSpec whole_image(const Scene& s) {
  ImageSpec im;
  im.scene = s;
  return im;
}

std::string padded(int64_t i, int width = 5) {
  std::string s = std::to_string(i);
  if (static_cast<int>(s.size()) < width) s.insert(0, width - s.size(), '0');
  return s;
}

void render_all(const std::vector<std::pair<std::string, ImageSpec>>& jobs, const fs::path& root,
                int size, int threads) {
  std::set<fs::path> dirs;
  for (const auto& j : jobs) dirs.insert((root / j.first).parent_path());
  for (const auto& d : dirs) {
    std::error_code ec;
    fs::create_directories(d, ec);
    UNIME_CHECK(!ec, d.string(), ": cannot create directory: ", ec.message());
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::string failure;
  std::mutex failure_mu;
  auto work = [&]() {
    for (size_t i = next++; i < jobs.size() && !failed; i = next++) {
      const ImageSpec& im = jobs[i].second;
      Image img = render_scene(im.scene, size);
      if (im.is_crop) img = crop_object(img, im.box, size);
      const std::vector<uint8_t> png = encode_png(img);
      const fs::path path = root / jobs[i].first;
      std::FILE* f = std::fopen(path.c_str(), "wb");
      const bool ok = f && std::fwrite(png.data(), 1, png.size(), f) == png.size();
      if (f) std::fclose(f);
      if (!ok) {
        std::lock_guard<std::mutex> lock(failure_mu);
        failure = str(path.string(), ": cannot write image: ", std::strerror(errno));
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (failed) throw Error(failure);
}

// ---- leak guards -------------------------------------------------------------------------------

bool target_leaks(const Target& t, const Rules& rules) {
  return text_has_heldout(t.text, rules) || (t.image && scene_has_heldout(t.image->scene, rules)) ||
         (t.desc && description_has_heldout(*t.desc, rules));
}

bool item_leaks(const Item& it, const Rules& rules) {
  return text_has_heldout(it.qry_text, rules) ||
         (it.qry_image && scene_has_heldout(it.qry_image->scene, rules)) ||
         target_leaks(it.pos, rules);
}

// ---- corpus ------------------------------------------------------------------------------------

struct Corpus {
  std::vector<std::string> lines;
  std::set<std::string> seen;
  void add(const std::string& text) {
    if (text.empty()) return;
    std::string line = text;
    std::replace(line.begin(), line.end(), '\n', ' ');
    if (seen.insert(line).second) lines.push_back(line);
  }
};

// ---- the generator -----------------------------------------------------------------------------

class WorldWriter {
 public:
  WorldWriter(const WorldConfig& cfg, fs::path root) : cfg_(cfg), root_(std::move(root)) {
    rules_.max_objects = cfg.max_objects;
    rules_.heldout = choose_heldout(cfg.seed, cfg.heldout);
  }

  WorldStats run() {
    const auto t0 = std::chrono::steady_clock::now();
    pretraining();
    nli();
    mmeb_train();
    mmeb_eval();
    retrieval();
    sugarcrepe();
    world_json();
    corpus_file();
    write_file_atomic(root_ / "scenes.jsonl", images_.scenes.text);
    const int threads = cfg_.threads > 0 ? cfg_.threads
                                         : std::max(1u, std::thread::hardware_concurrency());
    render_all(images_.jobs, root_, cfg_.image_size, threads);
    stats_.images = static_cast<int64_t>(images_.jobs.size());
    stats_.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return stats_;
  }

 private:
  // ---- stage 0: captions and VQA on their own scenes ----
  void pretraining() {
    Jsonl captions, vqa;
    for (int i = 0; i < cfg_.pretrain_scenes; ++i) {
      Rng rng = stream(cfg_.seed, "pretrain", i);
      const Scene s = sample_scene(rng, rules_, rng.range(1, cfg_.max_objects), Split::Train);
      const std::string path = images_.emit(whole_image(s), "images/pretrain/" + padded(i) + ".png", "pretrain");
      {  // one object crop per scene, captioned: the kind of image grounding candidates are
        Rng cr = stream(cfg_.seed, "pretrain-crop", i);
        const int j = cr.below(static_cast<int>(s.objects.size()));
        const Object& o = s.objects[j];
        const std::string text = std::string("a cropped image of a ") + kSizeNames[o.size] + " " +
                                 combo_name(o.colour, o.shape) + ".";
        captions.add(json{{"image", images_.emit(object_crop(s, j), "images/pretrain/" + padded(i) + "-crop.png", "pretrain")},
                          {"text", text}});
        corpus_.add(text);
      }
      std::set<std::string> done;
      for (int k = 0, tries = 0; k < cfg_.captions_per_scene && tries < 20; ++tries) {
        DescribeOptions opt;
        opt.size_percent = rng.range(0, 100);
        opt.max_facts = 2;
        opt.fact_percent = 60;
        opt.background = rng.chance(1, 4);
        const std::string text = render_caption(describe(s, rng, opt), random_style(rng));
        if (!done.insert(text).second || text_has_heldout(text, rules_)) continue;
        captions.add(json{{"image", path}, {"text", text}});
        corpus_.add(text);
        ++k;
      }
      for (int k = 0, tries = 0; k < cfg_.vqa_per_scene && tries < 20; ++tries) {
        QA qa;
        const int kind = rng.below(3);
        const bool ok = kind == 0   ? attribute_qa(s, rng, rules_, Split::Train, qa)
                        : kind == 1 ? relation_qa(s, rng, rules_, Split::Train, qa)
                                    : position_qa(s, rng, rules_, Split::Train, qa);
        if (!ok || !done.insert(qa.question).second) continue;
        if (text_has_heldout(qa.question, rules_) || text_has_heldout(qa.answer, rules_)) continue;
        vqa.add(json{{"image", path}, {"question", qa.question}, {"answer", qa.answer}});
        corpus_.add(qa.question);
        corpus_.add(qa.answer);
        ++k;
      }
    }
    write_file_atomic(root_ / "captions.jsonl", captions.text);
    write_file_atomic(root_ / "vqa.jsonl", vqa.text);
    stats_.pretrain_rows = captions.rows + vqa.rows;
  }

  // ---- stage 1: SimCSE-style NLI triples ----
  void nli() {
    Jsonl out;
    for (int i = 0; i < cfg_.nli_rows; ++i) {
      Rng rng = stream(cfg_.seed, "nli", i);
      for (;;) {
        const Scene s = sample_scene(rng, rules_, rng.range(1, cfg_.max_objects), Split::Train);
        DescribeOptions opt;
        opt.size_percent = 60;
        opt.max_facts = 2;
        opt.fact_percent = 75;
        const Description premise = describe(s, rng, opt);
        const TextStyle st = random_style(rng);
        const std::string sent0 = render_caption(premise, st);
        const std::string sent1 = render_caption(entailment(premise, rng), random_style(rng));
        if (sent1 == sent0) continue;
        std::string hard_neg;
        if (cfg_.nli_swap_percent > 0 && rng.chance(cfg_.nli_swap_percent, 100)) {
          std::vector<int> coloured;
          for (int m = 0; m < static_cast<int>(premise.mentions.size()); ++m)
            if (premise.mentions[m].colour >= 0) coloured.push_back(m);
          if (coloured.size() >= 2) {
            const int a = rng.below(static_cast<int>(coloured.size()));
            const int b = (a + 1 + rng.below(static_cast<int>(coloured.size()) - 1)) % static_cast<int>(coloured.size());
            Description e = premise;
            std::swap(e.mentions[coloured[a]].colour, e.mentions[coloured[b]].colour);
            const std::string text = render_caption(e, rng.chance(1, 2) ? st : random_style(rng));
            if (!holds(e, s) && !text_has_heldout(text, rules_)) hard_neg = text;
          }
        }
        // --nli-relation-percent: reverse one stated relation (draws only when asked for, so the
        // other rows stay the same)
        if (hard_neg.empty() && cfg_.nli_relation_percent > 0 && rng.chance(cfg_.nli_relation_percent, 100) &&
            !premise.facts.empty()) {
          Description e = premise;
          Fact& f = e.facts[rng.below(static_cast<int>(e.facts.size()))];
          if (rng.chance(1, 2)) std::swap(f.a, f.b);
          else f.relation = opposite(f.relation);
          const std::string text = render_caption(e, rng.chance(1, 2) ? st : random_style(rng));
          if (!holds(e, s) && !text_has_heldout(text, rules_) && text != sent0) hard_neg = text;
        }
        if (hard_neg.empty())
          for (const auto& c : false_descriptions(premise, s, rng, 4, /*allow_add=*/false)) {
            const std::string text = render_caption(c, rng.chance(1, 2) ? st : random_style(rng));
            if (!text_has_heldout(text, rules_)) {
              hard_neg = text;
              break;
            }
          }
        if (hard_neg.empty()) continue;
        out.add(json{{"sent0", sent0}, {"sent1", sent1}, {"hard_neg", hard_neg}});
        corpus_.add(sent0);
        corpus_.add(sent1);
        corpus_.add(hard_neg);
        break;
      }
    }
    write_file_atomic(root_ / "nli.jsonl", out.text);
    stats_.nli_rows = out.rows;
  }

  // A paraphrase (converse relations, another order) or a subset of the facts.
  static Description entailment(const Description& d, Rng& rng) {
    Description e = d;
    if (rng.chance(1, 2)) {  // paraphrase: state each relation from the other side
      for (auto& f : e.facts) {
        std::swap(f.a, f.b);
        f.relation = opposite(f.relation);
      }
      return e;
    }
    // subset: drop attributes, relations and (keeping one) mentions
    for (auto& m : e.mentions) {
      if (m.size >= 0 && rng.chance(1, 2)) m.size = -1;
      if (m.colour >= 0 && rng.chance(1, 4)) m.colour = -1;
    }
    if (!e.facts.empty() && rng.chance(1, 2)) e.facts.pop_back();
    if (e.facts.empty() && e.mentions.size() > 1 && rng.chance(1, 2)) {
      e.mentions.erase(e.mentions.begin() + rng.below(static_cast<int>(e.mentions.size())));
    }
    return e;
  }

  // ---- stage 2: MMEB-train rows ----
  void mmeb_train() {
    Jsonl out;
    for (const TaskDef& def : task_defs()) {
      if (!def.train_source) continue;
      for (int i = 0; i < cfg_.train_per_source; ++i) {
        Rng rng = stream(cfg_.seed, std::string("train/") + def.name, i);
        Item it = def.make(rules_, rng, Split::Train);
        for (int attempt = 0; item_leaks(it, rules_); ++attempt) {
          if (attempt > 1000) throw std::logic_error(str("world: ", def.name, " keeps leaking"));
          it = def.make(rules_, rng, Split::Train);
        }
        const Target* neg = nullptr;
        auto usable = [&](const Target& h) { return !target_leaks(h, rules_) && !it.accepts(h); };
        // --train-swap-percent: prefer a candidate that swaps two objects' colours (decided on a
        // stream of its own, so the rows' other draws stay the same)
        if (cfg_.train_swap_percent > 0 &&
            stream(cfg_.seed, std::string("train-swap/") + def.name, i).chance(cfg_.train_swap_percent, 100))
          for (const auto& h : it.hard)
            if (colour_swap_of(h, it.pos) && usable(h)) {
              neg = &h;
              break;
            }
        // --train-relation-percent: likewise a candidate that moves two objects / reverses a relation
        if (!neg && cfg_.train_relation_percent > 0 &&
            stream(cfg_.seed, std::string("train-relation/") + def.name, i).chance(cfg_.train_relation_percent, 100))
          for (const auto& h : it.hard)
            if (relation_edit_of(h, it.pos) && usable(h)) {
              neg = &h;
              break;
            }
        for (auto h = it.hard.begin(); !neg && h != it.hard.end(); ++h)
          if (usable(*h)) neg = &*h;
        const std::string base = std::string("images/train/") + def.name + "/" + padded(i);
        json row;
        row["qry"] = it.qry_text;
        row["qry_image_path"] = it.qry_image ? images_.emit(*it.qry_image, base + "-q.png", "train") : "";
        row["pos_text"] = it.pos.text;
        row["pos_image_path"] = it.pos.image ? images_.emit(*it.pos.image, base + "-p.png", "train") : "";
        row["neg_text"] = neg ? neg->text : "";
        row["neg_image_path"] =
            neg && neg->image ? images_.emit(*neg->image, base + "-n.png", "train") : "";
        row["dataset"] = def.name;
        out.add(row);
        corpus_.add(it.qry_text);
        corpus_.add(it.pos.text);
        if (neg) corpus_.add(neg->text);
      }
    }
    write_file_atomic(root_ / "mmeb-train.jsonl", out.text);
    stats_.train_rows = out.rows;
  }

  // ---- MMEB-eval ----
  void mmeb_eval() {
    const fs::path dir = root_ / "mmeb-eval";
    fs::create_directories(dir);
    json manifest;
    for (const TaskDef& def : task_defs()) {
      const int n = cfg_.eval_queries;
      std::vector<Item> items;
      items.reserve(n);
      const std::string base = std::string("images/eval/") + def.name + "/";
      for (int i = 0; i < n; ++i) {
        Rng rng = stream(cfg_.seed, std::string("eval/") + def.name, i);
        items.push_back(def.make(rules_, rng, def.scenes));
        Item& it = items.back();
        if (!it.accepts(it.pos)) throw std::logic_error(str("world: ", def.name, " gold rejected"));
        if (it.qry_image) it.qry_path = images_.emit(*it.qry_image, base + padded(i) + "-q.png", "eval");
        if (it.pos.image) it.pos.path = images_.emit(*it.pos.image, base + padded(i) + "-p.png", "eval");
      }
      Jsonl out;
      const int max_hard = std::max(1, cfg_.candidates / 2);
      for (int i = 0; i < n; ++i) {
        Item& it = items[i];
        Rng rng = stream(cfg_.seed, std::string("eval-candidates/") + def.name, i);
        std::vector<const Target*> cands{&it.pos};
        std::set<std::string> seen{it.pos.text + '\x1f' + it.pos.path};
        auto identity = [](const Target& t) { return t.text + '\x1f' + t.path; };
        int k = 0;
        for (auto& h : it.hard) {
          if (static_cast<int>(cands.size()) >= cfg_.candidates || k >= max_hard) break;
          if (it.accepts(h)) continue;  // a generator bug guard: never list a right answer twice
          if (h.image) h.path = images_.emit(*h.image, base + padded(i) + "-h" + std::to_string(k) + ".png", "eval");
          if (!seen.insert(identity(h)).second) continue;
          cands.push_back(&h);
          ++k;
        }
        for (const auto& f : it.fill) {
          if (static_cast<int>(cands.size()) >= cfg_.candidates) break;
          if (it.accepts(f) || !seen.insert(identity(f)).second) continue;
          cands.push_back(&f);
        }
        // random candidates: the gold targets of other queries of the same dataset
        std::vector<int> others;
        for (int j = 0; j < n; ++j)
          if (j != i) others.push_back(j);
        rng.shuffle(others);
        for (int j : others) {
          if (static_cast<int>(cands.size()) >= cfg_.candidates) break;
          const Target& t = items[j].pos;
          if (it.accepts(t) || !seen.insert(identity(t)).second) continue;
          cands.push_back(&t);
        }
        json row;
        row["qry_text"] = it.qry_text;
        row["qry_img_path"] = it.qry_path;
        json texts = json::array(), paths = json::array();
        for (const Target* t : cands) {
          texts.push_back(t->text);
          paths.push_back(t->path);
        }
        row["tgt_text"] = texts;
        row["tgt_img_path"] = paths;
        out.add(row);
      }
      write_file_atomic(dir / (std::string(def.name) + ".jsonl"), out.text);
      manifest[def.name] = json{{"meta_task", def.meta_task}, {"split", def.split}};
      stats_.eval_rows += out.rows;
      ++stats_.eval_datasets;
    }
    write_file_atomic(dir / "manifest.json", manifest.dump(2) + "\n");
  }

  // ---- image-text retrieval (Flickr30K / COCO style: one image, several captions) ----
  void retrieval() {
    Jsonl out;
    for (int i = 0; i < cfg_.retrieval_images; ++i) {
      Rng rng = stream(cfg_.seed, "retrieval", i);
      const Scene s = sample_scene(rng, rules_, rng.range(2, cfg_.max_objects), Split::Ind);
      json caps = json::array();
      std::set<std::string> done;
      for (int tries = 0; static_cast<int>(caps.size()) < cfg_.retrieval_captions && tries < 50; ++tries) {
        DescribeOptions opt;
        opt.size_percent = rng.range(0, 100);
        opt.max_facts = 2;
        opt.fact_percent = 60;
        const std::string text = render_caption(describe(s, rng, opt), random_style(rng));
        if (done.insert(text).second) caps.push_back(text);
      }
      const std::string path = images_.emit(whole_image(s), "images/retrieval/" + padded(i) + ".png", "retrieval");
      out.add(json{{"image", path}, {"captions", caps}});
    }
    write_file_atomic(root_ / "retrieval.jsonl", out.text);
    stats_.retrieval_images = out.rows;
  }

  // ---- SugarCrepe: a true caption and a hard negative made by one edit ----
  static bool sugarcrepe_pair(const std::string& subset, const Scene& s, Rng& rng,
                              Description& pos, Description& neg) {
    DescribeOptions opt;
    opt.size_percent = 50;
    opt.max_facts = 1;
    opt.fact_percent = (subset == "replace-rel" || subset == "swap-obj") ? 100 : 40;
    pos = describe(s, rng, opt);
    neg = pos;
    const int n_m = static_cast<int>(pos.mentions.size());
    const int i = rng.below(n_m);
    if (subset == "replace-obj") {
      const auto ss = unused_shapes(s, rng);
      if (ss.empty()) return false;
      neg.mentions[i].shape = ss[0];
    } else if (subset == "replace-att") {
      if (pos.mentions[i].size >= 0 && rng.chance(1, 3)) {
        neg.mentions[i].size = 1 - pos.mentions[i].size;
      } else {
        neg.mentions[i].colour = (pos.mentions[i].colour + 1 + rng.below(kNumColours - 1)) % kNumColours;
      }
    } else if (subset == "replace-rel") {
      if (pos.facts.empty()) return false;
      Fact& f = neg.facts[0];
      std::vector<int> wrong;
      for (int r = 0; r < kNumRelations; ++r) {
        Description t = neg;
        t.facts[0].relation = r;
        if (!holds(t, s)) wrong.push_back(r);
      }
      if (wrong.empty()) return false;
      f.relation = rng.pick(wrong);
    } else if (subset == "swap-obj") {
      if (pos.facts.empty()) return false;
      std::swap(neg.facts[0].a, neg.facts[0].b);
    } else if (subset == "swap-att") {
      if (n_m < 2) return false;
      const int j = (i + 1 + rng.below(n_m - 1)) % n_m;
      std::swap(neg.mentions[i].colour, neg.mentions[j].colour);
    } else if (subset == "add-obj") {
      const auto ss = unused_shapes(s, rng);
      if (ss.empty()) return false;
      Mention a;
      a.shape = ss[0];
      a.colour = rng.below(kNumColours);
      if (rng.chance(1, 3)) a.size = rng.below(kNumSizes);
      neg.mentions.push_back(a);
    } else {  // add-att: the true caption leaves an attribute out, the negative states it wrongly
      const Object& o = s.objects[find_shape(s, pos.mentions[i].shape)];
      if (rng.chance(1, 3)) {
        pos.mentions[i].size = -1;
        neg.mentions[i].size = 1 - o.size;
      } else {
        pos.mentions[i].colour = -1;
        neg.mentions[i].colour = (o.colour + 1 + rng.below(kNumColours - 1)) % kNumColours;
      }
    }
    return holds(pos, s) && !holds(neg, s);
  }

  void sugarcrepe() {
    static const char* const kSubsets[] = {"replace-obj", "replace-att", "replace-rel", "swap-obj",
                                           "swap-att",    "add-obj",     "add-att"};
    const fs::path dir = root_ / "sugarcrepe";
    fs::create_directories(dir);
    for (const char* subset : kSubsets) {
      json out = json::object();
      for (int i = 0; i < cfg_.sugarcrepe_items; ++i) {
        Rng rng = stream(cfg_.seed, std::string("sugarcrepe/") + subset, i);
        for (;;) {
          const Scene s = sample_scene(rng, rules_, rng.range(2, cfg_.max_objects), Split::Ind);
          Description pos, neg;
          if (!sugarcrepe_pair(subset, s, rng, pos, neg)) continue;
          const TextStyle st = random_style(rng);
          const std::string caption = render_caption(pos, st);
          const std::string negative = render_caption(neg, st);
          if (caption == negative) continue;
          const std::string path = images_.emit(
              whole_image(s), std::string("images/sugarcrepe/") + subset + "/" + padded(i) + ".png", "sugarcrepe");
          out[std::to_string(i)] =
              json{{"filename", path}, {"caption", caption}, {"negative_caption", negative}};
          break;
        }
      }
      write_file_atomic(dir / (std::string(subset) + ".json"), out.dump(2) + "\n");
      stats_.sugarcrepe_items += static_cast<int64_t>(out.size());
    }
  }

  // ---- world.json / corpus.txt ----
  void world_json() {
    json w;
    w["format"] = "unime-world/1";
    w["seed"] = cfg_.seed;
    w["config"] = json{{"image_size", cfg_.image_size},
                       {"grid", kGrid},
                       {"max_objects", cfg_.max_objects},
                       {"heldout", cfg_.heldout},
                       {"pretrain_scenes", cfg_.pretrain_scenes},
                       {"captions_per_scene", cfg_.captions_per_scene},
                       {"vqa_per_scene", cfg_.vqa_per_scene},
                       {"nli_rows", cfg_.nli_rows},
                       {"nli_swap_percent", cfg_.nli_swap_percent},
                       {"train_swap_percent", cfg_.train_swap_percent},
                       {"nli_relation_percent", cfg_.nli_relation_percent},
                       {"train_relation_percent", cfg_.train_relation_percent},
                       {"train_per_source", cfg_.train_per_source},
                       {"eval_queries", cfg_.eval_queries},
                       {"candidates", cfg_.candidates},
                       {"retrieval_images", cfg_.retrieval_images},
                       {"retrieval_captions", cfg_.retrieval_captions},
                       {"sugarcrepe_items", cfg_.sugarcrepe_items}};
    auto names = [](const char* const* v, int n) {
      json a = json::array();
      for (int i = 0; i < n; ++i) a.push_back(v[i]);
      return a;
    };
    json positions = json::array();
    for (int r = 0; r < kGrid; ++r)
      for (int c = 0; c < kGrid; ++c) positions.push_back(position_name(r, c));
    w["vocab"] = json{{"shapes", names(kShapeNames, kNumShapes)},
                      {"colours", names(kColourNames, kNumColours)},
                      {"sizes", names(kSizeNames, kNumSizes)},
                      {"relations", names(kRelationNames, kNumRelations)},
                      {"positions", positions},
                      {"background_tones", names(kToneNames, kNumTones)},
                      {"background_textures", names(kTextureNames, kNumTextures)}};
    json held = json::array();
    for (int c = 0; c < kNumColours; ++c)
      for (int s = 0; s < kNumShapes; ++s)
        if (rules_.is_heldout(c, s)) held.push_back(combo_name(c, s));
    w["heldout_combinations"] = held;
    json ds = json::object();
    for (const TaskDef& d : task_defs()) {
      ds[d.name] = json{{"meta_task", d.meta_task},
                        {"split", d.split},
                        {"ood_reason", d.ood_reason},
                        {"train_source", d.train_source},
                        {"queries", cfg_.eval_queries}};
    }
    w["datasets"] = ds;
    w["counts"] = json{{"pretrain_rows", stats_.pretrain_rows},
                       {"nli_rows", stats_.nli_rows},
                       {"train_rows", stats_.train_rows},
                       {"eval_rows", stats_.eval_rows},
                       {"retrieval_images", stats_.retrieval_images},
                       {"sugarcrepe_items", stats_.sugarcrepe_items},
                       {"images", static_cast<int64_t>(images_.jobs.size())}};
    write_file_atomic(root_ / "world.json", w.dump(2) + "\n");
  }

  void corpus_file() {
    // instructions of every task and the whole vocabulary, so that the tokenizer covers the
    // words of evaluation-only datasets too (no evaluation item text is included)
    for (const auto& s : instruction_texts()) corpus_.add(s);
    std::string vocab;
    auto words = [&](const char* const* v, int n) {
      for (int i = 0; i < n; ++i) vocab += std::string(v[i]) + " ";
    };
    words(kShapeNames, kNumShapes);
    words(kColourNames, kNumColours);
    words(kSizeNames, kNumSizes);
    words(kToneNames, kNumTones);
    words(kTextureNames, kNumTextures);
    for (int r = 0; r < kNumRelations; ++r) vocab += relation_phrase(r, 0) + " " + relation_phrase(r, 1) + " ";
    for (int r = 0; r < kGrid; ++r)
      for (int c = 0; c < kGrid; ++c) vocab += position_name(r, c) + " ";
    for (int k = 0; k <= 9; ++k) vocab += count_word(k) + " ";
    vocab += "yes no object objects background";
    corpus_.add(vocab);
    std::string text;
    for (const auto& l : corpus_.lines) text += l + "\n";
    write_file_atomic(root_ / "corpus.txt", text);
  }

  const WorldConfig& cfg_;
  fs::path root_;
  Rules rules_;
  Images images_;
  Corpus corpus_;
  WorldStats stats_;
};

// Everything a world writes at its root; --force removes exactly these.
const char* const kOutputs[] = {"images",          "mmeb-eval",    "sugarcrepe",    "captions.jsonl",
                                "vqa.jsonl",       "nli.jsonl",    "mmeb-train.jsonl", "retrieval.jsonl",
                                "scenes.jsonl",    "corpus.txt",   "world.json"};

void prepare_output(const fs::path& root, bool force) {
  std::error_code ec;
  if (fs::exists(root, ec)) {
    UNIME_CHECK(fs::is_directory(root, ec), root.string(), ": output exists and is not a directory");
    if (!fs::is_empty(root, ec)) {
      UNIME_CHECK(force, root.string(),
                  ": output directory is not empty; pass --force to replace a world there");
      UNIME_CHECK(fs::exists(root / "world.json"), root.string(),
                  ": --force refuses to clear a directory without world.json (not a world)");
      for (const char* name : kOutputs) {
        fs::remove_all(root / name, ec);
        UNIME_CHECK(!ec, (root / name).string(), ": cannot remove: ", ec.message());
      }
    }
  }
  fs::create_directories(root, ec);
  UNIME_CHECK(!ec, root.string(), ": cannot create output directory: ", ec.message());
}

}  // namespace

WorldStats generate_world(const WorldConfig& cfg, const std::string& out_dir, bool force) {
  validate_world_config(cfg);
  UNIME_CHECK(!out_dir.empty(), "world: --output must name a directory");
  const fs::path root(out_dir);
  prepare_output(root, force);
  WorldWriter writer(cfg, root);
  return writer.run();
}

}  // namespace unime::data
