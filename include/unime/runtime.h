/// unime runtime set-up: call unime::early_init(argc, argv) first thing in main().
///
///   int main(int argc, char** argv) {
///     unime::early_init(argc, argv);   // may re-exec the process once (see below)
///     unime::set_threads(0);           // 0 = all cores
///     ...
///   }
///
/// OpenBLAS 0.3.21 does not recognise Sapphire-Rapids CPUs and falls back to its slow SSE3 kernel;
/// it picks its kernel when the library loads, before main() runs. So when the CPU has avx512f and
/// OPENBLAS_CORETYPE is unset, early_init sets OPENBLAS_CORETYPE=SkylakeX and re-executes the
/// program once. It never sets it on a CPU without avx512f.
#pragma once

#include <exception>
#include <string>

namespace unime {

/// Environment fixes that must precede library loading (may re-exec once); idempotent.
void early_init(int argc, char** argv);

/// True when /proc/cpuinfo lists the flag (e.g. "avx512f", "amx_bf16", "avx512_bf16").
bool cpu_has_flag(const std::string& flag);

/// Sets torch's intra-op threads (0 = number of cores) and returns the count in use.
int set_threads(int n);

/// Threads for each of `workers` inference workers that share the cores: `threads` (0 = all cores)
/// divided by workers, at least 1. torch's thread count is process-wide, so every worker gets the same.
int threads_per_worker(int threads, int workers);

/// Prints an internal (programmer) error in one line and returns exit code 2.
int report_internal_error(const std::exception& e);

}  // namespace unime
