// Training plots from OUT/metrics.jsonl (written by src/train/trainer.cpp, one JSON object per
// optimizer step): loss.png, and similarity.png / filter.png for the fields a stage logs.
// Torch-free; used by the trainer (at every checkpoint and at the end) and by `unime plot`.
#pragma once

#include <string>
#include <vector>

namespace unime::plot {

/// Reads `metrics_path` and writes into `out_dir` (created when missing):
///   loss.png        loss per step, plus a moving average (window ~ steps / 20) when there are
///                   at least 20 steps;
///   similarity.png  stage 2: mean positive similarity S[i,i] and mean similarity of the chosen
///                   negatives per step; stage 1: mean off-diagonal student similarity;
///   filter.png      stage 2: candidates the false-negative filter removed per query row.
/// `ext` is ".png" or ".svg". Returns the paths written. A line that is not a JSON object, or
/// a field of the wrong type, is an unime::Error "path:line: ..."; lines without "step" are skipped.
std::vector<std::string> write_training_plots(const std::string& metrics_path, const std::string& out_dir,
                                              const std::string& ext = ".png");

}  // namespace unime::plot
