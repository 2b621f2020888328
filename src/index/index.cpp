// The on-disk search index: see index.h for the layout and the all-or-nothing update protocol.
// FAISS reference: https://github.com/facebookresearch/faiss/wiki (IndexFlatIP = exact inner
// product; IndexIVFFlat / IndexHNSWFlat with METRIC_INNER_PRODUCT for large corpora).
#include "index/index.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <thread>

#include "core/error.h"
#include "io/fs.h"
#include "io/jsonl.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace unime::index {

struct Index::Faiss {
  std::unique_ptr<faiss::Index> index;
};

namespace {

constexpr const char* kManifest = "manifest.json";

std::string vectors_name(int64_t gen) { return str("vectors-", gen, ".faiss"); }
std::string payloads_name(int64_t gen) { return str("payloads-", gen, ".jsonl"); }

// test hook (index.h): sleep between file steps so that a test can kill us inside each one
void step_delay() {
  static const int ms = [] {
    const char* e = std::getenv("UNIME_INDEX_STEP_DELAY_MS");
    return e ? std::atoi(e) : 0;
  }();
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// An exclusive lock on INDEX_DIR/.lock for the lifetime of the object (writers only).
class WriterLock {
 public:
  explicit WriterLock(const std::string& dir) {
    const std::string p = io::join_path(dir, ".lock");
    fd_ = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    UNIME_CHECK(fd_ >= 0, p, ": cannot open the index lock file");
    UNIME_CHECK(::flock(fd_, LOCK_EX | LOCK_NB) == 0, dir,
                ": another `unime index` process is writing this index; wait for it to finish");
  }
  ~WriterLock() { ::close(fd_); }  // closing releases the lock (also when the process is killed)

 private:
  int fd_ = -1;
};

std::unique_ptr<faiss::Index> make_faiss(const KindOptions& k, int64_t dim, int64_t n) {
  const auto d = static_cast<int>(dim);
  if (k.kind == "flat") return std::make_unique<faiss::IndexFlatIP>(d);
  if (k.kind == "hnsw") {
    auto h = std::make_unique<faiss::IndexHNSWFlat>(d, static_cast<int>(k.hnsw_m), faiss::METRIC_INNER_PRODUCT);
    h->hnsw.efConstruction = static_cast<int>(k.ef_construction);
    h->hnsw.efSearch = static_cast<int>(k.ef_search);
    return h;
  }
  if (k.kind == "ivf") {
    UNIME_CHECK(k.nlist >= 1 && k.nlist <= n, "--nlist ", k.nlist, " must be between 1 and the corpus size ", n,
                " (IVF trains one centroid per list on the corpus)");
    auto* quantizer = new faiss::IndexFlatIP(d);
    auto ivf = std::make_unique<faiss::IndexIVFFlat>(quantizer, static_cast<size_t>(dim), static_cast<size_t>(k.nlist),
                                                     faiss::METRIC_INNER_PRODUCT);
    ivf->own_fields = true;  // deletes the quantizer
    ivf->nprobe = static_cast<size_t>(k.nprobe);
    return ivf;
  }
  throw Error(str("--kind: unknown index kind '", k.kind, "'; expected flat, ivf or hnsw"));
}

// search-time parameters are not all stored by faiss::write_index; set them from the manifest
void apply_search_params(faiss::Index* idx, const KindOptions& k) {
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(idx)) ivf->nprobe = static_cast<size_t>(k.nprobe);
  if (auto* h = dynamic_cast<faiss::IndexHNSW*>(idx)) h->hnsw.efSearch = static_cast<int>(k.ef_search);
}

json kind_json(const KindOptions& k) {
  json o = json::object();
  if (k.kind == "ivf") o = {{"nlist", k.nlist}, {"nprobe", k.nprobe}};
  if (k.kind == "hnsw") o = {{"M", k.hnsw_m}, {"ef_construction", k.ef_construction}, {"ef_search", k.ef_search}};
  return o;
}

json payload_line(const Payload& p) {
  json o{{"id", p.id}};
  if (!p.text.empty()) o["text"] = p.text;
  if (!p.image.empty()) o["image"] = p.image;
  if (p.images.size() > 1) o["images"] = p.images;
  return o;
}

void write_faiss_file(const std::string& path, const faiss::Index& idx) {
  faiss::VectorIOWriter w;
  try {
    faiss::write_index(&idx, &w);
  } catch (const faiss::FaissException& e) {
    throw Error(str(path, ": FAISS cannot serialise the index: ", e.what()));
  }
  io::AtomicFile f(path);
  f.write(w.data.data(), w.data.size());
  f.commit();
}

void write_payloads_file(const std::string& path, const std::vector<Payload>& payloads) {
  io::AtomicFile f(path);
  std::string buf;
  for (const auto& p : payloads) {
    buf += payload_line(p).dump(-1, ' ', false, json::error_handler_t::replace);
    buf += '\n';
    if (buf.size() > (1 << 20)) {
      f.write(buf);
      buf.clear();
    }
  }
  f.write(buf);
  f.commit();
}

json read_manifest(const std::string& dir) {
  const std::string path = io::join_path(dir, kManifest);
  UNIME_CHECK(fs::is_regular_file(path), dir, ": not a unime index (no ", kManifest,
              "); build one with `unime index build`");
  json m = json::parse(io::read_file(path), nullptr, /*allow_exceptions=*/false);
  UNIME_CHECK(!m.is_discarded() && m.is_object(), path, ": not valid JSON");
  UNIME_CHECK(m.value("format", "") == "unime-index", path, ": 'format' is not \"unime-index\"");
  UNIME_CHECK(m.contains("version") && m["version"].is_number_integer(), path, ": missing integer 'version'");
  UNIME_CHECK(m["version"].get<int>() == kFormatVersion, path, ": index format version ", m["version"].get<int>(),
              " is not supported (this build reads version ", kFormatVersion, ")");
  for (const char* key : {"model", "dtype", "template", "faiss", "payloads", "kind"})
    UNIME_CHECK(m.contains(key) && m[key].is_string(), path, ": missing string '", key, "'");
  for (const char* key : {"generation", "dim", "count"})
    UNIME_CHECK(m.contains(key) && m[key].is_number_integer() && m[key].get<int64_t>() >= 0, path,
                ": missing non-negative integer '", key, "'");
  UNIME_CHECK(m.contains("lora") && m["lora"].is_array(), path, ": missing list 'lora'");
  for (const auto& l : m["lora"]) UNIME_CHECK(l.is_string(), path, ": 'lora' must be a list of folders");
  // file names are ours: plain names inside the folder, nothing else
  for (const char* key : {"faiss", "payloads"}) {
    const std::string n = m[key].get<std::string>();
    UNIME_CHECK(!n.empty() && n.find('/') == std::string::npos && n != "." && n != "..", path, ": bad '", key,
                "' file name '", n, "'");
  }
  return m;
}

// Removes files of generations other than `keep` and temp files of killed writers.
void clean_stale(const std::string& dir, int64_t keep) {
  static const std::regex gen_file(R"((vectors|payloads)-(\d+)\.(faiss|jsonl)(\.tmp\..*)?)");
  static const std::regex tmp_manifest(R"(manifest\.json\.tmp\..*)");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::smatch m;
    bool stale = false;
    if (std::regex_match(name, m, gen_file)) stale = m[4].matched || std::stoll(m[2]) != keep;
    else stale = std::regex_match(name, tmp_manifest);
    if (stale) fs::remove(e.path(), ec);
  }
}

void write_manifest(const std::string& dir, json m) {
  io::write_file_atomic(io::join_path(dir, kManifest), m.dump(2) + "\n");
}

}  // namespace

std::string id_key(const json& id) { return id.is_string() ? id.get<std::string>() : id.dump(); }

void check_id(const json& id, const std::string& where) {
  UNIME_CHECK(id.is_string() || id.is_number_integer(), where, ": 'id' must be a string or an integer, got ",
              id.is_null() ? "nothing (every corpus row needs an 'id')" : std::string(id.type_name()));
  UNIME_CHECK(!id.is_string() || !id.get<std::string>().empty(), where, ": 'id' is an empty string");
}

json recipe_json(const Recipe& r) {
  return json{{"model", r.model}, {"lora", r.lora}, {"dtype", r.dtype}, {"template", r.template_name},
              {"truncate", r.truncate}};
}

json payload_json(const Payload& p) {
  return json{{"id", p.id},
              {"text", p.text.empty() ? json(nullptr) : json(p.text)},
              {"image", p.image.empty() ? json(nullptr) : json(p.image)}};
}

Index::~Index() = default;

int64_t Index::find_id(const json& id) const {
  auto it = rows_by_id_.find(id_key(id));
  return it == rows_by_id_.end() ? -1 : it->second;
}

std::unique_ptr<Index> Index::open(const std::string& dir) {
  UNIME_CHECK(fs::is_directory(dir), dir, ": not a directory (expected an index folder from `unime index build`)");
  // a writer may switch generations between our manifest read and our file reads: retry then
  for (int attempt = 0;; ++attempt) {
    json m = read_manifest(dir);
    const std::string mpath = io::join_path(dir, kManifest);
    const std::string vpath = io::join_path(dir, m["faiss"].get<std::string>());
    const std::string ppath = io::join_path(dir, m["payloads"].get<std::string>());
    if ((!fs::exists(vpath) || !fs::exists(ppath)) && attempt < 10 &&
        read_manifest(dir)["generation"] != m["generation"])
      continue;
    std::unique_ptr<Index> ix(new Index());
    ix->dir_ = dir;
    ix->manifest_ = m;
    ix->recipe_.model = m["model"];
    for (const auto& l : m["lora"]) ix->recipe_.lora.push_back(l);
    ix->recipe_.dtype = m["dtype"];
    ix->recipe_.template_name = m["template"];
    ix->recipe_.truncate = m.value("truncate", false);
    ix->dim_ = m["dim"];
    ix->kind_.kind = m["kind"];
    const json ko = m.value("kind_options", json::object());
    ix->kind_.nlist = ko.value("nlist", int64_t{0});
    ix->kind_.nprobe = ko.value("nprobe", int64_t{8});
    ix->kind_.hnsw_m = ko.value("M", int64_t{32});
    ix->kind_.ef_construction = ko.value("ef_construction", int64_t{40});
    ix->kind_.ef_search = ko.value("ef_search", int64_t{64});
    const int64_t count = m["count"];

    // payloads
    io::read_jsonl(ppath, [&](int64_t line, const json& row) {
      const std::string where = str(ppath, ":", line);
      Payload p;
      UNIME_CHECK(row.contains("id"), where, ": missing 'id'");
      check_id(row["id"], where);
      p.id = row["id"];
      p.text = io::json_string(row, "text", where);
      p.image = io::json_string(row, "image", where);
      if (row.contains("images")) {
        UNIME_CHECK(row["images"].is_array(), where, ": 'images' must be a list");
        for (const auto& s : row["images"]) {
          UNIME_CHECK(s.is_string(), where, ": 'images' must be a list of paths");
          p.images.push_back(s);
        }
      } else if (!p.image.empty()) {
        p.images.push_back(p.image);
      }
      UNIME_CHECK(ix->rows_by_id_.emplace(id_key(p.id), static_cast<int64_t>(ix->payloads_.size())).second, where,
                  ": duplicate id ", p.id.dump());
      ix->payloads_.push_back(std::move(p));
    });
    UNIME_CHECK(static_cast<int64_t>(ix->payloads_.size()) == count, ppath, ": has ", ix->payloads_.size(),
                " rows but ", mpath, " says count ", count);

    // vectors
    faiss::VectorIOReader r;
    const std::string bytes = io::read_file(vpath);
    r.data.assign(bytes.begin(), bytes.end());
    faiss::Index* raw = nullptr;
    try {
      raw = faiss::read_index(&r);
    } catch (const faiss::FaissException& e) {
      throw Error(str(vpath, ": not a readable FAISS index (", e.what(), ")"));
    }
    ix->faiss_ = std::make_unique<Faiss>();
    ix->faiss_->index.reset(raw);
    UNIME_CHECK(raw->d == ix->dim_, vpath, ": vectors have dim ", raw->d, " but ", mpath, " says dim ", ix->dim_);
    UNIME_CHECK(raw->ntotal == count, vpath, ": holds ", raw->ntotal, " vectors but ", mpath, " says count ", count);
    UNIME_CHECK(raw->metric_type == faiss::METRIC_INNER_PRODUCT, vpath,
                ": the FAISS index does not use inner product (was it written by another program?)");
    apply_search_params(raw, ix->kind_);
    return ix;
  }
}

void Index::create(const std::string& dir, const Recipe& recipe, const KindOptions& kind,
                   const std::vector<float>& vectors, int64_t dim, const std::vector<Payload>& payloads) {
  const auto N = static_cast<int64_t>(payloads.size());
  UNIME_CHECK(N > 0, dir, ": nothing to index");
  UNIME_CHECK(static_cast<int64_t>(vectors.size()) == N * dim, "index: ", vectors.size(), " floats for ", N,
              " rows of dim ", dim);
  std::error_code ec;
  if (fs::exists(dir)) {
    UNIME_CHECK(fs::is_directory(dir), dir, ": exists and is not a directory");
    UNIME_CHECK(fs::is_empty(dir, ec), dir, ": exists and is not empty; choose a new --output folder "
                "(or `unime index add` to append to an index)");
  } else {
    fs::create_directories(dir, ec);
    UNIME_CHECK(!ec, dir, ": cannot create the folder: ", ec.message());
  }
  WriterLock lock(dir);
  std::unordered_map<std::string, int64_t> seen;
  for (int64_t i = 0; i < N; ++i)
    UNIME_CHECK(seen.emplace(id_key(payloads[i].id), i).second, "index: duplicate id ", payloads[i].id.dump());

  KindOptions k = kind;
  if (k.kind == "ivf" && k.nlist == 0)
    k.nlist = std::clamp<int64_t>(static_cast<int64_t>(std::lround(4.0 * std::sqrt(static_cast<double>(N)))), 1, N);
  auto idx = make_faiss(k, dim, N);
  try {
    if (!idx->is_trained) idx->train(N, vectors.data());
    idx->add(N, vectors.data());
  } catch (const faiss::FaissException& e) {
    throw Error(str(dir, ": FAISS failed to build the ", k.kind, " index: ", e.what()));
  }
  const int64_t gen = 1;
  write_faiss_file(io::join_path(dir, vectors_name(gen)), *idx);
  write_payloads_file(io::join_path(dir, payloads_name(gen)), payloads);
  json m{{"format", "unime-index"},
         {"version", kFormatVersion},
         {"generation", gen},
         {"model", recipe.model},
         {"lora", recipe.lora},
         {"dtype", recipe.dtype},
         {"template", recipe.template_name},
         {"truncate", recipe.truncate},
         {"dim", dim},
         {"count", N},
         {"kind", k.kind},
         {"kind_options", kind_json(k)},
         {"metric", "inner_product"},
         {"faiss", vectors_name(gen)},
         {"payloads", payloads_name(gen)}};
  write_manifest(dir, m);
}

void Index::append(const std::string& dir, const std::vector<float>& vectors, const std::vector<Payload>& payloads) {
  WriterLock lock(dir);
  auto cur = open(dir);
  const int64_t gen = cur->manifest_["generation"].get<int64_t>();
  clean_stale(dir, gen);  // leftovers of a killed writer
  const auto M = static_cast<int64_t>(payloads.size());
  const int64_t D = cur->dim_;
  UNIME_CHECK(M > 0, dir, ": nothing to add");
  UNIME_CHECK(static_cast<int64_t>(vectors.size()) == M * D, "index add: ", vectors.size(), " floats for ", M,
              " rows of dim ", D);
  std::unordered_map<std::string, int64_t> seen;
  for (int64_t i = 0; i < M; ++i) {
    UNIME_CHECK(cur->find_id(payloads[i].id) < 0, "index add: id ", payloads[i].id.dump(), " is already in ", dir);
    UNIME_CHECK(seen.emplace(id_key(payloads[i].id), i).second, "index add: duplicate id ", payloads[i].id.dump(),
                " in the new rows");
  }
  faiss::Index* idx = cur->faiss_->index.get();
  try {
    idx->add(M, vectors.data());
  } catch (const faiss::FaissException& e) {
    throw Error(str(dir, ": FAISS failed to add the rows: ", e.what()));
  }
  std::vector<Payload> all = cur->payloads_;
  all.insert(all.end(), payloads.begin(), payloads.end());

  // 1. the new generation's files (temp + rename each); the manifest still names the old ones
  const int64_t next = gen + 1;
  step_delay();
  write_faiss_file(io::join_path(dir, vectors_name(next)), *idx);
  step_delay();
  write_payloads_file(io::join_path(dir, payloads_name(next)), all);
  step_delay();
  // 2. the switch: one atomic rename of manifest.json
  json m = cur->manifest_;
  m["generation"] = next;
  m["count"] = static_cast<int64_t>(all.size());
  m["faiss"] = vectors_name(next);
  m["payloads"] = payloads_name(next);
  write_manifest(dir, m);
  step_delay();
  // 3. the old generation goes
  clean_stale(dir, next);
}

std::vector<std::vector<Hit>> Index::search(const float* queries, int64_t Q, int64_t k) const {
  std::vector<std::vector<Hit>> out(static_cast<size_t>(Q));
  const int64_t N = size();
  k = std::min(k, N);
  if (k <= 0 || Q <= 0) return out;
  std::vector<float> dist(static_cast<size_t>(Q * k));
  std::vector<faiss::Index::idx_t> labels(static_cast<size_t>(Q * k));
  faiss_->index->search(Q, queries, k, dist.data(), labels.data());
  for (int64_t q = 0; q < Q; ++q)
    for (int64_t j = 0; j < k; ++j) {
      const faiss::Index::idx_t l = labels[static_cast<size_t>(q * k + j)];
      if (l < 0) continue;  // ivf/hnsw: fewer than k found
      out[static_cast<size_t>(q)].push_back(Hit{l, dist[static_cast<size_t>(q * k + j)]});
    }
  return out;
}

}  // namespace unime::index
