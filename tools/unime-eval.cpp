// `unime eval mmeb|retrieval|sugarcrepe --model DIR --data ... --output REPORT.json` and
// `unime eval --compare A.json B.json` (METHOD.md section 5; src/eval/ has the metrics).
// Each unique (text, image) is embedded once per run and cached on disk per model, so a second
// run of the same model over the same inputs embeds nothing.
#include <cstdio>
#include <memory>

#include "common.h"
#include "core/progress.h"
#include "eval/benchmarks.h"
#include "eval/emb-cache.h"
#include "eval/report.h"
#include "unime/embedder.h"

namespace {

namespace ev = unime::eval;

struct EvalArgs {
  std::string model, data, image_root, output, cache_dir;
  bool no_cache = false;
  unime::EmbedderOptions opt;
  unime::eval::PairInstructions ins;  // retrieval and sugarcrepe only
};

void add_instruction_options(CLI::App* cmd, EvalArgs& a) {
  cmd->add_option("--image-instruction", a.ins.image,
                  "instruction for the image side, MMEB style (default: the template's "
                  "'Summary above image in one word' prompt)");
  cmd->add_option("--text-instruction", a.ins.text,
                  "instruction for the caption side (default: the template's sentence prompt)");
}

CLI::App* add_eval_subcommand(CLI::App* eval, const char* name, const char* help, EvalArgs& a,
                              const char* data_help) {
  auto* cmd = eval->add_subcommand(name, help);
  cmd->add_option("--model", a.model, "Hugging Face model folder")->required();
  cmd->add_option("--data", a.data, data_help)->required();
  cmd->add_option("--image-root", a.image_root,
                  "folder that relative image paths resolve against (default: the data's folder)");
  cmd->add_option("--output", a.output, "REPORT.json (REPORT.md is written beside it)")->required();
  cmd->add_option("--cache-dir", a.cache_dir, "embedding cache (default ~/.cache/unime/emb)");
  cmd->add_flag("--no-cache", a.no_cache, "neither read nor write the embedding cache");
  cmd->add_option("--dtype", a.opt.dtype, "f32 | bf16 | f16 | auto")->capture_default_str();
  cmd->add_option("--batch-size", a.opt.batch_size, "inputs per forward pass")->capture_default_str();
  cmd->add_option("--threads", a.opt.threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--template", a.opt.prompt_template, "prompt template name or JSON file");
  cmd->add_option("--lora", a.opt.lora, "PEFT LoRA adapter folder (repeatable: merged in order)");
  cmd->add_option("--device", a.opt.device, "cpu | cuda | cuda:N")->capture_default_str();
  cmd->add_flag("--truncate", a.opt.truncate, "cut inputs longer than max_position_embeddings");
  return cmd;
}

// Loads the model, embeds the table (cached), returns [U x D] and fills the report's common part.
std::vector<float> embed_table(const EvalArgs& a, const ev::InputTable& table, ev::Report& meta,
                               int64_t* dim) {
  auto emb = unime::Embedder::load(a.model, a.opt);
  const std::string describe = emb->describe();
  const std::string key = ev::model_cache_key(a.model, a.opt, describe);
  const std::string cache = a.no_cache ? "" : (a.cache_dir.empty() ? ev::default_cache_dir() : a.cache_dir);
  unime::ProgressBar bar("eval", table.size(), "inputs");
  ev::EmbedStats st;
  auto out = ev::embed_cached(*emb, table.inputs(), cache, key, &st,
                              [&](int64_t done, int64_t) { bar.update(done); });
  bar.finish();
  std::fprintf(stderr, "eval: %lld unique inputs, %lld from the cache, %lld embedded\n",
               static_cast<long long>(st.unique), static_cast<long long>(st.cached),
               static_cast<long long>(st.embedded));
  meta["model"] = {{"path", a.model}, {"describe", describe}, {"cache_key", ev::hash_hex(key)}};
  meta["options"] = {{"dtype", a.opt.dtype},   {"template", a.opt.prompt_template},
                     {"device", a.opt.device}, {"truncate", a.opt.truncate}, {"lora", a.opt.lora},
                     {"image_root", a.image_root}, {"cache_dir", cache},
                     {"image_instruction", a.ins.image}, {"text_instruction", a.ins.text}};
  meta["data"] = a.data;
  meta["counts"] = {{"unique_inputs", st.unique}, {"cached", st.cached}, {"embedded", st.embedded}};
  *dim = emb->dim();
  return out;
}

void finish(const EvalArgs& a, ev::Report r, const ev::Report& meta) {
  for (const auto& [k, v] : meta.items()) {
    if (k == "counts" && r.contains("counts"))
      for (const auto& [ck, cv] : v.items()) r["counts"][ck] = cv;
    else
      r[k] = v;
  }
  ev::write_report(a.output, r);
  std::printf("%s", ev::report_markdown(r).c_str());
}

}  // namespace

void register_eval(CLI::App& app) {
  auto* eval = app.add_subcommand("eval", "evaluate a model: MMEB, image-text retrieval, SugarCrepe");
  auto compare = std::make_shared<std::vector<std::string>>();
  eval->add_option("--compare", *compare, "A.json B.json: print the delta table of two reports")
      ->expected(2);
  eval->require_subcommand(0, 1);
  eval->callback([eval, compare]() {
    if (compare->empty()) {
      UNIME_CHECK(!eval->get_subcommands().empty(),
                  "unime eval: give a benchmark (mmeb, retrieval, sugarcrepe) or --compare A.json B.json");
      return;
    }
    UNIME_CHECK(eval->get_subcommands().empty(), "unime eval: --compare takes no benchmark");
    auto a = ev::read_report((*compare)[0]);
    auto b = ev::read_report((*compare)[1]);
    std::printf("%s", ev::compare_markdown(a, b, "A", "B").c_str());
  });

  // ---- mmeb ----
  auto am = std::make_shared<EvalArgs>();
  add_eval_subcommand(eval, "mmeb", "MMEB: Precision@1 per dataset, per meta-task, IND, OOD, overall",
                      *am, "folder of <dataset>.jsonl (+ manifest.json) or one .jsonl")
      ->callback([am]() {
        auto d = ev::read_mmeb(am->data, am->image_root);
        ev::Report meta;
        int64_t D = 0;
        auto emb = embed_table(*am, d.table, meta, &D);
        auto res = ev::score_mmeb(d, emb, D);
        ev::Scores s = res.datasets;
        for (const char* t : ev::kMetaTasks)
          if (res.means.count(t)) s.emplace_back(t, res.means[t]);
        for (const char* t : {"IND", "OOD", "overall"})
          if (res.means.count(t)) s.emplace_back(t, res.means[t]);
        auto r = ev::make_report("mmeb", s);
        r["datasets"] = ev::Report::object();
        int64_t queries = 0;
        for (const auto& ds : d.datasets) {
          const auto& info = d.info.at(ds.name);
          r["datasets"][ds.name] = {{"precision_at_1", 0.0},
                                    {"queries", res.queries.at(ds.name)},
                                    {"meta_task", info.meta_task}, {"split", info.split},
                                    {"file", ds.path}};
          queries += res.queries.at(ds.name);
        }
        for (const auto& [name, p] : res.datasets) r["datasets"][name]["precision_at_1"] = p;
        r["counts"] = {{"datasets", static_cast<int64_t>(d.datasets.size())}, {"queries", queries}};
        finish(*am, r, meta);
      });

  // ---- retrieval ----
  auto ar = std::make_shared<EvalArgs>();
  auto* cr = add_eval_subcommand(eval, "retrieval", "image-text retrieval: Recall@1/5/10 text->image and image->text",
                      *ar, "JSONL: {\"image\", \"captions\": [...]} or {\"image\", \"caption\"} per line");
  add_instruction_options(cr, *ar);
  cr->callback([ar]() {
        auto d = ev::read_retrieval(ar->data, ar->image_root, ar->ins);
        ev::Report meta;
        int64_t D = 0;
        auto emb = embed_table(*ar, d.table, meta, &D);
        ev::Scores sc = ev::score_retrieval(d, emb, D);
        for (auto& x : ev::score_text_to_text(d, emb, D)) sc.push_back(x);
        auto r = ev::make_report("retrieval", sc);
        r["counts"] = {{"images", static_cast<int64_t>(d.image.size())},
                       {"captions", static_cast<int64_t>(d.text.size())}};
        finish(*ar, r, meta);
      });

  // ---- sugarcrepe ----
  auto as = std::make_shared<EvalArgs>();
  auto* cs = add_eval_subcommand(eval, "sugarcrepe", "SugarCrepe: accuracy per subset and Replace/Swap/Add means",
                      *as, "folder of <subset>.json or one .json");
  add_instruction_options(cs, *as);
  cs->callback([as]() {
        auto d = ev::read_sugarcrepe(as->data, as->image_root, as->ins);
        ev::Report meta;
        int64_t D = 0;
        auto emb = embed_table(*as, d.table, meta, &D);
        auto r = ev::make_report("sugarcrepe", ev::score_sugarcrepe(d, emb, D));
        r["counts"] = ev::Report::object();
        for (const auto& s : d.subsets) r["counts"][s.name] = static_cast<int64_t>(s.image.size());
        finish(*as, r, meta);
      });
}
