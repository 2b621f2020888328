// Embedding cache for evaluation; see emb-cache.h for the layout.
#include "eval/emb-cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "io/fs.h"

namespace fs = std::filesystem;

namespace unime::eval {

namespace {

constexpr int64_t kChunk = 64;  // inputs per embed() call between cache writes

std::string file_stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return path + ":missing";
  return str(path, ":", static_cast<int64_t>(st.st_size), ":", static_cast<int64_t>(st.st_mtim.tv_sec),
             ".", static_cast<int64_t>(st.st_mtim.tv_nsec));
}

// Dedup key within a run: the fields that reach the model, separated by bytes text cannot hold.
std::string input_identity(const EmbedInput& in) {
  std::string k = in.text + '\x1f' + in.instruction;
  for (const auto& p : in.images) k += '\x1e' + p;
  if (in.input_ids)
    for (int64_t t : *in.input_ids) k += str('\x1d', t);
  return k;
}

// temp + rename without fsync: a crash may lose a row (it is recomputed) but never leaves half
// of one under the final name; fsync per row would dominate the run time.
void write_row(const std::string& path, const float* row, int64_t D) {
  const std::string tmp = str(path, ".tmp.", ::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(row), static_cast<std::streamsize>(D * sizeof(float)));
    UNIME_CHECK(f.good(), tmp, ": cannot write the embedding cache row");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  UNIME_CHECK(!ec, path, ": cannot rename the embedding cache row into place: ", ec.message());
}

// "<what>=<real path>" and the stamps of `config` and every *.safetensors in the folder.
std::string folder_stamp(const char* what, const std::string& folder, const char* config) {
  std::error_code ec;
  fs::path real = fs::canonical(folder, ec);
  const std::string dir = ec ? folder : real.string();
  std::string key = str(what, "=", dir, "\n");
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name == config || name.ends_with(".safetensors")) files.push_back(name);
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) key += str("file=", file_stamp(io::join_path(dir, f)), "\n");
  return key;
}

}  // namespace

std::string hash_hex(const std::string& s) {
  // FNV-1a 128: offset basis 0x6c62272e07bb014262b821756295c58d, prime 2^88 + 0x13b.
  unsigned __int128 h = (static_cast<unsigned __int128>(0x6c62272e07bb0142ULL) << 64) | 0x62b821756295c58dULL;
  const unsigned __int128 prime = (static_cast<unsigned __int128>(1) << 88) | 0x13b;
  for (unsigned char c : s) {
    h ^= c;
    h *= prime;
  }
  static const char* kHex = "0123456789abcdef";
  std::string out(32, '0');
  for (int i = 31; i >= 0; --i) {
    out[i] = kHex[static_cast<unsigned>(h & 0xf)];
    h >>= 4;
  }
  return out;
}

int64_t InputTable::add(EmbedInput in) {
  std::string key = input_identity(in);
  auto it = index_.find(key);
  if (it != index_.end()) return it->second;
  const int64_t id = size();
  index_.emplace(std::move(key), id);
  inputs_.push_back(std::move(in));
  return id;
}

std::string model_cache_key(const std::string& model_dir, const EmbedderOptions& opt,
                            const std::string& describe) {
  std::string key = folder_stamp("model", model_dir, "config.json");
  for (const auto& l : opt.lora) key += folder_stamp("lora", l, "adapter_config.json");  // in order
  key += str("dtype=", opt.dtype, "\ntemplate=", opt.prompt_template, "\ntruncate=", opt.truncate,
             "\nmax_image_pixels=", opt.max_image_pixels, "\ndescribe=", describe, "\n");
  return key;
}

std::string default_cache_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return str(x, "/unime/emb");
  const char* home = std::getenv("HOME");
  UNIME_CHECK(home && *home, "no cache folder: neither $XDG_CACHE_HOME nor $HOME is set (pass --cache-dir)");
  return str(home, "/.cache/unime/emb");
}

std::vector<float> embed_cached(Embedder& emb, const std::vector<EmbedInput>& inputs,
                                const std::string& cache_dir, const std::string& model_key,
                                EmbedStats* stats,
                                const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t N = static_cast<int64_t>(inputs.size()), D = emb.dim();
  std::vector<float> out(static_cast<size_t>(N * D));
  EmbedStats st;
  st.unique = N;
  const bool use_cache = !cache_dir.empty();
  std::string root;
  std::vector<std::string> file(static_cast<size_t>(N));
  std::vector<int64_t> todo;
  if (use_cache) {
    root = io::join_path(cache_dir, hash_hex(model_key));
    std::error_code ec;
    fs::create_directories(root, ec);
    UNIME_CHECK(!ec, root, ": cannot create the embedding cache folder: ", ec.message());
    if (!io::is_regular_file(io::join_path(root, "key.txt")))
      io::write_file_atomic(io::join_path(root, "key.txt"), model_key);
  }
  std::map<std::string, std::string> stamps;  // image path -> stamp, one stat per path
  for (int64_t i = 0; i < N; ++i) {
    if (!use_cache) {
      todo.push_back(i);
      continue;
    }
    std::string key = input_identity(inputs[i]);
    for (const auto& p : inputs[i].images) {
      auto [it, fresh] = stamps.try_emplace(p);
      if (fresh) it->second = file_stamp(p);
      key += '\x1c' + it->second;
    }
    for (const auto& b : inputs[i].image_bytes) key += '\x1b' + hash_hex(b);
    const std::string h = hash_hex(key);
    file[i] = io::join_path(io::join_path(root, h.substr(0, 2)), h.substr(2) + ".f32");
    std::error_code ec;
    if (fs::file_size(file[i], ec) == static_cast<uintmax_t>(D) * sizeof(float) && !ec) {
      const std::string bytes = io::read_file(file[i]);
      std::memcpy(out.data() + i * D, bytes.data(), bytes.size());
      ++st.cached;
    } else {
      todo.push_back(i);
    }
  }
  if (progress) progress(st.cached, N);
  for (size_t c = 0; c < todo.size(); c += kChunk) {
    const size_t e = std::min(todo.size(), c + kChunk);
    std::vector<EmbedInput> batch;
    for (size_t t = c; t < e; ++t) batch.push_back(inputs[todo[t]]);
    const std::vector<float> v = emb.embed(batch);
    for (size_t t = c; t < e; ++t) {
      const int64_t i = todo[t];
      std::memcpy(out.data() + i * D, v.data() + (t - c) * D, D * sizeof(float));
      if (use_cache) {
        std::error_code ec;
        fs::create_directories(io::parent_dir(file[i]), ec);
        write_row(file[i], out.data() + i * D, D);
      }
    }
    st.embedded += static_cast<int64_t>(e - c);
    if (progress) progress(st.cached + st.embedded, N);
  }
  if (stats) *stats = st;
  return out;
}

}  // namespace unime::eval
