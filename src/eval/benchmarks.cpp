// Benchmark adapters: MMEB-eval, image-text retrieval, SugarCrepe (see benchmarks.h).
#include "eval/benchmarks.h"

#include <limits>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"
#include "io/jsonl.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace unime::eval {

namespace {

std::string resolve(const std::string& root, const std::string& p) {
  return fs::path(p).is_absolute() ? p : io::join_path(root, p);
}

// A text/image input; the image (if any) must exist. `what` names the field for errors.
EmbedInput make_input(const std::string& text, const std::string& image, const std::string& root,
                      const std::string& where, const std::string& what,
                      const std::string& instruction = "") {
  UNIME_CHECK(!text.empty() || !image.empty(), where, ": ", what, " has neither text nor image");
  EmbedInput in;
  in.text = text;
  in.instruction = instruction;
  in.where = str(where, " (", what, ")");
  if (!image.empty()) {
    const std::string path = resolve(root, image);
    UNIME_CHECK(io::is_regular_file(path), where, ": ", what, " image '", image, "' not found (looked for ",
                path, "; relative paths resolve against --image-root)");
    in.images.push_back(path);
  }
  return in;
}

std::vector<std::string> string_list(const json& row, const char* key, const std::string& where,
                                     bool required) {
  std::vector<std::string> out;
  if (!row.contains(key) || row[key].is_null()) {
    UNIME_CHECK(!required, where, ": missing '", key, "' (expected a list of strings)");
    return out;
  }
  UNIME_CHECK(row[key].is_array(), where, ": '", key, "' must be a list of strings, got ",
              row[key].type_name());
  for (const auto& v : row[key]) {
    UNIME_CHECK(v.is_string() || v.is_null(), where, ": '", key, "' must be a list of strings, got an element of type ",
                v.type_name());
    out.push_back(v.is_string() ? v.get<std::string>() : "");
  }
  return out;
}

std::vector<std::string> files_with_ext(const std::string& dir, const std::string& ext) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().extension() == ext) out.push_back(e.path().string());
  UNIME_CHECK(!ec, dir, ": cannot list the folder: ", ec.message());
  std::sort(out.begin(), out.end());
  UNIME_CHECK(!out.empty(), dir, ": no *", ext, " files in the folder");
  return out;
}

float dot(const std::vector<float>& emb, int64_t D, int64_t a, int64_t b) {
  double s = 0;
  for (int64_t k = 0; k < D; ++k) s += static_cast<double>(emb[a * D + k]) * emb[b * D + k];
  return static_cast<float>(s);
}

}  // namespace

// ---- MMEB ----

std::map<std::string, DatasetInfo> builtin_mmeb_manifest() {
  // MMEB (VLM2Vec, arXiv 2410.05160 table 1): 20 IND training sets, 16 OOD.
  const struct { const char* task; const char* split; std::vector<const char*> names; } groups[] = {
      {"classification", "IND", {"ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397"}},
      {"classification", "OOD", {"Place365", "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211"}},
      {"vqa", "IND", {"OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W"}},
      {"vqa", "OOD", {"ScienceQA", "VizWiz", "GQA", "TextVQA"}},
      {"retrieval", "IND", {"VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t", "MSCOCO_t2i",
                            "MSCOCO_i2t", "NIGHTS", "WebQA"}},
      {"retrieval", "OOD", {"OVEN", "FashionIQ", "EDIS", "Wiki-SS-NQ"}},
      {"grounding", "IND", {"MSCOCO"}},
      {"grounding", "OOD", {"RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"}},
  };
  std::map<std::string, DatasetInfo> m;
  for (const auto& g : groups)
    for (const char* n : g.names) m[n] = {g.task, g.split};
  return m;
}

std::map<std::string, DatasetInfo> read_mmeb_manifest(const std::string& path) {
  json j;
  try {
    j = json::parse(io::read_file(path));
  } catch (const json::exception& e) {
    throw Error(str(path, ": not valid JSON: ", e.what()));
  }
  UNIME_CHECK(j.is_object(), path, ": expected an object {\"<dataset>\": {\"meta_task\", \"split\"}}");
  std::map<std::string, DatasetInfo> m;
  for (const auto& [name, v] : j.items()) {
    const std::string where = str(path, ": dataset '", name, "'");
    UNIME_CHECK(v.is_object(), where, ": expected {\"meta_task\", \"split\"}");
    DatasetInfo d{io::json_string(v, "meta_task", where), io::json_string(v, "split", where)};
    UNIME_CHECK(std::find_if(std::begin(kMetaTasks), std::end(kMetaTasks),
                             [&](const char* t) { return d.meta_task == t; }) != std::end(kMetaTasks),
                where, ": meta_task must be classification, vqa, retrieval or grounding, got '",
                d.meta_task, "'");
    UNIME_CHECK(d.split == "IND" || d.split == "OOD", where, ": split must be IND or OOD, got '",
                d.split, "'");
    m[name] = d;
  }
  return m;
}

MmebData read_mmeb(const std::string& data, const std::string& image_root) {
  MmebData d;
  d.info = builtin_mmeb_manifest();
  std::vector<std::string> files;
  std::string folder;
  if (io::is_directory(data)) {
    folder = data;
    files = files_with_ext(data, ".jsonl");
  } else {
    UNIME_CHECK(io::is_regular_file(data), data, ": no such file or folder (expected a folder of <dataset>.jsonl or one .jsonl)");
    folder = io::parent_dir(data);
    files = {data};
  }
  const std::string manifest = io::join_path(folder, "manifest.json");
  if (io::is_regular_file(manifest))
    for (auto& [k, v] : read_mmeb_manifest(manifest)) d.info[k] = v;
  const std::string root = image_root.empty() ? folder : image_root;
  for (const auto& f : files) {
    MmebDataset ds;
    ds.name = fs::path(f).stem().string();
    ds.path = f;
    UNIME_CHECK(d.info.count(ds.name), f, ": dataset '", ds.name,
                "' is not a known MMEB dataset; add it to manifest.json (meta_task, split) in ", folder);
    io::read_jsonl(f, [&](int64_t line, const json& row) {
      const std::string where = str(f, ":", line);
      ds.qry.push_back(d.table.add(make_input(io::json_string(row, "qry_text", where),
                                              io::json_string(row, "qry_img_path", where), root,
                                              where, "query")));
      auto text = string_list(row, "tgt_text", where, false);
      auto img = string_list(row, "tgt_img_path", where, false);
      if (text.empty()) text.resize(img.size());
      if (img.empty()) img.resize(text.size());
      UNIME_CHECK(text.size() == img.size(), where, ": 'tgt_text' has ", text.size(),
                  " entries but 'tgt_img_path' has ", img.size(), " (expected equal lengths)");
      UNIME_CHECK(!text.empty(), where, ": no candidates (expected 'tgt_text' and/or 'tgt_img_path')");
      std::vector<int64_t> ids;
      for (size_t c = 0; c < text.size(); ++c)
        ids.push_back(d.table.add(make_input(text[c], img[c], root, where, str("candidate ", c))));
      ds.tgt.push_back(std::move(ids));
    });
    UNIME_CHECK(!ds.qry.empty(), f, ": no rows");
    d.datasets.push_back(std::move(ds));
  }
  return d;
}

MmebResult score_mmeb(const MmebData& d, const std::vector<float>& emb, int64_t D) {
  MmebResult r;
  std::map<std::string, double> score;
  for (const auto& ds : d.datasets) {
    int64_t hits = 0;
    std::vector<float> s;
    for (size_t q = 0; q < ds.qry.size(); ++q) {
      s.clear();
      for (int64_t t : ds.tgt[q]) s.push_back(dot(emb, D, ds.qry[q], t));
      hits += hit_at_1(s.data(), static_cast<int64_t>(s.size()));
    }
    const double p = static_cast<double>(hits) / static_cast<double>(ds.qry.size());
    r.datasets.emplace_back(ds.name, p);
    r.queries[ds.name] = static_cast<int64_t>(ds.qry.size());
    score[ds.name] = p;
  }
  r.means = mmeb_means(score, d.info);
  return r;
}

// ---- image-text retrieval ----

RetrievalData read_retrieval(const std::string& path, const std::string& image_root,
                             const PairInstructions& ins) {
  RetrievalData d;
  d.name = fs::path(path).stem().string();
  const std::string root = image_root.empty() ? io::parent_dir(path) : image_root;
  io::read_jsonl(path, [&](int64_t line, const json& row) {
    const std::string where = str(path, ":", line);
    const std::string image = io::json_string(row, "image", where);
    UNIME_CHECK(!image.empty(), where, ": missing 'image'");
    auto caps = string_list(row, "captions", where, false);
    const std::string one = io::json_string(row, "caption", where);
    if (!one.empty()) caps.push_back(one);
    UNIME_CHECK(!caps.empty(), where, ": no captions (expected 'captions': [...] or 'caption')");
    const int64_t i = static_cast<int64_t>(d.image.size());
    d.image.push_back(d.table.add(make_input("", image, root, where, "row", ins.image)));
    for (size_t c = 0; c < caps.size(); ++c) {
      d.text.push_back(d.table.add(make_input(caps[c], "", root, where, str("caption ", c), ins.text)));
      d.text_image.push_back(i);
    }
  });
  UNIME_CHECK(!d.image.empty(), path, ": no rows");
  return d;
}

Scores score_retrieval(const RetrievalData& d, const std::vector<float>& emb, int64_t D) {
  const int64_t I = static_cast<int64_t>(d.image.size()), T = static_cast<int64_t>(d.text.size());
  std::vector<float> t2i(static_cast<size_t>(T * I)), i2t(static_cast<size_t>(I * T));  // [T x I], [I x T]
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < I; ++i) t2i[t * I + i] = i2t[i * T + t] = dot(emb, D, d.text[t], d.image[i]);
  std::vector<std::vector<int64_t>> gold_t2i(T), gold_i2t(I);
  for (int64_t t = 0; t < T; ++t) {
    gold_t2i[t] = {d.text_image[t]};
    gold_i2t[d.text_image[t]].push_back(t);
  }
  Scores s;
  for (int64_t k : {1, 5, 10}) s.emplace_back(str("t2i_R@", k), recall_at_k(t2i, T, I, gold_t2i, k));
  for (int64_t k : {1, 5, 10}) s.emplace_back(str("i2t_R@", k), recall_at_k(i2t, I, T, gold_i2t, k));
  return s;
}

Scores score_text_to_text(const RetrievalData& d, const std::vector<float>& emb, int64_t D) {
  const int64_t T = static_cast<int64_t>(d.text.size());
  std::vector<std::vector<int64_t>> by_image(d.image.size());
  for (int64_t t = 0; t < T; ++t) by_image[d.text_image[t]].push_back(t);
  std::vector<int64_t> queries;
  for (int64_t t = 0; t < T; ++t)
    if (by_image[d.text_image[t]].size() >= 2) queries.push_back(t);
  const int64_t Q = static_cast<int64_t>(queries.size());
  std::vector<float> scores(static_cast<size_t>(Q * T));
  std::vector<std::vector<int64_t>> gold(Q);
  for (int64_t q = 0; q < Q; ++q) {
    const int64_t t = queries[q];
    for (int64_t c = 0; c < T; ++c)  // the query itself never counts: below every real score
      scores[q * T + c] = c == t ? -std::numeric_limits<float>::infinity() : dot(emb, D, d.text[t], d.text[c]);
    for (int64_t c : by_image[d.text_image[t]])
      if (c != t) gold[q].push_back(c);
  }
  Scores s;
  for (int64_t k : {1, 5}) s.emplace_back(str("t2t_R@", k), recall_at_k(scores, Q, T, gold, k));
  return s;
}

// ---- SugarCrepe ----

SugarData read_sugarcrepe(const std::string& data, const std::string& image_root,
                          const PairInstructions& ins) {
  SugarData d;
  std::vector<std::string> files;
  std::string folder;
  if (io::is_directory(data)) {
    folder = data;
    files = files_with_ext(data, ".json");
  } else {
    UNIME_CHECK(io::is_regular_file(data), data, ": no such file or folder (expected SugarCrepe <subset>.json files)");
    folder = io::parent_dir(data);
    files = {data};
  }
  const std::string root = image_root.empty() ? folder : image_root;
  for (const auto& f : files) {
    SugarSubset s;
    s.name = fs::path(f).stem().string();
    s.path = f;
    json j;
    try {
      j = json::parse(io::read_file(f));
    } catch (const json::exception& e) {
      throw Error(str(f, ": not valid JSON: ", e.what()));
    }
    UNIME_CHECK(j.is_object() && !j.empty(), f,
                ": expected a non-empty object {\"<id>\": {\"filename\", \"caption\", \"negative_caption\"}}");
    for (const auto& [id, v] : j.items()) {
      const std::string where = str(f, ": item '", id, "'");
      UNIME_CHECK(v.is_object(), where, ": expected {\"filename\", \"caption\", \"negative_caption\"}");
      const std::string image = io::json_string(v, "filename", where);
      const std::string pos = io::json_string(v, "caption", where);
      const std::string neg = io::json_string(v, "negative_caption", where);
      UNIME_CHECK(!image.empty() && !pos.empty() && !neg.empty(), where,
                  ": 'filename', 'caption' and 'negative_caption' must all be non-empty");
      s.image.push_back(d.table.add(make_input("", image, root, where, "item", ins.image)));
      s.pos.push_back(d.table.add(make_input(pos, "", root, where, "caption", ins.text)));
      s.neg.push_back(d.table.add(make_input(neg, "", root, where, "negative_caption", ins.text)));
    }
    d.subsets.push_back(std::move(s));
  }
  return d;
}

Scores score_sugarcrepe(const SugarData& d, const std::vector<float>& emb, int64_t D) {
  Scores s;
  std::map<std::string, std::pair<double, int64_t>> group;  // Replace / Swap / Add
  for (const auto& sub : d.subsets) {
    std::vector<float> pos, neg;
    for (size_t i = 0; i < sub.image.size(); ++i) {
      pos.push_back(dot(emb, D, sub.image[i], sub.pos[i]));
      neg.push_back(dot(emb, D, sub.image[i], sub.neg[i]));
    }
    const double acc = pairwise_accuracy(pos, neg);
    s.emplace_back(sub.name, acc);
    for (const char* g : {"replace", "swap", "add"})
      if (sub.name.rfind(g, 0) == 0) {
        std::string G = g;
        G[0] = static_cast<char>(std::toupper(G[0]));
        group[G].first += acc;
        group[G].second += 1;
      }
  }
  for (const char* G : {"Replace", "Swap", "Add"})
    if (group.count(G)) s.emplace_back(G, group[G].first / static_cast<double>(group[G].second));
  return s;
}

}  // namespace unime::eval
