// Offline hard-negative mining for MMEB-style training rows, with the knobs of
// sentence-transformers' `util.mine_hard_negatives` (https://sbert.net/docs/package_reference/util.html):
// for each (query, positive) row, rank the index by similarity to the query, drop the positive
// itself (same id, or the same text and images), keep ranks [range_min, range_max) of what is left,
// drop candidates that are too close to the positive's score (absolute_margin: neg <= pos - m;
// relative_margin: neg <= pos * (1 - m)) or outside [min_score, max_score], then take
// num_negatives of the rest: the top ones, or a random sample (seeded). Output is that library's
// "triplet" format: one row per negative, the input row plus `neg_text` / `neg_image_path` (what
// src/train/trainer.cpp reads) and `neg_id`, `neg_score`, `pos_score` for inspection. Rows where no
// candidate survives are dropped (counted in the stats), as there.
// Torch-free: embeds through the Embedder interface.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "index/index.h"
#include "unime/embedder.h"

namespace unime::index {

struct MineOptions {
  int64_t range_min = 0;                  ///< skip the range_min most similar candidates
  int64_t range_max = 10;                 ///< consider ranks below range_max only
  std::optional<double> absolute_margin;  ///< keep neg <= pos_score - margin
  std::optional<double> relative_margin;  ///< keep neg <= pos_score * (1 - margin)
  std::optional<double> max_score;        ///< keep neg <= max_score
  std::optional<double> min_score;        ///< keep neg >= min_score
  int64_t num_negatives = 3;              ///< negatives per row (fewer when fewer survive)
  std::string sampling = "top";           ///< top | random
  uint64_t seed = 42;                     ///< for sampling == "random"
  std::string image_root;                 ///< relative image paths of the input ("" = its folder)
};

struct MineStats {
  int64_t rows = 0;              ///< input rows
  int64_t rows_with_negatives = 0;
  int64_t negatives = 0;         ///< output rows
  int64_t positives_skipped = 0; ///< index rows recognised as a row's own positive
  double mean_pos_score = 0, mean_neg_score = 0;
};

/// Reads TRAIN.jsonl (qry, qry_image_path, pos_text, pos_image_path, optional pos_id), writes
/// OUT.jsonl atomically. `emb` must be the index's own model (see load_for_index).
MineStats mine_hard_negatives(const Index& index, Embedder& emb, const std::string& input,
                              const std::string& output, const MineOptions& opt);

}  // namespace unime::index
