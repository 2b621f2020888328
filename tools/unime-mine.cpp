// `unime mine --index INDEX_DIR --input TRAIN.jsonl --output OUT.jsonl [--model DIR] [--lora DIR]`:
// offline hard-negative mining as sentence-transformers' mine_hard_negatives (rank window,
// absolute / relative margin against the positive's score, number of negatives, top or random
// sampling); writes MMEB-train rows with neg_text / neg_image_path, one row per negative, that
// `unime train instruct --data OUT.jsonl` reads. Semantics: src/index/mine.h.
#include <cstdio>

#include "common.h"
#include "index/corpus.h"
#include "index/index.h"
#include "index/mine.h"

void register_mine(CLI::App& app) {
  auto* cmd = app.add_subcommand("mine", "mine hard negatives for MMEB-train rows from an index");
  struct Args {
    std::string index, input, output, model;
    std::vector<std::string> lora;
    unime::EmbedderOptions opt;
    unime::index::MineOptions mine;
    double absolute_margin = 0, relative_margin = 0, max_score = 0, min_score = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--index", a->index, "index folder of candidates (unime index build)")->required();
  cmd->add_option("--input", a->input, "MMEB-train JSONL: qry, qry_image_path, pos_text, pos_image_path [, pos_id]")
      ->required();
  cmd->add_option("--output", a->output, "JSONL: the input rows with neg_text / neg_image_path, one per negative")
      ->required();
  cmd->add_option("--model", a->model, "must be the index's model (default: the index's own)");
  cmd->add_option("--lora", a->lora, "must be the index's adapters (default: the index's own)");
  cmd->add_option("--image-root", a->mine.image_root, "folder for relative image paths (default: the input's folder)");
  cmd->add_option("--range-min", a->mine.range_min, "skip this many most similar candidates")->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--range-max", a->mine.range_max, "consider candidates ranked below this")->capture_default_str()
      ->check(CLI::PositiveNumber);
  auto* am = cmd->add_option("--absolute-margin", a->absolute_margin, "keep negatives with score <= positive - m");
  auto* rm = cmd->add_option("--relative-margin", a->relative_margin, "keep negatives with score <= positive * (1 - m)");
  auto* xs = cmd->add_option("--max-score", a->max_score, "keep negatives with score <= this");
  auto* ns = cmd->add_option("--min-score", a->min_score, "keep negatives with score >= this");
  cmd->add_option("--num-negatives", a->mine.num_negatives, "negatives per row")->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--sampling", a->mine.sampling, "top (hardest first) | random")->capture_default_str()
      ->check(CLI::IsMember({"top", "random"}));
  cmd->add_option("--seed", a->mine.seed, "seed for --sampling random")->capture_default_str();
  cmd->add_option("--batch-size", a->opt.batch_size, "inputs per forward pass")->capture_default_str();
  cmd->add_option("--threads", a->opt.threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--device", a->opt.device, "cpu | cuda | cuda:N")->capture_default_str();
  cmd->callback([a, am, rm, xs, ns]() {
    if (*am) a->mine.absolute_margin = a->absolute_margin;
    if (*rm) a->mine.relative_margin = a->relative_margin;
    if (*xs) a->mine.max_score = a->max_score;
    if (*ns) a->mine.min_score = a->min_score;
    auto ix = unime::index::Index::open(a->index);
    unime::index::check_same_model(*ix, a->model, a->lora);
    auto emb = unime::index::load_for_index(*ix, a->opt);
    const auto st = unime::index::mine_hard_negatives(*ix, *emb, a->input, a->output, a->mine);
    std::printf("%s: %lld rows -> %lld negatives for %lld rows (%lld rows without a negative dropped); "
                "mean positive score %.4f, mean negative score %.4f\n",
                a->output.c_str(), static_cast<long long>(st.rows), static_cast<long long>(st.negatives),
                static_cast<long long>(st.rows_with_negatives),
                static_cast<long long>(st.rows - st.rows_with_negatives), st.mean_pos_score, st.mean_neg_score);
  });
}
