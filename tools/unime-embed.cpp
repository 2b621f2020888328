// `unime embed --model DIR --input IN.jsonl --output OUT.npy`: UniME embeddings for a JSONL of
// inputs (text / image / images / instruction / input_ids), float32 .npy [N, D], rows unit-norm.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common.h"
#include "core/progress.h"
#include "io/jsonl.h"
#include "io/npy.h"
#include "unime/embedder.h"

namespace fs = std::filesystem;

namespace unime::tools {

std::vector<EmbedInput> read_embed_inputs(const std::string& path) {
  std::vector<EmbedInput> inputs;
  const fs::path base = fs::path(path).parent_path();
  auto resolve = [&](const std::string& p) {
    return fs::path(p).is_absolute() || base.empty() ? p : (base / p).string();
  };
  io::read_jsonl(path, [&](int64_t line, const nlohmann::json& row) {
    EmbedInput in;
    in.where = str(path, ":", line);
    in.text = io::json_string(row, "text", in.where);
    in.instruction = io::json_string(row, "instruction", in.where);
    std::string image = io::json_string(row, "image", in.where);
    if (!image.empty()) in.images.push_back(resolve(image));
    if (row.contains("images") && !row["images"].is_null()) {
      UNIME_CHECK(row["images"].is_array(), in.where, ": 'images' must be a list of paths");
      for (const auto& p : row["images"]) {
        UNIME_CHECK(p.is_string(), in.where, ": 'images' must be a list of paths");
        in.images.push_back(resolve(p.get<std::string>()));
      }
    }
    if (row.contains("input_ids") && !row["input_ids"].is_null()) {
      UNIME_CHECK(row["input_ids"].is_array(), in.where, ": 'input_ids' must be a list of integers");
      std::vector<int64_t> ids;
      for (const auto& t : row["input_ids"]) {
        UNIME_CHECK(t.is_number_integer(), in.where, ": 'input_ids' must be a list of integers");
        ids.push_back(t.get<int64_t>());
      }
      UNIME_CHECK(in.text.empty() && in.instruction.empty(), in.where,
                  ": give either 'input_ids' or 'text'/'instruction', not both");
      in.input_ids = std::move(ids);
    }
    UNIME_CHECK(in.input_ids || !in.text.empty() || !in.images.empty(), in.where,
                ": nothing to embed (expected 'text', 'image', 'images' or 'input_ids')");
    inputs.push_back(std::move(in));
  });
  UNIME_CHECK(!inputs.empty(), path, ": no inputs");
  return inputs;
}

void add_model_options(CLI::App* cmd, std::string& model, EmbedderOptions& opt) {
  cmd->add_option("--model", model, "Hugging Face model folder")->required();
  cmd->add_option("--dtype", opt.dtype, "f32 | bf16 | f16 | auto (bf16 where the CPU has it)")
      ->capture_default_str();
  cmd->add_option("--batch-size", opt.batch_size, "inputs per forward pass")->capture_default_str();
  cmd->add_option("--threads", opt.threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--template", opt.prompt_template,
                  "prompt template: llava-mistral, phi3v, llama3, qwen2, plain, or a JSON file");
  cmd->add_option("--device", opt.device, "cpu | cuda | cuda:N")->capture_default_str();
  cmd->add_flag("--truncate", opt.truncate, "cut inputs longer than max_position_embeddings");
  cmd->add_option("--lora", opt.lora, "PEFT LoRA adapter folder (repeatable: merged in order)");
}

}  // namespace unime::tools

void register_embed(CLI::App& app) {
  auto* cmd = app.add_subcommand("embed", "embed a JSONL of text / image / image+text inputs");
  struct Args {
    std::string model, input, output;
    unime::EmbedderOptions opt;
    bool verbose = false;
  };
  auto a = std::make_shared<Args>();
  unime::tools::add_model_options(cmd, a->model, a->opt);
  cmd->add_option("--input", a->input, "JSONL: text, image, images, instruction or input_ids per line")
      ->required();
  cmd->add_option("--output", a->output, "float32 .npy [N, D]")->required();
  cmd->add_flag("-v,--verbose", a->verbose, "print the model's description");
  cmd->callback([a]() {
    auto inputs = unime::tools::read_embed_inputs(a->input);
    auto emb = unime::Embedder::load(a->model, a->opt);
    if (a->verbose) std::fprintf(stderr, "model: %s\n", emb->describe().c_str());
    unime::ProgressBar bar("embed", static_cast<int64_t>(inputs.size()), "inputs");
    int64_t tokens = 0;
    auto out = emb->embed(inputs, [&](const unime::EmbedProgress& p) {
      tokens = p.tokens;
      bar.update(p.done, unime::str(static_cast<int64_t>(p.tokens / std::max(1e-9, bar.elapsed_s())), " tok/s"));
    });
    bar.finish(unime::str(tokens, " tokens, ", static_cast<int64_t>(tokens / std::max(1e-9, bar.elapsed_s())), " tok/s"));
    unime::io::write_npy_f32(a->output, out.data(), {static_cast<int64_t>(inputs.size()), emb->dim()});
  });
}
