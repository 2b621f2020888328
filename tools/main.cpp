// unime: one binary, one subcommand per tools/unime-<name>.cpp (git-builtin style).
// The only place that catches: unime::Error -> "error: ..." exit 1; internal errors -> exit 2.
#include <cstdio>
#include <exception>

#include "commands.h"
#include "common.h"

int main(int argc, char** argv) {
  unime::early_init(argc, argv);  // OpenBLAS kernel choice: must precede any BLAS call
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
