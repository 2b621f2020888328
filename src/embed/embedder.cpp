// The UniME embedder (include/unime/embedder.h): inputs sorted by length into left-padded batches
// through embed::Encoder under inference mode. Positions come from each row's own tokens, so a
// vector never depends on its batch. Legend: N inputs, D embedding dim.
#include "unime/embedder.h"

#include <algorithm>
#include <filesystem>
#include <numeric>

#include "core/error.h"
#include "embed/encoder.h"
#include "models/model.h"
#include "train/lora.h"
#include "unime/runtime.h"

namespace unime {

namespace fs = std::filesystem;

namespace {

class EmbedderImpl final : public Embedder {
 public:
  EmbedderImpl(const std::string& dir, const EmbedderOptions& opt) : opt_(opt) {
    set_threads(opt.threads);
    torch::Device device(torch::kCPU);
    try {
      device = torch::Device(opt.device);
    } catch (const c10::Error&) {
      throw Error(str("--device: '", opt.device, "' is not a device (cpu, cuda, cuda:N)"));
    }
    UNIME_CHECK(!device.is_cuda() || torch::cuda::is_available(), "--device ", opt.device,
                ": this build or machine has no CUDA device");
    UNIME_CHECK(opt.batch_size > 0, "--batch-size must be positive, got ", opt.batch_size);
    const auto dtype = models::parse_dtype(opt.dtype);
    UNIME_CHECK(fs::is_directory(dir), dir, ": not a directory (expected a Hugging Face model folder)");
    auto model = models::Model::load(dir, dtype);
    for (const auto& lora : opt.lora) train::merge_lora(*model, lora);  // folded in order
    for (auto& [prefix, m] : model->modules()) m->to(device);
    enc_ = std::make_unique<embed::Encoder>(model, dir, opt.prompt_template, opt.truncate,
                                            opt.max_image_pixels, device);
  }

  int64_t dim() const override { return enc_->dim(); }

  std::string describe() const override {
    auto& m = enc_->model();
    const auto& c = m.config();
    int64_t n = 0;
    for (auto& [k, p] : m.named_parameters()) n += p.numel();
    return str(io::arch_name(c.arch), ", ", models::dtype_short_name(m.dtype()), ", ", n,
               " parameters, dim ", dim(), ", template ",
               c.text ? enc_->prompt_template().name : "(none)",
               opt_.lora.empty() ? "" : str(", ", opt_.lora.size(), " adapter(s) merged"));
  }

  std::string dtype() const override { return models::dtype_short_name(enc_->model().dtype()); }

  std::vector<int64_t> token_ids(const EmbedInput& in) override { return enc_->token_ids(in); }

  std::vector<float> embed(const std::vector<EmbedInput>& inputs,
                           const std::function<void(const EmbedProgress&)>& progress) override {
    // token ids for every input (cheap next to the forward pass)
    std::vector<std::vector<int64_t>> ids(inputs.size());
    if (enc_->model().config().text)
      for (size_t i = 0; i < inputs.size(); ++i) ids[i] = enc_->token_ids(inputs[i]);
    return embed_tokenized(inputs, std::move(ids), progress);
  }

  std::vector<float> embed_tokenized(const std::vector<EmbedInput>& inputs, std::vector<std::vector<int64_t>> ids,
                                     const std::function<void(const EmbedProgress&)>& progress) override {
    c10::InferenceMode guard;
    const int64_t N = static_cast<int64_t>(inputs.size()), D = dim();
    TORCH_CHECK(ids.size() == inputs.size(), "embed_tokenized: ", ids.size(), " id lists for ", N, " inputs");
    std::vector<float> out(static_cast<size_t>(N * D));
    const bool has_text = static_cast<bool>(enc_->model().config().text);
    // sort by length so batches carry little padding
    std::vector<int64_t> order(N);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return ids[a].size() > ids[b].size(); });
    EmbedProgress prog;
    prog.total = N;
    for (int64_t s = 0; s < N; s += opt_.batch_size) {
      const int64_t e = std::min(N, s + opt_.batch_size);
      std::vector<const EmbedInput*> batch;
      std::vector<std::vector<int64_t>> batch_ids;
      for (int64_t i = s; i < e; ++i) {
        batch.push_back(&inputs[order[i]]);
        if (has_text) batch_ids.push_back(ids[order[i]]);
        prog.tokens += static_cast<int64_t>(ids[order[i]].size());
      }
      auto h = enc_->forward(batch, std::move(batch_ids)).cpu().contiguous();  // [B, D]
      for (int64_t b = 0; b < e - s; ++b)
        std::copy(h[b].data_ptr<float>(), h[b].data_ptr<float>() + D, out.begin() + order[s + b] * D);
      prog.done = e;
      if (progress) progress(prog);
    }
    return out;
  }

 private:
  EmbedderOptions opt_;
  std::unique_ptr<embed::Encoder> enc_;
};

}  // namespace

std::string default_template_name(const std::string& model_dir) {
  const io::ModelConfig c = io::load_model_config(model_dir);
  if (!c.text) return "plain";
  if (c.text->model_type == "qwen2") return "qwen2";
  if (c.text->model_type == "phi3") return "phi3v";  // Phi-3 chat format (<|user|> ... <|end|>)
  if (c.text->model_type == "mistral") return "llava-mistral";  // the [INST] chat format
  if (fs::exists(fs::path(model_dir) / "tokenizer.json") &&
      text::Tokenizer::load(model_dir).token_to_id("<|start_header_id|>"))
    return "llama3";
  return "plain";
}

std::unique_ptr<Embedder> Embedder::load(const std::string& model_dir, const EmbedderOptions& opt) {
  return std::make_unique<EmbedderImpl>(model_dir, opt);
}

}  // namespace unime
