// `unime version-info`: build and runtime facts (torch version, threads, CPU features, BLAS).
#include <cstdio>
#include <cstdlib>

#include "common.h"

void register_version_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("version-info", "print build and runtime facts");
  cmd->callback([]() {
    std::printf("unime 0.1.0\n");
    std::printf("cpu: avx512f=%d avx512_bf16=%d amx_bf16=%d\n", unime::cpu_has_flag("avx512f"),
                unime::cpu_has_flag("avx512_bf16"), unime::cpu_has_flag("amx_bf16"));
    const char* ct = std::getenv("OPENBLAS_CORETYPE");
    std::printf("OPENBLAS_CORETYPE=%s\n", ct ? ct : "(unset)");
    std::printf("threads: %d\n", unime::set_threads(0));
  });
}
