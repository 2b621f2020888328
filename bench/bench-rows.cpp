// bench-rows: bf16 linear-layer speed against the number of input rows, on this CPU.
// libtorch 1.13's bf16 matmul (oneDNN 2.6 with AMX) runs some row counts up to 10x slower than
// their neighbours (610 rows of a Qwen2 MLP: 339 ms, 640 rows: 34 ms). models::Linear pads such
// inputs to a multiple of models::kFastRows; this prints, for Qwen2-VL-2B's three linear shapes and
// a range of row counts, the median and worst GFLOP/s of the plain product
// (torch::nn::functional::linear) and of models::Linear, and how often the padding costs more than
// 10% over the plain product.
//   bench-rows [--from 64] [--to 1100] [--step 2] [--threads N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include <torch/version.h>

#include "models/linear.h"
#include "unime/runtime.h"

namespace F = torch::nn::functional;

static double best_ms(const std::function<void()>& f, int reps = 3) {
  f();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

int main(int argc, char** argv) {
  unime::early_init(argc, argv);
  int from = 64, to = 1100, step = 2, threads = 0;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char* name) { return !std::strcmp(argv[i], name) && i + 1 < argc; };
    if (arg("--from")) from = std::atoi(argv[++i]);
    else if (arg("--to")) to = std::atoi(argv[++i]);
    else if (arg("--step")) step = std::atoi(argv[++i]);
    else if (arg("--threads")) threads = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench-rows [--from 64] [--to 1100] [--step 2] [--threads N]\n");
      return 2;
    }
  }
  if (from < 1 || to < from || step < 1) {
    std::fprintf(stderr, "bench-rows: need 1 <= --from <= --to and --step >= 1\n");
    return 2;
  }
  const int nt = unime::set_threads(threads);
  c10::InferenceMode guard;
  std::printf("bench-rows: bf16 x W^T, %d threads, rows %d..%d step %d; row padding to a multiple of %lld: %s\n",
              nt, from, to, step, static_cast<long long>(unime::models::kFastRows),
#if TORCH_VERSION_MAJOR < 2
              "on"
#else
              "off (libtorch >= 2)"
#endif
  );
  struct Shape {
    const char* name;
    int64_t in, out;
  };
  for (const Shape& s : {Shape{"q/o_proj 1536->1536", 1536, 1536}, Shape{"gate/up 1536->8960", 1536, 8960},
                         Shape{"down 8960->1536", 8960, 1536}}) {
    unime::models::Linear lin(s.in, s.out, /*bias=*/false);
    lin->to(torch::kBFloat16);
    const auto w = lin->weight;
    std::vector<double> plain, ours;
    std::vector<int> rows;
    for (int m = from; m <= to; m += step) {
      auto x = torch::randn({m, s.in}).to(torch::kBFloat16);
      plain.push_back(best_ms([&] { F::linear(x, w); }) / m);
      ours.push_back(best_ms([&] { lin(x); }) / m);
      rows.push_back(m);
    }
    // GFLOP/s per row count: 2 * in * out flops per row
    auto gflops = [&](double ms_per_row) { return 2.0 * s.in * s.out / ms_per_row / 1e6; };
    auto median = [&](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return gflops(v[v.size() / 2]);
    };
    const auto wp = std::max_element(plain.begin(), plain.end()) - plain.begin();
    const auto wo = std::max_element(ours.begin(), ours.end()) - ours.begin();
    int slower = 0;
    for (size_t i = 0; i < rows.size(); ++i) slower += ours[i] > 1.1 * plain[i];
    std::printf("  %-20s GFLOP/s median / worst (rows): plain %4.0f / %4.0f (%d); models::Linear %4.0f / %4.0f (%d); "
                "models::Linear > 10%% slower than plain at %d of %zu row counts\n",
                s.name, median(plain), gflops(plain[wp]), rows[wp], median(ours), gflops(ours[wo]), rows[wo], slower,
                rows.size());
  }
  return 0;
}
