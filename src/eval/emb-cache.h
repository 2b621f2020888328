// Embedding cache for evaluation: a table of unique inputs (each (text, instruction, images)
// embedded once per run) and an on-disk store of their vectors, reused between runs of the same
// model. Layout: <cache-dir>/<model key>/<2 hex>/<30 hex>.f32, each file the raw float32 row;
// <model key>/key.txt says what the model key was made of. Files are written atomically.
// Keys are 128-bit FNV-1a hashes (collisions are astronomically unlikely at eval sizes).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "unime/embedder.h"

namespace unime::eval {

/// 128-bit FNV-1a of `s` as 32 lowercase hex digits.
std::string hash_hex(const std::string& s);

/// Unique inputs: add() returns the id of an equal input added before, or a new id.
class InputTable {
 public:
  int64_t add(EmbedInput in);
  const std::vector<EmbedInput>& inputs() const { return inputs_; }
  int64_t size() const { return static_cast<int64_t>(inputs_.size()); }

 private:
  std::vector<EmbedInput> inputs_;
  std::unordered_map<std::string, int64_t> index_;
};

/// What identifies a model's embeddings: the model folder's real path, size and mtime of its
/// config.json and *.safetensors, the LoRA adapters in order (real path, size and mtime of
/// adapter_config.json and *.safetensors), the options that change vectors (dtype, template,
/// truncate, max image pixels) and the model's own description.
std::string model_cache_key(const std::string& model_dir, const EmbedderOptions& opt,
                            const std::string& describe);

/// ~/.cache/unime/emb ($XDG_CACHE_HOME/unime/emb when set).
std::string default_cache_dir();

struct EmbedStats {
  int64_t unique = 0;    ///< inputs asked for
  int64_t cached = 0;    ///< found in the cache
  int64_t embedded = 0;  ///< computed by the model in this run
};

/// Embeds `inputs` (assumed unique) -> [N x D]. With a non-empty cache_dir, rows found under
/// cache_dir/hash(model_key) are read, the rest embedded in chunks and stored as they finish
/// (an interrupted run keeps what it computed). progress(done, total) counts inputs.
std::vector<float> embed_cached(Embedder& emb, const std::vector<EmbedInput>& inputs,
                                const std::string& cache_dir, const std::string& model_key,
                                EmbedStats* stats,
                                const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace unime::eval
