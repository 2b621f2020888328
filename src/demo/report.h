// The demo's report: DIR/report.json (everything measured), DIR/report.md and DIR/report.html
// (the paper-style tables, the claims, pictures under DIR/plots/).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace unime::demo {

/// Writes report.json, report.md, report.html (and the pictures) into dir, atomically each.
void write_report(const std::string& dir, const nlohmann::ordered_json& report);

/// The Markdown text of the report (tables and claims; picture links relative to dir).
std::string report_markdown(const nlohmann::ordered_json& report);

}  // namespace unime::demo
