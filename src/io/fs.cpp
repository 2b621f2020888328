// File-system helpers: see fs.h. POSIX calls (open/fsync/rename/mmap) because std::filesystem
// has no fsync and no mmap.
#include "io/fs.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

#include "core/error.h"

namespace unime::io {

namespace {

std::string errno_text() { return std::strerror(errno); }

// Opens `path` for reading and checks that it is a regular file; returns the fd and its size.
int open_regular_for_read(const std::string& path, size_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(str(path, ": cannot open file: ", errno_text()));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string why = errno_text();
    ::close(fd);
    throw Error(str(path, ": cannot stat file: ", why));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(str(path, ": not a regular file", S_ISDIR(st.st_mode) ? " (it is a directory)" : ""));
  }
  *size = static_cast<size_t>(st.st_size);
  return fd;
}

}  // namespace

std::string read_file(const std::string& path) {
  size_t size = 0;
  int fd = open_regular_for_read(path, &size);
  std::string out;
  out.resize(size);
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::read(fd, out.data() + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? errno_text() : "file shrank while reading";
      ::close(fd);
      throw Error(str(path, ": read failed after ", got, " of ", size, " bytes: ", why));
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

// ---- atomic writes ----------------------------------------------------------

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
  static std::atomic<unsigned> counter{0};
  tmp_path_ = str(path, ".tmp.", ::getpid(), ".", counter++);
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(str(path, ": cannot create temporary file ", tmp_path_, ": ", errno_text()));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_path_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  UNIME_CHECK(fd_ >= 0 && !committed_, path_, ": write after commit");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw Error(str(path_, ": write failed: ", w < 0 ? errno_text() : "no progress"));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  UNIME_CHECK(fd_ >= 0 && !committed_, path_, ": commit called twice");
  if (::fsync(fd_) != 0) throw Error(str(path_, ": fsync failed: ", errno_text()));
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw Error(str(path_, ": close failed: ", errno_text()));
  }
  fd_ = -1;
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0)
    throw Error(str(path_, ": cannot rename ", tmp_path_, " over it: ", errno_text()));
  committed_ = true;
  // make the rename itself durable
  int dfd = ::open(parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

// ---- memory map -------------------------------------------------------------

namespace {
// Live mappings (start -> size), for release_mapped_pages: a pointer is only madvised when it
// lies inside one of ours.
std::mutex g_maps_mu;
std::map<uintptr_t, size_t> g_maps;
}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path, bool copy_on_write) {
  size_t size = 0;
  int fd = open_regular_for_read(path, &size);
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = size;
  if (size > 0) {
    const int prot = copy_on_write ? PROT_READ | PROT_WRITE : PROT_READ;
    void* p = ::mmap(nullptr, size, prot, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string why = errno_text();
      ::close(fd);
      throw Error(str(path, ": mmap of ", size, " bytes failed: ", why));
    }
    m->data_ = static_cast<const uint8_t*>(p);
    std::lock_guard<std::mutex> lk(g_maps_mu);
    g_maps[reinterpret_cast<uintptr_t>(p)] = size;
  }
  ::close(fd);  // the mapping stays valid after close
  return m;
}

MappedFile::~MappedFile() {
  if (!data_) return;
  std::lock_guard<std::mutex> lk(g_maps_mu);
  g_maps.erase(reinterpret_cast<uintptr_t>(data_));
  ::munmap(const_cast<uint8_t*>(data_), size_);
}

size_t release_mapped_pages(const void* p, size_t n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lk(g_maps_mu);
  auto it = g_maps.upper_bound(a);
  if (it == g_maps.begin()) return 0;
  --it;  // the mapping starting at or before p
  if (a + n > it->first + it->second) return 0;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (a + page - 1) / page * page, hi = (a + n) / page * page;  // whole pages only
  if (hi <= lo) return 0;
  if (::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED) != 0) return 0;
  return hi - lo;
}

// ---- paths ------------------------------------------------------------------

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace unime::io
