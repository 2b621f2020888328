// Corpus reading and model recipes for the index commands: see corpus.h.
#include "index/corpus.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"
#include "core/progress.h"
#include "io/jsonl.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace unime::index {

std::string absolute_path(const std::string& p) {
  std::error_code ec;
  fs::path a = fs::weakly_canonical(fs::absolute(p), ec);
  if (ec) a = fs::absolute(p).lexically_normal();
  return a.string();
}

void read_corpus(const std::string& path, std::vector<EmbedInput>& inputs, std::vector<Payload>& payloads) {
  const fs::path base = fs::path(path).parent_path();
  auto resolve = [&](const std::string& p, const std::string& where) {
    const std::string r = absolute_path(fs::path(p).is_absolute() || base.empty() ? p : (base / p).string());
    UNIME_CHECK(fs::is_regular_file(r), where, ": image '", p, "' not found (looked for ", r,
                "; relative paths resolve against the corpus file's folder)");
    return r;
  };
  std::unordered_map<std::string, int64_t> lines;
  io::read_jsonl(path, [&](int64_t line, const json& row) {
    EmbedInput in;
    Payload p;
    in.where = str(path, ":", line);
    UNIME_CHECK(row.contains("id"), in.where, ": missing 'id' (every corpus row needs a unique string or integer id)");
    check_id(row["id"], in.where);
    p.id = row["id"];
    auto [it, fresh] = lines.emplace(id_key(p.id), line);
    UNIME_CHECK(fresh, in.where, ": duplicate id ", p.id.dump(), " (first on line ", it->second, ")");
    in.text = io::json_string(row, "text", in.where);
    in.instruction = io::json_string(row, "instruction", in.where);
    const std::string image = io::json_string(row, "image", in.where);
    if (!image.empty()) in.images.push_back(resolve(image, in.where));
    if (row.contains("images") && !row["images"].is_null()) {
      UNIME_CHECK(row["images"].is_array(), in.where, ": 'images' must be a list of paths");
      for (const auto& s : row["images"]) {
        UNIME_CHECK(s.is_string(), in.where, ": 'images' must be a list of paths");
        in.images.push_back(resolve(s.get<std::string>(), in.where));
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
    p.text = in.text;
    p.images = in.images;
    if (!in.images.empty()) p.image = in.images[0];
    inputs.push_back(std::move(in));
    payloads.push_back(std::move(p));
  });
  UNIME_CHECK(!inputs.empty(), path, ": no corpus rows");
}

std::unique_ptr<Embedder> load_for_build(const std::string& model, const EmbedderOptions& opt, Recipe& recipe) {
  recipe.model = absolute_path(model);
  recipe.lora.clear();
  for (const auto& l : opt.lora) recipe.lora.push_back(absolute_path(l));
  EmbedderOptions o = opt;
  o.lora = recipe.lora;
  auto emb = Embedder::load(recipe.model, o);
  recipe.dtype = emb->dtype();
  UNIME_CHECK(!recipe.dtype.empty(), model, ": the embedder does not report its dtype; cannot record the index recipe");
  recipe.truncate = opt.truncate;
  if (opt.prompt_template.empty()) recipe.template_name = default_template_name(recipe.model);
  else if (fs::is_regular_file(opt.prompt_template)) recipe.template_name = absolute_path(opt.prompt_template);
  else recipe.template_name = opt.prompt_template;
  return emb;
}

std::unique_ptr<Embedder> load_for_index(const Index& index, EmbedderOptions opt) {
  const Recipe& r = index.recipe();
  UNIME_CHECK(fs::is_directory(r.model), index.dir(), ": the index was built with the model ", r.model,
              ", which is not there any more (queries must be embedded by the same model; rebuild the index "
              "or restore the folder)");
  for (const auto& l : r.lora)
    UNIME_CHECK(fs::is_directory(l), index.dir(), ": the index was built with the adapter ", l,
                ", which is not there any more");
  opt.lora = r.lora;
  opt.dtype = r.dtype;
  opt.prompt_template = r.template_name;
  opt.truncate = r.truncate;
  auto emb = Embedder::load(r.model, opt);
  UNIME_CHECK(emb->dim() == index.dim(), index.dir(), ": the model ", r.model, " gives dim ", emb->dim(),
              " but the index holds dim ", index.dim(), " (the model folder changed since the index was built)");
  return emb;
}

void check_same_model(const Index& index, const std::string& model, const std::vector<std::string>& lora) {
  const Recipe& r = index.recipe();
  if (!model.empty())
    UNIME_CHECK(absolute_path(model) == r.model, "--model ", model, " is not the model the index ", index.dir(),
                " was built with (", r.model, "); leave --model out to use the index's own");
  if (!lora.empty()) {
    std::vector<std::string> abs;
    for (const auto& l : lora) abs.push_back(absolute_path(l));
    UNIME_CHECK(abs == r.lora, "--lora does not match the adapters the index ", index.dir(),
                " was built with; leave --lora out to use the index's own");
  }
}

std::vector<float> embed_with_progress(Embedder& emb, const std::vector<EmbedInput>& inputs, const std::string& label) {
  ProgressBar bar(label, static_cast<int64_t>(inputs.size()), "inputs");
  int64_t tokens = 0;
  auto out = emb.embed(inputs, [&](const EmbedProgress& p) {
    tokens = p.tokens;
    bar.update(p.done, str(static_cast<int64_t>(p.tokens / std::max(1e-9, bar.elapsed_s())), " tok/s"));
  });
  bar.finish(str(tokens, " tokens"));
  return out;
}

}  // namespace unime::index
