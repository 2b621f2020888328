// Evaluation reports: REPORT.json (scores, per-dataset details, counts, model, options) and
// REPORT.md (Markdown table) beside it, and the delta table of `unime eval --compare A B`.
// Scores are fractions in [0, 1] in the JSON and percentages in the Markdown.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "eval/benchmarks.h"

namespace unime::eval {

using Report = nlohmann::ordered_json;

/// {"benchmark", "scores": {name: value, ...}} in order; callers add model/options/counts.
Report make_report(const std::string& benchmark, const Scores& scores);

/// A Markdown summary: title, model line, a "| name | score (%) |" table and the counts.
std::string report_markdown(const Report& r);

/// Writes `path` (JSON) and the same path with ".md" in place of ".json" (or appended).
void write_report(const std::string& path, const Report& r);

/// Reads a report written by write_report; errors name the file.
Report read_report(const std::string& path);

/// "| name | A (%) | B (%) | delta |" over the union of both reports' scores (A's order first).
std::string compare_markdown(const Report& a, const Report& b, const std::string& name_a,
                             const std::string& name_b);

}  // namespace unime::eval
