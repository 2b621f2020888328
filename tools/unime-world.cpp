// `unime world`: writes the procedural multimodal world (images, captions, NLI, MMEB-train,
// MMEB-eval, retrieval, SugarCrepe) for a seed. See src/data/world.h and docs/README-dev-world.md.
#include <cstdio>

#include "common.h"
#include "data/world.h"

void register_world(CLI::App& app) {
  auto* cmd = app.add_subcommand("world", "generate the procedural multimodal world (all data sets)");
  struct Opts {
    unime::data::WorldConfig cfg;
    std::string output;
    bool quick = false, force = false;
  };
  auto opts = std::make_shared<Opts>();
  auto& c = opts->cfg;
  cmd->add_option("--seed", c.seed, "world seed (same seed -> byte-identical output)")->required();
  cmd->add_option("--output,-o", opts->output, "output directory")->required();
  cmd->add_flag("--quick", opts->quick, "tiny sizes for tests (explicit size options still apply)");
  cmd->add_flag("--force", opts->force, "replace a previous world in the output directory");
  // sizes: applied after --quick so that both can be combined
  struct Size {
    const char* flag;
    int unime::data::WorldConfig::*field;
    const char* help;
  };
  static const Size kSizes[] = {
      {"--image-size", &unime::data::WorldConfig::image_size, "image side in pixels (64)"},
      {"--max-objects", &unime::data::WorldConfig::max_objects, "objects per scene, 2..5 (4)"},
      {"--heldout", &unime::data::WorldConfig::heldout, "held-out colour-shape combinations (8)"},
      {"--pretrain-scenes", &unime::data::WorldConfig::pretrain_scenes, "images for captions/VQA (1500)"},
      {"--captions-per-scene", &unime::data::WorldConfig::captions_per_scene, "(2)"},
      {"--vqa-per-scene", &unime::data::WorldConfig::vqa_per_scene, "(3)"},
      {"--nli", &unime::data::WorldConfig::nli_rows, "NLI triples (5000)"},
      {"--nli-swap-percent", &unime::data::WorldConfig::nli_swap_percent,
       "NLI rows whose hard negative swaps two objects' colours, when the premise names two (0: edits drawn uniformly)"},
      {"--nli-relation-percent", &unime::data::WorldConfig::nli_relation_percent,
       "NLI rows whose hard negative reverses one stated relation, when the premise states one (0)"},
      {"--train-per-source", &unime::data::WorldConfig::train_per_source, "MMEB-train rows per source (250)"},
      {"--train-swap-percent", &unime::data::WorldConfig::train_swap_percent,
       "MMEB-train rows whose negative is a candidate that swaps two objects' colours, where one exists (0: the hardest)"},
      {"--train-relation-percent", &unime::data::WorldConfig::train_relation_percent,
       "MMEB-train rows whose negative moves two objects / reverses one relation of the positive, where one exists (0)"},
      {"--eval-queries", &unime::data::WorldConfig::eval_queries, "queries per MMEB-eval dataset (100)"},
      {"--candidates", &unime::data::WorldConfig::candidates, "candidates per eval query (20)"},
      {"--retrieval-images", &unime::data::WorldConfig::retrieval_images, "(200)"},
      {"--retrieval-captions", &unime::data::WorldConfig::retrieval_captions, "captions per image (5)"},
      {"--sugarcrepe", &unime::data::WorldConfig::sugarcrepe_items, "items per SugarCrepe subset (150)"},
      {"--threads", &unime::data::WorldConfig::threads, "rendering threads, 0 = all cores (0)"},
  };
  auto given = std::make_shared<std::vector<std::pair<int unime::data::WorldConfig::*, int>>>();
  for (const Size& s : kSizes) {
    auto field = s.field;
    cmd->add_option_function<int>(
        s.flag, [given, field](const int& v) { given->emplace_back(field, v); }, s.help);
  }
  cmd->callback([opts, given]() {
    unime::data::WorldConfig cfg =
        opts->quick ? unime::data::quick_world_config(opts->cfg.seed) : opts->cfg;
    cfg.seed = opts->cfg.seed;
    for (const auto& [field, v] : *given) cfg.*field = v;
    const auto st = unime::data::generate_world(cfg, opts->output, opts->force);
    std::printf(
        "world: seed %llu -> %s: %lld images, %lld pretrain rows, %lld NLI rows, %lld MMEB-train "
        "rows, %lld MMEB-eval rows in %lld datasets, %lld retrieval images, %lld SugarCrepe items "
        "(%.2f s)\n",
        static_cast<unsigned long long>(cfg.seed), opts->output.c_str(),
        static_cast<long long>(st.images), static_cast<long long>(st.pretrain_rows),
        static_cast<long long>(st.nli_rows), static_cast<long long>(st.train_rows),
        static_cast<long long>(st.eval_rows), static_cast<long long>(st.eval_datasets),
        static_cast<long long>(st.retrieval_images), static_cast<long long>(st.sugarcrepe_items),
        st.seconds);
  });
}
