// `unime train distill|instruct`: UniME's two training stages with LoRA (src/train/trainer.h).
//   unime train distill  --model DIR --data NLI.jsonl --teacher T.npy --output OUT [loop options]
//   unime train instruct --model DIR --data TRAIN.jsonl [--image-root DIR] --output OUT [loop options]
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "common.h"
#include "core/subprocess.h"
#include "train/trainer.h"

namespace {

void add_loop_options(CLI::App* cmd, unime::train::TrainOptions& o) {
  cmd->add_option("--model", o.model, "base model folder (Hugging Face layout)")->required();
  cmd->add_option("--data", o.data, "training data (JSONL)")->required();
  cmd->add_option("--output", o.output, "output folder (adapter, metrics, checkpoints)")->required();
  cmd->add_option("--lora", o.lora_in, "adapter folded into the base before training (repeatable, in order)");
  cmd->add_option("--steps", o.steps, "optimizer steps (0 = one pass over the data)")->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "global batch size")->capture_default_str();
  cmd->add_option("--gc-chunk-size", o.gc_chunk_size, "GradCache chunk size for both sides (0 = off)")->capture_default_str();
  cmd->add_option("--gc-chunk-size-query", o.gc_chunk_size_query, "GradCache chunk size, query side");
  cmd->add_option("--gc-chunk-size-candidate", o.gc_chunk_size_candidate, "GradCache chunk size, candidate side");
  cmd->add_option("--temperature", o.temperature, "softmax temperature tau")->capture_default_str();
  cmd->add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--optimizer", o.optimizer, "adamw | sgd")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--schedule", o.schedule, "linear | cosine | constant")->capture_default_str();
  cmd->add_option("--warmup-steps", o.warmup_steps, "linear warm-up steps")->capture_default_str();
  cmd->add_option("--max-grad-norm", o.max_grad_norm, "gradient clipping (0 = off)")->capture_default_str();
  cmd->add_option("--lora-r", o.lora.r, "LoRA rank")->capture_default_str();
  cmd->add_option("--lora-alpha", o.lora.alpha, "LoRA alpha")->capture_default_str();
  cmd->add_option("--lora-dropout", o.lora.dropout, "LoRA dropout")->capture_default_str();
  cmd->add_option("--lora-targets", o.lora.target_modules, "decoder modules to adapt (PEFT names)");
  cmd->add_flag("--qlora", o.lora.qlora, "store the base linear weights as NF4 (QLoRA)");
  cmd->add_flag("--lora-vision", o.lora.include_vision,
                "also adapt the vision tower and projector (q/k/v/out_proj, fc1/fc2, linear_1/2)");
  cmd->add_option("--save-every", o.save_every, "checkpoint every N steps (0 = at the end)")->capture_default_str();
  cmd->add_flag("--resume", o.resume, "continue from the latest checkpoint in OUT/checkpoints");
  cmd->add_option("--seed", o.seed, "random seed")->capture_default_str();
  cmd->add_option("--threads", o.threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--dtype", o.dtype, "f32 | bf16 (base weights and activations)")->capture_default_str();
  cmd->add_option("--template", o.prompt_template, "prompt template name or JSON file");
  cmd->add_flag("--quiet", o.quiet, "no progress bar");
}

// A free loopback TCP port for the rendezvous (bound, read back, released).
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw unime::Error("--nproc: cannot find a free loopback port");
  close(fd);
  return ntohs(a.sin_port);
}

// `--nproc N` (torchrun-style, on this machine): re-runs this very command line N times with
// RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set and the cores split between the ranks, and
// waits for all. A failing rank stops the others. Returns true when it launched (parent side).
bool launch_ranks(int nproc, int threads) {
  if (nproc <= 1 || std::getenv("WORLD_SIZE") != nullptr) return false;
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string raw = ss.str();
  std::vector<std::string> args;
  for (size_t b = 0, e; b < raw.size(); b = e + 1) {
    e = raw.find('\0', b);
    if (e == std::string::npos) e = raw.size();
    args.push_back(raw.substr(b, e - b));
  }
  const int port = free_port();
  int per_rank = threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / nproc);
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    const std::string np = std::to_string(nproc), pr = std::to_string(per_rank);
    const pid_t pid = unime::spawn_self(args, {{"RANK", std::to_string(r)}, {"WORLD_SIZE", np},
                                               {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", std::to_string(port)},
                                               {"UNIME_RANK_THREADS", pr}, {"OPENBLAS_NUM_THREADS", pr}});
    pids.push_back(pid);
  }
  int failed = 0;
  for (size_t done = 0; done < pids.size(); ++done) {
    int st = 0;
    pid_t p = wait(&st);
    const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok && !failed) {
      failed = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      for (pid_t q : pids)
        if (q != p) kill(q, SIGTERM);
    }
  }
  if (failed) throw unime::Error(unime::str("train: a rank failed (exit ", failed, "); see its message above"));
  return true;
}

void run(unime::train::TrainOptions& o, int nproc) {
  UNIME_CHECK(nproc >= 1, "--nproc must be >= 1");
  if (launch_ranks(nproc, o.threads)) return;
  if (const char* t = std::getenv("UNIME_RANK_THREADS")) o.threads = std::atoi(t);
  unime::train::run_training(o);
}

}  // namespace

void register_train(CLI::App& app) {
  auto* train = app.add_subcommand("train", "UniME training: stage 1 distill, stage 2 instruct");
  train->require_subcommand(1);

  auto nproc = std::make_shared<int>(1);
  auto d = std::make_shared<unime::train::TrainOptions>();
  auto* distill = train->add_subcommand("distill", "stage 1: textual discriminative knowledge distillation");
  add_loop_options(distill, *d);
  distill->add_option("--teacher", d->teacher, "teacher embeddings .npy [N, Dt], row i = i-th sentence")->required();
  distill->add_option("--kl-direction", d->kl_direction, "teacher-student | student-teacher")->capture_default_str();
  distill->add_flag("--group-rows", d->group_rows,
                    "keep each NLI row's sentences (sent0, sent1, hard_neg) in one batch, rows shuffled as "
                    "units (as SimCSE and E5-V batch NLI), so the in-batch similarities include each "
                    "sentence's hard negative");
  distill->add_option("--nproc", *nproc, "data parallel processes on this machine (torchrun-style env also works)");
  distill->callback([d, nproc]() {
    d->stage = "distill";
    run(*d, *nproc);
  });

  auto s = std::make_shared<unime::train::TrainOptions>();
  auto s_margin = std::make_shared<std::string>("0.1");
  auto* instruct = train->add_subcommand("instruct", "stage 2: hard-negative enhanced instruction tuning");
  add_loop_options(instruct, *s);
  instruct->add_option("--image-root", s->image_root, "folder image paths resolve against (default: the data's folder)");
  instruct->add_option("--hard-negatives", s->hard_negatives, "k hardest negatives per query (0 = all: in-batch InfoNCE)")->capture_default_str();
  instruct->add_option("--fn-margin", *s_margin, "false-negative filter margin beta, or 'none'")->capture_default_str();
  instruct->add_option("--interleave-batch-size", s->interleave_batch_size,
                       "batches made of runs of this many rows from one source (the rows' 'dataset' field; "
                       "VLM2Vec's interleave_batch_size); 0 = rows sampled at random")
      ->capture_default_str();
  instruct->add_option("--nproc", *nproc, "data parallel processes on this machine (torchrun-style env also works)");
  instruct->callback([s, s_margin, nproc]() {
    s->stage = "instruct";
    if (*s_margin == "none") {
      s->fn_margin = std::nullopt;
    } else {
      try {
        size_t used = 0;
        s->fn_margin = std::stod(*s_margin, &used);
        UNIME_CHECK(used == s_margin->size(), "");
      } catch (...) {
        throw unime::Error(unime::str("--fn-margin: expected a number or 'none', got '", *s_margin, "'"));
      }
    }
    run(*s, *nproc);
  });
}
