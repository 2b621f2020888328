// The UniME embedder: prompt -> tokens (+ image features) -> decoder -> last token -> L2 norm
// (METHOD.md section 1). Inputs are sorted by length and batched with left padding; positions
// come from each row's own tokens, so a vector never depends on its batch.
// Legend: B batch, T tokens, D hidden, N images.
#include "unime/embedder.h"

#include <algorithm>
#include <filesystem>
#include <numeric>

#include "core/error.h"
#include "io/image.h"
#include "models/model.h"
#include "text/prompt.h"
#include "text/tokenizer.h"
#include "unime/runtime.h"
#include "vision/clip-processor.h"

namespace unime {

namespace fs = std::filesystem;

namespace {

class EmbedderImpl final : public Embedder {
 public:
  EmbedderImpl(const std::string& dir, const EmbedderOptions& opt) : dir_(dir), opt_(opt) {
    set_threads(opt.threads);
    try {
      device_ = torch::Device(opt.device);
    } catch (const c10::Error&) {
      throw Error(str("--device: '", opt.device, "' is not a device (cpu, cuda, cuda:N)"));
    }
    UNIME_CHECK(!device_.is_cuda() || torch::cuda::is_available(), "--device ", opt.device,
                ": this build or machine has no CUDA device");
    UNIME_CHECK(opt.batch_size > 0, "--batch-size must be positive, got ", opt.batch_size);
    const auto dtype = models::parse_dtype(opt.dtype);
    UNIME_CHECK(fs::is_directory(dir), dir, ": not a directory (expected a Hugging Face model folder)");
    model_ = models::Model::load(dir, dtype);
    for (auto& [prefix, m] : model_->modules()) m->to(device_);
    if (!opt.prompt_template.empty()) tmpl_ = text::load_template(opt.prompt_template);
  }

  int64_t dim() const override {
    const auto& c = model_->config();
    if (c.text) return c.text->hidden_size;
    return c.arch == io::Arch::Clip ? c.vision->projection_dim : c.vision->hidden_size;
  }

  std::string describe() const override {
    const auto& c = model_->config();
    int64_t n = 0;
    for (auto& [k, p] : model_->named_parameters()) n += p.numel();
    return str(io::arch_name(c.arch), ", ", models::dtype_short_name(model_->dtype()), ", ", n,
               " parameters, dim ", dim(), ", template ",
               c.text ? const_cast<EmbedderImpl*>(this)->prompt_template().name : "(none)");
  }

  std::vector<int64_t> token_ids(const EmbedInput& in) override {
    const auto& c = model_->config();
    const int64_t n_images = static_cast<int64_t>(in.images.size() + in.image_bytes.size());
    UNIME_CHECK(c.text, where(in), ": this model (", io::arch_name(c.arch),
                ") has no language model; it embeds images only");
    std::vector<int64_t> ids;
    if (in.input_ids) {
      ids = *in.input_ids;
      for (int64_t t : ids)
        UNIME_CHECK(t >= 0 && t < c.text->vocab_size, where(in), ": token id ", t,
                    " is outside the vocabulary (vocab_size ", c.text->vocab_size, ")");
    } else {
      auto& tok = tokenizer(in);
      std::string prompt = text::render_prompt(prompt_template(), in.instruction, in.text,
                                               static_cast<int>(n_images));
      for (int32_t t : tok.encode(prompt, /*add_special_tokens=*/true)) ids.push_back(t);
    }
    if (c.arch == io::Arch::Llava) {
      UNIME_CHECK(n_images > 0 || std::count(ids.begin(), ids.end(), c.llava.image_token_id) == 0,
                  where(in), ": the input has image tokens (id ", c.llava.image_token_id,
                  ") but no image");
      if (n_images > 0)
        ids = models::expand_image_tokens(ids, c.llava.image_token_id, n_images,
                                          c.image_feature_tokens(), where(in));
    } else {
      UNIME_CHECK(n_images == 0, where(in), ": this model (", io::arch_name(c.arch),
                  ") has no vision tower; remove the image");
    }
    const int64_t max_len = c.text->max_position_embeddings;
    if (static_cast<int64_t>(ids.size()) > max_len) {
      UNIME_CHECK(opt_.truncate, where(in), ": input has ", ids.size(),
                  " tokens, more than the model's max_position_embeddings (", max_len,
                  "); use --truncate to cut it");
      ids.resize(max_len);
      if (c.arch == io::Arch::Llava) {
        const int64_t left = std::count(ids.begin(), ids.end(), c.llava.image_token_id);
        UNIME_CHECK(left == n_images * c.image_feature_tokens(), where(in),
                    ": --truncate would cut through an image's tokens (", ids.size(),
                    " tokens kept)");
      }
    }
    UNIME_CHECK(!ids.empty(), where(in), ": empty input (no tokens)");
    return ids;
  }

  std::vector<float> embed(const std::vector<EmbedInput>& inputs,
                           const std::function<void(const EmbedProgress&)>& progress) override {
    c10::InferenceMode guard;
    const int64_t N = static_cast<int64_t>(inputs.size()), D = dim();
    std::vector<float> out(static_cast<size_t>(N * D));
    const auto& c = model_->config();
    EmbedProgress prog;
    prog.total = N;
    if (!c.text) {  // CLIP: image embeddings only
      for (int64_t s = 0; s < N; s += opt_.batch_size) {
        const int64_t e = std::min(N, s + opt_.batch_size);
        std::vector<torch::Tensor> px;
        for (int64_t i = s; i < e; ++i) {
          const auto& in = inputs[i];
          UNIME_CHECK(in.images.size() + in.image_bytes.size() == 1 && in.text.empty() &&
                          in.instruction.empty() && !in.input_ids,
                      where(in), ": a CLIP vision model embeds exactly one image and no text");
          px.push_back(load_pixels(in));
        }
        auto emb = model_->clip_image_embeds(torch::cat(px, 0).to(device_)).to(torch::kFloat32);
        emb = torch::nn::functional::normalize(emb, torch::nn::functional::NormalizeFuncOptions().dim(-1));
        emb = emb.cpu().contiguous();
        std::copy(emb.data_ptr<float>(), emb.data_ptr<float>() + (e - s) * D, out.begin() + s * D);
        prog.done = e;
        if (progress) progress(prog);
      }
      return out;
    }
    // 1. token ids for every input (cheap), then sort by length so batches carry little padding
    std::vector<std::vector<int64_t>> ids(N);
    for (int64_t i = 0; i < N; ++i) ids[i] = token_ids(inputs[i]);
    std::vector<int64_t> order(N);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return ids[a].size() > ids[b].size(); });
    // 2. batches: left padded [B, T]; images loaded per batch
    for (int64_t s = 0; s < N; s += opt_.batch_size) {
      const int64_t e = std::min(N, s + opt_.batch_size), B = e - s;
      const int64_t T = static_cast<int64_t>(ids[order[s]].size());
      auto id_t = torch::zeros({B, T}, torch::kInt64);
      auto real = torch::zeros({B, T}, torch::kBool);
      std::vector<torch::Tensor> px;
      for (int64_t b = 0; b < B; ++b) {
        const auto& row = ids[order[s + b]];
        const int64_t L = static_cast<int64_t>(row.size()), off = T - L;
        std::copy(row.begin(), row.end(), id_t[b].data_ptr<int64_t>() + off);
        real[b].narrow(0, off, L).fill_(true);
        prog.tokens += L;
        const auto& in = inputs[order[s + b]];
        if (!in.images.empty() || !in.image_bytes.empty()) px.push_back(load_pixels(in));
      }
      models::TokenBatch batch{id_t.to(device_), real.to(device_),
                               px.empty() ? torch::Tensor() : torch::cat(px, 0).to(device_)};
      auto h = model_->last_token_hidden(batch).to(torch::kFloat32);            // [B, D]
      h = torch::nn::functional::normalize(h, torch::nn::functional::NormalizeFuncOptions().dim(-1));
      h = h.cpu().contiguous();
      for (int64_t b = 0; b < B; ++b)
        std::copy(h[b].data_ptr<float>(), h[b].data_ptr<float>() + D, out.begin() + order[s + b] * D);
      prog.done = e;
      if (progress) progress(prog);
    }
    return out;
  }

 private:
  static std::string where(const EmbedInput& in) { return in.where.empty() ? "input" : in.where; }

  const text::Tokenizer& tokenizer(const EmbedInput& in) {
    if (!tok_) {
      const fs::path p = fs::path(dir_) / "tokenizer.json";
      UNIME_CHECK(fs::exists(p), where(in), ": ", dir_,
                  " has no tokenizer.json; text inputs need one (or give input_ids)");
      tok_ = std::make_unique<text::Tokenizer>(text::Tokenizer::load(dir_));
    }
    return *tok_;
  }

  const text::PromptTemplate& prompt_template() {
    if (!tmpl_) tmpl_ = text::load_template(default_template_name(dir_));
    return *tmpl_;
  }

  // one input's images -> [n, C, S, S] float32 (CPU)
  torch::Tensor load_pixels(const EmbedInput& in) {
    const auto& vc = *model_->config().vision;
    if (!proc_) {
      const fs::path p = fs::path(dir_) / "preprocessor_config.json";
      proc_ = std::make_unique<vision::ClipProcessorConfig>(vision::load_clip_processor_config(p.string()));
    }
    std::vector<torch::Tensor> out;
    auto add = [&](const io::Image& img, const std::string& name) {
      int h = 0, w = 0;
      std::vector<float> chw = vision::clip_preprocess(img, *proc_, &h, &w);
      UNIME_CHECK(h == vc.image_size && w == vc.image_size, name, ": the image processor gives ", h,
                  "x", w, " pixels but the vision tower expects ", vc.image_size, "x", vc.image_size,
                  "; check preprocessor_config.json crop_size");
      out.push_back(torch::from_blob(chw.data(), {1, 3, h, w}, torch::kFloat32).clone());
    };
    for (const auto& path : in.images) add(io::load_image(path, opt_.max_image_pixels), path);
    for (size_t i = 0; i < in.image_bytes.size(); ++i) {
      const std::string name = str(where(in), ": image ", i + 1);
      const auto& b = in.image_bytes[i];
      add(io::decode_image(reinterpret_cast<const uint8_t*>(b.data()), b.size(), name,
                           opt_.max_image_pixels),
          name);
    }
    return torch::cat(out, 0);
  }

  std::string dir_;
  EmbedderOptions opt_;
  torch::Device device_{torch::kCPU};
  std::shared_ptr<models::Model> model_;
  std::unique_ptr<text::Tokenizer> tok_;
  std::optional<text::PromptTemplate> tmpl_;
  std::unique_ptr<vision::ClipProcessorConfig> proc_;
};

}  // namespace

std::string default_template_name(const std::string& model_dir) {
  const io::ModelConfig c = io::load_model_config(model_dir);
  if (!c.text) return "plain";
  if (c.text->model_type == "qwen2") return "qwen2";
  if (c.arch == io::Arch::Llava && c.text->model_type == "mistral") return "llava-mistral";
  if (c.text->model_type == "mistral") return "llava-mistral";  // same [INST] chat format
  if (fs::exists(fs::path(model_dir) / "tokenizer.json") &&
      text::Tokenizer::load(model_dir).token_to_id("<|start_header_id|>"))
    return "llama3";
  return "plain";
}

std::unique_ptr<Embedder> Embedder::load(const std::string& model_dir, const EmbedderOptions& opt) {
  return std::make_unique<EmbedderImpl>(model_dir, opt);
}

}  // namespace unime
