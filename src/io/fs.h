// File-system helpers for everything that reads or writes user files: whole-file reads with
// clear errors, atomic writes (temp file in the same folder + fsync + rename + fsync of the
// folder, so that a crash leaves either the old file or the new one, never half of one), and a
// read-only memory map for large inputs (safetensors shards).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace unime::io {

/// Reads a whole file. Missing, unreadable or a directory -> unime::Error naming the path.
std::string read_file(const std::string& path);

/// Writes `bytes` to `path` atomically (temp + fsync + rename). Throws unime::Error on failure.
void write_file_atomic(const std::string& path, std::string_view bytes);

/// A file being written atomically, for outputs too large to build in memory first:
///   AtomicFile f(path); f.write(a); f.write(b); f.commit();
/// Until commit() the data lives in "<path>.tmp.<pid>.<n>" next to the target; the destructor
/// removes that temp file when commit() was never reached (an exception on the way).
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  /// fsync, rename over the target, fsync the folder. Throws unime::Error on failure.
  void commit();

 private:
  std::string path_, tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

/// A whole file mapped privately (MAP_PRIVATE). An empty file maps to data() == nullptr.
/// Read-only by default; `copy_on_write` maps it PROT_READ|PROT_WRITE so that tensors viewing the
/// mapping (model weights loaded without a copy) may be written in place (a LoRA merge): a
/// written page becomes a private copy and the file never changes.
class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path, bool copy_on_write = false);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

/// Drops the whole pages of [p, p + n) that lie inside a live MappedFile from this process's
/// resident set (madvise MADV_DONTNEED): unmodified pages come back from the file when touched
/// again, copy-on-write pages written since are DISCARDED (and read back as the file's bytes).
/// For weights consumed once (converted or quantised at load). A range outside every live mapping
/// is left alone. Returns the bytes released.
size_t release_mapped_pages(const void* p, size_t n);

/// "a/b/c.txt" -> "a/b" ("." when there is no folder part).
std::string parent_dir(const std::string& path);
/// Joins a folder and a relative name with one '/'.
std::string join_path(const std::string& dir, const std::string& name);
bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);

}  // namespace unime::io
