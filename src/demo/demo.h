// `unime demo`: the whole UniME pipeline on one CPU from nothing (the demo issue):
//   world -> BPE tokenizer -> stage 0 (a tiny LLaVA pretrained by next-token prediction, saved as
//   a Hugging Face checkpoint) -> text teacher (.npy) -> stage 1 distillation (LoRA) -> stage 2
//   hard-negative instruction tuning (LoRA on top of stage 1) and its ablations -> evaluation of
//   every model on MMEB-style, retrieval and SugarCrepe-style suites -> report.{md,html,json}
//   with pictures. Each step is skipped when its output is already complete, so an interrupted
//   demo continues where it stopped.
// Torch-free header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace unime::demo {

struct DemoOptions {
  std::string output = "demo-out";
  uint64_t seed = 1;
  bool quick = false;   ///< small sizes, a few minutes (the test suite runs this)
  int threads = 0;      ///< 0 = all cores
  bool force = false;   ///< recompute every step
  bool check = true;    ///< exit non-zero when a claim of the method does not hold
  /// Overrides of the plan's sizes and hyper-parameters, "key=value" (see plan_keys()).
  std::vector<std::string> set;
};

/// The names `set` accepts, with their values for (quick, full), one per line.
std::string plan_keys();

/// Runs the demo; returns the number of claims that failed (0 = all hold).
int run_demo(const DemoOptions& o);

}  // namespace unime::demo
