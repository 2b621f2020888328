// A search index on disk: FAISS vectors (Debian's libfaiss), ids + payloads, and a manifest that
// records how the vectors were made (model, adapters, dtype, template), so that `index add`,
// `search`, `mine` and `serve --index` embed a query exactly as the corpus was embedded.
//
// Layout of INDEX_DIR (generation G, a counter bumped by every add):
//   manifest.json         the commit point: {"format": "unime-index", "version": 1, "generation": G,
//                         "model", "lora": [...], "dtype", "template", "truncate", "dim", "count", "kind",
//                         "kind_options": {...}, "faiss": "vectors-G.faiss", "payloads": "payloads-G.jsonl"}
//   vectors-G.faiss       faiss::write_index of an IndexFlatIP / IndexIVFFlat / IndexHNSWFlat (inner product)
//   payloads-G.jsonl      row i of the FAISS index: {"id": string|integer, "text": ..., "image": abs path}
//
// All-or-nothing updates: a writer puts generation G+1 in new files (written to temp names, fsynced,
// renamed), then replaces manifest.json atomically (io::write_file_atomic) and only then deletes
// generation G. A kill at any moment leaves manifest.json naming one complete generation; a writer
// first removes files of other generations and stale temp files (leftovers of a killed writer).
// Writers hold an exclusive flock on INDEX_DIR/.lock; readers never modify the folder.
//
// This header is free of torch and of FAISS (pimpl), so tools and the server compile fast; the
// code that needs FAISS is the `unime_index` library only.
// Legend: N rows in the index, D embedding dim, k hits.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

namespace unime::index {

constexpr int kFormatVersion = 1;

/// One indexed item. `id` is the corpus row's id (a JSON string or integer, kept as given).
struct Payload {
  nlohmann::json id;
  std::string text;   ///< "" when the row had no text
  std::string image;  ///< absolute path of the first image, "" when none
  std::vector<std::string> images;  ///< all images (absolute), for rows with several
};

/// How the corpus vectors were made: reused for every query and every add.
struct Recipe {
  std::string model;              ///< absolute model folder
  std::vector<std::string> lora;  ///< absolute adapter folders, merged in order
  std::string dtype;              ///< resolved: f32 | bf16 | f16 (never "auto")
  std::string template_name;      ///< resolved: a built-in name or an absolute JSON file path
  bool truncate = false;          ///< inputs longer than the model's limit were cut
};

/// FAISS index kind and its parameters.
struct KindOptions {
  std::string kind = "flat";  ///< flat (exact, IndexFlatIP) | ivf (IndexIVFFlat) | hnsw (IndexHNSWFlat)
  int64_t nlist = 0;          ///< ivf: inverted lists (0 = about 4 sqrt(N), at most N)
  int64_t nprobe = 8;         ///< ivf: lists visited per query
  int64_t hnsw_m = 32;        ///< hnsw: neighbours per node
  int64_t ef_construction = 40;
  int64_t ef_search = 64;     ///< hnsw: candidate list size per query
};

struct Hit {
  int64_t row = 0;   ///< row in the index (payload index)
  float score = 0;   ///< inner product of the unit-norm vectors (= cosine)
};

/// The stable string form of an id for uniqueness checks: "7" for both 7 and "7".
std::string id_key(const nlohmann::json& id);
/// Throws unime::Error(where: ...) unless `id` is a string or an integer.
void check_id(const nlohmann::json& id, const std::string& where);

/// A loaded index generation (read-only). Thread-safe for concurrent search().
class Index {
 public:
  /// Opens INDEX_DIR: reads the manifest, the FAISS file and the payloads it names, and checks
  /// they agree (count, dim). Bad or missing files -> unime::Error naming the file.
  static std::unique_ptr<Index> open(const std::string& dir);

  /// Writes a new index into `dir` (created; must be empty or absent): generation 1.
  static void create(const std::string& dir, const Recipe& recipe, const KindOptions& kind,
                     const std::vector<float>& vectors /*[N*D]*/, int64_t dim,
                     const std::vector<Payload>& payloads);

  /// Appends rows as one new generation (all-or-nothing, see the file comment). Ids must be new.
  /// Test hook: UNIME_INDEX_STEP_DELAY_MS=n sleeps n ms between the file steps, so that a test can
  /// kill the process inside each of them.
  static void append(const std::string& dir, const std::vector<float>& vectors /*[M*D]*/,
                     const std::vector<Payload>& payloads);

  ~Index();
  const Recipe& recipe() const { return recipe_; }
  const KindOptions& kind() const { return kind_; }
  const nlohmann::json& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  int64_t dim() const { return dim_; }
  int64_t size() const { return static_cast<int64_t>(payloads_.size()); }
  const Payload& payload(int64_t row) const { return payloads_.at(static_cast<size_t>(row)); }
  const std::vector<Payload>& payloads() const { return payloads_; }
  /// Row of an id, or -1.
  int64_t find_id(const nlohmann::json& id) const;

  /// Top-k rows for each of Q queries ([Q*D] unit-norm), best first; fewer when the index has
  /// fewer rows (ivf/hnsw may also return fewer). Scores are FAISS's inner products.
  std::vector<std::vector<Hit>> search(const float* queries, int64_t Q, int64_t k) const;
  /// One query ([D] unit-norm): its top-k rows, best first.
  std::vector<Hit> search_one(const float* query, int64_t k) const { return std::move(search(query, 1, k)[0]); }

 private:
  Index() = default;
  struct Faiss;
  std::string dir_;
  nlohmann::json manifest_;
  Recipe recipe_;
  KindOptions kind_;
  int64_t dim_ = 0;
  std::vector<Payload> payloads_;
  std::unordered_map<std::string, int64_t> rows_by_id_;
  std::unique_ptr<Faiss> faiss_;
};

/// Recipe <-> JSON (manifest fields).
nlohmann::json recipe_json(const Recipe& r);
/// Payload -> {"id", "text", "image"} as `unime search` prints it (null for a missing field).
nlohmann::json payload_json(const Payload& p);

}  // namespace unime::index
