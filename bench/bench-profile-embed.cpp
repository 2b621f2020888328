// bench-profile-embed [B T]: one bf16 batch (16 x 128 tokens) of the Qwen2-0.5B shape under the torch
// profiler (chrome trace in /tmp/embed-trace.json) plus its wall time and GFLOP/s.
#include <torch/torch.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <cstdio>
#include <filesystem>
#include <map>

#include "models/model.h"
#include "unime/random-model.h"
#include "unime/runtime.h"

int main(int argc, char** argv) {
  unime::early_init(argc, argv);
  unime::set_threads(0);
  const std::string dir = "/tmp/bench-models/qwen2-0.5b";
  if (!std::filesystem::exists(dir + "/model.safetensors")) unime::write_random_model("qwen2-0.5b", dir, "bf16", 1);
  auto m = unime::models::Model::load(dir, torch::kBFloat16);
  c10::InferenceMode g;
  const int64_t B = argc > 1 ? std::atoi(argv[1]) : 16, T = argc > 2 ? std::atoi(argv[2]) : 128;
  unime::models::TokenBatch b{torch::randint(1000, 50000, {B, T}, torch::kInt64), torch::ones({B, T}, torch::kBool), {}};
  m->last_token_hidden(b);
  auto t0 = std::chrono::steady_clock::now();
  m->last_token_hidden(b);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("batch %lldx%lld: %.2f s, %.0f tok/s, %.0f GFLOP/s\n", (long long)B, (long long)T, s, B * T / s,
              B * (2.0 * 357826560.0 * T + 24.0 * 4 * T * T * 896) / s / 1e9);
  {
    torch::autograd::profiler::RecordProfile guard("/tmp/embed-trace.json");
    m->last_token_hidden(b);
  }
  return 0;
}
