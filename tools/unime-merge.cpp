// `unime merge --model DIR --lora DIR [--lora DIR ...] --output DIR`: folds PEFT LoRA adapters into
// a Hugging Face checkpoint (W += (alpha / r) B A per adapted layer, adapters in the order given)
// and writes a plain checkpoint: model.safetensors with the original key names and dtypes, plus
// config.json and the other non-weight files of the model folder.
#include <cstdio>

#include "common.h"
#include "train/merge.h"

void register_merge(CLI::App& app) {
  auto* cmd = app.add_subcommand("merge", "fold LoRA adapters (PEFT format) into a model checkpoint");
  struct Args {
    std::string model, output;
    std::vector<std::string> loras;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Hugging Face model folder (the base)")->required();
  cmd->add_option("--lora", a->loras, "PEFT adapter folder; repeat to fold several, in order")
      ->required()
      ->take_all();
  cmd->add_option("--output", a->output, "output folder for the merged checkpoint")->required();
  cmd->callback([a]() {
    const auto s = unime::train::merge_checkpoint(a->model, a->loras, a->output);
    std::fprintf(stderr, "merged %lld adapter(s) into %lld layer(s) (%s), wrote %lld tensors to %s\n",
                 static_cast<long long>(s.n_adapters), static_cast<long long>(s.n_modules),
                 s.dtype.c_str(), static_cast<long long>(s.n_tensors), a->output.c_str());
  });
}
