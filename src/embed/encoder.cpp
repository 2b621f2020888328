// embed::Encoder; see encoder.h. METHOD.md section 1: template, left padding, last token after
// the final norm, L2 normalisation.
#include "embed/encoder.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "io/image.h"

namespace unime::embed {

namespace fs = std::filesystem;

static std::string where(const EmbedInput& in) { return in.where.empty() ? "input" : in.where; }

Encoder::Encoder(std::shared_ptr<models::Model> model, std::string dir,
                 const std::string& prompt_template, bool truncate, int64_t max_image_pixels,
                 torch::Device device)
    : model_(std::move(model)), dir_(std::move(dir)), truncate_(truncate),
      max_image_pixels_(max_image_pixels), device_(device) {
  if (!prompt_template.empty()) tmpl_ = text::load_template(prompt_template);
}

int64_t Encoder::dim() const {
  const auto& c = model_->config();
  if (c.text) return c.text->hidden_size;
  return c.arch == io::Arch::Clip ? c.vision->projection_dim : c.vision->hidden_size;
}

const text::Tokenizer& Encoder::tokenizer(const EmbedInput& in) {
  if (!tok_) {
    UNIME_CHECK(fs::exists(fs::path(dir_) / "tokenizer.json"), where(in), ": ", dir_,
                " has no tokenizer.json; text inputs need one (or give input_ids)");
    tok_ = std::make_unique<text::Tokenizer>(text::Tokenizer::load(dir_));
  }
  return *tok_;
}

const text::PromptTemplate& Encoder::prompt_template() {
  if (!tmpl_) tmpl_ = text::load_template(default_template_name(dir_));
  return *tmpl_;
}

std::vector<int64_t> Encoder::token_ids(const EmbedInput& in) {
  const auto& c = model_->config();
  const int64_t n_images = static_cast<int64_t>(in.images.size() + in.image_bytes.size());
  UNIME_CHECK(c.text, where(in), ": this model (", io::arch_name(c.arch),
              ") has no language model; it embeds images only");
  std::vector<int64_t> ids;
  if (c.arch == io::Arch::Phi3V) return phi3v_token_ids(in);
  if (in.input_ids) {
    ids = *in.input_ids;
    for (int64_t t : ids)
      UNIME_CHECK(t >= 0 && t < c.text->vocab_size, where(in), ": token id ", t,
                  " is outside the vocabulary (vocab_size ", c.text->vocab_size, ")");
  } else {
    const auto& tok = tokenizer(in);
    std::string prompt = text::render_prompt(prompt_template(), in.instruction, in.text,
                                             static_cast<int>(n_images));
    for (int32_t t : tok.encode(prompt, /*add_special_tokens=*/true)) ids.push_back(t);
  }
  int64_t n_image_tokens = 0;  // after expansion
  if (c.is_llava_family()) {
    UNIME_CHECK(n_images > 0 || std::count(ids.begin(), ids.end(), c.llava.image_token_id) == 0,
                where(in), ": the input has image tokens (id ", c.llava.image_token_id,
                ") but no image");
    if (n_images > 0 && c.arch == io::Arch::Llava) {
      ids = models::expand_image_tokens(ids, c.llava.image_token_id, n_images,
                                        c.image_feature_tokens(), where(in));
      n_image_tokens = n_images * c.image_feature_tokens();
    } else if (n_images > 0) {  // LLaVA-NeXT: the count depends on each image's size
      std::vector<int64_t> n_feat;
      for (const auto& [img, name] : decode_images(in))
        n_feat.push_back(model_->image_feature_tokens(img.height, img.width));
      ids = models::expand_image_tokens(ids, c.llava.image_token_id, n_feat, where(in));
      for (int64_t f : n_feat) n_image_tokens += f;
    }
  } else if (c.arch == io::Arch::Qwen2VL) {
    const int64_t tok = c.qwen2vl.image_token_id;
    UNIME_CHECK(n_images > 0 || std::count(ids.begin(), ids.end(), tok) == 0, where(in),
                ": the input has image tokens (<|image_pad|>, id ", tok, ") but no image");
    if (n_images > 0) {  // processing_qwen2_vl: each <|image_pad|> -> t*h*w / merge^2 copies
      std::vector<int64_t> n_feat;
      for (const auto& [img, name] : decode_images(in))
        n_feat.push_back(vision::qwen2vl_image_tokens(img.height, img.width, qwen2vl_processor(), name));
      ids = models::expand_image_tokens(ids, tok, n_feat, where(in));
      for (int64_t f : n_feat) n_image_tokens += f;
    }
  } else {
    UNIME_CHECK(n_images == 0, where(in), ": this model (", io::arch_name(c.arch),
                ") has no vision tower; remove the image");
  }
  const int64_t max_len = c.text->max_position_embeddings;
  if (static_cast<int64_t>(ids.size()) > max_len) {
    UNIME_CHECK(truncate_, where(in), ": input has ", ids.size(),
                " tokens, more than the model's max_position_embeddings (", max_len,
                "); use --truncate to cut it");
    ids.resize(max_len);
    if (c.is_llava_family() || c.arch == io::Arch::Qwen2VL) {
      const int64_t tok = c.arch == io::Arch::Qwen2VL ? c.qwen2vl.image_token_id : c.llava.image_token_id;
      const int64_t left = std::count(ids.begin(), ids.end(), tok);
      UNIME_CHECK(left == n_image_tokens, where(in),
                  ": --truncate would cut through an image's tokens (", ids.size(), " tokens kept)");
    }
  }
  UNIME_CHECK(!ids.empty(), where(in), ": empty input (no tokens)");
  return ids;
}

// Phi3VProcessor._convert_images_texts_to_inputs: with images, the prompt is split at each
// <|image_N|> tag, every chunk is tokenized on its own WITH special tokens (so a BOS-adding
// tokenizer puts a BOS after each image too), and tag N becomes num_img_tokens[N - 1] ids -N.
// Without images the whole prompt is tokenized as is (tags stay text). input_ids: any id < 0 marks
// an image position (Phi3ImageEmbedding: -MAX_INPUT_ID < id < 0); a single one per image is
// expanded, a run of exactly the feature count is used in place.
std::vector<int64_t> Encoder::phi3v_token_ids(const EmbedInput& in) {
  const auto& c = model_->config();
  constexpr int64_t kMaxInputId = 1000000000;  // image_embedding_phi3_v.py MAX_INPUT_ID
  const int64_t marker = io::Phi3VFields::kImageToken;
  const int64_t n_images = static_cast<int64_t>(in.images.size() + in.image_bytes.size());
  UNIME_CHECK(n_images == 0 || c.vision, where(in), ": this Phi3VForCausalLM has no image embedding "
              "(embd_layer is not an image layer); remove the image");
  std::vector<int64_t> n_feat;
  if (n_images > 0) {
    const auto& v = *c.vision;
    for (const auto& [img, name] : decode_images(in))
      n_feat.push_back(vision::phi3v_image_tokens(img.height, img.width, phi3v_processor(), v.image_size,
                                                  v.image_size / v.patch_size / 2, name));
  }
  std::vector<int64_t> ids;
  if (in.input_ids) {
    for (int64_t t : *in.input_ids) {
      UNIME_CHECK(t > -kMaxInputId && t < c.text->vocab_size, where(in), ": token id ", t,
                  " is outside the vocabulary (vocab_size ", c.text->vocab_size, "; negative ids mark images)");
      ids.push_back(t < 0 ? marker : t);
    }
    const int64_t marks = std::count(ids.begin(), ids.end(), marker);
    UNIME_CHECK(n_images > 0 || marks == 0, where(in), ": the input has image positions (negative ids) but no image");
    if (n_images > 0) ids = models::expand_image_tokens(ids, marker, n_feat, where(in));
  } else {
    const auto& tok = tokenizer(in);
    std::string prompt = text::render_prompt(prompt_template(), in.instruction, in.text,
                                             static_cast<int>(n_images));
    auto encode = [&](const std::string& s) {
      for (int32_t t : tok.encode(s, /*add_special_tokens=*/true)) ids.push_back(t);
    };
    if (n_images == 0) {
      encode(prompt);
    } else {
      std::vector<int64_t> tags;
      const auto chunks = text::split_image_tags(prompt, &tags);
      std::vector<int64_t> sorted = tags;
      std::sort(sorted.begin(), sorted.end());
      sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
      bool ok = static_cast<int64_t>(sorted.size()) == n_images;
      for (size_t k = 0; ok && k < sorted.size(); ++k) ok = sorted[k] == static_cast<int64_t>(k + 1);
      UNIME_CHECK(ok, where(in), ": the prompt's image tags must be <|image_1|> .. <|image_", n_images,
                  "|> for its ", n_images, " image(s) (Phi3VProcessor's rule); got ", tags.size(), " tag(s)");
      UNIME_CHECK(static_cast<int64_t>(tags.size()) == n_images, where(in),
                  ": each image must have exactly one <|image_N|> tag in the prompt; got ", tags.size(),
                  " tags for ", n_images, " image(s)");
      for (size_t k = 0; k < chunks.size(); ++k) {
        encode(chunks[k]);
        if (k < tags.size()) ids.insert(ids.end(), n_feat[static_cast<size_t>(tags[k] - 1)], marker);
      }
    }
  }
  int64_t n_image_tokens = 0;
  for (int64_t f : n_feat) n_image_tokens += f;
  const int64_t max_len = c.text->max_position_embeddings;
  if (static_cast<int64_t>(ids.size()) > max_len) {
    UNIME_CHECK(truncate_, where(in), ": input has ", ids.size(),
                " tokens, more than the model's max_position_embeddings (", max_len,
                "); use --truncate to cut it");
    ids.resize(max_len);
    UNIME_CHECK(std::count(ids.begin(), ids.end(), marker) == n_image_tokens, where(in),
                ": --truncate would cut through an image's tokens (", ids.size(), " tokens kept)");
  }
  UNIME_CHECK(!ids.empty(), where(in), ": empty input (no tokens)");
  return ids;
}

const vision::Phi3VProcessorConfig& Encoder::phi3v_processor() {
  if (!proc_phi3v_)
    proc_phi3v_ = std::make_unique<vision::Phi3VProcessorConfig>(vision::load_phi3v_processor_config(
        (fs::path(dir_) / "preprocessor_config.json").string()));
  return *proc_phi3v_;
}

std::vector<std::pair<io::Image, std::string>> Encoder::decode_images(const EmbedInput& in) {
  std::vector<std::pair<io::Image, std::string>> out;
  for (const auto& path : in.images) out.emplace_back(io::load_image(path, max_image_pixels_), path);
  for (size_t i = 0; i < in.image_bytes.size(); ++i) {
    const std::string name = str(where(in), ": image ", i + 1);
    const auto& b = in.image_bytes[i];
    out.emplace_back(io::decode_image(reinterpret_cast<const uint8_t*>(b.data()), b.size(), name,
                                      max_image_pixels_),
                     name);
  }
  return out;
}

torch::Tensor Encoder::pixels(const EmbedInput& in) { return images(in).pixels; }

const vision::Qwen2VLProcessorConfig& Encoder::qwen2vl_processor() {
  if (!proc_qwen2vl_)
    proc_qwen2vl_ = std::make_unique<vision::Qwen2VLProcessorConfig>(vision::load_qwen2vl_processor_config(
        (fs::path(dir_) / "preprocessor_config.json").string()));
  return *proc_qwen2vl_;
}

Encoder::Images Encoder::images(const EmbedInput& in) {
  if (in.images.empty() && in.image_bytes.empty()) return {};
  const auto& c = model_->config();
  if (c.arch == io::Arch::Qwen2VL) {
    const auto& pc = qwen2vl_processor();
    const auto& vc = *c.qwen2vl_vision;
    UNIME_CHECK(pc.patch_size == vc.patch_size && pc.temporal_patch_size == vc.temporal_patch_size &&
                    pc.merge_size == vc.spatial_merge_size,
                dir_, "/preprocessor_config.json: patch_size / temporal_patch_size / merge_size (", pc.patch_size,
                ", ", pc.temporal_patch_size, ", ", pc.merge_size, ") differ from config.json's vision_config (",
                vc.patch_size, ", ", vc.temporal_patch_size, ", ", vc.spatial_merge_size, ")");
    std::vector<torch::Tensor> px;
    std::vector<int64_t> grids;
    for (const auto& [img, name] : decode_images(in)) {
      std::array<int64_t, 3> g{};
      std::vector<float> p = vision::qwen2vl_preprocess(img, pc, &g, name);
      const int64_t row = vc.in_channels * vc.temporal_patch_size * vc.patch_size * vc.patch_size;
      px.push_back(torch::from_blob(p.data(), {g[0] * g[1] * g[2], row}, torch::kFloat32).clone());
      grids.insert(grids.end(), g.begin(), g.end());
    }
    return {torch::cat(px, 0), {}, torch::tensor(grids, torch::kInt64).view({-1, 3})};
  }
  UNIME_CHECK(c.vision, where(in), ": this model (", io::arch_name(c.arch),
              ") has no vision tower; remove the image");
  const auto& vc = *c.vision;
  if (c.arch == io::Arch::Phi3V) {  // HD transform: [global + crops] per image, HD sizes
    std::vector<torch::Tensor> px;
    std::vector<int64_t> sizes;
    const int64_t S = vc.image_size;
    for (const auto& [img, name] : decode_images(in)) {
      std::array<int64_t, 2> hd{};
      std::vector<float> p = vision::phi3v_preprocess(img, phi3v_processor(), S, &hd, name);
      const int64_t n = static_cast<int64_t>(p.size()) / (3 * S * S);
      px.push_back(torch::from_blob(p.data(), {n, 3, S, S}, torch::kFloat32).clone());
      sizes.insert(sizes.end(), hd.begin(), hd.end());
    }
    return {torch::cat(px, 0), torch::tensor(sizes, torch::kInt64).view({-1, 2}), {}};
  }
  const fs::path proc_path = fs::path(dir_) / "preprocessor_config.json";
  std::vector<torch::Tensor> out;
  if (c.arch == io::Arch::LlavaNext) {
    if (!proc_next_)
      proc_next_ = std::make_unique<vision::LlavaNextProcessorConfig>(
          vision::load_llava_next_processor_config(proc_path.string()));
    UNIME_CHECK(proc_next_->tile_size == vc.image_size, proc_path.string(), ": crop_size ",
                proc_next_->tile_size, " differs from the vision tower's image_size ", vc.image_size);
    std::vector<int64_t> sizes;
    for (const auto& [img, name] : decode_images(in)) {
      int64_t n = 0;
      std::vector<float> px = vision::llava_next_preprocess(img, *proc_next_, &n);
      const int64_t S = vc.image_size;
      out.push_back(torch::from_blob(px.data(), {n, 3, S, S}, torch::kFloat32).clone());
      sizes.push_back(img.height);
      sizes.push_back(img.width);
    }
    return {torch::cat(out, 0), torch::tensor(sizes, torch::kInt64).view({-1, 2}), {}};
  }
  if (!proc_)
    proc_ = std::make_unique<vision::ClipProcessorConfig>(vision::load_clip_processor_config(proc_path.string()));
  for (const auto& [img, name] : decode_images(in)) {
    int h = 0, w = 0;
    std::vector<float> chw = vision::clip_preprocess(img, *proc_, &h, &w);
    UNIME_CHECK(h == vc.image_size && w == vc.image_size, name, ": the image processor gives ", h,
                "x", w, " pixels but the vision tower expects ", vc.image_size, "x", vc.image_size,
                "; check preprocessor_config.json crop_size");
    out.push_back(torch::from_blob(chw.data(), {1, 3, h, w}, torch::kFloat32).clone());
  }
  return {torch::cat(out, 0), {}, {}};
}

torch::Tensor Encoder::forward(const std::vector<const EmbedInput*>& inputs,
                               std::vector<std::vector<int64_t>> ids, bool normalize) {
  namespace F = torch::nn::functional;
  const int64_t B = static_cast<int64_t>(inputs.size());
  TORCH_CHECK(B > 0, "Encoder::forward: empty batch");
  const auto& c = model_->config();
  torch::Tensor h;
  if (!c.text) {  // CLIP: one image per input, no text
    std::vector<torch::Tensor> px;
    for (const EmbedInput* in : inputs) {
      UNIME_CHECK(in->images.size() + in->image_bytes.size() == 1 && in->text.empty() &&
                      in->instruction.empty() && !in->input_ids,
                  where(*in), ": a CLIP vision model embeds exactly one image and no text");
      px.push_back(pixels(*in));
    }
    h = model_->clip_image_embeds(torch::cat(px, 0).to(device_)).to(torch::kFloat32);
  } else {
    if (ids.empty())
      for (const EmbedInput* in : inputs) ids.push_back(token_ids(*in));
    // packed back to back, no padding: linear layers see only real tokens, attention runs per
    // sequence, positions restart per sequence (so batching never changes a vector)
    std::vector<int64_t> flat, lens;
    std::vector<torch::Tensor> px, sizes, grids;
    for (int64_t b = 0; b < B; ++b) {
      flat.insert(flat.end(), ids[b].begin(), ids[b].end());
      lens.push_back(static_cast<int64_t>(ids[b].size()));
      auto im = images(*inputs[b]);
      if (im.pixels.defined()) px.push_back(im.pixels);
      if (im.image_sizes.defined()) sizes.push_back(im.image_sizes);
      if (im.grid_thw.defined()) grids.push_back(im.grid_thw);
    }
    models::TokenBatch packed;
    packed.ids = torch::tensor(flat, torch::kInt64).view({1, -1}).to(device_);
    if (!px.empty()) packed.pixels = torch::cat(px, 0).to(device_);
    if (!sizes.empty()) packed.image_sizes = torch::cat(sizes, 0);
    if (!grids.empty()) packed.image_grid_thw = torch::cat(grids, 0);
    h = model_->last_token_hidden_packed(packed, lens).to(torch::kFloat32);  // [B, D]
  }
  return normalize ? F::normalize(h, F::NormalizeFuncOptions().dim(-1)) : h;
}

}  // namespace unime::embed
