// `unime random-model --preset NAME --output DIR`: a random-weight HF checkpoint (benches, smoke
// tests). Presets: tiny-llama, tiny-llava, tiny-llava-qwen2, qwen2-0.5b, llava-qwen2-0.5b, llava-1.5-7b,
// or a config.json, or a folder with one (bench/configs/*: the real configs of 2B-7B checkpoints).
#include <cstdio>

#include "common.h"
#include "unime/random-model.h"

void register_random_model(CLI::App& app) {
  auto* cmd = app.add_subcommand("random-model", "write a random-weight checkpoint in the HF layout");
  struct Args {
    std::string preset = "tiny-llava", output, dtype = "f32";
    uint64_t seed = 1;
    int64_t max_shard_bytes = 5'000'000'000;
    bool print = false, stream = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--preset", a->preset, "preset name, a config.json path or a folder holding one")
      ->capture_default_str();
  cmd->add_option("--output", a->output, "output folder");
  cmd->add_option("--dtype", a->dtype, "f32 | bf16 | f16")->capture_default_str();
  cmd->add_option("--seed", a->seed, "random seed")->capture_default_str();
  cmd->add_option("--max-shard-bytes", a->max_shard_bytes,
                  "shard the weights (model-0000k-of-0000n.safetensors + index) above this size")
      ->capture_default_str();
  cmd->add_flag("--stream", a->stream,
                "draw and write one tensor at a time (automatic above 1 GiB of f32 parameters)");
  cmd->add_flag("--print-config", a->print, "print the preset's config.json and exit");
  cmd->callback([a]() {
    if (a->print) {
      std::printf("%s\n", unime::random_model_config(a->preset).c_str());
      return;
    }
    UNIME_CHECK(!a->output.empty(), "random-model: --output is required");
    unime::RandomModelOptions o;
    o.dtype = a->dtype;
    o.seed = a->seed;
    o.max_shard_bytes = a->max_shard_bytes;
    o.stream = a->stream;
    unime::write_random_model(a->preset, a->output, o);
    std::fprintf(stderr, "wrote %s\n", a->output.c_str());
  });
}
