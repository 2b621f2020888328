// safetensors reader (single file and sharded checkpoints, mmap'd) and writer.
// Format (https://github.com/huggingface/safetensors, "Format" section):
//   [8 bytes: N, little-endian u64][N bytes: JSON header, may be space padded][data region]
//   header = {"__metadata__": {str: str}, "<tensor>": {"dtype": "F32", "shape": [2, 3],
//             "data_offsets": [begin, end]}, ...}; offsets are relative to the data region.
// The reader follows the Rust reference's validation (safetensors/src/tensor.rs, Metadata::validate):
// N <= 100 MB and inside the file, a JSON object starting with '{', known dtypes, offsets in the
// data region, end - begin == prod(shape) * dtype_size (overflow-checked), tensors sorted by offset
// tile the data region exactly (no overlap, no gap, nothing left over), __metadata__ str -> str.
// Nothing in a file is trusted: every violation is a unime::Error naming the file and tensor.
//
// Usage:
//   auto ckpt = unime::io::Checkpoint::open("models/llava");          // folder, index or file
//   const auto& w = ckpt.get("model.embed_tokens.weight", {32000, 4096});  // checks the shape
//   // w.dtype, w.data (pointer into the mapped file, NOT necessarily aligned), w.nbytes
//   unime::io::write_safetensors("out.safetensors", {{"w", DType::F32, {2, 3}, ptr}});
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace unime::io {

class MappedFile;

/// Element types, named as in safetensors' header ("F32", "BF16", ...).
enum class DType {
  F64,   ///< IEEE double
  F32,   ///< IEEE float
  F16,   ///< IEEE half
  BF16,  ///< bfloat16 (upper half of an F32)
  I64,
  I32,
  I16,
  I8,
  U8,
  BOOL,  ///< one byte, 0 or 1
};

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);  // "F32", ... as in safetensors
/// Parses a safetensors dtype name; false when it is not one of ours.
bool parse_dtype(std::string_view name, DType* out);

/// "[2, 3]"
std::string shape_str(const std::vector<int64_t>& shape);

/// One tensor inside a (mapped) safetensors file. `data` points into the mapping, which lives
/// as long as the SafetensorsFile / Checkpoint that handed it out. It is only as aligned as the
/// file makes it (files from our writer and from the Python library align the data region to 8
/// bytes); copy with memcpy rather than casting when in doubt.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // the .safetensors path it came from (for error messages)
  /// Keeps the mapping behind `data` alive (set by SafetensorsFile::open; null for headers parsed
  /// from the caller's memory): hold a copy to use `data` after the file object is gone, e.g. a
  /// model weight that views the file instead of copying it.
  std::shared_ptr<const void> owner;

  int64_t numel() const;
};

/// A fully validated header. Tensor `data` pointers point into the buffer given to the parser.
struct SafetensorsHeader {
  size_t header_size = 0;  // N, the JSON length (including padding)
  size_t data_offset = 0;  // 8 + N: where the data region starts
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
};

/// Largest header accepted (the Rust reference's MAX_HEADER_SIZE).
constexpr size_t kSafetensorsMaxHeader = 100'000'000;

/// Validates a whole safetensors file held in memory (`data`, `file_size` bytes). Used by
/// SafetensorsFile::open and by fuzz/fuzz-safetensors.cpp. Throws unime::Error naming `path`.
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t file_size,
                                           const std::string& path);

/// One .safetensors file, mmap'd copy-on-write (MappedFile: writes through a tensor that views it
/// change only this process's copy); the header fully validated on open.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  const std::map<std::string, TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const std::string& path() const { return path_; }
  size_t header_size() const { return header_.header_size; }

 private:
  std::string path_;
  std::shared_ptr<MappedFile> map_;
  SafetensorsHeader header_;
};

/// A checkpoint: a folder holding model.safetensors or model.safetensors.index.json + shards
/// (any single *.safetensors[.index.json] when those names are absent), an index file, or one
/// .safetensors file. Every tensor listed in an index must exist in the shard it names.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& dir_or_file);

  bool has(const std::string& name) const;
  /// Missing -> unime::Error naming the key and the 3 nearest existing keys.
  const TensorInfo& get(const std::string& name) const;
  /// As get(name), and the shape must equal `expected_shape` (error names both shapes).
  const TensorInfo& get(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  std::vector<std::string> names() const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  /// __metadata__ of a single file, or the index's "metadata" (values as JSON text if not strings).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// The `n` keys closest to `name` by edit distance (for "did you mean" hints).
std::vector<std::string> nearest_names(const std::string& name,
                                       const std::vector<std::string>& candidates, size_t n = 3);

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // prod(shape) * dtype_size(dtype) bytes, C order
};

/// Writes a .safetensors file atomically: header keys sorted, the data region 8-byte aligned
/// (header padded with spaces like the Python writer), tensors laid out by (element size
/// descending, name) so that each one is aligned to its element size.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
/// As write_safetensors for files larger than memory: the `data` pointers of `tensors` are
/// ignored; each tensor's bytes come from `produce(i)` (i indexes `tensors`), called once per
/// tensor in file order, and must stay valid until the next call.
void write_safetensors_streamed(const std::string& path, const std::vector<TensorToWrite>& tensors,
                                const std::map<std::string, std::string>& metadata,
                                const std::function<const void*(size_t)>& produce);

}  // namespace unime::io
