// Small helpers shared by tests: temp dirs, running commands, reading files.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace unime::test {

/// A fresh directory under $TMPDIR, removed when the object dies (unless UNIME_KEEP_TMP is set).
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "unime-test-XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    if (!p) throw std::runtime_error("mkdtemp failed");
    path_ = p;
  }
  ~TempDir() {
    if (!std::getenv("UNIME_KEEP_TMP")) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  const std::filesystem::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

struct CmdResult {
  int status = -1;     // exit code
  std::string output;  // stdout + stderr
};

/// Runs a shell command, capturing stdout and stderr together.
inline CmdResult run_cmd(const std::string& cmd) {
  CmdResult r;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) r.output.append(buf.data(), n);
  int st = pclose(f);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_text(const std::string& path, const std::string& s) {
  std::ofstream out(path, std::ios::binary);
  out << s;
}

inline std::string python() { return UNIME_PYTHON; }
inline std::string gen_script(const std::string& name) {
  return std::string(UNIME_SOURCE_DIR) + "/tests/gen/" + name;
}
inline std::string unime_bin() { return UNIME_BIN; }

}  // namespace unime::test
