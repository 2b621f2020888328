// Stage-0 pretraining; see pretrain.h.
// Legend: B rows per step, N packed tokens, F image feature tokens, D hidden, V vocabulary.
#include "train/pretrain.h"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "core/error.h"
#include "core/progress.h"
#include "io/fs.h"
#include "io/hf-config.h"
#include "io/image.h"
#include "io/jsonl.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "text/tokenizer.h"
#include "train/loss-contrastive.h"
#include "train/trainer.h"
#include "vision/clip-processor.h"

namespace unime::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// One image and every row about it, packed into one sequence (the image tokens are the costly
// part of a sequence, so each image is seen once per step with all its captions and QA pairs):
//   bos <image>xF \n  [prompt_1] target_1 \n  [prompt_2] target_2 \n ... eos
// The segments come in a fresh random order each time; the loss covers the targets, their
// newlines and the eos.
struct Segment {
  std::vector<int64_t> prompt, target;  // target includes its closing newline
};
struct Example {
  int64_t image = -1;          // index into the pixel table
  std::vector<Segment> segs;
  std::vector<std::string> captions;  // the image's caption rows (for the text-side summary)
};

// A JSONL row -> prompt and target text. Captions: no prompt, the caption is the target; VQA:
// the question is the prompt, the answer the target.
std::pair<std::string, std::string> prompt_target(const json& row, const std::string& where) {
  if (row.contains("text")) {
    UNIME_CHECK(row["text"].is_string(), where, ": 'text' must be a string");
    return {"", row["text"].get<std::string>()};
  }
  UNIME_CHECK(row.contains("question") && row.contains("answer") && row["question"].is_string() &&
                  row["answer"].is_string(),
              where, ": expected 'text' (caption) or 'question' and 'answer' strings");
  return {row["question"].get<std::string>() + "\n", row["answer"].get<std::string>()};
}

void save_checkpoint(models::Model& m, const PretrainOptions& o, const fs::path& dir) {
  std::vector<torch::Tensor> keep;
  std::vector<io::TensorToWrite> tensors;
  for (auto& [name, p] : m.named_parameters()) {
    keep.push_back(p.detach().to(torch::kFloat32).contiguous());
    tensors.push_back({name, io::DType::F32,
                       std::vector<int64_t>(p.sizes().begin(), p.sizes().end()), keep.back().data_ptr()});
  }
  io::write_safetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}});
  json cfg = json::parse(o.config);
  cfg["torch_dtype"] = "float32";
  io::write_file_atomic((dir / "config.json").string(), cfg.dump(2) + "\n");
  io::write_file_atomic((dir / "preprocessor_config.json").string(), o.preprocessor_config);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    io::write_file_atomic((dir / f).string(), io::read_file((fs::path(o.tokenizer_dir) / f).string()));
}

// Per-image labels for the vision warm-up: for every grid cell the colour, shape and size class
// of the object there (0 = empty), and the background's tone and texture. Class lists come from
// the file itself (sorted), so any vocabulary works.
struct VisionLabels {
  int64_t cells = 0, colours = 0, shapes = 0, sizes = 0, tones = 0, textures = 0;
  std::map<std::string, std::vector<int64_t>> by_image;  // resolved path -> targets
  std::vector<std::string> colour_names, shape_names;     // classes 1.. in order
  int64_t width() const { return cells * 3 + 2; }         // targets per image
  /// (labels, classes) of each target group in layout order: cells' colour / shape / size, tone, texture
  std::vector<std::pair<int64_t, int64_t>> groups() const {
    return {{cells, colours}, {cells, shapes}, {cells, sizes}, {1, tones}, {1, textures}};
  }
};

VisionLabels read_vision_labels(const std::string& path) {
  struct Obj { std::string colour, shape, size; int64_t row, col; };
  struct Row { std::string image, tone, texture; std::vector<Obj> objs; bool crop = false; };
  std::vector<Row> rows;
  std::set<std::string> colours, shapes, sizes, tones, textures;
  int64_t grid = 0;
  const fs::path base = fs::path(path).parent_path();
  io::read_jsonl(path, [&](int64_t line, const json& r) {
    const std::string where = str(path, ":", line);
    auto text = [&](const json& o, const char* k) {
      UNIME_CHECK(o.is_object() && o.contains(k) && o[k].is_string(), where, ": expected a string '", k, "'");
      return o[k].get<std::string>();
    };
    Row row{(base / text(r, "image")).string(), text(r, "tone"), text(r, "texture"), {}, false};
    UNIME_CHECK(r.contains("objects") && r["objects"].is_array(), where, ": expected an 'objects' list");
    auto add = [&](const json& o) {
      UNIME_CHECK(o.is_object() && o.contains("row") && o["row"].is_number_integer() && o.contains("col") &&
                      o["col"].is_number_integer() && o["row"].get<int64_t>() >= 0 && o["col"].get<int64_t>() >= 0 &&
                      o["row"].get<int64_t>() < 16 && o["col"].get<int64_t>() < 16,
                  where, ": an object needs integer 'row' and 'col' in 0..15");
      Obj ob{text(o, "colour"), text(o, "shape"), text(o, "size"), o["row"].get<int64_t>(), o["col"].get<int64_t>()};
      grid = std::max({grid, ob.row + 1, ob.col + 1});
      colours.insert(ob.colour), shapes.insert(ob.shape), sizes.insert(ob.size);
      row.objs.push_back(ob);
    };
    const json& objects = r["objects"];
    if (r.contains("crop_object")) {  // an object crop shows that object (-1: none) on the centre cell
      const json& c = r["crop_object"];
      UNIME_CHECK(c.is_number_integer() && c.get<int64_t>() >= -1 && c.get<int64_t>() < static_cast<int64_t>(objects.size()),
                  where, ": 'crop_object' must be -1 or an index into 'objects'");
      row.crop = true;
      if (c.get<int64_t>() >= 0) add(objects[c.get<size_t>()]);
    } else {
      for (const auto& o : objects) add(o);
    }
    tones.insert(row.tone), textures.insert(row.texture);
    rows.push_back(std::move(row));
  });
  UNIME_CHECK(!rows.empty() && grid > 0, path, ": no labelled objects");
  auto index = [](const std::set<std::string>& s, const std::string& v) {
    return static_cast<int64_t>(std::distance(s.begin(), s.find(v)));
  };
  VisionLabels L;
  L.cells = grid * grid;
  L.colours = static_cast<int64_t>(colours.size()) + 1, L.shapes = static_cast<int64_t>(shapes.size()) + 1;
  L.sizes = static_cast<int64_t>(sizes.size()) + 1;
  L.tones = static_cast<int64_t>(tones.size()), L.textures = static_cast<int64_t>(textures.size());
  L.colour_names.assign(colours.begin(), colours.end());
  L.shape_names.assign(shapes.begin(), shapes.end());
  for (const auto& r : rows) {
    std::vector<int64_t> t(static_cast<size_t>(L.width()), 0);  // [colour x cells, shape x cells, size x cells, tone, texture]
    for (const auto& o : r.objs) {
      const int64_t c = r.crop ? (grid / 2) * grid + grid / 2 : o.row * grid + o.col;
      t[c] = index(colours, o.colour) + 1;
      t[L.cells + c] = index(shapes, o.shape) + 1;
      t[2 * L.cells + c] = index(sizes, o.size) + 1;
    }
    t[3 * L.cells] = index(tones, r.tone);
    t[3 * L.cells + 1] = index(textures, r.texture);
    L.by_image[r.image] = std::move(t);
  }
  return L;
}

// The mean of a per-step series' first / last 10 values (fewer when shorter; 0 when empty).
double first10(const std::vector<double>& v) {
  const auto n = std::min<size_t>(10, v.size());
  return n ? std::accumulate(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n), 0.0) / static_cast<double>(n) : 0;
}
double last10(const std::vector<double>& v) {
  const auto n = std::min<size_t>(10, v.size());
  return n ? std::accumulate(v.end() - static_cast<std::ptrdiff_t>(n), v.end(), 0.0) / static_cast<double>(n) : 0;
}

// The vision warm-up: ViT + projector + a temporary linear head over the F feature tokens, one
// cross-entropy per label (cells' colour / shape / size, tone, texture), AdamW + cosine.
void vision_warmup(models::Model& model, const PretrainOptions& o, const VisionLabels& L,
                   const std::vector<torch::Tensor>& pixels, const std::map<std::string, int64_t>& image_index,
                   PretrainResult& res) {
  // pixel-table rows with labels and their targets; every 8th labelled image (at most 256) is held
  // out: the accuracy is measured on images the warm-up never trained on
  struct Set {
    std::vector<int64_t> images;
    std::vector<std::vector<int64_t>> targets;
  } train_set, held_set;
  int64_t labelled = 0;
  for (const auto& [path, i] : image_index) {
    auto it = L.by_image.find(path);
    if (it == L.by_image.end()) continue;
    Set& to = (labelled++ % 8 == 7 && held_set.images.size() < 256) ? held_set : train_set;
    to.images.push_back(i);
    to.targets.push_back(it->second);
  }
  UNIME_CHECK(static_cast<int64_t>(train_set.images.size()) >= o.vision_batch && !held_set.images.empty(),
              o.vision_labels, ": labels for ", labelled, " of the training images, too few for the vision batch ",
              o.vision_batch, " and a held-out set");
  std::vector<torch::Tensor> params;
  for (auto& [name, p] : model.named_parameters())
    if (name.find("vision_tower.") != std::string::npos || name.find("multi_modal_projector.") != std::string::npos)
      params.push_back(p);
  UNIME_CHECK(!params.empty(), "pretrain: the model has no vision_tower / multi_modal_projector parameters");
  int64_t F = 0, D = 0;
  {
    torch::NoGradGuard ng;
    auto f = model.image_features(pixels[0].unsqueeze(0));
    F = f.size(1), D = f.size(2);
  }
  // The head reads each grid cell from the patch features average-pooled onto the scene's grid, with one
  // classifier shared by all cells (colour, shape, size), and the scene's tone and texture from the mean
  // feature. Sharing makes it translation-equivariant: a per-position head over all features memorises
  // the training images (held-out shape accuracy at chance) instead of teaching the tower shapes.
  const int64_t side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(F))));
  const int64_t grid = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(L.cells))));
  UNIME_CHECK(side * side == F && grid * grid == L.cells, "pretrain: the vision warm-up needs a square patch grid (",
              F, " features) and a square scene grid (", L.cells, " cells)");
  const auto groups = L.groups();
  torch::nn::Linear cell_head(torch::nn::LinearOptions(D, L.colours + L.shapes + L.sizes));
  torch::nn::Linear scene_head(torch::nn::LinearOptions(D, L.tones + L.textures));
  torch::nn::Linear position_head{nullptr};  // o.vision_position: which cell a pooled feature is
  if (o.vision_position) {
    position_head = torch::nn::Linear(torch::nn::LinearOptions(D, L.cells));
    for (auto& p : position_head->parameters()) params.push_back(p);
  }
  for (auto& p : cell_head->parameters()) params.push_back(p);
  for (auto& p : scene_head->parameters()) params.push_back(p);
  for (auto& p : params) p.requires_grad_(true);
  torch::optim::AdamW optim(params, torch::optim::AdamWOptions(o.vision_lr).betas({0.9, 0.95}).weight_decay(0.0));
  for (auto& [p, m] : model.modules()) m->train();

  // right/total: [colour, shape] counts on the occupied cells, then [position] on every cell, or null
  auto loss_of = [&](const Set& set, const std::vector<size_t>& batch, int64_t* right, int64_t* total) {
    std::vector<torch::Tensor> px;
    std::vector<int64_t> tg;
    for (size_t b : batch) {
      px.push_back(pixels[set.images[b]]);
      tg.insert(tg.end(), set.targets[b].begin(), set.targets[b].end());
    }
    const int64_t B = static_cast<int64_t>(batch.size());
    auto feats = model.image_features(torch::stack(px));  // [B, F, D], patches row-major
    auto cells = torch::adaptive_avg_pool2d(feats.transpose(1, 2).reshape({B, D, side, side}), {grid, grid})
                     .flatten(2)
                     .transpose(1, 2);                        // [B, cells, D], cells row-major
    auto per_cell = cell_head(cells).split({L.colours, L.shapes, L.sizes}, 2);  // [B, cells, k] each
    auto per_scene = scene_head(feats.mean(1)).split({L.tones, L.textures}, 1);  // [B, k] each
    const std::vector<torch::Tensor> logits = {per_cell[0], per_cell[1], per_cell[2], per_scene[0], per_scene[1]};
    auto t = torch::tensor(tg, torch::kInt64).view({B, L.width()});
    torch::Tensor loss = torch::zeros({});
    int64_t col = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      const auto [n, k] = groups[g];
      auto lg = logits[g].reshape({B * n, k});
      auto tt = t.narrow(1, col, n).reshape({B * n});
      loss = loss + torch::nn::functional::cross_entropy(lg, tt);
      if (right && g < 2) {  // colour and shape of the occupied cells
        auto occupied = tt.ne(0);
        right[g] += lg.argmax(1).eq(tt).logical_and(occupied).sum().item<int64_t>();
        total[g] += occupied.sum().item<int64_t>();
      }
      col += n;
    }
    loss = loss / static_cast<double>(groups.size());
    if (position_head) {
      auto lg = position_head(cells).reshape({B * L.cells, L.cells});
      auto tt = torch::arange(L.cells, torch::kInt64).repeat({B});
      loss = loss + torch::nn::functional::cross_entropy(lg, tt);
      if (right) right[2] += lg.argmax(1).eq(tt).sum().item<int64_t>(), total[2] += B * L.cells;
    }
    return loss;
  };

  std::mt19937_64 rng(o.seed + 1);
  std::vector<size_t> order(train_set.images.size());
  std::iota(order.begin(), order.end(), 0);
  size_t cursor = order.size();
  std::vector<double> losses;
  ProgressBar bar("vision warm-up", o.vision_steps, "steps");
  for (int64_t step = 1; step <= o.vision_steps; ++step) {
    const double lr = schedule_lr("cosine", o.vision_lr, step, o.vision_steps, std::max<int64_t>(5, o.vision_steps / 20));
    for (auto& g : optim.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    std::vector<size_t> batch;
    for (int64_t b = 0; b < o.vision_batch; ++b) {
      if (cursor == order.size()) {
        std::shuffle(order.begin(), order.end(), rng);
        cursor = 0;
      }
      batch.push_back(order[cursor++]);
    }
    auto loss = loss_of(train_set, batch, nullptr, nullptr);
    optim.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(params, 1.0);
    optim.step();
    losses.push_back(loss.item<double>());
    UNIME_CHECK(std::isfinite(losses.back()), "pretrain: the vision warm-up loss is ", losses.back(), " at step ", step);
    if (!o.quiet) bar.update(step, str("loss ", static_cast<int64_t>(losses.back() * 1000) / 1000.0));
  }
  if (!o.quiet) bar.finish();
  res.vision_first_loss = first10(losses), res.vision_last_loss = last10(losses);
  {
    torch::NoGradGuard ng;
    for (auto& [p, m] : model.modules()) m->eval();
    std::vector<size_t> batch;
    for (size_t i = 0; i < held_set.images.size(); ++i) batch.push_back(i);
    int64_t right[3] = {0, 0, 0}, total[3] = {0, 0, 0};
    loss_of(held_set, batch, right, total);
    if (total[2] > 0) res.vision_position_accuracy = static_cast<double>(right[2]) / static_cast<double>(total[2]);
    res.vision_accuracy = static_cast<double>(right[0] + right[1]) / static_cast<double>(total[0] + total[1]);
    res.vision_colour_accuracy = static_cast<double>(right[0]) / static_cast<double>(total[0]);
    res.vision_shape_accuracy = static_cast<double>(right[1]) / static_cast<double>(total[1]);
  }
}

// The "cells" scene-summary loss: one cross-entropy per label group (cells' colour / shape / size,
// tone, texture) of the head's logits [B, width] against the targets [B, L.width()], averaged.
torch::Tensor summary_cells_loss(const VisionLabels& L, const torch::Tensor& logits, const torch::Tensor& targets) {
  const int64_t B = logits.size(0);
  const auto groups = L.groups();
  std::vector<int64_t> sizes;
  for (const auto& [n, k] : groups) sizes.push_back(n * k);
  auto parts = logits.split(sizes, 1);
  torch::Tensor loss = torch::zeros({});
  int64_t col = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto [n, k] = groups[g];
    loss = loss + torch::nn::functional::cross_entropy(parts[g].reshape({B * n, k}),
                                                       targets.narrow(1, col, n).reshape({B * n}));
    col += n;
  }
  return loss / static_cast<double>(groups.size());
}

}  // namespace

namespace {
// The occupied cells of scene labels laid out as the vision warm-up's: each one's colour-shape pair
// ((colour-1) * (shapes-1) + shape-1) and its row and column (square grids; with square false the
// cell index is kept in col and row is 0). `who` names the caller in errors.
struct PlacedPair { int64_t pair, row, col; };
std::vector<PlacedPair> placed_pairs(const std::vector<int64_t>& labels, int64_t cells, int64_t colours, int64_t shapes,
                                     bool square, const char* who) {
  const int64_t grid = square ? static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(cells)))) : cells;
  UNIME_CHECK(cells > 0 && colours > 1 && shapes > 1 && static_cast<int64_t>(labels.size()) >= 2 * cells &&
                  (!square || grid * grid == cells),
              who, ": ", labels.size(), " labels for ", cells, " cells", square ? " (a square grid)" : "");
  std::vector<PlacedPair> out;
  for (int64_t c = 0; c < cells; ++c) {
    const int64_t colour = labels[static_cast<size_t>(c)], shape = labels[static_cast<size_t>(cells + c)];
    UNIME_CHECK(colour >= 0 && colour < colours && shape >= 0 && shape < shapes, who, ": cell ", c, " has colour ",
                colour, " and shape ", shape, " outside the classes");
    if (colour > 0 && shape > 0) out.push_back({(colour - 1) * (shapes - 1) + shape - 1, c / grid, c % grid});
  }
  return out;
}
}  // namespace

std::vector<float> summary_pair_targets(const std::vector<int64_t>& labels, int64_t cells, int64_t colours,
                                        int64_t shapes) {
  std::vector<float> hot(static_cast<size_t>((colours - 1) * (shapes - 1)), 0.f);
  for (const auto& p : placed_pairs(labels, cells, colours, shapes, false, "summary_pair_targets"))
    hot[static_cast<size_t>(p.pair)] = 1.f;
  return hot;
}

namespace {

// A caption's words (runs of letters), lower-cased, with where each stands in the caption.
struct Word {
  size_t begin, end;
  std::string lower;
};
std::vector<Word> caption_words(const std::string& caption) {
  std::vector<Word> words;
  for (size_t i = 0; i < caption.size();) {
    if (!std::isalpha(static_cast<unsigned char>(caption[i]))) {
      ++i;
      continue;
    }
    Word w{i, i, ""};
    for (; w.end < caption.size() && std::isalpha(static_cast<unsigned char>(caption[w.end])); ++w.end)
      w.lower += static_cast<char>(std::tolower(static_cast<unsigned char>(caption[w.end])));
    i = w.end;
    words.push_back(std::move(w));
  }
  return words;
}

// The index of each colour word directly followed by a shape word, and those two words' classes.
struct NamedPair {
  size_t word;
  int64_t colour, shape;
};
std::vector<NamedPair> named_pairs(const std::vector<Word>& words, const std::vector<std::string>& colour_names,
                                   const std::vector<std::string>& shape_names) {
  UNIME_CHECK(!colour_names.empty() && !shape_names.empty(), "caption pairs: no colour or shape names");
  auto find = [](const std::vector<std::string>& names, const std::string& w) {
    return static_cast<int64_t>(std::find(names.begin(), names.end(), w) - names.begin());
  };
  std::vector<NamedPair> out;
  for (size_t i = 0; i + 1 < words.size(); ++i) {
    const int64_t colour = find(colour_names, words[i].lower), shape = find(shape_names, words[i + 1].lower);
    if (colour < static_cast<int64_t>(colour_names.size()) && shape < static_cast<int64_t>(shape_names.size()))
      out.push_back({i, colour, shape});
  }
  return out;
}

}  // namespace

std::vector<float> caption_pair_targets(const std::string& caption, const std::vector<std::string>& colour_names,
                                        const std::vector<std::string>& shape_names) {
  const auto shapes = static_cast<int64_t>(shape_names.size());
  std::vector<float> hot(colour_names.size() * shape_names.size(), 0.f);
  for (const auto& p : named_pairs(caption_words(caption), colour_names, shape_names))
    hot[static_cast<size_t>(p.colour * shapes + p.shape)] = 1.f;
  return hot;
}

namespace {
constexpr int64_t kRelations = 4;  // left of, right of, above, below
int64_t opposite_relation(int64_t r) { return r ^ 1; }
}  // namespace

std::vector<float> summary_relation_targets(const std::vector<int64_t>& labels, int64_t cells, int64_t colours,
                                            int64_t shapes) {
  const auto at = placed_pairs(labels, cells, colours, shapes, true, "summary_relation_targets");
  const int64_t P = (colours - 1) * (shapes - 1);
  std::vector<float> t(static_cast<size_t>(P * P * kRelations), -1.f);
  for (const auto& a : at)
    for (const auto& b : at) {
      if (&a == &b) continue;
      const bool holds[kRelations] = {a.col < b.col, a.col > b.col, a.row < b.row, a.row > b.row};
      for (int64_t r = 0; r < kRelations; ++r) {
        float& v = t[static_cast<size_t>((a.pair * P + b.pair) * kRelations + r)];
        v = std::max(v, holds[r] ? 1.f : 0.f);
      }
    }
  return t;
}

namespace {
// The relations a caption states: (pair a, relation, pair b), pairs indexed colour * shapes + shape.
struct Fact { int64_t a, rel, b; };
// The relation (0..3: left of, right of, above, below) stated between named pairs i and i + 1 - the
// one relation word between them - or -1 when there is none, more than one, or the two pairs are
// the same.
int64_t stated_relation(const std::vector<Word>& words, const std::vector<NamedPair>& named, size_t i) {
  if (named[i].colour == named[i + 1].colour && named[i].shape == named[i + 1].shape) return -1;
  int64_t rel = -1, found = 0;
  for (size_t w = named[i].word + 2; w < named[i + 1].word; ++w) {
    const std::string& x = words[w].lower;
    const bool of = w + 1 < words.size() && words[w + 1].lower == "of";
    const int64_t r = (x == "left" && of) ? 0 : (x == "right" && of) ? 1 : (x == "above" || x == "over") ? 2
                      : (x == "below" || x == "under")                ? 3
                                                                      : -1;
    if (r >= 0) rel = r, ++found;
  }
  return found == 1 ? rel : -1;
}

std::vector<Fact> caption_facts(const std::string& caption, const std::vector<std::string>& colour_names,
                                const std::vector<std::string>& shape_names) {
  const auto S = static_cast<int64_t>(shape_names.size());
  std::vector<Fact> facts;
  const auto words = caption_words(caption);
  const auto named = named_pairs(words, colour_names, shape_names);
  for (size_t i = 0; i + 1 < named.size(); ++i)
    if (const int64_t rel = stated_relation(words, named, i); rel >= 0)
      facts.push_back({named[i].colour * S + named[i].shape, rel, named[i + 1].colour * S + named[i + 1].shape});
  return facts;
}
}  // namespace

std::vector<float> caption_relation_targets(const std::string& caption, const std::vector<std::string>& colour_names,
                                            const std::vector<std::string>& shape_names) {
  const int64_t P = static_cast<int64_t>(colour_names.size() * shape_names.size());
  std::vector<float> t(static_cast<size_t>(P * P * kRelations), -1.f);
  for (const auto& [a, rel, b] : caption_facts(caption, colour_names, shape_names)) {
    auto set = [&](int64_t x, int64_t y, int64_t r, float v) { t[static_cast<size_t>((x * P + y) * kRelations + r)] = v; };
    set(a, b, rel, 1.f), set(b, a, opposite_relation(rel), 1.f);
    set(a, b, opposite_relation(rel), 0.f), set(b, a, rel, 0.f);
  }
  return t;
}

std::vector<float> summary_position_targets(const std::vector<int64_t>& labels, int64_t cells, int64_t colours,
                                            int64_t shapes) {
  const auto at = placed_pairs(labels, cells, colours, shapes, true, "summary_position_targets");
  const int64_t grid = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(cells))));
  const int64_t P = (colours - 1) * (shapes - 1);
  std::vector<float> t(static_cast<size_t>(P * 2 * grid), 0.f);
  std::vector<int64_t> count(static_cast<size_t>(P), 0);
  for (const auto& a : at) {
    t[static_cast<size_t>((a.pair * 2) * grid + a.col)] += 1.f;      // its column
    t[static_cast<size_t>((a.pair * 2 + 1) * grid + a.row)] += 1.f;  // its row
    ++count[static_cast<size_t>(a.pair)];
  }
  for (int64_t p = 0; p < P; ++p)
    for (int64_t k = 0; k < 2 * grid; ++k) {
      float& v = t[static_cast<size_t>(p * 2 * grid + k)];
      v = count[static_cast<size_t>(p)] ? v / static_cast<float>(count[static_cast<size_t>(p)]) : -1.f;
    }
  return t;
}

std::vector<float> caption_position_targets(const std::string& caption, const std::vector<std::string>& colour_names,
                                            const std::vector<std::string>& shape_names, int64_t grid) {
  UNIME_CHECK(grid >= 2, "caption_position_targets: a grid of ", grid);
  const int64_t P = static_cast<int64_t>(colour_names.size() * shape_names.size());
  std::vector<float> t(static_cast<size_t>(P * 2 * grid), -1.f);
  std::vector<int> stated(static_cast<size_t>(P * 2), 0);  // facts per pair and axis
  const auto facts = caption_facts(caption, colour_names, shape_names);
  for (const auto& f : facts)
    for (int64_t p : {f.a, f.b}) ++stated[static_cast<size_t>(p * 2 + f.rel / 2)];
  // two distinct positions drawn uniformly from 0..grid-1: the smaller is k with chance
  // (grid-1-k)/C, the larger with chance k/C, C = grid (grid-1) / 2
  const float C = static_cast<float>(grid * (grid - 1) / 2);
  for (const auto& f : facts) {
    const int64_t axis = f.rel / 2;
    const bool a_smaller = f.rel == 0 || f.rel == 2;  // left of, above
    for (int64_t p : {f.a, f.b}) {
      if (stated[static_cast<size_t>(p * 2 + axis)] != 1) continue;  // one fact per pair and axis, else unknown
      const bool smaller = (p == f.a) == a_smaller;
      for (int64_t k = 0; k < grid; ++k)
        t[static_cast<size_t>((p * 2 + axis) * grid + k)] =
            static_cast<float>(smaller ? grid - 1 - k : k) / C;
    }
  }
  return t;
}

namespace {
// The caption with word spans replaced (first word index -> (last word index, new text)), an
// article ("a"/"an") right before a replaced span agreeing with its new first letter.
std::string replace_spans(const std::string& caption, const std::vector<Word>& words,
                          std::map<size_t, std::pair<size_t, std::string>> put) {
  std::map<size_t, std::pair<size_t, std::string>> articles;
  for (const auto& [w, span] : put)
    if (w > 0 && (words[w - 1].lower == "a" || words[w - 1].lower == "an")) {
      const bool vowel = std::string("aeiou").find(static_cast<char>(std::tolower(static_cast<unsigned char>(span.second[0])))) !=
                         std::string::npos;
      const bool upper = std::isupper(static_cast<unsigned char>(caption[words[w - 1].begin]));
      articles[w - 1] = {w - 1, std::string(upper ? "A" : "a") + (vowel ? "n" : "")};
    }
  put.insert(articles.begin(), articles.end());
  std::string out;
  size_t from = 0;
  for (const auto& [w, span] : put) {
    out += caption.substr(from, words[w].begin - from) + span.second;
    from = words[span.first].end;
  }
  return out + caption.substr(from);
}
}  // namespace

std::string caption_relation_swap(const std::string& caption, const std::vector<std::string>& colour_names,
                                  const std::vector<std::string>& shape_names, std::mt19937_64& rng) {
  const auto words = caption_words(caption);
  const auto named = named_pairs(words, colour_names, shape_names);
  std::vector<size_t> options;  // i: pairs i and i + 1 around one relation word
  for (size_t i = 0; i + 1 < named.size(); ++i)
    if (stated_relation(words, named, i) >= 0) options.push_back(i);
  if (options.empty()) return "";
  const size_t i = options[std::uniform_int_distribution<size_t>(0, options.size() - 1)(rng)];
  auto span = [&](const NamedPair& p) {  // [first word, last word] of "[size] colour shape"
    const bool sized = p.word > 0 && (words[p.word - 1].lower == "small" || words[p.word - 1].lower == "large");
    return std::pair<size_t, size_t>{sized ? p.word - 1 : p.word, p.word + 1};
  };
  const auto x = span(named[i]), y = span(named[i + 1]);
  auto text = [&](std::pair<size_t, size_t> s) {
    return caption.substr(words[s.first].begin, words[s.second].end - words[s.first].begin);
  };
  return replace_spans(caption, words, {{x.first, {x.second, text(y)}}, {y.first, {y.second, text(x)}}});
}

std::string caption_colour_swap(const std::string& caption, const std::vector<std::string>& colour_names,
                                const std::vector<std::string>& shape_names, std::mt19937_64& rng) {
  const auto words = caption_words(caption);
  const auto named = named_pairs(words, colour_names, shape_names);
  std::vector<std::pair<size_t, size_t>> options;  // two pairs whose swap changes both
  for (size_t a = 0; a < named.size(); ++a)
    for (size_t b = a + 1; b < named.size(); ++b)
      if (named[a].colour != named[b].colour && named[a].shape != named[b].shape)
        options.emplace_back(named[a].word, named[b].word);
  if (options.empty()) return "";
  const auto [x, y] = options[std::uniform_int_distribution<size_t>(0, options.size() - 1)(rng)];
  // the two colour words exchanged
  return replace_spans(caption, words, {{x, {x, caption.substr(words[y].begin, words[y].end - words[y].begin)}},
                                        {y, {y, caption.substr(words[x].begin, words[x].end - words[x].begin)}}});
}

PretrainResult run_pretrain(const PretrainOptions& o) {
  UNIME_CHECK(o.steps > 0 && o.batch_size > 0, "pretrain: --steps and --batch-size must be > 0");
  if (o.threads > 0) torch::set_num_threads(o.threads);
  const auto t_start = std::chrono::steady_clock::now();
  const io::ModelConfig cfg = io::parse_model_config(o.config, "pretrain config");
  UNIME_CHECK(cfg.arch == io::Arch::Llava && cfg.vision && cfg.text,
              "pretrain: the config must describe a LLaVA model (vision tower + language model)");
  const text::Tokenizer tok = text::Tokenizer::load(o.tokenizer_dir);
  const auto proc = vision::parse_clip_processor_config(o.preprocessor_config, "preprocessor_config.json");
  const int64_t image_token = cfg.llava.image_token_id;
  const auto image_token_text = tok.id_to_token(static_cast<int32_t>(image_token));
  UNIME_CHECK(image_token_text, o.tokenizer_dir, ": the tokenizer has no token ", image_token,
              " (the config's image_token_index)");
  const auto eos = tok.eos_id();
  UNIME_CHECK(eos, o.tokenizer_dir, ": tokenizer_config.json names no eos_token");

  torch::manual_seed(o.seed);
  auto model = std::make_shared<models::Model>(cfg, torch::kFloat32);
  {
    torch::NoGradGuard ng;
    model->decoder_->embed_tokens->weight.normal_(0.0, 0.02);
  }
  if (!o.init.empty()) {  // a later phase: every weight from the earlier run, by name and shape
    torch::NoGradGuard ng;
    const auto src = models::Model::load(o.init, torch::kFloat32);
    std::map<std::string, torch::Tensor> from;
    for (auto& [name, q] : src->named_parameters()) from.emplace(name, q);
    for (auto& [name, p] : model->named_parameters()) {
      auto it = from.find(name);
      UNIME_CHECK(it != from.end(), o.init, ": has no tensor ", name);
      UNIME_CHECK(it->second.sizes() == p.sizes(), o.init, ": tensor ", name, " has shape ",
                  it->second.sizes(), ", the pretraining config expects ", p.sizes());
      p.copy_(it->second.to(torch::kFloat32));
    }
  }
  // F: the feature tokens one image becomes
  int64_t F = 0;
  {
    torch::NoGradGuard ng;
    const int64_t S = cfg.vision->image_size;
    F = model->image_features(torch::zeros({1, 3, S, S})).size(1);
  }

  // data: tokenized once, images decoded and preprocessed once
  std::vector<Example> examples;
  std::vector<torch::Tensor> pixels;
  std::map<std::string, int64_t> image_index;
  for (const auto& file : o.data) {
    const fs::path base = fs::path(file).parent_path();
    io::read_jsonl(file, [&](int64_t line, const json& row) {
      const std::string where = str(file, ":", line);
      UNIME_CHECK(row.is_object() && row.contains("image") && row["image"].is_string(), where,
                  ": expected an object with an 'image' path");
      const std::string path = (base / row["image"].get<std::string>()).string();
      auto [it, fresh] = image_index.emplace(path, static_cast<int64_t>(pixels.size()));
      if (fresh) {
        int h = 0, w = 0;
        auto chw = vision::clip_preprocess(io::load_image(path), proc, &h, &w);
        UNIME_CHECK(h == cfg.vision->image_size && w == cfg.vision->image_size, path,
                    ": the processor gives ", h, "x", w, " pixels, the vision tower expects ",
                    cfg.vision->image_size);
        pixels.push_back(torch::from_blob(chw.data(), {3, h, w}, torch::kFloat32).clone());
      }
      if (fresh) examples.push_back(Example{it->second, {}, {}});
      auto [prompt, target] = prompt_target(row, where);
      Segment seg;
      for (int32_t id : tok.encode(prompt, false)) seg.prompt.push_back(id);
      for (int32_t id : tok.encode(target + "\n", false)) seg.target.push_back(id);
      examples[it->second].segs.push_back(std::move(seg));
      if (prompt.empty()) examples[it->second].captions.push_back(target);
    });
  }
  UNIME_CHECK(static_cast<int64_t>(examples.size()) >= o.batch_size, "pretrain: ", examples.size(),
              " images, fewer than the batch size ", o.batch_size);
  std::vector<int64_t> head;  // bos <image>xF \n
  for (int32_t id : tok.encode(*image_token_text + "\n", true)) {
    if (id == image_token) head.insert(head.end(), F, image_token);
    else head.push_back(id);
  }
  for (const auto& ex : examples) {
    int64_t n = static_cast<int64_t>(head.size()) + 1;
    for (const auto& sg : ex.segs) n += static_cast<int64_t>(sg.prompt.size() + sg.target.size());
    UNIME_CHECK(n <= cfg.text->max_position_embeddings, "pretrain: the rows of image ", ex.image,
                " make ", n, " tokens, more than max_position_embeddings ",
                cfg.text->max_position_embeddings);
  }

  PretrainResult res;
  const bool summary = o.summary_weight > 0;
  UNIME_CHECK(!summary || (!o.vision_labels.empty() && !o.summary_prompts.empty()),
              "pretrain: the scene-summary objective needs scene labels and at least one prompt");
  UNIME_CHECK(summary || (o.summary_text_prompts.empty() && o.summary_text_swap == 0 && o.summary_contrast == 0 &&
                          !o.summary_relations && o.summary_positions == 0),
              "pretrain: text summary prompts, their swaps, the relations, the positions and the image-caption contrast are parts "
              "of the scene-summary objective: they need a summary weight > 0");
  VisionLabels labels;
  if (o.vision_steps > 0 || summary) labels = read_vision_labels(o.vision_labels);
  if (o.vision_steps > 0) vision_warmup(*model, o, labels, pixels, image_index, res);

  // the scene-summary prompts, tokenized as the embedder does (bos, image placeholder -> F tokens),
  // and each example's targets, computed once (empty: unlabelled image): the cell labels, or the
  // colour-shape pairs
  const bool pairs = o.summary_target == "pairs" || o.summary_target == "pairs+cells";
  const bool cells = o.summary_target == "cells" || o.summary_target == "pairs+cells";
  // the head's columns: [pairs | cells]; the targets' columns: [pairs | cell labels]
  const int64_t pair_width = summary && pairs ? (labels.colours - 1) * (labels.shapes - 1) : 0;
  // a caption row's targets: its pairs, and with cells too, placeholder cell labels (a caption
  // does not place its objects in cells; the cells loss reads image rows only)
  auto text_targets = [&](std::vector<float> t) {
    if (cells) t.resize(t.size() + static_cast<size_t>(labels.width()), 0.f);
    return t;
  };
  std::vector<std::vector<int64_t>> summary_ids;
  std::vector<std::vector<float>> example_targets(examples.size());
  std::vector<const std::vector<int64_t>*> example_labels(examples.size(), nullptr);  // for the relations
  const bool relations = summary && o.summary_relations;
  const int64_t rel_width = relations ? pair_width * pair_width * kRelations : 0;
  UNIME_CHECK(o.summary_positions >= 0, "pretrain: the positions summary weight must be >= 0, got ", o.summary_positions);
  const bool positions = summary && o.summary_positions > 0;
  const int64_t grid_side = labels.cells > 0 ? static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(labels.cells)))) : 0;
  const int64_t pos_width = positions ? pair_width * 2 * grid_side : 0;
  int64_t cells_logits = 0;  // the head's cells columns (after the pairs, before the relations)
  std::vector<std::vector<std::vector<float>>> caption_targets(examples.size());  // per example, per caption
  torch::nn::Linear summary_head{nullptr};
  if (summary) {
    for (const auto& prompt : o.summary_prompts) {
      std::vector<int64_t> ids;
      int images = 0;
      for (int32_t id : tok.encode(prompt, true)) {
        if (id == image_token) ids.insert(ids.end(), F, image_token), ++images;
        else ids.push_back(id);
      }
      UNIME_CHECK(images == 1, "pretrain: the summary prompt '", prompt, "' must hold the image placeholder '",
                  *image_token_text, "' exactly once");
      summary_ids.push_back(std::move(ids));
    }
    UNIME_CHECK(pairs || cells, "pretrain: the summary target must be 'cells', 'pairs' or 'pairs+cells', got '",
                o.summary_target, "'");
    int64_t labelled = 0;
    for (const auto& [path, i] : image_index) {
      auto it = labels.by_image.find(path);
      if (it == labels.by_image.end()) continue;
      auto& t = example_targets[static_cast<size_t>(i)];
      if (pairs) t = summary_pair_targets(it->second, labels.cells, labels.colours, labels.shapes);
      if (cells) t.insert(t.end(), it->second.begin(), it->second.end());
      example_labels[static_cast<size_t>(i)] = &it->second;
      ++labelled;
    }
    UNIME_CHECK(labelled > 0, o.vision_labels, ": labels none of the pretraining images");
    int64_t width = pair_width;
    if (cells)
      for (const auto& [n, k] : labels.groups()) width += n * k;
    cells_logits = width - pair_width;
    UNIME_CHECK(!o.summary_relations || pairs, "pretrain: the relations summary needs the 'pairs' or 'pairs+cells' target");
    UNIME_CHECK(o.summary_positions == 0 || pairs, "pretrain: the positions summary needs the 'pairs' or 'pairs+cells' target");
    width += rel_width + pos_width;
    summary_head = torch::nn::Linear(torch::nn::LinearOptions(cfg.text->hidden_size, width));
    UNIME_CHECK(o.summary_text_prompts.empty() || pairs,
                "pretrain: text summary prompts need the 'pairs' or 'pairs+cells' summary target");
    UNIME_CHECK(o.summary_text_swap >= 0 && o.summary_text_swap <= 1 &&
                    (o.summary_text_swap == 0 || !o.summary_text_prompts.empty()),
                "pretrain: the text summary swap chance must be in [0, 1] and needs text summary prompts, got ",
                o.summary_text_swap);
    UNIME_CHECK(o.summary_contrast >= 0 && o.summary_contrast_temperature > 0 &&
                    (o.summary_contrast == 0 || (!o.summary_text_prompts.empty() && o.summary_text_swap == 0)),
                "pretrain: the image-caption contrast needs a weight >= 0, a temperature > 0, text summary prompts "
                "and no text summary swap (its swap rows are the negatives), got weight ",
                o.summary_contrast, ", temperature ", o.summary_contrast_temperature, ", swap ", o.summary_text_swap);
    for (const auto& prompt : o.summary_text_prompts)
      UNIME_CHECK(prompt.find("{text}") != std::string::npos && prompt.find(*image_token_text) == std::string::npos,
                  "pretrain: the text summary prompt '", prompt, "' must hold '{text}' and no image placeholder");
    if (!o.summary_text_prompts.empty())
      for (size_t i = 0; i < examples.size(); ++i)
        for (const auto& caption : examples[i].captions)
          caption_targets[i].push_back(text_targets(caption_pair_targets(caption, labels.colour_names, labels.shape_names)));
  }

  std::vector<torch::Tensor> params;
  for (auto& [name, p] : model->named_parameters()) {
    p.requires_grad_(true);
    params.push_back(p);
    res.parameters += p.numel();
  }
  // AdamW without decay on norms and biases (1-D), as is usual for transformer LMs
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : params) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  if (summary)  // the temporary head trains with the model and is not saved
    for (auto& p : summary_head->parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).weight_decay(0.0)));
  torch::optim::AdamW optim(groups, torch::optim::AdamWOptions(o.lr));
  for (auto& [p, m] : model->modules()) m->train();

  const fs::path out(o.output);
  const fs::path tmp = out.string() + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  std::ofstream metrics(tmp / "metrics.jsonl");
  std::mt19937_64 rng(o.seed);
  std::vector<int64_t> order(examples.size());
  std::iota(order.begin(), order.end(), 0);
  size_t cursor = order.size();
  std::vector<double> losses;
  ProgressBar bar("pretrain", o.steps, "steps");
  const bool bf16 = o.dtype == "bf16";
  UNIME_CHECK(bf16 || o.dtype == "f32", "pretrain: --dtype must be f32 or bf16");

  // The loss of a batch of examples, packed back to back with attention within each; image_of
  // picks each example's image (the examples' own, or another one for the diagnostic below).
  // With the summary objective, each labelled image is also packed once behind a random summary
  // prompt (its own sequence); returns the next-token loss, its target count and the summary loss.
  std::vector<double> summary_losses, text_summary_losses;  // the latter: the caption rows' part, reported only
  std::vector<double> cells_summary_losses;                  // the cells part of "pairs+cells", reported only
  std::vector<double> relation_summary_losses;               // the relations part, reported only
  std::vector<double> position_summary_losses;               // the positions part, reported only
  std::vector<double> contrast_losses, contrast_acc, contrast_swap_acc;
  const bool contrast = summary && o.summary_contrast > 0;
  // a caption with two pairs' colours swapped (or, with relation negatives, a stated relation's two
  // objects exchanged) and the pairs it then names; empty text: none to swap
  UNIME_CHECK(o.summary_contrast_negatives == "colour" || (o.summary_contrast_negatives == "relation" && contrast),
              "pretrain: the contrast's negatives are 'colour' or (with a contrast weight > 0) 'relation' swaps, got '",
              o.summary_contrast_negatives, "'");
  const bool relation_negatives = o.summary_contrast_negatives == "relation";
  auto swap_of = [&](const std::string& caption) {
    std::pair<std::string, std::vector<float>> out{
        relation_negatives ? caption_relation_swap(caption, labels.colour_names, labels.shape_names, rng)
                           : caption_colour_swap(caption, labels.colour_names, labels.shape_names, rng),
        {}};
    if (!out.first.empty())
      out.second = text_targets(caption_pair_targets(out.first, labels.colour_names, labels.shape_names));
    return out;
  };
  auto batch_loss = [&](const std::vector<int64_t>& batch, const std::vector<int64_t>& image_of,
                        bool with_summary) {
    std::vector<int64_t> ids, lens, targets, target_pos, summary_pos;
    size_t image_rows = 0;  // summary rows [0, image_rows) are images, the rest captions
    // per batch item, its image, caption and caption-swap summary rows (-1: none), for the contrast
    std::vector<int64_t> image_row(batch.size(), -1), caption_row(batch.size(), -1), swap_row(batch.size(), -1);
    std::vector<float> summary_targets;
    std::vector<torch::Tensor> px;
    for (size_t b = 0; b < batch.size(); ++b) {
      const Example& ex = examples[batch[b]];
      const int64_t off = static_cast<int64_t>(ids.size());
      ids.insert(ids.end(), head.begin(), head.end());
      auto add_target = [&](int64_t id) {
        target_pos.push_back(static_cast<int64_t>(ids.size()) - 1);  // the state before predicts it
        targets.push_back(id);
        ids.push_back(id);
      };
      for (const auto& sg : ex.segs) {
        ids.insert(ids.end(), sg.prompt.begin(), sg.prompt.end());
        for (int64_t id : sg.target) add_target(id);
      }
      add_target(*eos);
      lens.push_back(static_cast<int64_t>(ids.size()) - off);
      px.push_back(pixels[examples[image_of[b]].image]);
    }
    if (with_summary)
      for (size_t b = 0; b < batch.size(); ++b) {
        const auto& lab = example_targets[static_cast<size_t>(examples[image_of[b]].image)];
        if (lab.empty()) continue;
        image_row[b] = static_cast<int64_t>(summary_pos.size());
        const auto& prompt = summary_ids[std::uniform_int_distribution<size_t>(0, summary_ids.size() - 1)(rng)];
        ids.insert(ids.end(), prompt.begin(), prompt.end());
        lens.push_back(static_cast<int64_t>(prompt.size()));
        summary_pos.push_back(static_cast<int64_t>(ids.size()) - 1);
        summary_targets.insert(summary_targets.end(), lab.begin(), lab.end());
        if (relations) {
          const auto rel = summary_relation_targets(*example_labels[static_cast<size_t>(examples[image_of[b]].image)],
                                                    labels.cells, labels.colours, labels.shapes);
          summary_targets.insert(summary_targets.end(), rel.begin(), rel.end());
        }
        if (positions) {
          const auto at = summary_position_targets(*example_labels[static_cast<size_t>(examples[image_of[b]].image)],
                                                   labels.cells, labels.colours, labels.shapes);
          summary_targets.insert(summary_targets.end(), at.begin(), at.end());
        }
        px.push_back(pixels[examples[image_of[b]].image]);
      }
    image_rows = summary_pos.size();
    if (with_summary && !o.summary_text_prompts.empty())
      for (size_t b = 0; b < batch.size(); ++b) {  // one random caption of the image, its own sequence
        const Example& ex = examples[batch[b]];
        if (ex.captions.empty()) continue;
        const size_t c = std::uniform_int_distribution<size_t>(0, ex.captions.size() - 1)(rng);
        std::string prompt =
            o.summary_text_prompts[std::uniform_int_distribution<size_t>(0, o.summary_text_prompts.size() - 1)(rng)];
        const std::vector<float>* lab = &caption_targets[static_cast<size_t>(batch[b])][c];
        std::string caption = ex.captions[c];
        std::pair<std::string, std::vector<float>> swapped;
        if (o.summary_text_swap > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < o.summary_text_swap) {
          swapped = swap_of(caption);
          if (!swapped.first.empty()) caption = swapped.first, lab = &swapped.second;
        }
        auto add_row = [&](const std::string& text, const std::vector<float>& lab) {
          std::string full = prompt;
          full.replace(full.find("{text}"), 6, text);
          const auto enc = tok.encode(full, true);
          ids.insert(ids.end(), enc.begin(), enc.end());
          lens.push_back(static_cast<int64_t>(enc.size()));
          summary_pos.push_back(static_cast<int64_t>(ids.size()) - 1);
          summary_targets.insert(summary_targets.end(), lab.begin(), lab.end());
          if (relations) {
            const auto rel = caption_relation_targets(text, labels.colour_names, labels.shape_names);
            summary_targets.insert(summary_targets.end(), rel.begin(), rel.end());
          }
          if (positions) {
            const auto at = caption_position_targets(text, labels.colour_names, labels.shape_names, grid_side);
            summary_targets.insert(summary_targets.end(), at.begin(), at.end());
          }
          return static_cast<int64_t>(summary_pos.size()) - 1;
        };
        caption_row[b] = add_row(caption, *lab);
        if (contrast && image_row[b] >= 0) {  // the hard negative: the same caption, two colours (or objects) swapped
          const auto [text, pairs_named] = swap_of(caption);
          if (!text.empty()) swap_row[b] = add_row(text, pairs_named);
        }
      }
    auto ids_t = torch::tensor(ids, torch::kInt64).unsqueeze(0);                       // [1, N]
    auto real = torch::ones_like(ids_t, torch::kBool);
    if (bf16) {
      at::autocast::set_cpu_enabled(true);
      at::autocast::set_autocast_cpu_dtype(torch::kBFloat16);
    }
    auto emb = model->input_embeddings({ids_t, real, torch::stack(px), {}, {}});     // [1, N, D]
    auto h = model->decoder_->forward_packed(emb, lens)[0];                           // [N, D]
    auto pos = torch::tensor(target_pos, torch::kInt64);
    auto logits = model->lm_head_->forward(model->decoder_->norm(h.index_select(0, pos)));  // [M, V]
    auto loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat32),
                                                     torch::tensor(targets, torch::kInt64));
    torch::Tensor sloss, closs;
    if (!summary_pos.empty()) {
      auto state = model->decoder_->norm(h.index_select(0, torch::tensor(summary_pos, torch::kInt64)));
      // the contrast: images against their captions (in-batch negatives) and the captions' swaps
      std::vector<int64_t> img, cap, swp, swp_of;  // swp_of: the item (index into img) each swap belongs to
      for (size_t b = 0; b < batch.size(); ++b)
        if (contrast && image_row[b] >= 0 && caption_row[b] >= 0) {
          if (swap_row[b] >= 0) swp.push_back(swap_row[b]), swp_of.push_back(static_cast<int64_t>(img.size()));
          img.push_back(image_row[b]), cap.push_back(caption_row[b]);
        }
      if (img.size() >= 2) {
        auto e = torch::nn::functional::normalize(state.to(torch::kFloat32),
                                                  torch::nn::functional::NormalizeFuncOptions().dim(-1));
        auto ei = e.index_select(0, torch::tensor(img)), ec = e.index_select(0, torch::tensor(cap));
        auto cand = swp.empty() ? ec : torch::cat({ec, e.index_select(0, torch::tensor(swp))});
        const double tau = o.summary_contrast_temperature;
        closs = 0.5 * (loss_infonce(ei, cand, tau) + loss_infonce(ec, ei, tau));  // image -> text, text -> image
        torch::NoGradGuard ng;
        auto s_i2t = ei.matmul(cand.t());  // [n, n + swaps]
        contrast_acc.push_back(
            (s_i2t.argmax(1) == torch::arange(static_cast<int64_t>(img.size()))).to(torch::kFloat32).mean().item<double>());
        if (!swp.empty()) {  // swap j is candidate n + j of its image's row swp_of[j]
          auto of = torch::tensor(swp_of);
          auto own = s_i2t.index({of, of});
          auto neg = s_i2t.index({of, torch::arange(static_cast<int64_t>(swp.size())) + static_cast<int64_t>(img.size())});
          contrast_swap_acc.push_back((own > neg).to(torch::kFloat32).mean().item<double>());
        }
      }
      auto logits = summary_head(state).to(torch::kFloat32);
      auto st = torch::tensor(summary_targets).view({static_cast<int64_t>(summary_pos.size()), -1});
      const auto n = static_cast<int64_t>(image_rows), R = static_cast<int64_t>(summary_pos.size());
      sloss = torch::zeros({});
      if (pairs)  // every row
        sloss = sloss + torch::nn::functional::binary_cross_entropy_with_logits(logits.narrow(1, 0, pair_width),
                                                                                st.narrow(1, 0, pair_width));
      if (cells && n > 0) {  // image rows only
        auto c = summary_cells_loss(labels, logits.slice(0, 0, n).narrow(1, pair_width, cells_logits),
                                    st.slice(0, 0, n).narrow(1, pair_width, labels.width()).to(torch::kInt64));
        if (pairs) cells_summary_losses.push_back(c.item<double>());
        sloss = sloss + c;
      }
      if (relations) {  // every row, over the relations it knows
        auto rt = st.narrow(1, st.size(1) - pos_width - rel_width, rel_width);
        auto known = rt.ge(0).to(torch::kFloat32);
        auto r = torch::nn::functional::binary_cross_entropy_with_logits(
                     logits.narrow(1, logits.size(1) - pos_width - rel_width, rel_width), rt.clamp_min(0),
                     torch::nn::functional::BinaryCrossEntropyWithLogitsFuncOptions().weight(known).reduction(torch::kSum)) /
                 known.sum().clamp_min(1);
        relation_summary_losses.push_back(r.item<double>());
        sloss = sloss + r;
      }
      if (positions) {  // every row, over the pairs and axes it knows: cross-entropy to the distributions
        auto pt = st.narrow(1, st.size(1) - pos_width, pos_width).view({R, -1, grid_side});
        auto logp = torch::log_softmax(logits.narrow(1, logits.size(1) - pos_width, pos_width).view({R, -1, grid_side}), -1);
        auto known = pt.select(2, 0).ge(0).to(torch::kFloat32);  // [R, P * 2]
        auto ce = -(pt.clamp_min(0) * logp).sum(-1);
        auto l = (ce * known).sum() / known.sum().clamp_min(1);
        position_summary_losses.push_back(l.item<double>());
        sloss = sloss + o.summary_positions * l;
      }
      if (R > n) {
        torch::NoGradGuard ng;
        text_summary_losses.push_back(torch::nn::functional::binary_cross_entropy_with_logits(
                                          logits.slice(0, n).narrow(1, 0, pair_width),
                                          st.slice(0, n).narrow(1, 0, pair_width))
                                          .item<double>());
      }
    }
    if (bf16) {
      at::autocast::set_cpu_enabled(false);
      at::autocast::clear_cache();
    }
    return std::make_tuple(loss, static_cast<int64_t>(targets.size()), sloss, closs);
  };

  for (int64_t step = 1; step <= o.steps; ++step) {
    const double lr = schedule_lr(o.schedule, o.lr, step, o.steps, o.warmup_steps);
    for (auto& g : optim.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    std::vector<int64_t> batch;
    for (int64_t b = 0; b < o.batch_size; ++b) {
      if (cursor == order.size()) {
        std::shuffle(order.begin(), order.end(), rng);
        cursor = 0;
      }
      batch.push_back(order[cursor++]);
      std::shuffle(examples[batch.back()].segs.begin(), examples[batch.back()].segs.end(), rng);
    }
    auto [loss, n_targets, sloss, closs] = batch_loss(batch, batch, summary);
    optim.zero_grad();
    auto total = loss;
    if (sloss.defined()) {
      summary_losses.push_back(sloss.item<double>());
      total = total + o.summary_weight * sloss;
    }
    if (closs.defined()) {
      contrast_losses.push_back(closs.item<double>());
      total = total + o.summary_contrast * closs;
    }
    total.backward();
    if (o.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(params, o.max_grad_norm);
    optim.step();
    const double l = loss.item<double>();
    UNIME_CHECK(std::isfinite(l), "pretrain: the loss is ", l, " at step ", step,
                "; lower the learning rate (", o.lr, ")");
    losses.push_back(l);
    res.tokens += n_targets;
    json line{{"step", step}, {"loss", l}, {"lr", lr}, {"tokens", n_targets}};
    if (sloss.defined()) line["summary_loss"] = summary_losses.back();
    if (closs.defined()) line["contrast_loss"] = contrast_losses.back();
    metrics << line.dump() << "\n";
    if (!o.quiet)
      bar.update(step, str("loss ", static_cast<int64_t>(l * 1000) / 1000.0,
                           sloss.defined() ? str(" summary ", static_cast<int64_t>(summary_losses.back() * 1000) / 1000.0) : ""));
  }
  if (!o.quiet) bar.finish();
  metrics.close();
  // each series as the means of its first and last 10 steps (0 for a series never drawn)
  res.first_loss = first10(losses), res.last_loss = last10(losses);
  res.summary_first_loss = first10(summary_losses), res.summary_last_loss = last10(summary_losses);
  res.summary_text_first_loss = first10(text_summary_losses), res.summary_text_last_loss = last10(text_summary_losses);
  res.summary_cells_first_loss = first10(cells_summary_losses), res.summary_cells_last_loss = last10(cells_summary_losses);
  res.summary_relations_first_loss = first10(relation_summary_losses);
  res.summary_relations_last_loss = last10(relation_summary_losses);
  res.summary_positions_first_loss = first10(position_summary_losses);
  res.summary_positions_last_loss = last10(position_summary_losses);
  res.contrast_first_loss = first10(contrast_losses), res.contrast_last_loss = last10(contrast_losses);
  res.contrast_accuracy = last10(contrast_acc), res.contrast_swap_accuracy = last10(contrast_swap_acc);
  // Does the model look at the image? The loss on up to 64 examples with their own image and
  // with another example's image (the next one in the list): a model that ignores pixels scores
  // the same on both.
  {
    torch::NoGradGuard ng;
    for (auto& [p, m] : model->modules()) m->eval();
    std::vector<int64_t> batch, shifted;
    const int64_t n = std::min<int64_t>(64, static_cast<int64_t>(examples.size()));
    for (int64_t i = 0; i < n; ++i) batch.push_back(i), shifted.push_back((i + 1) % n);
    res.loss_own_image = std::get<0>(batch_loss(batch, batch, false)).item<double>();
    res.loss_other_image = std::get<0>(batch_loss(batch, shifted, false)).item<double>();
  }
  save_checkpoint(*model, o, tmp);
  fs::remove_all(out);
  fs::rename(tmp, out);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return res;
}

}  // namespace unime::train
