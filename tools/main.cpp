// unime: one binary, one subcommand per tools/unime-<name>.cpp (git-builtin style).
// The only place that catches: unime::Error -> "error: ..." exit 1; internal errors -> exit 2.
#include <cstdio>
#include <exception>
#include <string>

#include "commands.h"
#include "common.h"

// Subcommands that never run a float32 matmul skip early_init's re-exec (it doubles start-up).
static bool needs_blas(int argc, char** argv) {
  if (argc < 2) return false;
  const std::string cmd = argv[1];
  for (const char* light : {"tokenize", "world", "preprocess", "inspect", "plot", "--help", "-h", "--version"})
    if (cmd == light) return false;
  return true;
}

int main(int argc, char** argv) {
  if (needs_blas(argc, argv)) unime::early_init(argc, argv);  // OpenBLAS kernel: before any BLAS call
  CLI::App app{"unime: universal multimodal embeddings from multimodal LLMs (UniME)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "unime 0.1.0");
  register_all_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const unime::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    return unime::report_internal_error(e);
  }
  return 0;
}
