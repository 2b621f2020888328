// Training plots from metrics.jsonl: see train-plots.h.
#include "report/train-plots.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/jsonl.h"
#include "report/plot.h"

namespace unime::plot {

namespace {

// Trailing moving average over `w` steps (the first points average what exists so far).
std::vector<double> moving_average(const std::vector<double>& y, size_t w) {
  std::vector<double> out(y.size());
  double sum = 0;
  size_t n = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    sum += y[i];
    ++n;
    if (n > w) {
      sum -= y[i - w];
      --n;
    }
    out[i] = sum / static_cast<double>(n);
  }
  return out;
}

}  // namespace

std::vector<std::string> write_training_plots(const std::string& metrics_path, const std::string& out_dir,
                                              const std::string& ext) {
  // step -> value per field; a resumed run rewrites earlier steps, so the last line for a step wins
  std::map<std::string, std::map<int64_t, double>> f;
  io::read_jsonl(metrics_path, [&](int64_t line, const nlohmann::json& row) {
    auto it = row.find("step");
    if (it == row.end()) return;
    UNIME_CHECK(it->is_number_integer(), metrics_path, ":", line, ": 'step' must be an integer, got ", it->dump());
    const int64_t step = it->get<int64_t>();
    for (const char* key : {"loss", "mean_pos_sim", "mean_neg_sim", "fn_removed_per_row", "mean_offdiag_sim", "lr"}) {
      auto v = row.find(key);
      if (v == row.end() || v->is_null()) continue;
      UNIME_CHECK(v->is_number(), metrics_path, ":", line, ": '", key, "' must be a number, got ", v->dump());
      f[key][step] = v->get<double>();
    }
  });
  auto series = [&](const char* key, const std::string& label) {
    Series s{label, {}, {}};
    for (auto& [step, v] : f[key]) {
      s.x.push_back(static_cast<double>(step));
      s.y.push_back(v);
    }
    return s;
  };
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  UNIME_CHECK(std::filesystem::is_directory(out_dir), out_dir, ": cannot create the plot folder",
              ec ? ": " + ec.message() : "");
  std::vector<std::string> written;
  auto path = [&](const char* name) { return (std::filesystem::path(out_dir) / (name + ext)).string(); };

  LineChart loss{"training loss", "step", "loss", {series("loss", "loss")}, false};
  const size_t n = loss.series[0].y.size();
  if (n >= 20) {
    const size_t w = std::max<size_t>(5, n / 20);
    loss.series.push_back({str("moving average (", w, " steps)"), loss.series[0].x, moving_average(loss.series[0].y, w)});
  }
  write_line_chart(loss, path("loss"));
  written.push_back(path("loss"));

  if (!f["mean_pos_sim"].empty() || !f["mean_neg_sim"].empty()) {
    LineChart sim{"similarity: positives vs chosen hard negatives", "step", "mean cosine similarity",
                  {series("mean_pos_sim", "positive S[i,i]"), series("mean_neg_sim", "chosen negatives")}, false};
    write_line_chart(sim, path("similarity"));
    written.push_back(path("similarity"));
  } else if (!f["mean_offdiag_sim"].empty()) {
    LineChart sim{"similarity: student, off-diagonal mean", "step", "mean cosine similarity",
                  {series("mean_offdiag_sim", "in-batch pairs i != j")}, false};
    write_line_chart(sim, path("similarity"));
    written.push_back(path("similarity"));
  }
  if (!f["fn_removed_per_row"].empty()) {
    LineChart fl{"false-negative filter", "step", "candidates removed per query",
                 {series("fn_removed_per_row", "removed (S[i,j] > S[i,i] + margin)")}, false};
    write_line_chart(fl, path("filter"));
    written.push_back(path("filter"));
  }
  return written;
}

}  // namespace unime::plot
