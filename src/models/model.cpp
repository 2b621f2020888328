// The architecture registry and weight loading (STYLE.md B2: explicit switch over Arch, checkpoint
// key renames happen here in the loader, never in forward()). Phi3VForCausalLM follows the remote
// code of microsoft/Phi-3.5-vision-instruct (modeling_phi3_v.py, image_embedding_phi3_v.py).
// References: transformers/models/llava/modeling_llava.py (get_image_features, masked_scatter of
// image features, both key layouts: pre-4.52 `language_model.model.*` and current
// `model.language_model.*`), clip/modeling_clip.py (CLIPVisionModel, CLIPModel.get_image_features).
#include "models/model.h"

#include <filesystem>

#include "core/error.h"
#include "io/fs.h"
#include "io/safetensors.h"
#include "unime/runtime.h"
#include "vision/llava-next-processor.h"

namespace unime::models {

namespace fs = std::filesystem;

// ---- projector -----------------------------------------------------------------------------------

ProjectorImpl::ProjectorImpl(int64_t in_dim, int64_t out_dim, const std::string& act, bool bias)
    : act_(act) {
  linear_1 = register_module("linear_1", Linear(in_dim, out_dim, bias));
  linear_2 = register_module("linear_2", Linear(out_dim, out_dim, bias));
}

torch::Tensor ProjectorImpl::forward(const torch::Tensor& x) {
  return linear_2(activation(act_, linear_1(x)));
}

// ---- dtypes --------------------------------------------------------------------------------------

torch::ScalarType default_dtype() {
  return (cpu_has_flag("amx_bf16") || cpu_has_flag("avx512_bf16")) ? torch::kBFloat16
                                                                   : torch::kFloat32;
}

torch::ScalarType parse_dtype(const std::string& s) {
  if (s == "auto") return default_dtype();
  if (s == "f32" || s == "float32" || s == "fp32") return torch::kFloat32;
  if (s == "bf16" || s == "bfloat16") return torch::kBFloat16;
  if (s == "f16" || s == "float16" || s == "fp16") return torch::kFloat16;
  throw Error(str("--dtype: unknown dtype '", s, "'; expected f32, bf16, f16 or auto"));
}

const char* dtype_short_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "f32";
    case torch::kBFloat16: return "bf16";
    case torch::kFloat16: return "f16";
    default: return "?";
  }
}

// ---- construction --------------------------------------------------------------------------------

Model::Model(const io::ModelConfig& cfg, torch::ScalarType dtype) : cfg_(cfg), dtype_(dtype) {
  switch (cfg.arch) {  // all architectures listed; no default (-Wswitch flags a missing one)
    case io::Arch::Llama:
    case io::Arch::Mistral:
    case io::Arch::Qwen2:
      decoder_ = Decoder(*cfg.text);
      prefix_decoder_ = "model.";
      key_lm_head_ = "lm_head.weight";
      break;
    case io::Arch::Qwen2VL:
      decoder_ = Decoder(*cfg.text);
      qwen2vl_vision_ = Qwen2VLVision(*cfg.qwen2vl_vision);
      // transformers >= 4.52 names; checkpoints saved before (all hub releases) are detected at load
      prefix_decoder_ = "model.language_model.";
      prefix_vision_ = "model.visual.";
      key_lm_head_ = "lm_head.weight";
      break;
    case io::Arch::Phi3V:
      decoder_ = Decoder(*cfg.text);
      prefix_decoder_ = "model.";
      key_lm_head_ = "lm_head.weight";
      if (cfg.vision) {  // Phi3ImageEmbedding: img_processor (CLIPVisionModel) + HD transform
        vision_ = ClipVision(*cfg.vision);
        prefix_vision_ = "model.vision_embed_tokens.img_processor.vision_model.";
        phi3v_image_ = Phi3VImageEmbed(cfg.vision->hidden_size, cfg.text->hidden_size);
        prefix_phi3v_ = "model.vision_embed_tokens.";
      }
      break;
    case io::Arch::ClipVision:
      vision_ = ClipVision(*cfg.vision);
      prefix_vision_ = "vision_model.";
      break;
    case io::Arch::Clip:
      vision_ = ClipVision(*cfg.vision);
      visual_projection_ = Linear(cfg.vision->hidden_size, cfg.vision->projection_dim, false);
      prefix_vision_ = "vision_model.";
      break;
    case io::Arch::Llava:
    case io::Arch::LlavaNext: {
      decoder_ = Decoder(*cfg.text);
      vision_ = ClipVision(*cfg.vision);
      const int64_t in_dim =
          cfg.vision->hidden_size * static_cast<int64_t>(cfg.llava.vision_feature_layer.size());
      projector_ = Projector(in_dim, cfg.text->hidden_size, cfg.llava.projector_hidden_act,
                             cfg.llava.multimodal_projector_bias);
      // key layout chosen at load time (legacy vs current); current by default
      prefix_decoder_ = "model.language_model.";
      prefix_vision_ = "model.vision_tower.vision_model.";
      prefix_projector_ = "model.multi_modal_projector.";
      key_lm_head_ = "lm_head.weight";
      if (cfg.arch == io::Arch::LlavaNext) {
        extras_ = std::make_shared<torch::nn::Module>();
        image_newline_ = extras_->register_parameter("image_newline", torch::zeros({cfg.text->hidden_size}));
        prefix_extras_ = "model.";
      }
      break;
    }
  }
  if (decoder_) {
    const auto& t = *cfg.text;
    lm_head_ = Linear(t.hidden_size, t.vocab_size, false);
    if (t.tie_word_embeddings) lm_head_->weight = decoder_->embed_tokens->weight;
  }
  for (auto& [prefix, m] : modules()) m->to(dtype_);
  if (extras_) image_newline_ = extras_->named_parameters()["image_newline"];
  if (lm_head_ && cfg.text->tie_word_embeddings) lm_head_->weight = decoder_->embed_tokens->weight;
}

std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> Model::modules() const {
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> out;
  if (decoder_) out.emplace_back(prefix_decoder_, decoder_.ptr());
  if (vision_) out.emplace_back(prefix_vision_, vision_.ptr());
  if (qwen2vl_vision_) out.emplace_back(prefix_vision_, qwen2vl_vision_.ptr());
  if (projector_) out.emplace_back(prefix_projector_, projector_.ptr());
  if (visual_projection_) out.emplace_back("visual_projection.", visual_projection_.ptr());
  if (extras_) out.emplace_back(prefix_extras_, extras_);
  if (phi3v_image_) out.emplace_back(prefix_phi3v_, phi3v_image_.ptr());
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> Model::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& [prefix, m] : modules())
    for (auto& p : m->named_parameters(/*recurse=*/true)) out.emplace_back(prefix + p.key(), p.value());
  if (lm_head_ && !cfg_.text->tie_word_embeddings) out.emplace_back(key_lm_head_, lm_head_->weight);
  return out;
}

// ---- loading -------------------------------------------------------------------------------------

torch::ScalarType torch_dtype_of(io::DType d, const std::string& where) {
  switch (d) {
    case io::DType::F64: return torch::kFloat64;
    case io::DType::F32: return torch::kFloat32;
    case io::DType::F16: return torch::kFloat16;
    case io::DType::BF16: return torch::kBFloat16;
    case io::DType::I64: return torch::kInt64;
    case io::DType::I32: return torch::kInt32;
    case io::DType::I16: return torch::kInt16;
    case io::DType::I8: return torch::kInt8;
    case io::DType::U8: return torch::kUInt8;
    case io::DType::BOOL: return torch::kBool;
  }
  throw Error(str(where, ": unsupported dtype"));
}

io::DType io_dtype_of(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat64: return io::DType::F64;
    case torch::kFloat32: return io::DType::F32;
    case torch::kFloat16: return io::DType::F16;
    case torch::kBFloat16: return io::DType::BF16;
    default: TORCH_CHECK(false, "io_dtype_of: no safetensors float type for ", t);
  }
}

/// Points parameter `dst` at checkpoint tensor `key`, checking the shape. When the checkpoint
/// already holds `dst`'s dtype (and the data is aligned to it), `dst` becomes a view of the mapped
/// file: no copy, pages read on first use and shared with the page cache, the mapping kept alive
/// by the tensor (written pages are private copies; io::MappedFile). Otherwise the values are
/// converted into a new tensor and the file pages read for it are dropped again.
static void load_into(const io::Checkpoint& ck, const std::string& key, torch::Tensor dst,
                      const std::string& hint) {
  const io::TensorInfo& t = ck.get(key);  // missing -> Error with nearest keys
  std::vector<int64_t> want(dst.sizes().begin(), dst.sizes().end());
  if (t.shape != want)
    throw Error(str(t.file, ": tensor '", key, "' has wrong shape; expected ", io::shape_str(want),
                    ", got ", io::shape_str(t.shape), hint.empty() ? "" : "; hint: " + hint));
  const auto st = torch_dtype_of(t.dtype, t.file);
  TORCH_CHECK(st == torch::kFloat32 || st == torch::kFloat16 || st == torch::kBFloat16 || st == torch::kFloat64,
              "");
  auto* data = const_cast<uint8_t*>(t.data);
  torch::NoGradGuard ng;
  const auto elem = static_cast<uintptr_t>(c10::elementSize(st));
  if (st == dst.scalar_type() && dst.device().is_cpu() && t.owner && t.nbytes > 0 &&
      reinterpret_cast<uintptr_t>(data) % elem == 0) {
    std::shared_ptr<const void> owner = t.owner;
    dst.set_data(torch::from_blob(data, want, [owner](void*) {}, torch::TensorOptions().dtype(st)));
    return;
  }
  auto src = torch::from_blob(data, want, torch::TensorOptions().dtype(st));
  auto own = torch::empty(want, dst.options());
  own.copy_(src);
  dst.set_data(own);
  io::release_mapped_pages(t.data, t.nbytes);
}

std::shared_ptr<Model> Model::load(const std::string& dir, torch::ScalarType dtype) {
  io::ModelConfig cfg = io::load_model_config(dir);
  io::Checkpoint ck = io::Checkpoint::open(dir);
  std::shared_ptr<Model> m;
  {
    SkipInitGuard skip(dtype);  // no random init: every weight comes from the checkpoint below
    m = std::make_shared<Model>(cfg, dtype);
  }
  if (cfg.is_llava_family() && !ck.has("model.language_model.embed_tokens.weight") &&
      ck.has("language_model.model.embed_tokens.weight")) {
    // checkpoints saved before transformers 4.52
    m->prefix_decoder_ = "language_model.model.";
    m->prefix_vision_ = "vision_tower.vision_model.";
    m->prefix_projector_ = "multi_modal_projector.";
    m->key_lm_head_ = "language_model.lm_head.weight";
    m->prefix_extras_ = "";  // LLaVA-NeXT: image_newline at the top level
  }
  if (cfg.arch == io::Arch::Qwen2VL && !ck.has("model.language_model.embed_tokens.weight") &&
      ck.has("model.embed_tokens.weight")) {  // saved before transformers 4.52
    m->prefix_decoder_ = "model.";
    m->prefix_vision_ = "visual.";
  }
  if (cfg.arch == io::Arch::ClipVision && !ck.has("vision_model.embeddings.class_embedding") &&
      ck.has("vision_tower.vision_model.embeddings.class_embedding"))
    m->prefix_vision_ = "vision_tower.vision_model.";
  std::string hint;
  if (cfg.text)
    hint = str("config.json hidden_size=", cfg.text->hidden_size, " - are the weights and config from the same model?");
  else
    hint = "are the weights and config.json from the same model?";
  for (auto& [prefix, mod] : m->modules()) {
    for (auto& p : mod->named_parameters(true)) {
      // LLaVA never uses the CLIP tower's post_layernorm; HF loads it but it does not matter
      const std::string key = prefix + p.key();
      if ((cfg.is_llava_family() || cfg.arch == io::Arch::Phi3V) && m->vision_ && mod == m->vision_.ptr() &&
          p.key().rfind("post_layernorm", 0) == 0 && !ck.has(key))
        continue;
      // Phi-3-V: Phi3ImageEmbedding.wte is embed_tokens itself; a save may keep either name
      if (cfg.arch == io::Arch::Phi3V && key == "model.embed_tokens.weight" && !ck.has(key) &&
          ck.has("model.vision_embed_tokens.wte.weight")) {
        load_into(ck, "model.vision_embed_tokens.wte.weight", p.value(), hint);
        continue;
      }
      load_into(ck, key, p.value(), hint);
    }
  }
  if (m->lm_head_ && !cfg.text->tie_word_embeddings) {
    if (ck.has(m->key_lm_head_)) {
      load_into(ck, m->key_lm_head_, m->lm_head_->weight, hint);
    } else {
      // an embedding-only export may drop the head; embeddings never need it
      m->lm_head_ = Linear{nullptr};
    }
  }
  for (auto& [prefix, mod] : m->modules()) mod->eval();
  return m;
}

// ---- forward pieces -------------------------------------------------------------------------------

torch::Tensor Model::image_features(const torch::Tensor& pixels) {
  TORCH_CHECK(vision_ && projector_, "image_features: not a LLaVA model");
  const auto& L = cfg_.llava;
  int64_t max_layer = 0;
  for (int64_t l : L.vision_feature_layer) max_layer = std::max(max_layer, l);
  auto states = vision_->hidden_states(pixels.to(dtype_), max_layer);
  std::vector<torch::Tensor> sel;
  for (int64_t l : L.vision_feature_layer) {
    auto s = states[l];                                             // [N, P+1, Dv]
    if (L.vision_feature_select_strategy == "default") s = s.narrow(1, 1, s.size(1) - 1);  // drop CLS
    sel.push_back(s);
  }
  auto feats = sel.size() == 1 ? sel[0] : torch::cat(sel, -1);      // [N, F, Dv*k]
  return projector_(feats);                                         // [N, F, D]
}

int64_t Model::image_token_id() const {
  switch (cfg_.arch) {
    case io::Arch::Qwen2VL: return cfg_.qwen2vl.image_token_id;
    case io::Arch::Phi3V: return io::Phi3VFields::kImageToken;
    case io::Arch::Llava:
    case io::Arch::LlavaNext: return cfg_.llava.image_token_id;
    case io::Arch::Llama:
    case io::Arch::Mistral:
    case io::Arch::Qwen2:
    case io::Arch::ClipVision:
    case io::Arch::Clip: break;
  }
  TORCH_CHECK(false, "image_token_id: ", io::arch_name(cfg_.arch), " takes no images in its tokens");
}

// Phi3ImageEmbedding.forward / hd_feature_transform: every crop through CLIP, the hidden state at
// img_processor.layer_idx without CLS, then the HD transform. -> [sum F_i, D]
static torch::Tensor phi3v_image_features(Model& m, const TokenBatch& batch) {
  TORCH_CHECK(m.vision_ && m.phi3v_image_, "image_features: this Phi3V config has no image embedding");
  TORCH_CHECK(batch.image_sizes.defined() && batch.image_sizes.dim() == 2 && batch.image_sizes.size(1) == 2,
              "image_features: Phi-3-V needs image_sizes [N, 2] (the HD sizes)");
  const int64_t layer = m.config().phi3v.layer_idx;
  auto states = m.vision_->hidden_states(batch.pixels.to(m.dtype()), layer);
  auto f = states[layer];                                           // [crops, g*g + 1, C]
  f = f.narrow(1, 1, f.size(1) - 1);                                // type_feature "patch": no CLS
  return m.phi3v_image_(f, batch.image_sizes, m.config().vision->image_size);
}

torch::Tensor Model::image_features(const TokenBatch& batch) {
  if (cfg_.arch == io::Arch::Phi3V) return phi3v_image_features(*this, batch);
  if (cfg_.arch == io::Arch::Qwen2VL) {
    TORCH_CHECK(batch.image_grid_thw.defined(), "image_features: Qwen2-VL needs image_grid_thw");
    return qwen2vl_vision_(batch.pixels.to(dtype_), batch.image_grid_thw);     // [sum t*h*w/m^2, D]
  }
  return image_features(batch.pixels, batch.image_sizes);
}

// get_rope_index (modeling_qwen2_vl.py), images only: text runs count up from the previous
// maximum + 1 on all three components; an image's tokens get (t, row, col) on the merged grid
// offset by the text before it. An image is one whose <|vision_start|> is followed by an image token.
torch::Tensor Model::mrope_positions(const std::vector<int64_t>& ids, const torch::Tensor& grid_thw,
                                     int64_t* next_image) const {
  const auto& q = cfg_.qwen2vl;
  const int64_t T = static_cast<int64_t>(ids.size()), m = cfg_.qwen2vl_vision->spatial_merge_size;
  int64_t n_img = 0;
  for (int64_t i = 0; i + 1 < T; ++i) n_img += ids[i] == q.vision_start_token_id && ids[i + 1] == q.image_token_id;
  std::vector<int64_t> p[3];
  int64_t st = 0, next = 0;  // next position index (max + 1)
  auto text = [&](int64_t n) {
    for (int64_t k = 0; k < n; ++k)
      for (auto& c : p) c.push_back(next + k);
    next += n;
  };
  for (int64_t k = 0; k < n_img; ++k) {
    int64_t ed = st;
    while (ed < T && ids[ed] != q.image_token_id) ++ed;
    TORCH_CHECK(ed < T && grid_thw.defined() && *next_image < grid_thw.size(0),
                "mrope_positions: more images in the tokens than in image_grid_thw");
    const int64_t t = grid_thw[*next_image][0].item<int64_t>();
    const int64_t gh = grid_thw[*next_image][1].item<int64_t>() / m, gw = grid_thw[*next_image][2].item<int64_t>() / m;
    ++*next_image;
    text(ed - st);
    int64_t mx = 0;
    for (int64_t a = 0; a < t; ++a)
      for (int64_t b = 0; b < gh; ++b)
        for (int64_t c = 0; c < gw; ++c) {
          p[0].push_back(next + a);
          p[1].push_back(next + b);
          p[2].push_back(next + c);
          mx = std::max({mx, a, b, c});
        }
    next += mx + 1;
    st = ed + t * gh * gw;
  }
  if (st < T) text(T - st);
  TORCH_CHECK(static_cast<int64_t>(p[0].size()) == T, "mrope_positions: an image's tokens run past the end");
  return torch::stack({torch::tensor(p[0], torch::kInt64), torch::tensor(p[1], torch::kInt64),
                       torch::tensor(p[2], torch::kInt64)});                 // [3, T]
}

int64_t Model::image_feature_tokens(int64_t height, int64_t width) const {
  TORCH_CHECK(cfg_.arch != io::Arch::Qwen2VL, "image_feature_tokens: Qwen2-VL counts depend on the "
              "processor's min/max pixels (vision::qwen2vl_image_tokens)");
  TORCH_CHECK(cfg_.arch != io::Arch::Phi3V, "image_feature_tokens: Phi-3-V counts depend on the "
              "processor's num_crops (vision::phi3v_image_tokens)");
  if (cfg_.arch != io::Arch::LlavaNext) return cfg_.image_feature_tokens();
  const auto& v = *cfg_.vision;
  return vision::anyres_feature_tokens(height, width, cfg_.llava.image_grid_pinpoints, v.image_size,
                                       v.image_size / v.patch_size);
}

// LLaVA-NeXT: LlavaNextModel.get_image_features + pack_image_features. pixels: [sum crops, C, S, S],
// image_sizes [N, 2] (original height, width) -> [sum F_i, D]
torch::Tensor Model::image_features(const torch::Tensor& pixels, const torch::Tensor& image_sizes) {
  if (cfg_.arch != io::Arch::LlavaNext) return image_features(pixels).flatten(0, 1);  // [N*F, D]
  TORCH_CHECK(image_sizes.defined() && image_sizes.dim() == 2 && image_sizes.size(1) == 2,
              "image_features: LLaVA-NeXT needs image_sizes [N, 2]");
  const auto& v = *cfg_.vision;
  const auto& pins = cfg_.llava.image_grid_pinpoints;
  const int64_t S = v.image_size, g = S / v.patch_size;
  auto sizes = image_sizes.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t N = sizes.size(0);
  int64_t total_crops = 0;
  for (int64_t i = 0; i < N; ++i)
    total_crops += vision::anyres_num_crops(sizes[i][0].item<int64_t>(), sizes[i][1].item<int64_t>(), pins, S);
  TORCH_CHECK(pixels.size(0) == total_crops, "image_features: ", pixels.size(0), " crops for ", N,
              " images that need ", total_crops);
  auto feats = image_features(pixels);                              // [crops, g*g, D]
  const int64_t D = feats.size(2);
  auto newline = image_newline_.to(feats.scalar_type());
  std::vector<torch::Tensor> out;
  int64_t off = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t h = sizes[i][0].item<int64_t>(), w = sizes[i][1].item<int64_t>();
    const auto [bh, bw] = vision::select_best_resolution(h, w, pins);
    const int64_t nph = bh / S, npw = bw / S;
    out.push_back(feats[off]);                                      // base image [g*g, D]
    auto t = feats.narrow(0, off + 1, nph * npw)
                 .view({nph, npw, g, g, D})
                 .permute({4, 0, 2, 1, 3})                          // [D, nph, g, npw, g]
                 .reshape({D, nph * g, npw * g});                   // [D, rows, cols]
    // unpad_image: centre window with the original aspect ratio (same numbers as the processor)
    const auto [rows, cols] = vision::anyres_unpadded_grid(h, w, pins, S, g);
    t = t.narrow(1, (nph * g - rows) / 2, rows).narrow(2, (npw * g - cols) / 2, cols);
    t = torch::cat({t, newline.view({D, 1, 1}).expand({D, rows, 1})}, 2);  // [D, rows, cols+1]
    out.push_back(t.flatten(1, 2).transpose(0, 1));                 // [rows*(cols+1), D]
    off += 1 + nph * npw;
  }
  return torch::cat(out, 0);                                        // [sum F_i, D]
}

std::vector<torch::Tensor> Model::clip_hidden_states(const torch::Tensor& pixels) {
  TORCH_CHECK(vision_, "clip_hidden_states: no vision tower");
  return vision_->hidden_states(pixels.to(dtype_), cfg_.vision->num_hidden_layers);
}

torch::Tensor Model::clip_image_embeds(const torch::Tensor& pixels) {
  auto states = clip_hidden_states(pixels);
  auto pooled = vision_->pooled(states.back());                     // [N, Dv]
  return visual_projection_ ? visual_projection_(pooled) : pooled;
}

torch::Tensor Model::input_embeddings(const TokenBatch& batch) {
  TORCH_CHECK(decoder_, "input_embeddings: no decoder");
  auto ids = batch.ids;
  torch::Tensor is_image;
  if (cfg_.arch == io::Arch::Phi3V && vision_) {
    // Phi3ImageEmbedding: negative ids mark image positions; ids are clamped for the lookup
    is_image = ids < 0;
    ids = ids.masked_fill(is_image, 0);                             // [B, T]
  } else if (cfg_.is_llava_family() || cfg_.arch == io::Arch::Qwen2VL) {
    is_image = ids == image_token_id();
    ids = ids.masked_fill(is_image, 0);  // image rows are replaced below       [B, T]
  }
  auto emb = decoder_->embed(ids);                                  // [B, T, D]
  if (!is_image.defined()) return emb;
  const int64_t n_tok = is_image.sum().item<int64_t>();
  if (n_tok == 0) return emb;
  TORCH_CHECK(batch.pixels.defined(), "input_embeddings: image tokens but no pixels");
  auto feats = image_features(batch);                               // [sum F_i, D]
  TORCH_CHECK(feats.size(0) == n_tok, "input_embeddings: ", n_tok, " image tokens for ",
              feats.size(0), " image features");
  auto mask = is_image.unsqueeze(-1).expand_as(emb);
  return emb.masked_scatter(mask, feats.to(emb.scalar_type()).reshape({-1}));
}

// M-RoPE positions [3, B, T] of a padded batch: each row's real tokens through get_rope_index;
// padding gets 1 as in HF (masked out anyway)
static torch::Tensor mrope_positions_padded(const Model& m, const TokenBatch& batch) {
  auto ids = batch.ids.to(torch::kCPU).contiguous();
  auto real = batch.key_real.to(torch::kCPU).contiguous();
  const int64_t B = ids.size(0), T = ids.size(1);
  auto grid = batch.image_grid_thw.defined() ? batch.image_grid_thw.to(torch::kCPU, torch::kInt64) : torch::Tensor();
  auto pos = torch::ones({3, B, T}, torch::kInt64);
  int64_t next_image = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> row, cols;
    for (int64_t t = 0; t < T; ++t)
      if (real[b][t].item<bool>()) {
        row.push_back(ids[b][t].item<int64_t>());
        cols.push_back(t);
      }
    auto p = m.mrope_positions(row, grid, &next_image);                      // [3, L]
    pos.select(1, b).index_copy_(1, torch::tensor(cols, torch::kInt64), p);
  }
  return pos.to(batch.ids.device());
}

// decoder output before the final norm for a padded batch: [B, T, D]
static torch::Tensor padded_forward(Model& m, const TokenBatch& batch) {
  auto positions = m.config().arch == io::Arch::Qwen2VL ? mrope_positions_padded(m, batch)
                                                        : positions_from_mask(batch.key_real);
  return m.decoder_->forward(m.input_embeddings(batch), positions, batch.key_real);
}

torch::Tensor Model::hidden(const TokenBatch& batch) {
  return decoder_->norm(padded_forward(*this, batch));
}

torch::Tensor Model::last_token_hidden(const TokenBatch& batch) {
  auto h = padded_forward(*this, batch);                            // [B, T, D]
  // index of the right-most real token of each row
  const int64_t T = batch.key_real.size(1);
  auto idx = torch::arange(T, torch::TensorOptions().dtype(torch::kInt64).device(h.device()));
  auto last = (batch.key_real.to(torch::kInt64) * (idx + 1)).argmax(1);  // [B]
  auto rows = h.index({torch::arange(h.size(0), idx.options()), last}); // [B, D]
  return decoder_->norm(rows);
}

torch::Tensor Model::last_token_hidden_packed(const torch::Tensor& ids, const std::vector<int64_t>& lens,
                                             const torch::Tensor& pixels) {
  return last_token_hidden_packed(TokenBatch{ids, {}, pixels, {}, {}}, lens);
}

torch::Tensor Model::last_token_hidden_packed(const TokenBatch& packed, const std::vector<int64_t>& lens) {
  const auto& ids = packed.ids;
  auto real = torch::ones(ids.sizes(), torch::TensorOptions().dtype(torch::kBool).device(ids.device()));
  auto emb = input_embeddings(TokenBatch{ids, real, packed.pixels, packed.image_sizes,
                                         packed.image_grid_thw});   // [1, N, D]
  torch::Tensor h;
  if (cfg_.arch == io::Arch::Qwen2VL) {  // M-RoPE positions per sequence, packed: [3, 1, N]
    auto flat = ids.to(torch::kCPU).contiguous();
    const int64_t* p = flat.data_ptr<int64_t>();
    auto grid = packed.image_grid_thw.defined() ? packed.image_grid_thw.to(torch::kCPU, torch::kInt64)
                                                : torch::Tensor();
    std::vector<torch::Tensor> pos;
    int64_t off = 0, next_image = 0;
    for (int64_t L : lens) {
      pos.push_back(mrope_positions(std::vector<int64_t>(p + off, p + off + L), grid, &next_image));
      off += L;
    }
    auto pos3 = torch::cat(pos, 1).unsqueeze(1).to(ids.device());
    h = decoder_->forward_packed(emb, lens, decoder_->rope(pos3, emb.scalar_type()))[0];  // [N, D]
  } else {
    h = decoder_->forward_packed(emb, lens)[0];                     // [N, D]
  }
  std::vector<int64_t> last;
  int64_t off = 0;
  for (int64_t L : lens) {
    off += L;
    last.push_back(off - 1);  // each sequence's last token
  }
  auto idx = torch::tensor(last, torch::TensorOptions().dtype(torch::kInt64)).to(h.device());
  return decoder_->norm(h.index_select(0, idx));                    // [B, D]
}

// ---- image tokens -------------------------------------------------------------------------------

std::vector<int64_t> expand_image_tokens(const std::vector<int64_t>& ids, int64_t image_token,
                                         const std::vector<int64_t>& n_feat, const std::string& where) {
  int64_t count = 0, total = 0;
  for (int64_t t : ids) count += t == image_token;
  for (int64_t f : n_feat) total += f;
  const int64_t n_images = static_cast<int64_t>(n_feat.size());
  if (count == total) return ids;  // runs of the feature counts used in place
  if (count == n_images) {
    std::vector<int64_t> out;
    out.reserve(ids.size() + total);
    size_t k = 0;
    for (int64_t t : ids) {
      if (t == image_token) out.insert(out.end(), n_feat[k++], image_token);
      else out.push_back(t);
    }
    return out;
  }
  std::string counts;
  for (int64_t f : n_feat) counts += (counts.empty() ? "" : " + ") + std::to_string(f);
  throw Error(str(where, ": ", count, " image tokens (id ", image_token, ") for ", n_images,
                  " image(s); expected one per image or ", counts, " (the images' feature tokens)"));
}

std::vector<int64_t> expand_image_tokens(const std::vector<int64_t>& ids, int64_t image_token,
                                         int64_t n_images, int64_t n_feat, const std::string& where) {
  int64_t count = 0;
  for (int64_t t : ids) count += t == image_token;
  if (count == n_images * n_feat) return ids;  // a run of feature-count tokens used in place
  if (count == n_images) {
    std::vector<int64_t> out;
    out.reserve(ids.size() + n_images * (n_feat - 1));
    for (int64_t t : ids) {
      if (t == image_token) out.insert(out.end(), n_feat, image_token);
      else out.push_back(t);
    }
    return out;
  }
  throw Error(str(where, ": ", count, " image tokens (id ", image_token, ") for ", n_images,
                  " image(s); expected one per image or ", n_feat, " per image"));
}

}  // namespace unime::models
