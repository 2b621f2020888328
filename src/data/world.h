// src/data/world.h - `unime world`: a procedural multimodal world with every data set the UniME
// pipeline needs, written in the real formats (see docs/README-dev-world.md).
//
//   W/images/...                    PNG images (RGB, image_size x image_size)
//   W/captions.jsonl, W/vqa.jsonl   stage-0 pretraining: {"image","text"} (scenes and object crops) / {"image","question","answer"}
//   W/nli.jsonl                     stage 1 (SimCSE NLI): {"sent0","sent1","hard_neg"}
//   W/mmeb-train.jsonl              stage 2 (MMEB-train + "dataset")
//   W/mmeb-eval/<dataset>.jsonl     MMEB-eval rows, gold candidate at index 0
//   W/mmeb-eval/manifest.json       {"<dataset>": {"meta_task", "split"}}
//   W/retrieval.jsonl               {"image", "captions": [...]}  (Flickr/COCO style)
//   W/sugarcrepe/<subset>.json      SugarCrepe: {"0": {"filename","caption","negative_caption"}}
//   W/scenes.jsonl                  the content of every image (for checks and debugging)
//   W/corpus.txt                    all training text + instructions (BPE tokenizer training)
//   W/world.json                    seed, sizes, vocabulary, held-out combinations, datasets
//
// Usage:
//   unime::data::WorldConfig cfg;               // defaults: a few seconds on 2 cores
//   cfg.seed = 7;
//   auto stats = unime::data::generate_world(cfg, "out/world", /*force=*/false);
#pragma once

#include <cstdint>
#include <string>

namespace unime::data {

struct WorldConfig {
  uint64_t seed = 0;
  int image_size = 64;           // pixels per side
  int max_objects = 4;           // objects per scene (2..5)
  int heldout = 8;               // colour-shape combinations kept out of training (1..16)
  int pretrain_scenes = 1500;    // images for captions.jsonl / vqa.jsonl
  int captions_per_scene = 2;
  int vqa_per_scene = 3;
  int nli_rows = 5000;
  int nli_swap_percent = 0;      // NLI rows whose hard negative swaps two objects' colours (when the
                                 // premise names two colours); 0 = edits drawn uniformly
  int nli_relation_percent = 0;  // NLI rows whose hard negative changes one stated relation (its two
                                 // objects exchanged, or the opposite relation), when the premise states one
  int train_per_source = 250;    // MMEB-train rows per training source (12 sources)
  int train_swap_percent = 0;    // MMEB-train rows whose negative is, where the row has one, a
                                 // hard candidate that swaps two objects' colours; 0 = the hardest
  int train_relation_percent = 0;  // MMEB-train rows whose negative is, where the row has one, a
                                   // hard candidate that differs from the positive only in where two
                                   // objects are (images) or in one relation (captions)
  int eval_queries = 100;        // queries per MMEB-eval dataset (21 datasets)
  int candidates = 20;           // candidates per eval query (fewer when the label space is smaller)
  int retrieval_images = 200;
  int retrieval_captions = 5;    // captions per retrieval image
  int sugarcrepe_items = 150;    // items per SugarCrepe subset (7 subsets)
  int threads = 0;               // image rendering threads, 0 = all cores
};

/// Small sizes for tests and smoke runs (well under a second).
WorldConfig quick_world_config(uint64_t seed);

/// Throws unime::Error naming the first out-of-range field.
void validate_world_config(const WorldConfig& cfg);

struct WorldStats {
  int64_t images = 0;
  int64_t pretrain_rows = 0;  // captions + vqa
  int64_t nli_rows = 0;
  int64_t train_rows = 0;
  int64_t eval_rows = 0;
  int64_t eval_datasets = 0;
  int64_t retrieval_images = 0;
  int64_t sugarcrepe_items = 0;
  double seconds = 0;
};

/// Writes the world under `out_dir`. The directory must be absent or empty, or, with
/// force = true, hold a previous world (it is replaced). Same config -> byte-identical files.
WorldStats generate_world(const WorldConfig& cfg, const std::string& out_dir, bool force);

}  // namespace unime::data
