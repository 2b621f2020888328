// The UniME training loop; see trainer.h. References: UniME / VLM2Vec training scripts (HF Trainer
// semantics: AdamW betas (0.9, 0.999), eps 1e-8, linear schedule with warm-up, grad-norm clipping).
// Legend: N global batch, M candidates (N positives + explicit negatives), D embedding dim.
#include "train/trainer.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/progress.h"
#include "embed/encoder.h"
#include "io/fs.h"
#include "io/jsonl.h"
#include "io/npy.h"
#include "report/plot.h"
#include "report/train-plots.h"
#include "train/distributed.h"
#include "train/grad-cache.h"
#include "train/loss-contrastive.h"
#include "train/loss-distill.h"
#include "train/lora.h"
#include "unime/runtime.h"

namespace unime::train {

namespace fs = std::filesystem;
using nlohmann::json;

double schedule_lr(const std::string& schedule, double lr, int64_t s, int64_t total, int64_t warmup) {
  // HF get_{linear,cosine}_schedule_with_warmup: optimizer step s (1-based) uses lambda(s - 1)
  UNIME_CHECK(schedule == "linear" || schedule == "cosine" || schedule == "constant",
              "the learning-rate schedule must be linear, cosine or constant, got '", schedule, "'");
  const double cur = static_cast<double>(s - 1);
  if (cur < static_cast<double>(warmup)) return lr * cur / static_cast<double>(std::max<int64_t>(1, warmup));
  if (schedule == "constant") return lr;
  const double span = static_cast<double>(std::max<int64_t>(1, total - warmup));
  if (schedule == "cosine") {
    const double progress = (cur - static_cast<double>(warmup)) / span;
    return lr * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  }
  return lr * std::max(0.0, (static_cast<double>(total) - cur) / span);
}

namespace {

// ---- data ----------------------------------------------------------------------------------------

struct Pair {  // one MMEB-train row
  EmbedInput qry, pos;
  std::optional<EmbedInput> neg;
  std::string source;  ///< the row's "dataset" field ("" when absent)
};

std::string resolve(const fs::path& root, const std::string& p) {
  if (p.empty()) return p;
  return fs::path(p).is_absolute() ? p : (root / p).string();
}

std::vector<Pair> read_pairs(const std::string& path, const std::string& image_root) {
  const fs::path root = image_root.empty() ? fs::path(path).parent_path() : fs::path(image_root);
  std::vector<Pair> rows;
  io::read_jsonl(path, [&](int64_t line, const json& r) {
    const std::string where = str(path, ":", line);
    auto side = [&](const char* text_key, const char* image_key) {
      EmbedInput in;
      in.where = where;
      in.text = io::json_string(r, text_key, where);
      const std::string img = io::json_string(r, image_key, where);
      if (!img.empty()) in.images.push_back(resolve(root, img));
      return in;
    };
    Pair p{side("qry", "qry_image_path"), side("pos_text", "pos_image_path"), std::nullopt,
           io::json_string(r, "dataset", where)};
    UNIME_CHECK(!p.qry.text.empty() || !p.qry.images.empty(), where, ": empty query (qry and qry_image_path)");
    UNIME_CHECK(!p.pos.text.empty() || !p.pos.images.empty(), where, ": empty positive (pos_text and pos_image_path)");
    EmbedInput neg = side("neg_text", "neg_image_path");
    if (!neg.text.empty() || !neg.images.empty()) p.neg = neg;
    rows.push_back(std::move(p));
  });
  UNIME_CHECK(!rows.empty(), path, ": no training rows");
  return rows;
}

// stage 1: every sentence of the file in order (a "text" row, or NLI sent0, sent1, hard_neg);
// row_of[i] = the index of sentence i's row
std::vector<EmbedInput> read_sentences(const std::string& path, std::vector<int64_t>& row_of) {
  std::vector<EmbedInput> out;
  int64_t row = 0;
  io::read_jsonl(path, [&](int64_t line, const json& r) {
    const std::string where = str(path, ":", line);
    bool any = false;
    for (const char* key : {"text", "sent0", "sent1", "hard_neg"}) {
      std::string s = io::json_string(r, key, where);
      if (s.empty()) continue;
      EmbedInput in;
      in.where = where;
      in.text = s;
      out.push_back(std::move(in));
      row_of.push_back(row);
      any = true;
    }
    ++row;
    UNIME_CHECK(any, where, ": no sentence (expected 'text', or 'sent0'/'sent1'/'hard_neg')");
  });
  UNIME_CHECK(!out.empty(), path, ": no sentences");
  return out;
}

// Fisher-Yates with mt19937_64 (std::shuffle's algorithm is implementation-defined)
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch) + 1);
  for (int64_t i = n - 1; i > 0; --i) std::swap(v[i], v[static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1))]);
  return v;
}

}  // namespace

// Rows per epoch: all of them, or with runs of `chunk` each source's rows down to whole runs.
static int64_t epoch_length(const std::vector<int64_t>& source, int64_t chunk) {
  if (chunk <= 0) return static_cast<int64_t>(source.size());  // shuffled rows or whole groups
  std::map<int64_t, int64_t> count;
  for (int64_t s : source) ++count[s];
  int64_t n = 0;
  for (const auto& [s, c] : count) n += c / chunk * chunk;
  return n;
}

// One epoch's row order. chunk == 0: a shuffle of all rows. chunk > 0 (VLM2Vec's
// interleave_batch_size): each source's rows shuffled and cut into runs of `chunk` (a source's
// incomplete last run is dropped), then the runs shuffled, so every run of `chunk` rows in the
// order - and so every batch, made of whole runs - holds rows of one source only.
// chunk == kWholeGroups: each source's rows stay together in file order (an NLI row's sent0,
// sent1, hard_neg) and the groups are shuffled; a batch boundary may cut a group.
static std::vector<int64_t> epoch_rows(const std::vector<int64_t>& source, int64_t chunk, uint64_t seed, int64_t epoch) {
  const auto n = static_cast<int64_t>(source.size());
  if (chunk == 0) return epoch_order(n, seed, epoch);
  std::vector<std::vector<int64_t>> by_source;
  for (int64_t i = 0; i < n; ++i) {
    if (source[i] >= static_cast<int64_t>(by_source.size())) by_source.resize(source[i] + 1);
    by_source[source[i]].push_back(i);
  }
  if (chunk == kWholeGroups) {
    std::vector<int64_t> out;
    out.reserve(n);
    for (int64_t g : epoch_order(static_cast<int64_t>(by_source.size()), seed, epoch))
      out.insert(out.end(), by_source[g].begin(), by_source[g].end());
    return out;
  }
  std::vector<std::vector<int64_t>> runs;
  for (size_t s = 0; s < by_source.size(); ++s) {
    const auto& rows = by_source[s];
    const auto m = static_cast<int64_t>(rows.size());
    const auto perm = epoch_order(m, seed + 7919 * (s + 1), epoch);
    for (int64_t r = 0; r + chunk <= m; r += chunk) {
      runs.emplace_back();
      for (int64_t k = r; k < r + chunk; ++k) runs.back().push_back(rows[perm[k]]);
    }
  }
  std::vector<int64_t> out;
  for (int64_t r : epoch_order(static_cast<int64_t>(runs.size()), seed, epoch))
    out.insert(out.end(), runs[r].begin(), runs[r].end());
  return out;
}

// rows [step*B, (step+1)*B) of the endless stream of epochs; incomplete tail batches are dropped
std::vector<int64_t> batch_rows(const std::vector<int64_t>& source, int64_t chunk, int64_t B, int64_t step0,
                                uint64_t seed) {
  UNIME_CHECK(chunk >= 0 || chunk == kWholeGroups, "batch_rows: bad chunk ", chunk);
  UNIME_CHECK(B > 0 && (chunk <= 0 || B % chunk == 0), "batch of ", B, " rows cannot be made of runs of ", chunk);
  const int64_t per_epoch = epoch_length(source, chunk) / B;
  UNIME_CHECK(per_epoch > 0, "fewer usable rows than one batch of ", B);
  const int64_t epoch = step0 / per_epoch, pos = (step0 % per_epoch) * B;
  auto order = epoch_rows(source, chunk, seed, epoch);
  return std::vector<int64_t>(order.begin() + pos, order.begin() + pos + B);
}

namespace {

// ---- checkpoints ---------------------------------------------------------------------------------

int64_t latest_checkpoint(const fs::path& dir) {
  int64_t best = -1;
  if (!fs::is_directory(dir)) return best;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) != 0 || n.find(".tmp") != std::string::npos) continue;
    if (!fs::exists(e.path() / "trainer_state.json")) continue;  // incomplete
    try {
      best = std::max<int64_t>(best, std::stoll(n.substr(5)));
    } catch (...) {
    }
  }
  return best;
}

}  // namespace

void run_training(const TrainOptions& o) {
  UNIME_CHECK(o.stage == "distill" || o.stage == "instruct", "train: unknown stage '", o.stage, "'");
  UNIME_CHECK(o.batch_size >= 2, "--batch-size must be at least 2, got ", o.batch_size);
  UNIME_CHECK(o.optimizer == "adamw" || o.optimizer == "sgd", "--optimizer must be adamw or sgd, got '", o.optimizer, "'");
  UNIME_CHECK(o.schedule == "linear" || o.schedule == "cosine" || o.schedule == "constant",
              "--schedule must be linear, cosine or constant, got '", o.schedule, "'");
  UNIME_CHECK(o.lr > 0 && std::isfinite(o.lr), "--lr must be positive");
  UNIME_CHECK(o.temperature > 0, "--temperature must be positive");
  UNIME_CHECK(o.hard_negatives >= 0, "--hard-negatives must be >= 0");
  const bool distill = o.stage == "distill";
  if (!distill && o.hard_negatives > 0)
    UNIME_CHECK(o.batch_size >= o.hard_negatives + 1, "--batch-size ", o.batch_size,
                " is too small for --hard-negatives ", o.hard_negatives, ": need at least k + 1 = ",
                o.hard_negatives + 1, " candidates per query");
  LoraConfig lcfg;
  lcfg.r = o.lora.r;
  lcfg.alpha = o.lora.alpha;
  lcfg.dropout = o.lora.dropout;
  lcfg.target_modules = o.lora.target_modules;
  lcfg.qlora = o.lora.qlora;
  lcfg.include_vision = o.lora.include_vision;
  lcfg.validate();
  set_threads(o.threads);
  auto dist = Distributed::from_env();
  const int64_t W = dist->world(), rank = dist->rank();
  const bool lead = rank == 0;  // rank 0 writes outputs
  UNIME_CHECK(o.batch_size % W == 0, "--batch-size ", o.batch_size, " must be divisible by the number of processes (", W, ")");
  const int64_t b_local = o.batch_size / W;
  const KlDirection kl_dir = parse_kl_direction(o.kl_direction);

  // data
  std::vector<Pair> pairs;
  std::vector<EmbedInput> sentences;
  std::vector<int64_t> sentence_row;  // stage 1: each sentence's JSONL row
  torch::Tensor teacher;  // [N, Dt], L2-normalised
  if (distill) {
    sentences = read_sentences(o.data, sentence_row);
    UNIME_CHECK(!o.teacher.empty(), "train distill: --teacher (teacher embeddings .npy) is required");
    auto t = io::read_npy_f32(o.teacher);
    UNIME_CHECK(t.shape.size() == 2, o.teacher, ": expected a 2-D array [N, D], got ", t.shape.size(), " dims");
    UNIME_CHECK(t.shape[0] == static_cast<int64_t>(sentences.size()), o.teacher, ": ", t.shape[0],
                " teacher rows but ", o.data, " has ", sentences.size(),
                " sentences (row i = the i-th sentence, NLI rows counting sent0, sent1, hard_neg)");
    teacher = torch::from_blob(t.data.data(), {t.shape[0], t.shape[1]}, torch::kFloat32).clone();
    teacher = torch::nn::functional::normalize(teacher, torch::nn::functional::NormalizeFuncOptions().dim(-1));
  } else {
    pairs = read_pairs(o.data, o.image_root);
  }
  const int64_t n_rows = distill ? static_cast<int64_t>(sentences.size()) : static_cast<int64_t>(pairs.size());
  UNIME_CHECK(n_rows >= o.batch_size, o.data, ": ", n_rows, " rows, fewer than --batch-size ", o.batch_size);
  // each row's source (stage 2 rows' "dataset" field), for --interleave-batch-size
  std::vector<int64_t> source(static_cast<size_t>(n_rows), 0);
  const int64_t chunk = distill ? (o.group_rows ? kWholeGroups : 0) : o.interleave_batch_size;
  if (chunk == kWholeGroups) source = sentence_row;
  if (chunk > 0) {
    UNIME_CHECK(o.batch_size % chunk == 0, "--interleave-batch-size ", chunk, " must divide --batch-size ",
                o.batch_size);
    std::map<std::string, int64_t> ids;
    for (int64_t i = 0; i < n_rows; ++i) source[i] = ids.emplace(pairs[i].source, ids.size()).first->second;
    UNIME_CHECK(epoch_length(source, chunk) >= o.batch_size, o.data, ": no source has --interleave-batch-size ", chunk,
                " rows for a batch of ", o.batch_size, " (", ids.size(), " sources by the rows' 'dataset' field)");
  }
  const int64_t total = o.steps > 0 ? o.steps : n_rows / o.batch_size;

  // model + adapters
  const fs::path out(o.output);
  fs::create_directories(out / "checkpoints");
  auto model = models::Model::load(o.model, models::parse_dtype(o.dtype));
  UNIME_CHECK(model->has_decoder(), o.model, ": training needs a model with a language model");
  for (const auto& dir : o.lora_in) merge_lora(*model, dir);
  int64_t start = 0;
  const int64_t resume_from = o.resume ? latest_checkpoint(out / "checkpoints") : -1;
  LoraSet lora;
  if (resume_from > 0) {
    freeze(*model);
    if (lcfg.qlora) quantize_nf4(*model, lcfg.include_vision, lcfg.double_quant);
    lora = load_lora(*model, (out / "checkpoints" / str("step-", resume_from)).string(), /*trainable=*/true);
    start = resume_from;
  } else {
    lora = apply_lora(*model, lcfg, o.seed);
  }
  for (auto& [prefix, m] : model->modules()) m->train();
  embed::Encoder enc(model, o.model, o.prompt_template, o.truncate, 8192LL * 8192, torch::kCPU);
  std::vector<torch::Tensor> params = lora.parameters();
  std::unique_ptr<torch::optim::Optimizer> optim;
  if (o.optimizer == "adamw")
    optim = std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(o.lr).betas({0.9, 0.999}).eps(1e-8).weight_decay(o.weight_decay));
  else
    optim = std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(o.lr));
  if (resume_from > 0) torch::load(*optim, (out / "checkpoints" / str("step-", resume_from) / "optimizer.pt").string());

  // metrics.jsonl: keep the lines up to the resumed step
  std::vector<std::string> kept;
  if (resume_from > 0 && fs::exists(out / "metrics.jsonl")) {
    std::ifstream in(out / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      try {
        if (json::parse(line).value("step", int64_t{0}) <= resume_from) kept.push_back(line);
      } catch (...) {
      }
    }
  }
  if (lead) {
    std::ofstream m(out / "metrics.jsonl", std::ios::trunc);
    for (auto& l : kept) m << l << "\n";
  }
  std::ofstream metrics;
  if (lead) metrics.open(out / "metrics.jsonl", std::ios::app);

  const int64_t chunk_q = o.gc_chunk_size_query >= 0 ? o.gc_chunk_size_query : o.gc_chunk_size;
  const int64_t chunk_c = o.gc_chunk_size_candidate >= 0 ? o.gc_chunk_size_candidate : o.gc_chunk_size;
  const std::optional<double> margin = o.fn_margin;
  ProgressBar bar(str("train ", o.stage), total, "steps");
  auto t0 = std::chrono::steady_clock::now();
  int64_t samples = 0;

  // OUT/plots/{loss,similarity,filter}.png from metrics.jsonl at every checkpoint and at the end;
  // a plot that cannot be written warns and never costs the run (the backend is checked up front)
  if (lead) plot::check_backend((out / "plots" / "loss.png").string());
  auto draw_plots = [&] {
    try {
      metrics.flush();
      plot::write_training_plots((out / "metrics.jsonl").string(), (out / "plots").string());
    } catch (const Error& e) {
      std::fprintf(stderr, "warning: training plots not written: %s\n", e.what());
    }
  };
  auto save = [&](const fs::path& dir, int64_t step) {
    // a checkpoint appears whole or not at all: written to step-N.tmp, then renamed
    const fs::path tmp = dir.string() + ".tmp";
    fs::remove_all(tmp);
    lora.save(tmp.string(), o.model);
    torch::save(*optim, (tmp / "optimizer.pt").string());
    json st{{"step", step}, {"total_steps", total}, {"seed", o.seed}, {"batch_size", o.batch_size},
            {"stage", o.stage}, {"data", o.data}, {"rows", n_rows}, {"interleave_batch_size", chunk},
            {"rng", "dropout seeded from (seed, step); data order from (seed, epoch)"}};
    io::write_file_atomic((tmp / "trainer_state.json").string(), st.dump(2) + "\n");
    fs::remove_all(dir);
    fs::rename(tmp, dir);
    draw_plots();
  };

  for (int64_t step = start + 1; step <= total; ++step) {
    const double lr = schedule_lr(o.schedule, o.lr, step, total, o.warmup_steps);
    for (auto& g : optim->param_groups()) {
      if (o.optimizer == "adamw") static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
      else static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
    }
    // dropout masks: from (seed, step, rank), so a resumed run draws what an uninterrupted one did
    torch::manual_seed(o.seed * 1000003ULL + static_cast<uint64_t>(step) * 1009ULL + static_cast<uint64_t>(rank));
    const auto rows = batch_rows(source, chunk, o.batch_size, step - 1, o.seed);  // the global batch
    const std::vector<int64_t> mine(rows.begin() + rank * b_local, rows.begin() + (rank + 1) * b_local);
    optim->zero_grad();
    GradCacheResult res;
    HardNegStats stats;
    if (distill) {
      std::vector<const EmbedInput*> in;
      for (int64_t r : mine) in.push_back(&sentences[r]);
      auto t = teacher.index_select(0, torch::tensor(rows, torch::kInt64));  // global rows
      GradCacheSide side{static_cast<int64_t>(in.size()), chunk_q, [&](int64_t b, int64_t e) {
                           return enc.forward({in.begin() + b, in.begin() + e});
                         }};
      res = grad_cache_step({side}, [&](const std::vector<torch::Tensor>& reps) {
        // the loss sees the global batch; x W as UniME's reference, undone by gradient averaging
        return static_cast<double>(W) * loss_distill(dist->all_gather_rows(reps[0]), t, o.temperature, kl_dir);
      });
    } else {
      std::vector<const EmbedInput*> q, c;
      for (int64_t r : mine) {
        q.push_back(&pairs[r].qry);
        c.push_back(&pairs[r].pos);
      }
      int64_t negs_global = 0;
      for (int64_t r : rows) negs_global += pairs[r].neg ? 1 : 0;
      UNIME_CHECK(W == 1 || negs_global == 0 || negs_global == o.batch_size, o.data,
                  ": with several processes, explicit negatives (neg_text/neg_image_path) must be in "
                  "every row of a batch or in none (step ", step, " has ", negs_global, " of ", o.batch_size, ")");
      for (int64_t r : mine)
        if (pairs[r].neg) c.push_back(&*pairs[r].neg);
      GradCacheSide qs{static_cast<int64_t>(q.size()), chunk_q, [&](int64_t b, int64_t e) {
                         return enc.forward({q.begin() + b, q.begin() + e});
                       }};
      GradCacheSide cs{static_cast<int64_t>(c.size()), chunk_c, [&](int64_t b, int64_t e) {
                         return enc.forward({c.begin() + b, c.begin() + e});
                       }};
      res = grad_cache_step({qs, cs}, [&](const std::vector<torch::Tensor>& reps) {
        // global candidates in one process's order: [all positives; all explicit negatives]
        auto qg = dist->all_gather_rows(reps[0]);
        auto cg = dist->all_gather_rows(reps[1].narrow(0, 0, b_local));
        if (reps[1].size(0) > b_local)
          cg = torch::cat({cg, dist->all_gather_rows(reps[1].narrow(0, b_local, reps[1].size(0) - b_local))});
        return static_cast<double>(W) *
               loss_hard_negative(qg, cg, o.temperature, o.hard_negatives, margin, &stats);
      });
    }
    dist->average_gradients(params);
    const double loss = res.loss.item<double>() / static_cast<double>(W);
    if (!std::isfinite(loss)) {
      std::string ids;
      for (int64_t r : rows) ids += (ids.empty() ? "" : ",") + std::to_string(r);
      throw Error(str("train ", o.stage, ": loss is ", loss, " at step ", step, "; batch rows (0-based) [", ids,
                      "]; try a lower --lr or check those rows"));
    }
    double grad_norm = 0;
    if (o.max_grad_norm > 0) grad_norm = torch::nn::utils::clip_grad_norm_(params, o.max_grad_norm);
    optim->step();
    samples += o.batch_size;  // global
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json m{{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
           {"samples_per_s", samples / std::max(1e-9, el)}, {"elapsed_s", el}};
    if (!distill) {
      m["fn_removed_per_row"] = stats.removed_per_row;
      m["mean_pos_sim"] = stats.mean_pos_sim;
      m["mean_neg_sim"] = stats.mean_neg_sim;
    } else {
      auto s = res.reps[0];
      auto sim = s.matmul(s.t());
      const int64_t n = sim.size(0);
      m["mean_offdiag_sim"] = ((sim.sum() - sim.diagonal().sum()) / std::max<int64_t>(1, n * (n - 1))).item<double>();
    }
    if (lead) {
      metrics << m.dump() << "\n";
      metrics.flush();
    }
    if (lead && !o.quiet)
      bar.update(step, str("loss ", loss, " lr ", lr, " ", static_cast<int64_t>(samples / std::max(1e-9, el) * 100) / 100.0,
                           " samples/s"));
    if (lead && o.save_every > 0 && step % o.save_every == 0) save(out / "checkpoints" / str("step-", step), step);
  }
  if (lead && !o.quiet) bar.finish();
  if (lead && (o.save_every <= 0 || total % o.save_every != 0)) save(out / "checkpoints" / str("step-", total), total);
  if (lead) lora.save(out.string(), o.model);
  dist->barrier();
}

}  // namespace unime::train
