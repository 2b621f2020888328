// The torch half of include/unime/runtime.h: threads and internal-error reporting.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "unime/runtime.h"

namespace unime {

int set_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  torch::set_num_threads(n);
  // torch's thread count does not reach OpenBLAS's own pthread pool (Debian's libblas.so.3 is
  // OpenBLAS when libopenblas-dev is installed): it would keep one thread per core, spinning
  // between calls, whatever --threads says. An explicit OPENBLAS_NUM_THREADS still wins.
  using SetThreads = void (*)(int);
  if (std::getenv("OPENBLAS_NUM_THREADS") == nullptr)
    if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(n);
  return torch::get_num_threads();
}

int report_internal_error(const std::exception& e) {
  if (const auto* c10e = dynamic_cast<const c10::Error*>(&e)) {
    std::fprintf(stderr, "internal error: %s\n", c10e->what_without_backtrace());
  } else {
    std::fprintf(stderr, "internal error: %s\n", e.what());
  }
  return 2;
}

}  // namespace unime
