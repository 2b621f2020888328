// bench-embed: embedding throughput at the Qwen2-0.5B decoder shape (random weights, real config)
// against this machine's own measured matmul peak, on the workloads of PERFORMANCE.md:
//   A. 64 x 128 tokens, batch 16            (f32 and bf16)
//   B. 64 sequences of 16-256 tokens, batch 16, given unsorted (the embedder sorts by length)
//   C. 32 x (one 224-px image + 20 text tokens), batch 8, LLaVA with a CLIP ViT-B/16 tower
// Useful FLOPs count real tokens only: 2 * 357,826,560 * T + 24 * 4 * T^2 * 896 per sequence
// (decoder matmuls + attention; no vocabulary head), plus the vision tower for C.
// Usage: bench-embed [--quick] [--threads N] [--keep DIR]   (median of 3 after a warm-up)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "unime/embedder.h"
#include "unime/random-model.h"
#include "unime/runtime.h"

namespace fs = std::filesystem;
using clk = std::chrono::steady_clock;

static double secs(clk::time_point a) { return std::chrono::duration<double>(clk::now() - a).count(); }

// best GFLOP/s of one [m, k] x [k, n] matmul shape (3 warm-ups, best of 5)
static double matmul_rate(torch::ScalarType dt, int64_t m, int64_t k, int64_t n) {
  auto a = torch::randn({m, k}).to(dt), w = torch::randn({n, k}).to(dt);
  for (int i = 0; i < 3; ++i) torch::nn::functional::linear(a, w);
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    auto t = clk::now();
    auto c = torch::nn::functional::linear(a, w);
    best = std::min(best, secs(t));
  }
  return 2.0 * m * k * n / best / 1e9;
}

// The machine's matmul peak: the best of square 2048 / 4096 and the model's own MLP shape
// (2048 x 896 x 4864), which runs faster than square shapes on AMX (PERFORMANCE.md).
static double matmul_peak(torch::ScalarType dt) {
  return std::max({matmul_rate(dt, 2048, 2048, 2048), matmul_rate(dt, 4096, 4096, 4096),
                   matmul_rate(dt, 2048, 896, 4864)});
}

static double decoder_flops(int64_t T) { return 2.0 * 357826560.0 * T + 24.0 * 4 * T * T * 896; }
// CLIP ViT-B/16-224 up to layer -2 (11 of 12 layers) on 197 tokens, + projector 768->896->896
static double vision_flops() {
  const double L = 197, D = 768, layers = 11;
  const double per_layer = 2 * L * (4 * D * D + 2 * D * 3072) + 2 * 2 * L * L * D;
  return layers * per_layer + 2.0 * 196 * 16 * 16 * 3 * D + 2.0 * 196 * (768 * 896 + 896 * 896);
}

struct Result { double tok_s, gflops; };

static Result run(unime::Embedder& e, const std::vector<unime::EmbedInput>& in, double flops,
                  int64_t tokens, int reps) {
  e.embed(std::vector<unime::EmbedInput>(in.begin(), in.begin() + std::min<size_t>(in.size(), 8)));
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto s = clk::now();
    e.embed(in);
    t.push_back(secs(s));
  }
  std::sort(t.begin(), t.end());
  const double med = t[t.size() / 2];
  return {tokens / med, flops / med / 1e9};
}

int main(int argc, char** argv) {
  unime::early_init(argc, argv);
  bool quick = false;
  int threads = 0;
  std::string keep;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--keep") && i + 1 < argc) keep = argv[++i];
  }
  const int nt = unime::set_threads(threads);
  const int reps = quick ? 1 : 3;
  const double peak_bf16 = matmul_peak(torch::kBFloat16);
  const double peak_f32 = matmul_peak(torch::kFloat32);
  std::printf("machine: %d threads, matmul peak (best of 2048^3, 4096^3, 2048x896x4864): "
              "bf16 %.0f GFLOP/s, f32 %.0f GFLOP/s\n", nt, peak_bf16, peak_f32);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const fs::path dir = keep.empty() ? fs::temp_directory_path() / "unime-bench-embed" : fs::path(keep);
  const std::string lm = (dir / "qwen2-0.5b").string(), vlm = (dir / "llava-qwen2-0.5b").string();
  if (!fs::exists(fs::path(lm) / "model.safetensors")) unime::write_random_model("qwen2-0.5b", lm, "bf16", 1);
  if (!fs::exists(fs::path(vlm) / "model.safetensors"))
    unime::write_random_model("llava-qwen2-0.5b", vlm, "bf16", 1);

  std::mt19937 rng(1);
  auto seq = [&](int64_t T) {
    unime::EmbedInput in;
    std::vector<int64_t> ids(T);
    for (auto& x : ids) x = 1000 + rng() % 50000;
    in.input_ids = ids;
    return in;
  };
  const int nA = quick ? 16 : 64;
  const std::string sA = std::to_string(nA);
  std::vector<unime::EmbedInput> A, Bm;
  double fA = 0, fB = 0;
  int64_t tA = 0, tB = 0;
  for (int i = 0; i < nA; ++i) { A.push_back(seq(128)); fA += decoder_flops(128); tA += 128; }
  for (int i = 0; i < nA; ++i) {
    const int64_t T = 16 + rng() % 241;
    Bm.push_back(seq(T));
    fB += decoder_flops(T);
    tB += T;
  }
  auto report = [&](const char* name, const char* dt, Result r) {
    std::printf("%-44s %-5s %7.0f tok/s %7.0f GFLOP/s  %5.1f%% of bf16 peak\n", name, dt, r.tok_s,
                r.gflops, 100.0 * r.gflops / peak_bf16);
  };
  for (std::string dt : {"f32", "bf16"}) {
    unime::EmbedderOptions o;
    o.dtype = dt;
    o.batch_size = 16;
    o.threads = threads;
    auto e = unime::Embedder::load(lm, o);
    report(("A: " + sA + " x 128 tokens, batch 16").c_str(), dt.c_str(), run(*e, A, fA, tA, reps));
    if (dt == "bf16")
      report(("B: " + sA + " x 16-256 tokens, batch 16, unsorted").c_str(), dt.c_str(), run(*e, Bm, fB, tB, reps));
  }
  {
    // C: images written as PNG, decoded and preprocessed by the embedder like real inputs
    std::vector<unime::EmbedInput> C;
    double fC = 0;
    int64_t tC = 0;
    const int nC = quick ? 8 : 32;
    for (int i = 0; i < nC; ++i) {
      auto in = seq(20);
      in.input_ids->insert(in.input_ids->begin() + 1, 151655);  // one image token, expanded to 196
      const std::string png = (dir / ("img" + std::to_string(i) + ".bmp")).string();
      if (!fs::exists(png)) {  // 24-bit BMP: decoded by the same stb path as PNG/JPEG
        std::string px(256 * 256 * 3, '\0');
        for (auto& p : px) p = static_cast<char>(rng());
        uint8_t h[54] = {'B', 'M'};
        auto put32 = [&](int off, uint32_t v) { std::memcpy(h + off, &v, 4); };
        put32(2, 54 + px.size()); put32(10, 54); put32(14, 40); put32(18, 256); put32(22, 256);
        h[26] = 1; h[28] = 24; put32(34, px.size());
        FILE* f = std::fopen(png.c_str(), "wb");
        std::fwrite(h, 1, 54, f);
        std::fwrite(px.data(), 1, px.size(), f);
        std::fclose(f);
      }
      in.images.push_back(png);
      C.push_back(in);
      fC += decoder_flops(21 + 195) + vision_flops();
      tC += 21 + 195;
    }
    unime::EmbedderOptions o;
    o.dtype = "bf16";
    o.batch_size = 8;
    o.threads = threads;
    auto e = unime::Embedder::load(vlm, o);
    report(("C: " + std::to_string(nC) + " x (224px image + 20 tokens), batch 8").c_str(), "bf16",
           run(*e, C, fC, tC, reps));
  }
  if (keep.empty()) fs::remove_all(dir);
  return 0;
}
