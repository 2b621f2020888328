// `unime demo [--output DIR] [--seed N] [--quick]`: the whole UniME pipeline on one CPU from
// nothing (src/demo/demo.h): world, tokenizer, stage-0 pretraining, teacher, stages 1-2,
// ablations, evaluation, report.
#include <cstdio>

#include "common.h"
#include "demo/demo.h"

void register_demo(CLI::App& app) {
  auto o = std::make_shared<unime::demo::DemoOptions>();
  auto* cmd = app.add_subcommand("demo", "the whole UniME pipeline on a generated world, with a report");
  cmd->add_option("--output,-o", o->output, "output folder")->capture_default_str();
  cmd->add_option("--seed", o->seed, "world and training seed")->capture_default_str();
  cmd->add_flag("--quick", o->quick, "small sizes (a few minutes; what the test suite runs)");
  cmd->add_option("--threads", o->threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_flag("--force", o->force, "recompute every step (default: reuse finished steps)");
  cmd->add_option("--set", o->set, "override a size or hyper-parameter, key=value (repeatable); keys:\n" +
                                       unime::demo::plan_keys());
  cmd->add_flag("!--no-check", o->check, "exit 0 even when a claim of the method does not hold");
  cmd->callback([o]() {
    const int failed = unime::demo::run_demo(*o);
    if (failed > 0 && o->check) {
      throw unime::Error(unime::str("demo: ", failed, " claim(s) of the method do not hold (see ",
                                    o->output, "/report.md)"));
    }
  });
}
