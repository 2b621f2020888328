// Process-level set-up that must happen before libraries do work (see include/unime/runtime.h).
#include "unime/runtime.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace unime {

int threads_per_worker(int threads, int workers) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, threads / std::max(1, workers));
}

bool cpu_has_flag(const std::string& flag) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string w;
    while (words >> w)
      if (w == flag) return true;
    return false;  // the first "flags" line describes every core alike
  }
  return false;
}

void early_init(int argc, char** argv) {
  (void)argc;
  // Keep glibc from mmapping (and zeroing) every large activation buffer: +18% on one fp32
  // batch here (PERFORMANCE.md). Same trick as setting MALLOC_MMAP_MAX_/MALLOC_TRIM_THRESHOLD_.
  setenv("MALLOC_MMAP_MAX_", "0", 0);
  setenv("MALLOC_TRIM_THRESHOLD_", "4294967296", 0);
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || std::getenv("UNIME_NO_REEXEC") != nullptr)
    return;
  if (!cpu_has_flag("avx512f")) return;
  setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
  setenv("UNIME_NO_REEXEC", "1", 1);  // at most once, whatever happens
  execv("/proc/self/exe", argv);
  // exec failed (no /proc?): carry on with the slower kernel rather than fail
}

}  // namespace unime
