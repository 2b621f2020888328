// bench-gradcache: one UniME stage-2 step (LoRA r16 on q,k,v,o,gate,up,down; hard-negative
// InfoNCE, k 8, beta 0.1, tau 0.02; AdamW), with and without GradCache, at several global batch
// sizes: samples/s and the process's peak resident memory.
// Each (batch, chunk) configuration runs in a fresh process (this program re-executes itself with
// --child), so the peak RSS (VmHWM) belongs to that configuration alone. "step peak" is VmHWM
// minus VmRSS just before the first step: the memory the step itself adds (activations, the
// autograd graph, gradients, optimizer state) over the loaded model.
// Model: a random Qwen2 decoder written here (hidden 256, MLP 1024, 4 layers, 4 heads / 2 KV
// heads, vocabulary 4096), inputs of --tokens random token ids per query and per candidate
// (each row: query + positive; no images), f32 on the CPU.
// Usage: bench-gradcache [--threads N] [--tokens T] [--steps S] [--batches 32,64,...]
//                        [--plain-max B] [--chunk C] [--keep DIR]
// --plain-max: the largest batch run without GradCache (its memory grows with the batch).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "embed/encoder.h"
#include "models/model.h"
#include "train/grad-cache.h"
#include "train/loss-contrastive.h"
#include "train/lora.h"
#include "unime/embedder.h"
#include "unime/random-model.h"
#include "unime/runtime.h"

namespace fs = std::filesystem;
using clk = std::chrono::steady_clock;

static const char* kConfig = R"({
  "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 256,
  "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
  "num_key_value_heads": 2, "vocab_size": 4096, "max_position_embeddings": 1024,
  "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true, "torch_dtype": "float32"
})";

// "VmRSS" / "VmHWM" from /proc/self/status, in MiB
static double proc_status_mib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::strlen(key) + 1)) / 1024.0;
  return -1;
}

// One configuration in this (fresh) process; prints "RESULT samples_per_s rss_before hwm".
static int run_child(const std::string& model_dir, int64_t B, int64_t chunk, int64_t T, int steps) {
  using namespace unime;
  auto model = models::Model::load(model_dir, torch::kFloat32);
  train::LoraConfig lc;  // r 16, alpha 64, dropout 0.1, the 7 decoder projections
  auto lora = train::apply_lora(*model, lc, /*seed=*/1);
  for (auto& [prefix, m] : model->modules()) m->train();
  embed::Encoder enc(model, model_dir, "", /*truncate=*/true, 8192LL * 8192, torch::kCPU);
  torch::optim::AdamW optim(lora.parameters(), torch::optim::AdamWOptions(1e-4));

  std::mt19937 rng(7);
  auto rows = [&](int64_t n) {
    std::vector<EmbedInput> v(n);
    for (auto& in : v) {
      std::vector<int64_t> ids(T);
      for (auto& x : ids) x = 10 + rng() % 4000;
      in.input_ids = ids;
    }
    return v;
  };
  const auto q = rows(B), c = rows(B);
  std::vector<const EmbedInput*> qp, cp;
  for (auto& x : q) qp.push_back(&x);
  for (auto& x : c) cp.push_back(&x);
  const double rss_before = proc_status_mib("VmRSS:");

  double timed = 0;
  for (int s = 0; s < steps; ++s) {
    const auto t0 = clk::now();
    optim.zero_grad();
    train::GradCacheSide qs{B, chunk, [&](int64_t b, int64_t e) { return enc.forward({qp.begin() + b, qp.begin() + e}); }};
    train::GradCacheSide cs{B, chunk, [&](int64_t b, int64_t e) { return enc.forward({cp.begin() + b, cp.begin() + e}); }};
    train::HardNegStats st;
    auto r = train::grad_cache_step({qs, cs}, [&](const std::vector<torch::Tensor>& reps) {
      return train::loss_hard_negative(reps[0], reps[1], /*tau=*/0.02, /*k=*/8, /*fn_margin=*/0.1, &st);
    });
    optim.step();
    if (s > 0) timed += std::chrono::duration<double>(clk::now() - t0).count();  // step 1 warms up
  }
  std::printf("RESULT %.3f %.1f %.1f\n", static_cast<double>(B) * (steps - 1) / timed, rss_before,
              proc_status_mib("VmHWM:"));
  return 0;
}

static std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ',')) v.push_back(std::stoll(x));
  return v;
}

int main(int argc, char** argv) {
  unime::early_init(argc, argv);  // OpenBLAS kernel (children inherit the environment)
  int threads = 2, steps = 3;
  int64_t T = 32, plain_max = 256, chunk = 8;
  std::string batches = "32,64,128,256,512", keep, model_dir;
  int64_t child_B = -1, child_chunk = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", a.c_str());
        std::exit(1);
      }
      return argv[++i];
    };
    if (a == "--threads") threads = std::stoi(next());
    else if (a == "--tokens") T = std::stoll(next());
    else if (a == "--steps") steps = std::max(2, std::stoi(next()));
    else if (a == "--batches") batches = next();
    else if (a == "--plain-max") plain_max = std::stoll(next());
    else if (a == "--chunk") chunk = std::stoll(next());
    else if (a == "--keep") keep = next();
    else if (a == "--child") {  // internal: --child MODEL_DIR B CHUNK
      model_dir = next();
      child_B = std::stoll(next());
      child_chunk = std::stoll(next());
    } else {
      std::fprintf(stderr, "usage: bench-gradcache [--threads N] [--tokens T] [--steps S] [--batches 32,64,...] "
                           "[--plain-max B] [--chunk C] [--keep DIR]\n");
      return 1;
    }
  }
  unime::set_threads(threads);
  if (child_B > 0) return run_child(model_dir, child_B, child_chunk, T, steps);

  const fs::path dir = keep.empty() ? fs::temp_directory_path() / "unime-bench-gradcache" : fs::path(keep);
  const std::string mdir = (dir / "qwen2-d256-l4").string();
  fs::create_directories(dir);
  if (!fs::exists(fs::path(mdir) / "model.safetensors")) {
    std::ofstream(dir / "config.json") << kConfig;
    unime::write_random_model((dir / "config.json").string(), mdir, "f32", 1);
  }
  std::string cpu = "?";
  {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("model name", 0) == 0) {
        cpu = line.substr(line.find(':') + 2);
        break;
      }
  }
  std::printf("machine: %s, %d threads (of %ld online CPUs), f32\n", cpu.c_str(), threads, sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("model: random Qwen2 decoder, hidden 256, MLP 1024, 4 layers, vocab 4096; LoRA r16 on 7 projections\n");
  std::printf("step: %lld query + %lld candidate tokens per row, hard negatives k 8, mean of steps 2..%d\n\n",
              static_cast<long long>(T), static_cast<long long>(T), steps);
  std::printf("%-6s %-10s %11s %14s %14s %14s\n", "batch", "GradCache", "samples/s", "peak RSS MiB",
              "before MiB", "step peak MiB");
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  for (int64_t B : parse_list(batches)) {
    for (int64_t ch : {int64_t{0}, chunk}) {
      if (ch == 0 && B > plain_max) {
        std::printf("%-6lld %-10s %11s   (skipped: above --plain-max %lld)\n", static_cast<long long>(B), "off", "-",
                    static_cast<long long>(plain_max));
        continue;
      }
      const std::string cmd = self + " --child " + mdir + " " + std::to_string(B) + " " + std::to_string(ch) +
                              " --threads " + std::to_string(threads) + " --tokens " + std::to_string(T) +
                              " --steps " + std::to_string(steps) + " 2>&1";
      FILE* p = popen(cmd.c_str(), "r");
      std::string out;
      char buf[4096];
      size_t n;
      while (p && (n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
      const int st = p ? pclose(p) : -1;
      double sps = 0, before = 0, hwm = 0;
      const auto at = out.find("RESULT ");
      if (st != 0 || at == std::string::npos ||
          std::sscanf(out.c_str() + at, "RESULT %lf %lf %lf", &sps, &before, &hwm) != 3) {
        std::printf("%-6lld %-10s failed (status %d): %s\n", static_cast<long long>(B),
                    ch ? ("chunk " + std::to_string(ch)).c_str() : "off", st, out.substr(0, 300).c_str());
        continue;
      }
      std::printf("%-6lld %-10s %11.1f %14.0f %14.0f %14.0f\n", static_cast<long long>(B),
                  ch ? ("chunk " + std::to_string(ch)).c_str() : "off", sps, hwm, before, hwm - before);
    }
  }
  return 0;
}
