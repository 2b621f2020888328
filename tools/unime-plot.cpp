// `unime plot --metrics OUT/metrics.jsonl --output DIR [--format png|svg]`: redraws the training
// plots (loss, similarity, filter) from a metrics file, e.g. while a run is still going.
#include <cstdio>

#include "common.h"
#include "report/train-plots.h"

void register_plot(CLI::App& app) {
  auto* cmd = app.add_subcommand("plot", "draw the training plots (loss, similarities) from metrics.jsonl");
  struct Args {
    std::string metrics, output, format = "png";
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--metrics", a->metrics, "metrics.jsonl written by `unime train`")->required();
  cmd->add_option("--output", a->output, "folder for the pictures (created when missing)")->required();
  cmd->add_option("--format", a->format, "png | svg")->capture_default_str()->check(CLI::IsMember({"png", "svg"}));
  cmd->callback([a]() {
    for (const auto& p : unime::plot::write_training_plots(a->metrics, a->output, "." + a->format))
      std::printf("%s\n", p.c_str());
  });
}
