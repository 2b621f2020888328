// `unime demo`; see demo.h. Sizes and hyper-parameters are in plan(); everything else is the same
// code path a user runs with real checkpoints (world data in the real formats, the HF checkpoint
// layout, PEFT adapters, the eval readers).
#include "demo/demo.h"

#include <sys/wait.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <variant>

#include "core/error.h"
#include "core/subprocess.h"
#include "data/world-tasks.h"
#include "data/world.h"
#include "demo/report.h"
#include "demo/teacher.h"
#include "eval/benchmarks.h"
#include "eval/emb-cache.h"
#include "io/fs.h"
#include "io/jsonl.h"
#include "io/npy.h"
#include "text/bpe-train.h"
#include "text/prompt.h"
#include "train/pretrain.h"
#include "train/trainer.h"
#include "unime/embedder.h"
#include "unime/random-model.h"

namespace unime::demo {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

struct Plan {
  data::WorldConfig world;
  int64_t bpe_vocab = 1024;
  // 96 px images of a 3 x 3 scene grid, 32 px patches: one feature token per cell, 9 per image. With
  // patches that cut objects (64 px / 16 px) the warm-up never learned shapes (held-out 16-20%).
  int patch = 32;
  int vision_layers = 4, vision_hidden = 128, text_layers = 4, text_hidden = 128;
  int64_t vision_steps = 0, vision_batch = 64;  // vision-tower warm-up on the scene labels
  int64_t vision_position = 0;  // 1: the warm-up also teaches each feature which cell it is
  int64_t pre_steps = 0, pre_batch = 16;
  std::string dtype = "f32";  // every step: at this size f32 beats bf16 (eager overhead dominates)
  double pre_lr = 1e-3;
  double pre_summary = 0;  // weight of stage 0's scene-summary objective (train::PretrainOptions)
  int64_t pre_summary_pairs = 0;  // 1: the summary head predicts colour-shape pairs instead of cells; 2: both
  int64_t pre_summary_text = 0;   // 1 (with pairs): captions' embedding tokens predict the pairs they name too
  double pre_summary_text_swap = 0;  // chance a caption row there has two objects' colours swapped
  int64_t pre_constant_lr = 0;       // 1: stage 0's learning rate stays at pre_lr after warm-up (default: cosine)
  int64_t pre_summary_relations = 0;  // 1 (with pairs): the head also predicts the spatial relations
  double pre_summary_positions = 0;  // W > 0 (with pairs): the head also predicts each named object's column and row, weight W within the summary
  double pre_summary_contrast = 0;   // weight of an image-caption contrast with colour-swap negatives (text on)
  // a second stage-0 phase from the first one's weights (D/base-phase1 -> D/base), the same
  // objectives plus the positions part at this weight: positions once the summary binds
  int64_t pre2_steps = 0;
  double pre2_positions = 0;
  double pre2_contrast = 0;             // phase 2: the image-caption contrast at this weight (instead of text swaps)
  int64_t pre2_contrast_relations = 0;  // 1: its negatives exchange a stated relation's two objects
  int64_t teacher_dim = 512;
  int64_t s1_steps = 0, s1_batch = 64;
  double s1_lr = 5e-4, s1_tau = 0.2;
  int64_t s1_group = 0;  // 1: NLI rows kept whole in stage-1 batches (--group-rows)
  int64_t s2_steps = 0, s2_batch = 64;
  double s2_lr = 5e-4, s2_tau = 0.02;
  bool ablation_nofilter = true;
  bool s2_lora_vision = true;  // the from-scratch ViT is adapted too (LoRA), see README
};

using PlanRef = std::variant<int*, int64_t*, double*, bool*>;
std::vector<std::pair<std::string, PlanRef>> plan_fields(Plan& p) {
  return {{"image_size", &p.world.image_size}, {"pretrain_scenes", &p.world.pretrain_scenes}, {"max_objects", &p.world.max_objects},
          {"captions_per_scene", &p.world.captions_per_scene}, {"vqa_per_scene", &p.world.vqa_per_scene},
          {"nli_rows", &p.world.nli_rows}, {"nli_swap_percent", &p.world.nli_swap_percent}, {"train_swap_percent", &p.world.train_swap_percent}, {"nli_relation_percent", &p.world.nli_relation_percent}, {"train_relation_percent", &p.world.train_relation_percent}, {"train_per_source", &p.world.train_per_source},
          {"eval_queries", &p.world.eval_queries}, {"candidates", &p.world.candidates},
          {"retrieval_images", &p.world.retrieval_images}, {"sugarcrepe_items", &p.world.sugarcrepe_items},
          {"bpe_vocab", &p.bpe_vocab}, {"patch", &p.patch}, {"vision_layers", &p.vision_layers},
          {"vision_hidden", &p.vision_hidden}, {"text_layers", &p.text_layers},
          {"text_hidden", &p.text_hidden}, {"vision_steps", &p.vision_steps}, {"vision_position", &p.vision_position},
          {"vision_batch", &p.vision_batch}, {"pre_steps", &p.pre_steps}, {"pre_batch", &p.pre_batch},
          {"pre_lr", &p.pre_lr}, {"pre_summary", &p.pre_summary}, {"pre_summary_pairs", &p.pre_summary_pairs}, {"pre_summary_text", &p.pre_summary_text}, {"pre_summary_text_swap", &p.pre_summary_text_swap}, {"pre_summary_contrast", &p.pre_summary_contrast}, {"pre_summary_relations", &p.pre_summary_relations}, {"pre_summary_positions", &p.pre_summary_positions}, {"pre_constant_lr", &p.pre_constant_lr}, {"pre2_steps", &p.pre2_steps}, {"pre2_positions", &p.pre2_positions}, {"pre2_contrast", &p.pre2_contrast}, {"pre2_contrast_relations", &p.pre2_contrast_relations}, {"teacher_dim", &p.teacher_dim}, {"s1_steps", &p.s1_steps},
          {"s1_batch", &p.s1_batch}, {"s1_lr", &p.s1_lr}, {"s1_tau", &p.s1_tau}, {"s1_group", &p.s1_group},
          {"s2_steps", &p.s2_steps}, {"s2_batch", &p.s2_batch}, {"s2_lr", &p.s2_lr}, {"s2_tau", &p.s2_tau}, {"s2_lora_vision", &p.s2_lora_vision},
          {"ablation_nofilter", &p.ablation_nofilter}};
}

Plan plan(const DemoOptions& o) {
  Plan p;
  p.world.seed = o.seed;
  p.world.image_size = 96;
  if (o.quick) {
    p.world.pretrain_scenes = 1500;
    p.world.nli_rows = 800;
    p.world.train_per_source = 200;
    p.world.eval_queries = 80;
    p.world.candidates = 10;
    p.world.retrieval_images = 40;
    p.world.sugarcrepe_items = 40;
    p.vision_steps = 400;
    p.pre_steps = 300;
    p.s1_steps = 40;
    // stage 2 learns in steps, not samples (its loss sits at chance for the first ~50 steps):
    // the quick budget buys more, smaller steps
    p.s2_steps = 150;
    p.s2_batch = 16;
    p.s2_lr = 1e-3;
    p.ablation_nofilter = false;
  } else {
    p.world.pretrain_scenes = 3000;
    p.world.nli_rows = 3000;
    p.world.train_per_source = 1000;
    p.world.eval_queries = 100;
    p.world.candidates = 16;
    p.world.retrieval_images = 100;
    p.world.sugarcrepe_items = 500;
    p.vision_steps = 800;
    p.pre_steps = 1000;
    p.s1_steps = 400;  // 100 steps: t2t R@1 65.4, stage-2 overall 20.6; 400: 87.4, 23.2 (seed 1, README)
    p.s2_steps = 300;
    p.s2_batch = 32;
  }
  p.world.threads = o.threads;
  for (const auto& kv : o.set) {
    const auto eq = kv.find('=');
    UNIME_CHECK(eq != std::string::npos, "--set '", kv, "': expected key=value");
    const std::string key = kv.substr(0, eq), val = kv.substr(eq + 1);
    bool found = false;
    for (auto& [name, ref] : plan_fields(p))
      if (name == key) {
        try {
          size_t used = 0;
          const double v = std::stod(val, &used);
          UNIME_CHECK(used == val.size(), "");
          std::visit([&](auto* f) { *f = static_cast<std::remove_pointer_t<decltype(f)>>(v); }, ref);
        } catch (const std::exception&) {
          throw Error(str("--set ", key, ": '", val, "' is not a number"));
        }
        found = true;
      }
    UNIME_CHECK(found, "--set: unknown key '", key, "'; keys: see `unime demo --help`");
  }
  // checked before any work starts: a second stage-0 phase needs its steps
  UNIME_CHECK(p.pre2_steps >= 0 && (p.pre2_steps > 0 || (p.pre2_positions == 0 && p.pre2_contrast == 0 &&
                                                          p.pre2_contrast_relations == 0)),
              "--set pre2_steps must be >= 0, and > 0 for pre2_positions and pre2_contrast, got ", p.pre2_steps);
  return p;
}

}  // namespace

std::string plan_keys() {
  DemoOptions q;
  q.quick = true;
  Plan pq = plan(q), pf = plan(DemoOptions{});
  std::ostringstream s;
  auto fq = plan_fields(pq), ff = plan_fields(pf);
  for (size_t i = 0; i < fq.size(); ++i) {
    s << "  " << fq[i].first << " (quick ";
    std::visit([&](auto* f) { s << *f; }, fq[i].second);
    s << ", full ";
    std::visit([&](auto* f) { s << *f; }, ff[i].second);
    s << ")\n";
  }
  return s.str();
}

namespace {

nlohmann::json model_config(const Plan& p, int64_t vocab, int64_t image_token) {
  using nj = nlohmann::json;
  nj text{{"model_type", "llama"},
          {"hidden_size", p.text_hidden},
          {"intermediate_size", p.text_hidden * 3},
          {"num_hidden_layers", p.text_layers},
          {"num_attention_heads", p.text_hidden / 64},
          {"num_key_value_heads", p.text_hidden / 64},
          {"vocab_size", vocab},
          {"max_position_embeddings", 512},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"pad_token_id", 3}};
  nj vision{{"model_type", "clip_vision_model"},
            {"hidden_size", p.vision_hidden},
            {"intermediate_size", p.vision_hidden * 4},
            {"num_hidden_layers", p.vision_layers},
            {"num_attention_heads", p.vision_hidden / 32},
            {"image_size", p.world.image_size},
            {"patch_size", p.patch},
            {"hidden_act", "quick_gelu"}};
  return nj{{"architectures", {"LlavaForConditionalGeneration"}},
            {"model_type", "llava"},
            {"image_token_index", image_token},
            {"projector_hidden_act", "gelu"},
            {"vision_feature_layer", -2},
            {"vision_feature_select_strategy", "default"},
            {"text_config", text},
            {"vision_config", vision},
            {"pad_token_id", 3},
            {"torch_dtype", "float32"}};
}


double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

void say(const std::string& s) {
  std::fprintf(stderr, "demo: %s\n", s.c_str());
  std::fflush(stderr);
}

// ---- stage-2 arms side by side ------------------------------------------------------------------

std::string num(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

// The `unime train instruct` command line of a stage-2 training (what it sets of TrainOptions).
std::vector<std::string> instruct_args(const train::TrainOptions& to) {
  std::vector<std::string> a = {"train", "instruct", "--model", to.model, "--data", to.data,
                                "--output", to.output, "--image-root", to.image_root,
                                "--steps", std::to_string(to.steps), "--batch-size", std::to_string(to.batch_size),
                                "--lr", num(to.lr), "--warmup-steps", std::to_string(to.warmup_steps),
                                "--schedule", to.schedule, "--optimizer", to.optimizer,
                                "--weight-decay", num(to.weight_decay), "--max-grad-norm", num(to.max_grad_norm),
                                "--temperature", num(to.temperature),
                                "--hard-negatives", std::to_string(to.hard_negatives),
                                "--fn-margin", to.fn_margin ? num(*to.fn_margin) : std::string("none"),
                                "--interleave-batch-size", std::to_string(to.interleave_batch_size),
                                "--lora-r", std::to_string(to.lora.r), "--lora-alpha", num(to.lora.alpha),
                                "--lora-dropout", num(to.lora.dropout),
                                "--seed", std::to_string(to.seed), "--threads", std::to_string(to.threads),
                                "--dtype", to.dtype, "--quiet"};
  for (const auto& l : to.lora_in) {
    a.push_back("--lora");
    a.push_back(l);
  }
  if (to.lora.include_vision) a.push_back("--lora-vision");
  if (!to.prompt_template.empty()) {
    a.push_back("--template");
    a.push_back(to.prompt_template);
  }
  return a;
}

std::string last_line(const fs::path& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  return last;
}

// Trains all jobs at once as `unime train instruct` child processes of this executable, `threads`
// threads each, output in <job output>.log. On 2 cores two 1-thread trainings of the demo's tiny
// model run side by side in the time one 2-thread training takes (matrices this small do not keep
// 2 cores busy). A failing job stops the others and throws its last log line.
void train_side_by_side(std::vector<train::TrainOptions> jobs, int threads) {
  struct Running {
    pid_t pid;
    const train::TrainOptions* job;
    std::chrono::steady_clock::time_point t0;
  };
  std::vector<Running> running;
  std::string failure;
  auto stop_all = [&] {
    for (auto& r : running) kill(r.pid, SIGTERM);
  };
  for (auto& to : jobs) {
    to.threads = threads;
    fs::remove_all(to.output);
    const std::string log = to.output + ".log";
    std::vector<std::string> args = instruct_args(to);
    args.insert(args.begin(), "unime");
    pid_t pid = -1;
    try {
      pid = spawn_self(args, {}, log);
    } catch (const std::exception& e) {
      failure = str("cannot start `unime train instruct` for ", to.output, " (", e.what(), ")");
      stop_all();
      break;
    }
    say(str("  started ", fs::path(to.output).filename().string(), " (", threads, threads == 1 ? " thread" : " threads",
            "; log ", log, ")"));
    running.push_back({pid, &to, std::chrono::steady_clock::now()});
  }
  while (!running.empty()) {
    int st = 0;
    const pid_t done = waitpid(-1, &st, 0);
    if (done < 0) {
      if (errno == EINTR) continue;
      throw Error(str("demo: waitpid failed (", std::strerror(errno), ")"));
    }
    auto it = std::find_if(running.begin(), running.end(), [&](const Running& r) { return r.pid == done; });
    if (it == running.end()) continue;
    const train::TrainOptions& to = *it->job;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - it->t0).count();
    running.erase(it);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
      say(str("  ", fs::path(to.output).filename().string(), " done in ", static_cast<int>(secs), " s"));
    } else if (failure.empty()) {
      failure = str("stage 2 training ", to.output, " failed: ", last_line(to.output + ".log"), " (log ",
                    to.output, ".log)");
      stop_all();
    }
  }
  if (!failure.empty()) throw Error(failure);
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> v;
  std::istringstream in(io::read_file(path));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) v.push_back(line);
  return v;
}

double dot(const std::vector<float>& e, int64_t D, int64_t a, int64_t b) {
  double r = 0;
  for (int64_t k = 0; k < D; ++k) r += double(e[a * D + k]) * e[b * D + k];
  return r;
}

json scores_json(const eval::Scores& s) {
  json j = json::object();
  for (auto& [k, v] : s) j[k] = v;
  return j;
}

// A model under evaluation: the base checkpoint plus adapters, in order.
struct Variant {
  std::string key, label;
  std::vector<std::string> lora;
};

json evaluate(const Variant& v, const std::string& base, const fs::path& world,
              const NliSentences& nli, int threads, const std::string& dtype) {
  EmbedderOptions eo;
  eo.dtype = dtype;
  eo.threads = threads;
  eo.batch_size = 64;
  eo.lora = v.lora;
  auto emb = Embedder::load(base, eo);
  const int64_t D = emb->dim();
  auto run = [&](const eval::InputTable& t) { return emb->embed(t.inputs()); };
  json r;
  r["label"] = v.label;
  r["lora"] = v.lora;

  auto mm = eval::read_mmeb((world / "mmeb-eval").string(), world.string());
  auto e = run(mm.table);
  auto res = eval::score_mmeb(mm, e, D);
  r["mmeb"] = scores_json(res.datasets);
  for (auto& [k, val] : res.means) r["mmeb_means"][k] = val;
  // similarity of each query to its gold candidate and to the others (histograms)
  std::vector<double> pos, neg;
  for (auto& ds : mm.datasets)
    for (size_t q = 0; q < ds.qry.size(); ++q)
      for (size_t c = 0; c < ds.tgt[q].size(); ++c)
        (c == 0 ? pos : neg).push_back(dot(e, D, ds.qry[q], ds.tgt[q][c]));
  r["sim_pos"] = pos;
  r["sim_neg"] = neg;

  // image-text sets: the image side with the instruction stage 2 trains image -> caption with
  // (a tiny model does not carry over to the untrained "in one word" image prompt; see README)
  const eval::PairInstructions ins{data::world::kInstrI2T, ""};
  auto rt = eval::read_retrieval((world / "retrieval.jsonl").string(), "", ins);
  e = run(rt.table);
  auto rs = eval::score_retrieval(rt, e, D);
  for (auto& x : eval::score_text_to_text(rt, e, D)) rs.push_back(x);
  r["retrieval"] = scores_json(rs);
  // text -> image examples: the top 3 images of the first captions
  json ex = json::array();
  for (int64_t t = 0; t < std::min<int64_t>(4, static_cast<int64_t>(rt.text.size())); ++t) {
    const int64_t tq = t * static_cast<int64_t>(rt.text.size()) / 4;  // spread over the set
    std::vector<std::pair<double, int64_t>> s;
    for (size_t i = 0; i < rt.image.size(); ++i) s.emplace_back(dot(e, D, rt.text[tq], rt.image[i]), i);
    std::partial_sort(s.begin(), s.begin() + std::min<size_t>(3, s.size()), s.end(),
                      [](auto& a, auto& b) { return a.first > b.first; });
    json hits = json::array();
    for (size_t k = 0; k < std::min<size_t>(3, s.size()); ++k)
      hits.push_back({{"image", rt.table.inputs()[rt.image[s[k].second]].images.at(0)},
                      {"score", s[k].first}, {"correct", s[k].second == rt.text_image[tq]}});
    ex.push_back({{"query", rt.table.inputs()[rt.text[tq]].text}, {"hits", hits}});
  }
  r["examples"] = ex;

  auto sc = eval::read_sugarcrepe((world / "sugarcrepe").string(), world.string(), ins);
  e = run(sc.table);
  r["sugarcrepe"] = scores_json(eval::score_sugarcrepe(sc, e, D));

  std::vector<EmbedInput> in(nli.sentences.size());
  for (size_t i = 0; i < in.size(); ++i) in[i].text = nli.sentences[i];
  e = emb->embed(in);
  r["nli_accuracy"] = nli_accuracy(nli, e, D);
  return r;
}

}  // namespace

int run_demo(const DemoOptions& o) {
  const auto t_all = std::chrono::steady_clock::now();
  const Plan p = plan(o);
  const fs::path out(o.output);
  fs::create_directories(out);
  const fs::path world = out / "world", tokdir = out / "tokenizer", base = out / "base";
  json timings = json::object();

  // 1. the world
  auto t = std::chrono::steady_clock::now();
  if (o.force || !fs::exists(world / "world.json")) {
    say("1/7 world: scenes, captions, VQA, NLI, MMEB-style train/eval, retrieval, SugarCrepe-style");
    data::generate_world(p.world, world.string(), /*force=*/true);
  }
  timings["world"] = seconds_since(t);

  // 2. the tokenizer
  t = std::chrono::steady_clock::now();
  if (o.force || !fs::exists(tokdir / "tokenizer.json")) {
    say("2/7 tokenizer: byte-level BPE trained on the world's text");
    text::BpeTrainOptions bo;
    bo.vocab_size = p.bpe_vocab;
    auto tk = text::train_bpe(read_lines((world / "corpus.txt").string()), bo);
    fs::create_directories(tokdir);
    io::write_file_atomic((tokdir / "tokenizer.json").string(), tk.tokenizer_json);
    io::write_file_atomic((tokdir / "tokenizer_config.json").string(), tk.tokenizer_config_json);
  }
  timings["tokenizer"] = seconds_since(t);
  const int64_t vocab = [&] {
    auto j = nlohmann::json::parse(io::read_file((tokdir / "tokenizer.json").string()));
    return static_cast<int64_t>(j["model"]["vocab"].size());
  }();

  // 3. stage 0
  t = std::chrono::steady_clock::now();
  json pre = json::object();
  if (o.force || !fs::exists(base / "model.safetensors")) {
    say("3/7 stage 0: next-token pretraining of a tiny LLaVA (CLIP ViT + projector + Llama)");
    train::PretrainOptions po;
    po.config = model_config(p, vocab, /*<image>=*/4).dump(2);
    po.tokenizer_dir = tokdir.string();
    po.preprocessor_config = clip_preprocessor_config(p.world.image_size);
    po.data = {(world / "captions.jsonl").string(), (world / "vqa.jsonl").string()};
    po.vision_labels = (world / "scenes.jsonl").string();
    po.vision_steps = p.vision_steps;
    po.vision_position = p.vision_position != 0;
    po.vision_batch = p.vision_batch;
    po.output = base.string();
    po.steps = p.pre_steps;
    po.batch_size = p.pre_batch;
    po.lr = p.pre_lr;
    if (p.pre_constant_lr) po.schedule = "constant";
    const auto tmpl = text::load_template("plain");
    if (p.pre_summary > 0) {
      // the image prompts the pipeline embeds images with: the template's own, and the instructions
      // of image candidates and of image -> caption queries
      for (const char* ins : {"", data::world::kInstrI2T, data::world::kTgtImage})
        po.summary_prompts.push_back(text::render_prompt(tmpl, ins, "", 1));
      po.summary_weight = p.pre_summary;
      UNIME_CHECK(p.pre_summary_pairs >= 0 && p.pre_summary_pairs <= 2,
                  "--set pre_summary_pairs: 0 (cells), 1 (pairs) or 2 (pairs+cells), got ", p.pre_summary_pairs);
      po.summary_target = p.pre_summary_pairs == 2 ? "pairs+cells" : p.pre_summary_pairs ? "pairs" : "cells";
    }
    // and the text prompt captions are embedded with (pairs only): one read-out for both sides;
    // run_pretrain rejects these without the summary weight
    if (p.pre_summary_text) po.summary_text_prompts.push_back(text::render_prompt(tmpl, "", "{text}", 0));
    po.summary_text_swap = p.pre_summary_text_swap;
    po.summary_contrast = p.pre_summary_contrast;
    po.summary_relations = p.pre_summary_relations != 0;
    po.summary_positions = p.pre_summary_positions;
    po.dtype = p.dtype;
    po.warmup_steps = std::max<int64_t>(10, p.pre_steps / 20);
    po.seed = o.seed;
    po.threads = o.threads;
    auto result_json = [](const train::PretrainResult& r) {
      return json{{"parameters", r.parameters}, {"first_loss", r.first_loss}, {"last_loss", r.last_loss},
           {"seconds", r.seconds}, {"tokens", r.tokens},
           {"loss_own_image", r.loss_own_image}, {"loss_other_image", r.loss_other_image},
           {"vision_first_loss", r.vision_first_loss}, {"vision_last_loss", r.vision_last_loss},
           {"vision_accuracy", r.vision_accuracy}, {"vision_colour_accuracy", r.vision_colour_accuracy},
           {"vision_shape_accuracy", r.vision_shape_accuracy}, {"vision_position_accuracy", r.vision_position_accuracy},
           {"summary_first_loss", r.summary_first_loss}, {"summary_last_loss", r.summary_last_loss},
           {"summary_text_first_loss", r.summary_text_first_loss}, {"summary_text_last_loss", r.summary_text_last_loss},
           {"summary_cells_first_loss", r.summary_cells_first_loss}, {"summary_cells_last_loss", r.summary_cells_last_loss},
           {"summary_relations_first_loss", r.summary_relations_first_loss}, {"summary_relations_last_loss", r.summary_relations_last_loss},
           {"summary_positions_first_loss", r.summary_positions_first_loss}, {"summary_positions_last_loss", r.summary_positions_last_loss},
           {"contrast_first_loss", r.contrast_first_loss}, {"contrast_last_loss", r.contrast_last_loss},
           {"contrast_accuracy", r.contrast_accuracy}, {"contrast_swap_accuracy", r.contrast_swap_accuracy}};
    };
    const fs::path phase1 = out / "base-phase1";
    if (p.pre2_steps > 0) po.output = phase1.string();
    if (p.pre2_steps == 0 || o.force || !fs::exists(phase1 / "model.safetensors")) {
      pre = result_json(train::run_pretrain(po));
      if (p.pre2_steps > 0) io::write_file_atomic((out / "stage0-phase1.json").string(), pre.dump(2) + "\n");
    } else {
      pre = json::parse(io::read_file((out / "stage0-phase1.json").string()));
    }
    if (p.pre2_steps > 0) {
      say(str("3/7 stage 0, phase 2: ", p.pre2_steps, " more steps from ", phase1.string(),
              " with the positions part at weight ", p.pre2_positions));
      po.init = phase1.string();
      po.output = base.string();
      po.vision_steps = 0;
      po.steps = p.pre2_steps;
      po.warmup_steps = std::max<int64_t>(10, p.pre2_steps / 20);
      po.summary_positions = p.pre2_positions;
      if (p.pre2_contrast > 0) {  // the contrast's swap rows replace the text summary's swaps
        po.summary_text_swap = 0;
        po.summary_contrast = p.pre2_contrast;
        po.summary_contrast_negatives = p.pre2_contrast_relations ? "relation" : "colour";
      }
      po.seed = o.seed + 1;
      json phase2 = result_json(train::run_pretrain(po));
      for (auto& [k, v] : pre.items())  // the warm-up ran in phase 1
        if (k.rfind("vision_", 0) == 0) phase2[k] = v;
      phase2["phase1"] = pre;
      pre = phase2;
    }
    io::write_file_atomic((out / "stage0.json").string(), pre.dump(2) + "\n");
  } else if (fs::exists(out / "stage0.json")) {
    pre = json::parse(io::read_file((out / "stage0.json").string()));
  }
  timings["stage0"] = seconds_since(t);

  // 4. the teacher
  t = std::chrono::steady_clock::now();
  const std::string nli_path = (world / "nli.jsonl").string();
  const NliSentences nli = read_nli_sentences(nli_path);
  const auto vocab_words =
      WorldVocab::from_world_json(nlohmann::json::parse(io::read_file((world / "world.json").string())));
  const auto te = teacher_embed(nli.sentences, vocab_words, p.teacher_dim);  // deterministic, < 1 s
  if (o.force || !fs::exists(out / "teacher.npy")) {
    say("4/7 teacher: compositional embeddings of the stage-1 sentences -> teacher.npy");
    io::write_npy_f32((out / "teacher.npy").string(), te.data(),
                      {static_cast<int64_t>(nli.sentences.size()), p.teacher_dim});
  }
  double teacher_nli = 0, teacher_t2t = 0;
  {
    teacher_nli = nli_accuracy(nli, te, p.teacher_dim);
    auto rt = eval::read_retrieval((world / "retrieval.jsonl").string(), "");
    std::vector<std::string> caps;
    for (auto& in : rt.table.inputs()) caps.push_back(in.text);
    auto ce = teacher_embed(caps, vocab_words, p.teacher_dim);
    for (auto& [k, v] : eval::score_text_to_text(rt, ce, p.teacher_dim))
      if (k == "t2t_R@1") teacher_t2t = v;
  }
  timings["teacher"] = seconds_since(t);

  // 5. stage 1 and 6. stage 2 (+ ablations)
  const int cores = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // fills in what every training shares; false when `name` is finished and may be reused
  auto needs_training = [&](const std::string& name, train::TrainOptions& to) {
    const fs::path dir = out / name;
    if (!o.force && fs::exists(dir / "adapter_model.safetensors")) return false;
    fs::remove_all(dir);
    to.model = base.string();
    to.output = dir.string();
    to.seed = o.seed;
    to.threads = o.threads;
    to.dtype = p.dtype;
    to.quiet = false;
    return true;
  };
  auto train_if_needed = [&](const std::string& name, train::TrainOptions to) {
    if (needs_training(name, to)) train::run_training(to);
  };
  t = std::chrono::steady_clock::now();
  say("5/7 stage 1: textual discriminative knowledge distillation (LoRA, KL at tau)");
  {
    train::TrainOptions to;
    to.stage = "distill";
    to.data = nli_path;
    to.teacher = (out / "teacher.npy").string();
    to.steps = p.s1_steps;
    to.batch_size = p.s1_batch;
    to.lr = p.s1_lr;
    to.temperature = p.s1_tau;
    to.group_rows = p.s1_group != 0;
    to.warmup_steps = p.s1_steps / 10;
    to.lora.r = 16;
    to.lora.alpha = 32;
    to.lora.dropout = 0.05;
    train_if_needed("stage1", to);
  }
  timings["stage1"] = seconds_since(t);

  t = std::chrono::steady_clock::now();
  say("6/7 stage 2: hard-negative instruction tuning on top of stage 1, and two ablations");
  const std::string train_path = (world / "mmeb-train.jsonl").string();
  // the VLM2Vec-style baseline trains on the same pairs without their hard negatives
  const std::string pairs_path = (out / "mmeb-train-pairs.jsonl").string();
  if (o.force || !fs::exists(pairs_path)) {
    std::string rows;
    io::read_jsonl(train_path, [&](int64_t, const nlohmann::json& row) {
      nlohmann::json r = row;
      r.erase("neg_text");
      r.erase("neg_image_path");
      rows += r.dump() + "\n";
    });
    io::write_file_atomic(pairs_path, rows);
  }
  auto stage2 = [&](std::optional<double> margin, int64_t k, const std::string& data) {
    train::TrainOptions to;
    to.stage = "instruct";
    to.data = data;
    to.image_root = world.string();
    to.lora_in = {(out / "stage1").string()};
    to.steps = p.s2_steps;
    to.batch_size = p.s2_batch;
    to.lr = p.s2_lr;
    to.warmup_steps = p.s2_steps / 10;
    to.hard_negatives = k;
    to.fn_margin = margin;
    to.temperature = p.s2_tau;
    to.lora.include_vision = p.s2_lora_vision;
    return to;
  };
  {
    std::vector<std::pair<std::string, train::TrainOptions>> arms = {
        {"stage2", stage2(0.1, 8, train_path)}, {"ablation-infonce", stage2(std::nullopt, 0, pairs_path)}};
    if (p.ablation_nofilter) arms.push_back({"ablation-nofilter", stage2(std::nullopt, 8, train_path)});
    std::vector<train::TrainOptions> todo;
    for (auto& [name, to] : arms)
      if (needs_training(name, to)) todo.push_back(to);
    // all arms at once, the cores shared out (three 1-thread arms on 2 cores still beat 2 + 1)
    if (!todo.empty()) train_side_by_side(todo, std::max(1, cores / static_cast<int>(todo.size())));
  }
  timings["stage2"] = seconds_since(t);

  // 7. evaluation
  t = std::chrono::steady_clock::now();
  say("7/7 evaluation: MMEB-style, retrieval, SugarCrepe-style, NLI triplets; report");
  const std::string s1 = (out / "stage1").string();
  std::vector<Variant> variants = {
      {"stage0", "stage 0 (zero-shot, prompts)", {}},
      {"stage1", "+ stage 1 (distillation)", {s1}},
      {"stage2", "+ stage 2 (UniME: hard negatives)", {s1, (out / "stage2").string()}},
      {"ablation-infonce", "stage 2 with in-batch InfoNCE (no hard negatives)", {s1, (out / "ablation-infonce").string()}},
      {"ablation-nofilter", "stage 2 without the false-negative filter", {s1, (out / "ablation-nofilter").string()}}};
  if (!p.ablation_nofilter) variants.pop_back();
  json results = json::object();
  {
    // the variants side by side on 1-thread workers (inference only: no RNG, no autograd), as
    // stage 2's arms: this tiny model does not keep 2 threads busy
    const int workers = std::max(1, std::min(cores, static_cast<int>(variants.size())));
    const int per = std::max(1, cores / workers);
    std::vector<json> got(variants.size());
    std::vector<std::string> errors(variants.size());
    std::atomic<size_t> next{0};
    std::vector<std::thread> pool;
    for (int w = 0; w < workers; ++w)
      pool.emplace_back([&] {
        for (size_t i; (i = next++) < variants.size();) {
          try {
            got[i] = evaluate(variants[i], base.string(), world, nli, per, p.dtype);
          } catch (const std::exception& e) {
            errors[i] = e.what();
          }
        }
      });
    for (auto& th : pool) th.join();
    for (size_t i = 0; i < variants.size(); ++i) {
      if (!errors[i].empty()) throw Error(str("evaluating ", variants[i].key, ": ", errors[i]));
      results[variants[i].key] = std::move(got[i]);
    }
  }
  timings["eval"] = seconds_since(t);
  timings["total"] = seconds_since(t_all);

  json report{{"format", "unime-demo/1"}, {"seed", o.seed}, {"quick", o.quick},
              {"stage0", pre}, {"teacher", {{"nli_accuracy", teacher_nli}, {"t2t_R@1", teacher_t2t},
                                            {"dim", p.teacher_dim}}},
              {"results", results}, {"timings", timings}};
  // the claims the method should show
  auto mm = [&](const char* v, const char* k) { return results[v]["mmeb_means"].value(k, 0.0); };
  json claims = json::array();
  for (const char* task : {"classification", "vqa", "retrieval", "grounding"})
    claims.push_back({{"claim", str("stage 2 beats stage 0 on ", task)},
                      {"holds", mm("stage2", task) > mm("stage0", task)},
                      {"values", {mm("stage0", task), mm("stage2", task)}}});
  for (const char* sub : {"Replace", "Swap"}) {
    const double a = results["stage2"]["sugarcrepe"].value(sub, 0.0);
    const double b = results["ablation-infonce"]["sugarcrepe"].value(sub, 0.0);
    claims.push_back({{"claim", str("hard negatives beat in-batch InfoNCE on SugarCrepe ", sub)},
                      {"holds", a > b}, {"values", {b, a}}});
  }
  {
    const double a = results["stage1"]["retrieval"].value("t2t_R@1", 0.0);
    const double b = results["stage0"]["retrieval"].value("t2t_R@1", 0.0);
    claims.push_back({{"claim", "stage 1 improves text-to-text retrieval over stage 0"},
                      {"holds", a > b}, {"values", {b, a}}});
    const double tn = teacher_nli, sn = results["stage0"].value("nli_accuracy", 0.0);
    const double tt = teacher_t2t, st = results["stage0"]["retrieval"].value("t2t_R@1", 0.0);
    claims.push_back({{"claim", "the teacher is more discriminative than stage 0 (NLI triplets and t2t)"},
                      {"holds", tn > sn && tt > st}, {"values", {sn, tn, st, tt}}});
  }
  report["claims"] = claims;
  write_report(out.string(), report);
  int failed = 0;
  for (auto& c : claims) {
    const bool ok = c["holds"].get<bool>();
    failed += !ok;
    std::printf("%s %s %s\n", ok ? "[holds]" : "[FAILS]", c["claim"].get<std::string>().c_str(),
                c["values"].dump().c_str());
  }
  std::printf("demo: report in %s/report.md (and .html, .json); %.0f s in all\n", out.c_str(),
              timings["total"].get<double>());
  return failed;
}

}  // namespace unime::demo
