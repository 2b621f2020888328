// embed::Encoder: the UniME input pipeline shared by inference (Embedder) and training (trainer):
// prompt template -> token ids (image tokens expanded) + pixels -> model -> last-token hidden state
// -> L2 norm. It runs under whatever grad mode the caller sets, so training re-uses it as is.
// Legend: B batch, T tokens, D hidden, N images, C channels, S image size.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/model.h"
#include "text/prompt.h"
#include "text/tokenizer.h"
#include "unime/embedder.h"
#include "vision/clip-processor.h"
#include "vision/llava-next-processor.h"
#include "vision/phi3v-processor.h"
#include "vision/qwen2vl-processor.h"

namespace unime::embed {

class Encoder {
 public:
  /// model: a loaded model; dir: its folder (tokenizer.json, preprocessor_config.json);
  /// prompt_template: "" = the family default.
  Encoder(std::shared_ptr<models::Model> model, std::string dir, const std::string& prompt_template,
          bool truncate, int64_t max_image_pixels, torch::Device device);

  models::Model& model() { return *model_; }
  int64_t dim() const;
  const text::PromptTemplate& prompt_template();

  /// Token ids exactly as the model sees them (template, special tokens, image expansion).
  std::vector<int64_t> token_ids(const EmbedInput& in);
  /// One input's images -> [n, C, S, S] float32 on the CPU (undefined when it has none).
  /// LLaVA-NeXT: [sum of crops, C, S, S] (see images()).
  torch::Tensor pixels(const EmbedInput& in);

  /// One input's images as the model takes them (CPU tensors, undefined when it has none).
  struct Images {
    torch::Tensor pixels;       // see pixels()
    torch::Tensor image_sizes;  // LLaVA-NeXT: [n, 2] int64 original (height, width);
                                // Phi-3-V: [n, 2] HD (height, width), pixels [sum 1 + crops, C, S, S]
    torch::Tensor grid_thw;     // Qwen2-VL: [n, 3] int64; pixels are [sum t*h*w, C*tp*p*p]
  };
  Images images(const EmbedInput& in);

  /// Embeds inputs as one batch, packed without padding: [B, D] float32, L2-normalised when
  /// `normalize`.
  /// ids: token_ids() of each input (pass them when already computed, else empty).
  torch::Tensor forward(const std::vector<const EmbedInput*>& inputs,
                        std::vector<std::vector<int64_t>> ids = {}, bool normalize = true);

 private:
  const text::Tokenizer& tokenizer(const EmbedInput& in);
  /// The input's images decoded, in order (files first, then in-memory bytes).
  std::vector<std::pair<io::Image, std::string>> decode_images(const EmbedInput& in);

  std::shared_ptr<models::Model> model_;
  std::string dir_;
  bool truncate_;
  int64_t max_image_pixels_;
  torch::Device device_;
  std::unique_ptr<text::Tokenizer> tok_;
  std::optional<text::PromptTemplate> tmpl_;
  std::unique_ptr<vision::ClipProcessorConfig> proc_;
  std::unique_ptr<vision::LlavaNextProcessorConfig> proc_next_;
  std::unique_ptr<vision::Qwen2VLProcessorConfig> proc_qwen2vl_;
  const vision::Qwen2VLProcessorConfig& qwen2vl_processor();
  std::unique_ptr<vision::Phi3VProcessorConfig> proc_phi3v_;
  const vision::Phi3VProcessorConfig& phi3v_processor();
  std::vector<int64_t> phi3v_token_ids(const EmbedInput& in);
};

}  // namespace unime::embed
