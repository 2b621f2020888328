/// unime::Embedder: UniME embeddings (last-token hidden state after the final norm, L2
/// normalised) for text, images and image+text with instructions, from a Hugging Face folder.
///
///   unime::EmbedderOptions opt;            // dtype "auto": bf16 where the CPU has it
///   auto emb = unime::Embedder::load("path/to/model", opt);
///   std::vector<unime::EmbedInput> in(2);
///   in[0].text = "a red circle left of a blue square";
///   in[1].images = {"cat.png"};
///   std::vector<float> out = emb->embed(in);   // [2 x emb->dim()], row-major, rows unit-norm
///   float sim = 0; for (int64_t k = 0; k < emb->dim(); ++k) sim += out[k] * out[emb->dim() + k];
///
/// Batching never changes a vector: each input's positions come from its own tokens.
/// This header is free of torch so that tools and servers compile fast.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace unime {

struct EmbedInput {
  std::string text;                            ///< may contain "<|image_1|>" (MMEB convention)
  std::string instruction;                     ///< task instruction (MMEB style); may be empty
  std::vector<std::string> images;             ///< image file paths
  std::vector<std::string> image_bytes;        ///< encoded images in memory (PNG/JPEG...), after `images`
  std::optional<std::vector<int64_t>> input_ids;  ///< used verbatim: no template, no special tokens
  std::string where;                           ///< for error messages, e.g. "in.jsonl:3"
};

struct EmbedderOptions {
  std::string dtype = "auto";     ///< f32 | bf16 | f16 | auto
  int batch_size = 16;
  int threads = 0;                ///< 0 = all cores
  bool truncate = false;          ///< cut inputs longer than max_position_embeddings
  std::string prompt_template;    ///< "" = the family's built-in template; a name or JSON file
  std::vector<std::string> lora;  ///< PEFT LoRA adapter folders, merged into the weights in order
  std::string device = "cpu";     ///< cpu | cuda | cuda:N
  int64_t max_image_pixels = 8192LL * 8192;
};

struct EmbedProgress {
  int64_t done = 0, total = 0;    ///< inputs
  int64_t tokens = 0;             ///< real tokens processed so far
};

class Embedder {
 public:
  static std::unique_ptr<Embedder> load(const std::string& model_dir, const EmbedderOptions& opt);
  virtual ~Embedder() = default;

  /// [N * dim()] row-major float32, row i = inputs[i], each row L2-normalised.
  virtual std::vector<float> embed(const std::vector<EmbedInput>& inputs,
                                   const std::function<void(const EmbedProgress&)>& progress = {}) = 0;
  /// embed() with each input's token_ids() already computed (ids[i] = token_ids(inputs[i])), so
  /// a caller that needed them first (the server: usage and limits) does not tokenize twice.
  virtual std::vector<float> embed_tokenized(const std::vector<EmbedInput>& inputs,
                                             std::vector<std::vector<int64_t>> ids,
                                             const std::function<void(const EmbedProgress&)>& progress = {}) {
    (void)ids;
    return embed(inputs, progress);
  }
  virtual int64_t dim() const = 0;
  /// Token ids exactly as the model will see them (template, special tokens, image expansion).
  virtual std::vector<int64_t> token_ids(const EmbedInput& input) = 0;
  /// A short description: architecture, dtype, template, parameter counts.
  virtual std::string describe() const = 0;
  /// The dtype the weights run in, resolved ("auto" -> "bf16" or "f32"): f32 | bf16 | f16;
  /// "" when an implementation cannot tell (test doubles).
  virtual std::string dtype() const { return ""; }
};

/// The built-in prompt template a model folder gets by default (reads config.json and, for Llama
/// models, tokenizer.json's special tokens): llava-mistral, qwen2, llama3 or plain.
std::string default_template_name(const std::string& model_dir);

}  // namespace unime
