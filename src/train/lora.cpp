// LoRA / QLoRA adapters and `unime merge`; see lora.h and merge.h. References: peft
// tuners/lora/config.py (LoraConfig fields and defaults), tuners/tuners_utils.py
// (check_target_module_exists: str -> re.fullmatch, list -> equal or ".name" suffix),
// tuners/lora/layer.py (reset_lora_parameters: kaiming_uniform_(A, a=sqrt(5)), zeros_(B);
// scaling = alpha / r or alpha / sqrt(r)), utils/save_and_load.py (get_peft_model_state_dict:
// "lora_" keys with the adapter name removed, prefix "base_model.model."), utils/other.py
// (get_pattern_key: rank_pattern / alpha_pattern keys match "(^|.*\.)key$").
#include "train/lora.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "core/error.h"
#include "io/fs.h"
#include "io/safetensors.h"
#include "train/merge.h"

namespace unime::train {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kPeftPrefix = "base_model.model.";
constexpr const char* kAdapterConfig = "adapter_config.json";
constexpr const char* kAdapterWeights = "adapter_model.safetensors";

// ---- config + module discovery -------------------------------------------------------------------

void LoraConfig::validate() const {
  UNIME_CHECK(r > 0, "LoRA: r must be > 0, got ", r);
  UNIME_CHECK(alpha > 0, "LoRA: alpha must be > 0, got ", alpha);
  UNIME_CHECK(dropout >= 0 && dropout < 1, "LoRA: dropout must be in [0, 1), got ", dropout);
  UNIME_CHECK(!target_modules.empty(), "LoRA: no target modules given");
  UNIME_CHECK(!include_vision || !vision_target_modules.empty(),
              "LoRA: include_vision set but no vision target modules given");
  UNIME_CHECK(dtype == torch::kFloat32 || dtype == torch::kBFloat16 || dtype == torch::kFloat16 ||
                  dtype == torch::kFloat64,
              "LoRA: adapter dtype must be a float type");
}

bool peft_target_matches(const std::vector<std::string>& targets, const std::string& name) {
  for (const auto& t : targets) {
    if (name == t) return true;
    if (name.size() > t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0 &&
        name[name.size() - t.size() - 1] == '.')
      return true;
  }
  return false;
}

namespace {

struct ScopedLinear {
  std::string name;
  models::Linear linear{nullptr};
  bool vision;  // vision tower / projector / visual_projection
};

std::vector<ScopedLinear> all_linears(const models::Model& m) {
  std::vector<ScopedLinear> out;
  for (const auto& [prefix, mod] : m.modules()) {
    const bool vision = !(m.decoder_ && mod == m.decoder_.ptr());
    for (const auto& item : mod->named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
      auto lin = std::dynamic_pointer_cast<models::LinearImpl>(item.value());
      if (!lin) continue;
      std::string name = item.key().empty() ? prefix.substr(0, prefix.size() - 1) : prefix + item.key();
      out.push_back({std::move(name), models::Linear(lin), vision});
    }
  }
  return out;
}

torch::ScalarType torch_dtype(io::DType d, const std::string& where) {
  if (d == io::DType::F64 || d == io::DType::F32 || d == io::DType::F16 || d == io::DType::BF16)
    return models::torch_dtype_of(d, where);
  throw Error(str(where, ": expected a float tensor, got ", io::dtype_name(d)));
}

/// A checkpoint tensor copied into a fresh CPU tensor (the mapping may be unaligned).
torch::Tensor read_tensor(const io::TensorInfo& t) {
  auto out = torch::empty(t.shape, torch::TensorOptions().dtype(torch_dtype(t.dtype, t.file + ": tensor '" + t.name + "'")));
  if (t.nbytes) std::memcpy(out.data_ptr(), t.data, t.nbytes);
  return out;
}

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (std::strchr(".^$|()[]{}*+?\\", ch)) out += '\\';
    out += ch;
  }
  return out;
}

}  // namespace

std::vector<NamedLinear> find_linears(const models::Model& m, bool include_vision) {
  std::vector<NamedLinear> out;
  for (auto& l : all_linears(m))
    if (include_vision || !l.vision) out.push_back({l.name, l.linear});
  return out;
}

void freeze(models::Model& m) {
  for (auto& [prefix, mod] : m.modules())
    for (auto& p : mod->parameters(/*recurse=*/true)) p.set_requires_grad(false);
  if (m.lm_head_) m.lm_head_->weight.set_requires_grad(false);
}

void quantize_nf4(models::Model& m, bool include_vision, bool double_quant) {
  for (auto& l : find_linears(m, include_vision))
    if (!l.linear->is_quantized()) l.linear->quantize_nf4(double_quant);
}

// ---- LoraSet ---------------------------------------------------------------------------------------

std::vector<std::pair<std::string, torch::Tensor>> LoraSet::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& m : mods_) {
    out.emplace_back(kPeftPrefix + m.name + ".lora_A.weight", m.linear->lora_A);
    out.emplace_back(kPeftPrefix + m.name + ".lora_B.weight", m.linear->lora_B);
  }
  return out;
}

std::vector<torch::Tensor> LoraSet::parameters() const {
  std::vector<torch::Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t LoraSet::n_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

std::string LoraSet::target_modules_json() const {
  std::set<std::string> wrapped;
  for (const auto& m : mods_) wrapped.insert(m.name);
  // 1. the configured list, if PEFT's list rule picks exactly the wrapped modules of this model
  std::vector<std::string> names = cfg_.target_modules;
  if (cfg_.include_vision)
    names.insert(names.end(), cfg_.vision_target_modules.begin(), cfg_.vision_target_modules.end());
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  // names no layer of this model carries (e.g. Phi-3's qkv_proj on a Llama) select nothing: drop them
  names.erase(std::remove_if(names.begin(), names.end(),
                             [&](const std::string& t) {
                               if (t == "all-linear") return false;
                               for (const auto& l : model_linears_)
                                 if (peft_target_matches({t}, l)) return false;
                               return true;
                             }),
              names.end());
  if (std::find(names.begin(), names.end(), "all-linear") == names.end()) {
    std::set<std::string> picked;
    for (const auto& l : model_linears_)
      if (peft_target_matches(names, l)) picked.insert(l);
    if (picked == wrapped) return json(names).dump();
  }
  // 2. a regex over the scope prefixes and leaf names, when it selects exactly the wrapped set
  std::set<std::string> leaves, scopes;
  for (const auto& n : wrapped) {
    const auto dot = n.rfind('.');
    leaves.insert(dot == std::string::npos ? n : n.substr(dot + 1));
    // scope: the path before "layers." (repeated blocks), else the leaf's parent path
    const auto cut = n.find(".layers.");
    scopes.insert(cut != std::string::npos ? n.substr(0, cut + 1)
                                           : dot == std::string::npos ? "" : n.substr(0, dot + 1));
  }
  auto join = [](const std::set<std::string>& s) {
    std::string out;
    for (const auto& x : s) {
      if (!out.empty()) out += '|';
      out += regex_escape(x);
    }
    return out;
  };
  std::string rx = "(?:" + join(scopes) + ")(?:.*\\.)?(?:" + join(leaves) + ")";
  bool exact = true;
  try {
    const std::regex re(rx);  // PEFT: re.fullmatch(target_modules, module path)
    for (const auto& l : model_linears_)
      if (std::regex_match(l, re) != (wrapped.count(l) > 0)) exact = false;
  } catch (const std::regex_error&) {
    exact = false;
  }
  // 3. otherwise the explicit alternation of the wrapped module paths
  if (!exact) rx = "(?:" + join(wrapped) + ")";
  return json(rx).dump();
}

void LoraSet::save(const std::string& dir, const std::string& base_model_name) const {
  UNIME_CHECK(!mods_.empty(), "LoRA save to ", dir, ": no adapters attached");
  std::error_code ec;
  fs::create_directories(dir, ec);
  UNIME_CHECK(!ec, dir, ": cannot create the adapter folder: ", ec.message());
  json rank_pattern = json::object(), alpha_pattern = json::object();
  for (const auto& m : mods_) {
    if (m.r != cfg_.r) rank_pattern[m.name] = m.r;
    if (m.alpha != cfg_.alpha) alpha_pattern[m.name] = m.alpha;
  }
  json cfg = {
      {"alpha_pattern", alpha_pattern},
      {"base_model_name_or_path", base_model_name},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"lora_alpha", cfg_.alpha},
      {"lora_dropout", cfg_.dropout},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", cfg_.r},
      {"rank_pattern", rank_pattern},
      {"revision", nullptr},
      {"target_modules", json::parse(target_modules_json())},
      {"task_type", nullptr},
      {"use_dora", false},
      {"use_rslora", cfg_.use_rslora},
  };
  // tensors: contiguous CPU copies in the adapter dtype, PEFT key names
  std::vector<torch::Tensor> keep;
  std::vector<io::TensorToWrite> tensors;
  for (const auto& [name, t] : named_parameters()) {
    keep.push_back(t.detach().to(torch::kCPU).contiguous());
    tensors.push_back({name, models::io_dtype_of(keep.back().scalar_type()),
                       std::vector<int64_t>(t.sizes().begin(), t.sizes().end()), keep.back().data_ptr()});
  }
  io::write_safetensors(io::join_path(dir, kAdapterWeights), tensors, {{"format", "pt"}});
  io::write_file_atomic(io::join_path(dir, kAdapterConfig), cfg.dump(2) + "\n");
}

void LoraSet::merge() {
  for (auto& m : mods_) m.linear->merge_lora();
  mods_.clear();
}

// ---- attaching -------------------------------------------------------------------------------------

LoraSet apply_lora(models::Model& m, const LoraConfig& c, uint64_t seed) {
  c.validate();
  LoraSet set;
  set.cfg_ = c;
  std::vector<ScopedLinear> linears = all_linears(m);
  for (const auto& l : linears) set.model_linears_.push_back(l.name);
  const bool all_dec = c.target_modules.size() == 1 && c.target_modules[0] == "all-linear";
  const bool all_vis = c.vision_target_modules.size() == 1 && c.vision_target_modules[0] == "all-linear";
  std::vector<ScopedLinear> chosen;
  for (const auto& l : linears) {
    if (l.vision && !c.include_vision) continue;
    const bool hit = l.vision ? (all_vis || peft_target_matches(c.vision_target_modules, l.name))
                              : (all_dec || peft_target_matches(c.target_modules, l.name));
    if (hit) chosen.push_back(l);
  }
  if (chosen.empty()) {
    std::string t;
    for (const auto& x : c.target_modules) t += (t.empty() ? "" : ",") + x;
    throw Error(str("LoRA: no linear layer matches the target modules [", t, "]",
                    c.include_vision ? " (vision included)" : " in the decoder",
                    m.has_decoder() ? "" : "; this model has no decoder: set include_vision"));
  }
  for (const auto& l : chosen)
    UNIME_CHECK(!l.linear->has_lora(), "LoRA: ", l.name, " already has an adapter attached");

  freeze(m);
  if (c.qlora) quantize_nf4(m, c.include_vision, c.double_quant);

  auto gen = at::detail::createCPUGenerator(seed);
  const double scaling = c.use_rslora ? c.alpha / std::sqrt(static_cast<double>(c.r)) : c.alpha / c.r;
  for (auto& l : chosen) {
    const int64_t I = l.linear->in_features, O = l.linear->out_features;
    const auto dev = l.linear->is_quantized() ? l.linear->nf4().codes.device()
                                              : l.linear->weight.device();
    // kaiming_uniform_(a=sqrt(5)) on A [r, I]: gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / I)
    const double bound = 1.0 / std::sqrt(static_cast<double>(I));
    torch::Tensor A = torch::empty({c.r, I}, torch::kFloat32);
    {
      torch::NoGradGuard ng;
      A.uniform_(-bound, bound, gen);
    }
    A = A.to(c.dtype).to(dev).set_requires_grad(true);
    auto B = torch::zeros({O, c.r}, torch::TensorOptions().dtype(c.dtype).device(dev)).set_requires_grad(true);
    l.linear->attach_lora(A, B, scaling, c.dropout);
    set.mods_.push_back({l.name, l.linear, c.r, c.alpha});
  }
  return set;
}

namespace {

/// LLaVA checkpoints exist in two key layouts (transformers < 4.52 and after); an adapter trained
/// on one must load on the other. Pairs of equivalent prefixes.
const std::vector<std::pair<std::string, std::string>>& layout_aliases() {
  static const std::vector<std::pair<std::string, std::string>> kAliases = {
      {"model.language_model.", "language_model.model."},
      {"model.vision_tower.", "vision_tower."},
      {"model.multi_modal_projector.", "multi_modal_projector."},
  };
  return kAliases;
}

/// PEFT get_pattern_key: the first pattern key k with re.match("(^|.*\.)k$", name).
const json* pattern_value(const json& patterns, const std::string& name) {
  for (auto it = patterns.begin(); it != patterns.end(); ++it) {
    try {
      if (std::regex_match(name, std::regex("(^|.*\\.)" + it.key()))) return &it.value();
    } catch (const std::regex_error&) {
      if (name == it.key()) return &it.value();
    }
  }
  return nullptr;
}

template <class T>
T field(const json& j, const char* key, T fallback, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    throw Error(str(where, ": field '", key, "' has the wrong type (", j[key].dump(), ")"));
  }
}

}  // namespace

LoraSet load_lora(models::Model& m, const std::string& dir, bool trainable, torch::ScalarType dtype) {
  const std::string cfg_path = io::join_path(dir, kAdapterConfig);
  const std::string w_path = io::join_path(dir, kAdapterWeights);
  UNIME_CHECK(io::is_directory(dir), dir, ": not a folder (expected a PEFT adapter folder with ",
              kAdapterConfig, " and ", kAdapterWeights, ")");
  json j;
  try {
    j = json::parse(io::read_file(cfg_path));
  } catch (const json::exception& e) {
    throw Error(str(cfg_path, ": invalid JSON: ", e.what()));
  }
  UNIME_CHECK(j.is_object(), cfg_path, ": expected a JSON object");
  const std::string peft_type = field<std::string>(j, "peft_type", "", cfg_path);
  UNIME_CHECK(peft_type == "LORA", cfg_path, ": peft_type is '", peft_type, "'; only LORA adapters are supported");
  UNIME_CHECK(!field<bool>(j, "use_dora", false, cfg_path), cfg_path, ": DoRA adapters (use_dora) are not supported");
  const std::string bias = field<std::string>(j, "bias", "none", cfg_path);
  UNIME_CHECK(bias == "none", cfg_path, ": bias '", bias, "' is not supported (expected \"none\")");
  UNIME_CHECK(!j.contains("modules_to_save") || j["modules_to_save"].is_null() ||
                  (j["modules_to_save"].is_array() && j["modules_to_save"].empty()),
              cfg_path, ": modules_to_save is not supported (the adapter carries full module copies)");

  LoraSet set;
  set.cfg_.r = field<int64_t>(j, "r", 8, cfg_path);  // PEFT defaults: r 8, lora_alpha 8
  set.cfg_.alpha = field<double>(j, "lora_alpha", 8.0, cfg_path);
  set.cfg_.dropout = field<double>(j, "lora_dropout", 0.0, cfg_path);
  set.cfg_.use_rslora = field<bool>(j, "use_rslora", false, cfg_path);
  set.cfg_.dtype = dtype;
  UNIME_CHECK(set.cfg_.r > 0, cfg_path, ": r must be > 0, got ", set.cfg_.r);
  UNIME_CHECK(set.cfg_.dropout >= 0 && set.cfg_.dropout < 1, cfg_path, ": lora_dropout must be in [0, 1)");
  if (j.contains("target_modules") && j["target_modules"].is_array())
    set.cfg_.target_modules = field<std::vector<std::string>>(j, "target_modules", {}, cfg_path);
  const json rank_pattern = j.contains("rank_pattern") && j["rank_pattern"].is_object() ? j["rank_pattern"] : json::object();
  const json alpha_pattern = j.contains("alpha_pattern") && j["alpha_pattern"].is_object() ? j["alpha_pattern"] : json::object();

  if (!io::is_regular_file(w_path)) {
    const bool bin = io::is_regular_file(io::join_path(dir, "adapter_model.bin"));
    throw Error(str(w_path, ": missing", bin ? "; adapter_model.bin (pickle) is not supported: re-save "
                                                "with save_pretrained(safe_serialization=True)"
                                              : ""));
  }
  const io::Checkpoint ck = io::Checkpoint::open(w_path);

  std::map<std::string, models::Linear> by_name;
  std::vector<std::string> names;
  for (auto& l : all_linears(m)) {
    by_name.emplace(l.name, l.linear);
    names.push_back(l.name);
    set.model_linears_.push_back(l.name);
  }
  auto resolve = [&](const std::string& path) -> std::string {
    if (by_name.count(path)) return path;
    for (const auto& [a, b] : layout_aliases()) {
      for (const auto& [from, to] : {std::pair{a, b}, std::pair{b, a}}) {
        if (path.rfind(from, 0) == 0 && by_name.count(to + path.substr(from.size())))
          return to + path.substr(from.size());
      }
    }
    return "";
  };

  // group the file's tensors by module: path -> (A, B)
  std::map<std::string, std::pair<const io::TensorInfo*, const io::TensorInfo*>> groups;
  std::vector<std::string> order;
  for (const auto& [key, info] : ck.tensors()) {
    const std::string pre = kPeftPrefix;
    std::string path;
    bool is_a = false;
    for (const char* suffix : {".lora_A.weight", ".lora_B.weight"}) {
      const std::string s = suffix;
      if (key.size() > pre.size() + s.size() && key.rfind(pre, 0) == 0 &&
          key.compare(key.size() - s.size(), s.size(), s) == 0) {
        path = key.substr(pre.size(), key.size() - pre.size() - s.size());
        is_a = s == ".lora_A.weight";
      }
    }
    UNIME_CHECK(!path.empty(), w_path, ": unsupported tensor '", key, "'; expected ", kPeftPrefix,
                "<module>.lora_A.weight / .lora_B.weight (embedding, DoRA and bias adapters are not supported)");
    const std::string target = resolve(path);
    if (target.empty()) {
      std::string near;
      for (const auto& n : io::nearest_names(path, names)) near += (near.empty() ? "" : ", ") + n;
      throw Error(str(w_path, ": tensor '", key, "' names module '", path,
                      "', which is not a linear layer of this model; nearest: ", near,
                      "; hint: was the adapter trained on this base model?"));
    }
    auto& g = groups[target];
    if (!g.first && !g.second) order.push_back(target);
    (is_a ? g.first : g.second) = &info;
  }
  UNIME_CHECK(!groups.empty(), w_path, ": no LoRA tensors");

  // modules in model order (not file order) so that parameter lists are stable
  std::vector<std::string> ordered;
  for (const auto& n : names)
    if (groups.count(n)) ordered.push_back(n);
  for (const auto& name : ordered) {
    const auto& [ta, tb] = groups[name];
    UNIME_CHECK(ta && tb, w_path, ": module '", name, "' has ", ta ? "lora_A" : "lora_B",
                " but no ", ta ? "lora_B" : "lora_A", " weight");
    models::Linear lin = by_name.at(name);
    UNIME_CHECK(!lin->has_lora(), dir, ": module '", name,
                "' already has an adapter attached; merge it first (one adapter per layer at a time)");
    UNIME_CHECK(ta->shape.size() == 2 && tb->shape.size() == 2, w_path, ": tensor '", ta->name,
                "' / '", tb->name, "' must be 2-D, got ", io::shape_str(ta->shape), " and ", io::shape_str(tb->shape));
    const int64_t r = ta->shape[0];
    const int64_t I = lin->in_features, O = lin->out_features;
    UNIME_CHECK(ta->shape[1] == I && tb->shape[0] == O && tb->shape[1] == r, w_path, ": module '", name,
                "': expected lora_A [r, ", I, "] and lora_B [", O, ", r], got ", io::shape_str(ta->shape),
                " and ", io::shape_str(tb->shape));
    int64_t want_r = set.cfg_.r;
    if (const json* v = pattern_value(rank_pattern, name); v && v->is_number_integer()) want_r = v->get<int64_t>();
    UNIME_CHECK(r == want_r, w_path, ": module '", name, "' has rank ", r, " but ", cfg_path,
                " says r = ", want_r, " (r / rank_pattern)");
    double alpha = set.cfg_.alpha;
    if (const json* v = pattern_value(alpha_pattern, name); v && v->is_number()) alpha = v->get<double>();
    const double scaling = set.cfg_.use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r;
    const auto dev = lin->is_quantized() ? lin->nf4().codes.device() : lin->weight.device();
    auto A = read_tensor(*ta).to(dtype).to(dev).set_requires_grad(trainable);
    auto B = read_tensor(*tb).to(dtype).to(dev).set_requires_grad(trainable);
    lin->attach_lora(A, B, scaling, set.cfg_.dropout);
    set.mods_.push_back({name, lin, r, alpha});
  }
  return set;
}

void merge_lora(models::Model& m, const std::string& dir) {
  // merge in the adapter's float32 form; the in-place add rounds once to the base dtype
  load_lora(m, dir, /*trainable=*/false, torch::kFloat32).merge();
}

// ---- memory -----------------------------------------------------------------------------------------

ModelMemory model_memory(const models::Model& m) {
  ModelMemory r;
  std::set<const void*> seen;
  auto bytes = [&](const torch::Tensor& t) -> int64_t {
    if (!t.defined() || t.numel() == 0) return 0;
    const void* p = t.storage().data();
    if (!seen.insert(p).second) return 0;
    return static_cast<int64_t>(t.storage().nbytes());
  };
  for (const auto& l : find_linears(m, /*include_vision=*/true)) {
    if (l.linear->is_quantized()) {
      const auto& q = l.linear->nf4();
      for (const auto* t : {&q.codes, &q.absmax, &q.absmax_q, &q.absmax2}) r.linear_nf4 += bytes(*t);
    } else {
      r.linear_dense += bytes(l.linear->weight);
    }
    if (l.linear->has_lora()) r.lora += bytes(l.linear->lora_A) + bytes(l.linear->lora_B);
  }
  for (const auto& [prefix, mod] : m.modules()) {
    for (const auto& p : mod->parameters(true)) r.other += bytes(p);
    for (const auto& b : mod->buffers(true)) r.other += bytes(b);
  }
  if (m.lm_head_) r.other += bytes(m.lm_head_->weight);
  return r;
}

// ---- unime merge -------------------------------------------------------------------------------------

MergeSummary merge_checkpoint(const std::string& model_dir, const std::vector<std::string>& lora_dirs,
                              const std::string& out_dir) {
  UNIME_CHECK(!lora_dirs.empty(), "merge: give at least one --lora folder");
  UNIME_CHECK(io::is_directory(model_dir), model_dir, ": not a folder (expected a Hugging Face model folder)");
  std::error_code ec;
  if (fs::exists(out_dir))
    UNIME_CHECK(!fs::equivalent(model_dir, out_dir, ec), out_dir,
                ": the output folder is the model folder; choose another --output");
  const io::Checkpoint ck = io::Checkpoint::open(model_dir);

  // merge in the checkpoint's own dtype when it has one (exactly PEFT's in-place merge), else f32
  std::set<io::DType> float_dtypes;
  for (const auto& [name, t] : ck.tensors())
    if (t.dtype == io::DType::F32 || t.dtype == io::DType::BF16 || t.dtype == io::DType::F16 ||
        t.dtype == io::DType::F64)
      float_dtypes.insert(t.dtype);
  torch::ScalarType dtype = torch::kFloat32;
  if (float_dtypes.size() == 1 && *float_dtypes.begin() != io::DType::F64)
    dtype = torch_dtype(*float_dtypes.begin(), ck.path());
  auto m = models::Model::load(model_dir, dtype);

  MergeSummary summary;
  summary.dtype = models::dtype_short_name(dtype);
  std::set<std::string> changed;  // checkpoint keys of merged weights
  for (const auto& dir : lora_dirs) {
    LoraSet set = load_lora(*m, dir, /*trainable=*/false, torch::kFloat32);
    for (const auto& mod : set.modules()) changed.insert(mod.name + ".weight");
    set.merge();
    ++summary.n_adapters;
  }
  summary.n_modules = static_cast<int64_t>(changed.size());

  std::map<std::string, torch::Tensor> params;
  for (auto& [name, t] : m->named_parameters()) params[name] = t;
  std::vector<torch::Tensor> keep;
  std::vector<io::TensorToWrite> tensors;
  for (const auto& [key, info] : ck.tensors()) {
    if (!changed.count(key)) {  // untouched: the original bytes
      tensors.push_back({key, info.dtype, info.shape, info.data});
      continue;
    }
    auto it = params.find(key);
    TORCH_CHECK(it != params.end(), "merge: merged weight ", key, " not among the model parameters");
    keep.push_back(it->second.detach().to(torch::kCPU).to(torch_dtype(info.dtype, info.file)).contiguous());
    tensors.push_back({key, info.dtype, info.shape, keep.back().data_ptr()});
  }
  for (const auto& key : changed)
    UNIME_CHECK(ck.has(key), model_dir, ": merged weight '", key, "' is not stored in the checkpoint");

  fs::create_directories(out_dir, ec);
  UNIME_CHECK(!ec, out_dir, ": cannot create the output folder: ", ec.message());
  for (const auto& e : fs::directory_iterator(out_dir)) {
    const std::string n = e.path().filename().string();
    const bool weights = n.ends_with(".safetensors") || n.ends_with(".safetensors.index.json");
    UNIME_CHECK(!weights || n == "model.safetensors", out_dir, ": already holds weights ('", n,
                "') that would mix with the merged model; use an empty --output folder");
  }
  io::write_safetensors(io::join_path(out_dir, "model.safetensors"), tensors, {{"format", "pt"}});
  summary.n_tensors = static_cast<int64_t>(tensors.size());

  // the other files of a model folder (config.json, tokenizer, processor, generation config)
  for (const auto& e : fs::directory_iterator(model_dir)) {
    if (!e.is_regular_file()) continue;
    const std::string n = e.path().filename().string();
    if (n.ends_with(".safetensors") || n.ends_with(".safetensors.index.json") || n.ends_with(".bin") ||
        n.ends_with(".bin.index.json") || n.ends_with(".pt") || n.ends_with(".pth"))
      continue;
    io::write_file_atomic(io::join_path(out_dir, n), io::read_file(e.path().string()));
  }
  return summary;
}

}  // namespace unime::train
