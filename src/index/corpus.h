// What `unime index` / `search` / `mine` / `serve --index` share around an Index: reading a corpus
// JSONL (unime embed's rows plus an `id`), turning the model flags into a Recipe (absolute paths,
// resolved dtype and template) and loading an Embedder that embeds exactly as the index's corpus was.
// Torch-free (the Embedder interface hides the model).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "index/index.h"
#include "unime/embedder.h"

namespace unime::index {

/// A corpus file: one row per line, unime embed's fields (text / image / images / instruction /
/// input_ids) plus `id` (string or integer, unique). Relative image paths resolve against the
/// file's folder and are stored absolute, so the index still finds them from anywhere.
/// Missing or duplicate ids, missing images -> unime::Error naming "path:line".
void read_corpus(const std::string& path, std::vector<EmbedInput>& inputs, std::vector<Payload>& payloads);

/// Loads the model for a new index and fills `recipe` (absolute model/adapter paths, the dtype the
/// weights really run in, the template name or absolute template file).
std::unique_ptr<Embedder> load_for_build(const std::string& model, const EmbedderOptions& opt, Recipe& recipe);

/// Loads the model an index was built with: model, adapters, dtype and template from its recipe;
/// threads, batch size, device and limits from `opt`. Missing model folder -> Error with a hint.
std::unique_ptr<Embedder> load_for_index(const Index& index, EmbedderOptions opt);

/// When the user names a model (and adapters) next to --index, they must be the index's own.
void check_same_model(const Index& index, const std::string& model, const std::vector<std::string>& lora);

/// embed() with a progress bar on stderr ("label: done/total inputs, tok/s").
std::vector<float> embed_with_progress(Embedder& emb, const std::vector<EmbedInput>& inputs, const std::string& label);

/// Absolute, normalised form of a path (for recipes and payloads).
std::string absolute_path(const std::string& p);

}  // namespace unime::index
