// safetensors reader and writer: see safetensors.h for the format and the validation rules.
#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <dirent.h>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/fs.h"

namespace unime::io {

using json = nlohmann::json;

// ---- dtypes -----------------------------------------------------------------

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::F64: return 8;
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I64: return 8;
    case DType::I32: return 4;
    case DType::I16: return 2;
    case DType::I8: return 1;
    case DType::U8: return 1;
    case DType::BOOL: return 1;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

namespace {
constexpr DType kAllDTypes[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                                DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};
constexpr const char* kSupportedDTypes = "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL";
}  // namespace

bool parse_dtype(std::string_view name, DType* out) {
  for (DType dt : kAllDTypes) {
    if (name == dtype_name(dt)) {
      *out = dt;
      return true;
    }
  }
  return false;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---- header parsing ---------------------------------------------------------

namespace {

// JSON text for error messages, cut short so that one line stays one line.
std::string brief(const json& j) {
  std::string s = j.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A JSON value that must be a non-negative integer that fits `limit`.
bool as_uint(const json& j, uint64_t limit, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
  } else if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v < 0) return false;
    *out = static_cast<uint64_t>(v);
  } else {
    return false;
  }
  return *out <= limit;
}

TensorInfo parse_entry(const std::string& path, const std::string& name, const json& e,
                       const uint8_t* data_region, size_t data_size) {
  const std::string where = str(path, ": tensor '", name, "'");
  UNIME_CHECK(e.is_object(), where, ": header entry must be an object, got ", brief(e));
  TensorInfo t;
  t.name = name;
  t.file = path;

  auto it = e.find("dtype");
  UNIME_CHECK(it != e.end(), where, ": header entry has no \"dtype\"");
  UNIME_CHECK(it->is_string(), where, ": \"dtype\" must be a string, got ", brief(*it));
  const std::string dt = it->get<std::string>();
  UNIME_CHECK(parse_dtype(dt, &t.dtype), where, ": unsupported dtype '", dt, "' (supported: ",
              kSupportedDTypes, ")");

  it = e.find("shape");
  UNIME_CHECK(it != e.end(), where, ": header entry has no \"shape\"");
  UNIME_CHECK(it->is_array(), where, ": \"shape\" must be an array, got ", brief(*it));
  size_t numel = 1;
  bool overflow = false;
  for (const json& d : *it) {
    uint64_t v = 0;
    UNIME_CHECK(as_uint(d, static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), &v), where,
                ": shape entries must be non-negative integers, got ", brief(*it));
    t.shape.push_back(static_cast<int64_t>(v));
    overflow = overflow || __builtin_mul_overflow(numel, static_cast<size_t>(v), &numel);
  }
  size_t nbytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, dtype_size(t.dtype), &nbytes);
  UNIME_CHECK(!overflow, where, ": shape ", shape_str(t.shape), " x ", dt,
              " overflows the byte count");

  it = e.find("data_offsets");
  UNIME_CHECK(it != e.end(), where, ": header entry has no \"data_offsets\"");
  UNIME_CHECK(it->is_array() && it->size() == 2, where,
              ": \"data_offsets\" must be [begin, end], got ", brief(*it));
  uint64_t begin = 0, end = 0;
  const uint64_t lim = std::numeric_limits<uint64_t>::max();
  UNIME_CHECK(as_uint((*it)[0], lim, &begin) && as_uint((*it)[1], lim, &end), where,
              ": \"data_offsets\" must be non-negative integers, got ", brief(*it));
  UNIME_CHECK(begin <= end, where, ": data_offsets [", begin, ", ", end, "] end before they begin");
  UNIME_CHECK(end <= data_size, where, ": data_offsets [", begin, ", ", end,
              "] lie outside the data region (", data_size, " bytes; file truncated?)");
  UNIME_CHECK(end - begin == nbytes, where, ": data_offsets [", begin, ", ", end, "] hold ",
              end - begin, " bytes but shape ", shape_str(t.shape), " x ", dt, " needs ", nbytes);
  t.data = data_region + begin;
  t.nbytes = nbytes;
  return t;
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t file_size,
                                           const std::string& path) {
  UNIME_CHECK(file_size >= 8, path, ": not a safetensors file: ", file_size,
              " bytes, shorter than the 8-byte header length");
  const uint64_t n = read_u64_le(data);
  UNIME_CHECK(n <= kSafetensorsMaxHeader, path, ": header length ", n, " exceeds the limit of ",
              kSafetensorsMaxHeader, " bytes (not a safetensors file?)");
  UNIME_CHECK(n <= file_size - 8, path, ": header length ", n, " runs past the end of the file (",
              file_size, " bytes; truncated?)");
  UNIME_CHECK(n >= 2 && data[8] == '{', path,
              ": header must be a JSON object starting with '{' (not a safetensors file?)");

  SafetensorsHeader h;
  h.header_size = static_cast<size_t>(n);
  h.data_offset = 8 + h.header_size;
  const uint8_t* region = data + h.data_offset;
  const size_t region_size = file_size - h.data_offset;

  // Parse, noting duplicate top-level keys (nlohmann would silently keep the last one).
  std::string duplicate;
  std::set<std::string> seen;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!seen.insert(k).second) duplicate = k;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(data + 8, data + 8 + h.header_size, cb);
  } catch (const json::exception& e) {
    std::string msg = e.what();
    if (const size_t p = msg.find("] "); p != std::string::npos) msg = msg.substr(p + 2);
    throw Error(str(path, ": header is not valid JSON: ", msg));
  }
  UNIME_CHECK(j.is_object(), path, ": header must be a JSON object");
  UNIME_CHECK(duplicate.empty(), path, ": header lists '", duplicate, "' twice");

  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      UNIME_CHECK(value.is_object(), path, ": __metadata__ must be an object of strings, got ",
                  brief(value));
      for (const auto& [mk, mv] : value.items()) {
        UNIME_CHECK(mv.is_string(), path, ": __metadata__ value for '", mk,
                    "' must be a string, got ", brief(mv));
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    h.tensors.emplace(key, parse_entry(path, key, value, region, region_size));
  }

  // Sorted by offset, the tensors must tile the data region exactly.
  std::vector<const TensorInfo*> order;
  order.reserve(h.tensors.size());
  for (const auto& [k, t] : h.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    if (a->data != b->data) return a->data < b->data;
    return a->nbytes < b->nbytes;
  });
  size_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* t : order) {
    const size_t begin = static_cast<size_t>(t->data - region);
    if (begin < pos) {
      throw Error(str(path, ": tensor '", t->name, "' data_offsets [", begin, ", ",
                      begin + t->nbytes, "] overlap tensor '", prev->name, "' [",
                      static_cast<size_t>(prev->data - region), ", ", pos, "]"));
    }
    if (begin > pos) {
      throw Error(str(path, ": tensor '", t->name, "' starts at data offset ", begin,
                      " but the previous tensor ends at ", pos,
                      " (gaps are not allowed in the data region)"));
    }
    pos = begin + t->nbytes;
    prev = t;
  }
  UNIME_CHECK(pos == region_size, path, ": data region is ", region_size,
              " bytes but the tensors cover ", pos, " (", region_size - pos,
              " trailing bytes belong to no tensor)");
  return h;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto f = std::make_shared<SafetensorsFile>();
  f->path_ = path;
  f->map_ = MappedFile::open(path, /*copy_on_write=*/true);
  static const uint8_t kEmpty[1] = {0};
  const uint8_t* base = f->map_->data() ? f->map_->data() : kEmpty;
  f->header_ = parse_safetensors_header(base, f->map_->size(), path);
  for (auto& [name, t] : f->header_.tensors) t.owner = f->map_;
  return f;
}

// ---- checkpoints ------------------------------------------------------------

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) out.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::vector<std::string> nearest_names(const std::string& name,
                                       const std::vector<std::string>& candidates, size_t n) {
  std::vector<std::pair<size_t, const std::string*>> scored;
  scored.reserve(candidates.size());
  for (const auto& c : candidates) scored.emplace_back(edit_distance(name, c), &c);
  const size_t k = std::min(n, scored.size());
  std::partial_sort(scored.begin(), scored.begin() + k, scored.end(),
                    [](const auto& a, const auto& b) {
                      return a.first != b.first ? a.first < b.first : *a.second < *b.second;
                    });
  std::vector<std::string> out;
  for (size_t i = 0; i < k; ++i) out.push_back(*scored[i].second);
  return out;
}

Checkpoint Checkpoint::open(const std::string& dir_or_file) {
  Checkpoint c;
  std::string file = dir_or_file;
  if (is_directory(dir_or_file)) {
    const std::string index = join_path(dir_or_file, "model.safetensors.index.json");
    const std::string single = join_path(dir_or_file, "model.safetensors");
    if (is_regular_file(index)) {
      file = index;
    } else if (is_regular_file(single)) {
      file = single;
    } else {
      std::vector<std::string> indexes, singles;
      for (const auto& e : list_dir(dir_or_file)) {
        if (ends_with(e, ".safetensors.index.json")) indexes.push_back(e);
        if (ends_with(e, ".safetensors")) singles.push_back(e);
      }
      if (indexes.size() == 1) {
        file = join_path(dir_or_file, indexes[0]);
      } else if (indexes.empty() && singles.size() == 1) {
        file = join_path(dir_or_file, singles[0]);
      } else {
        throw Error(str(dir_or_file, ": no model.safetensors or model.safetensors.index.json (found ",
                        indexes.size(), " *.safetensors.index.json and ", singles.size(),
                        " *.safetensors files)"));
      }
    }
  } else {
    UNIME_CHECK(is_regular_file(dir_or_file), dir_or_file, ": no such checkpoint file or folder");
  }
  c.path_ = file;

  if (!ends_with(file, ".json")) {
    auto f = SafetensorsFile::open(file);
    c.tensors_ = f->tensors();
    c.metadata_ = f->metadata();
    c.files_.push_back(std::move(f));
    return c;
  }

  // sharded: {"metadata": {...}, "weight_map": {"tensor": "model-00001-of-00002.safetensors"}}
  json idx;
  try {
    idx = json::parse(read_file(file));
  } catch (const json::exception& e) {
    throw Error(str(file, ": not valid JSON: ", e.what()));
  }
  UNIME_CHECK(idx.is_object(), file, ": index must be a JSON object");
  auto wm = idx.find("weight_map");
  UNIME_CHECK(wm != idx.end() && wm->is_object(), file,
              ": index has no \"weight_map\" object (tensor name -> shard file)");
  if (auto md = idx.find("metadata"); md != idx.end() && md->is_object()) {
    for (const auto& [k, v] : md->items()) c.metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  const std::string dir = parent_dir(file);
  std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
  for (const auto& [name, shard] : wm->items()) {
    UNIME_CHECK(shard.is_string(), file, ": weight_map['", name, "'] must be a file name, got ",
                shard.dump());
    const std::string s = shard.get<std::string>();
    UNIME_CHECK(!s.empty() && s[0] != '/' && s.find("..") == std::string::npos, file,
                ": weight_map['", name, "'] = '", s,
                "' must be a file name relative to the index's folder");
    auto it = shards.find(s);
    if (it == shards.end()) {
      const std::string shard_path = join_path(dir, s);
      UNIME_CHECK(is_regular_file(shard_path), file, ": shard '", s, "' (for tensor '", name,
                  "') is missing: ", shard_path);
      it = shards.emplace(s, SafetensorsFile::open(shard_path)).first;
      c.files_.push_back(it->second);
    }
    auto t = it->second->tensors().find(name);
    UNIME_CHECK(t != it->second->tensors().end(), file, ": tensor '", name,
                "' is mapped to shard '", s, "' but that shard does not contain it");
    c.tensors_.emplace(name, t->second);
  }
  return c;
}

bool Checkpoint::has(const std::string& name) const { return tensors_.count(name) != 0; }

const TensorInfo& Checkpoint::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it != tensors_.end()) return it->second;
  std::string hint;
  for (const auto& s : nearest_names(name, names(), 3)) hint += (hint.empty() ? "" : ", ") + s;
  throw Error(str(path_, ": tensor '", name, "' not found (", tensors_.size(), " tensors",
                  hint.empty() ? std::string() : "; nearest: " + hint, ")"));
}

const TensorInfo& Checkpoint::get(const std::string& name,
                                  const std::vector<int64_t>& expected_shape) const {
  const TensorInfo& t = get(name);
  UNIME_CHECK(t.shape == expected_shape, t.file, ": tensor '", name, "' has wrong shape; expected ",
              shape_str(expected_shape), ", got ", shape_str(t.shape),
              " (are the weights and config.json from the same model?)");
  return t;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [k, v] : tensors_) out.push_back(k);
  return out;
}

// ---- writer -----------------------------------------------------------------

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_safetensors_streamed(path, tensors, metadata, [&](size_t i) { return tensors[i].data; });
}

void write_safetensors_streamed(const std::string& path, const std::vector<TensorToWrite>& tensors,
                                const std::map<std::string, std::string>& metadata,
                                const std::function<const void*(size_t)>& produce) {
  struct Item {
    size_t index;
    const TensorToWrite* t;
    size_t nbytes;
  };
  std::vector<Item> items;
  std::set<std::string> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    UNIME_CHECK(t.name != "__metadata__", path, ": '__metadata__' cannot be a tensor name");
    UNIME_CHECK(names.insert(t.name).second, path, ": tensor '", t.name, "' given twice");
    size_t n = dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      UNIME_CHECK(d >= 0, path, ": tensor '", t.name, "' has negative shape ", shape_str(t.shape));
      UNIME_CHECK(!__builtin_mul_overflow(n, static_cast<size_t>(d), &n), path, ": tensor '",
                  t.name, "' shape ", shape_str(t.shape), " overflows");
    }
    items.push_back({i, &t, n});
  }
  // widest element first, then by name: each tensor starts aligned to its element size
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    const size_t sa = dtype_size(a.t->dtype), sb = dtype_size(b.t->dtype);
    return sa != sb ? sa > sb : a.t->name < b.t->name;
  });

  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  size_t offset = 0;
  for (const auto& it : items) {
    h[it.t->name] = {{"dtype", dtype_name(it.t->dtype)},
                     {"shape", it.t->shape},
                     {"data_offsets", {offset, offset + it.nbytes}}};
    offset += it.nbytes;
  }
  std::string header = h.dump();  // std::map-backed object: keys come out sorted
  header.append((8 - header.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t(header.size()) >> (8 * i));

  AtomicFile f(path);
  f.write(len, 8);
  f.write(header);
  for (const auto& it : items) {
    if (it.nbytes == 0) continue;
    const void* data = produce(it.index);
    UNIME_CHECK(data != nullptr, path, ": tensor '", it.t->name, "' has no data");
    f.write(data, it.nbytes);
  }
  f.commit();
}

}  // namespace unime::io
