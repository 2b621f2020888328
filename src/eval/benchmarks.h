// Benchmark adapters (METHOD.md sections 4-5): readers for MMEB-eval JSONL, image-text retrieval
// sets (Flickr30K/COCO: one image, several captions; ShareGPT4V/Urban1K: one long caption) and
// SugarCrepe JSON, and their scoring from embeddings of the unique inputs.
// Every input goes through an InputTable, so each unique (text, image) is embedded once.
// Legend: U unique inputs, D embedding dim; `emb` is [U x D] row-major, rows unit-norm.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "eval/emb-cache.h"
#include "eval/metrics.h"

namespace unime::eval {

using Scores = std::vector<std::pair<std::string, double>>;  ///< ordered (name, value in [0,1])

// ---- MMEB ----

/// The 36 MMEB datasets: meta-task and IND (the 20 training sets) / OOD.
std::map<std::string, DatasetInfo> builtin_mmeb_manifest();
/// {"<dataset>": {"meta_task": ..., "split": "IND|OOD"}} from a manifest.json.
std::map<std::string, DatasetInfo> read_mmeb_manifest(const std::string& path);

struct MmebDataset {
  std::string name, path;
  std::vector<int64_t> qry;               ///< [Q] input ids
  std::vector<std::vector<int64_t>> tgt;  ///< [Q][C_q] input ids, gold first
};

struct MmebData {
  std::vector<MmebDataset> datasets;
  std::map<std::string, DatasetInfo> info;  ///< built-in + manifest.json beside the data
  InputTable table;
};

/// `data`: a folder of <dataset>.jsonl (+ optional manifest.json) or one .jsonl. Relative image
/// paths resolve against image_root ("" = the data folder). Missing images, rows with neither
/// text nor image, and datasets missing from the manifest are errors naming file:line.
MmebData read_mmeb(const std::string& data, const std::string& image_root);

struct MmebResult {
  Scores datasets;                   ///< Precision@1 per dataset, in file order
  std::map<std::string, int64_t> queries;
  std::map<std::string, double> means;  ///< meta-tasks, IND, OOD, overall
};
MmebResult score_mmeb(const MmebData& d, const std::vector<float>& emb, int64_t D);

// ---- image-text retrieval and SugarCrepe ----

/// Instructions for the two sides of an image-text set (MMEB convention, e.g. "Find an image
/// caption describing the given image."; a "<|image_1|>" in it marks where the image goes).
/// Empty: the template's plain prompts ("... Summary above image in one word:").
struct PairInstructions {
  std::string image, text;
};

struct RetrievalData {
  std::string name;
  std::vector<int64_t> image;       ///< [I] input ids
  std::vector<int64_t> text;        ///< [T] input ids, one per caption
  std::vector<int64_t> text_image;  ///< [T] index into image
  InputTable table;
};

/// JSONL rows {"image": path, "captions": [...]} or {"image": path, "caption": "..."}.
RetrievalData read_retrieval(const std::string& path, const std::string& image_root,
                             const PairInstructions& ins = {});
/// t2i_R@1/5/10 (caption -> its image) and i2t_R@1/5/10 (image -> any of its captions).
Scores score_retrieval(const RetrievalData& d, const std::vector<float>& emb, int64_t D);
/// Text-to-text retrieval among the captions (sets with several captions per image): each caption
/// whose image has another caption queries all other captions; the image's other captions are
/// the gold. t2t_R@1 and t2t_R@5 (empty-gold sets give 0).
Scores score_text_to_text(const RetrievalData& d, const std::vector<float>& emb, int64_t D);

// ---- SugarCrepe ----

struct SugarSubset {
  std::string name, path;
  std::vector<int64_t> image, pos, neg;  ///< [N] input ids
};
struct SugarData {
  std::vector<SugarSubset> subsets;
  InputTable table;
};

/// A folder of <subset>.json or one .json: {"<id>": {"filename", "caption", "negative_caption"}}.
SugarData read_sugarcrepe(const std::string& data, const std::string& image_root,
                          const PairInstructions& ins = {});
/// Accuracy per subset, then Replace / Swap / Add means (subsets named replace*, swap*, add*).
Scores score_sugarcrepe(const SugarData& d, const std::vector<float>& emb, int64_t D);

}  // namespace unime::eval
