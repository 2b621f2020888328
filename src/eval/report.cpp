// Evaluation reports: JSON + Markdown writers, reader and the comparison table.
#include "eval/report.h"

#include <cstdio>

#include "core/error.h"
#include "io/fs.h"

namespace unime::eval {

namespace {

std::string pct(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", 100.0 * v);
  return buf;
}

std::string md_path(const std::string& path) {
  const std::string ext = ".json";
  if (path.size() > ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0)
    return path.substr(0, path.size() - ext.size()) + ".md";
  return path + ".md";
}

}  // namespace

Report make_report(const std::string& benchmark, const Scores& scores) {
  Report r;
  r["format"] = "unime-eval-report/1";
  r["benchmark"] = benchmark;
  r["scores"] = Report::object();
  for (const auto& [k, v] : scores) r["scores"][k] = v;
  return r;
}

std::string report_markdown(const Report& r) {
  std::string md = str("# unime eval ", r.value("benchmark", std::string("?")), "\n\n");
  if (r.contains("model") && r["model"].is_object())
    md += str("model: `", r["model"].value("path", std::string()), "` (",
              r["model"].value("describe", std::string()), ")\n\n");
  if (r.contains("data")) md += str("data: `", r["data"].get<std::string>(), "`\n\n");
  md += "| name | score (%) |\n|---|---:|\n";
  for (const auto& [k, v] : r["scores"].items()) md += str("| ", k, " | ", pct(v.get<double>()), " |\n");
  if (r.contains("counts") && r["counts"].is_object()) {
    md += "\n";
    for (const auto& [k, v] : r["counts"].items()) md += str("- ", k, ": ", v.dump(), "\n");
  }
  return md;
}

void write_report(const std::string& path, const Report& r) {
  io::write_file_atomic(path, r.dump(2) + "\n");
  io::write_file_atomic(md_path(path), report_markdown(r));
}

Report read_report(const std::string& path) {
  Report r;
  try {
    r = Report::parse(io::read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(str(path, ": not valid JSON: ", e.what()));
  }
  UNIME_CHECK(r.is_object() && r.contains("scores") && r["scores"].is_object(), path,
              ": not a unime eval report (expected an object with \"scores\")");
  for (const auto& [k, v] : r["scores"].items())
    UNIME_CHECK(v.is_number(), path, ": score '", k, "' must be a number, got ", v.type_name());
  return r;
}

std::string compare_markdown(const Report& a, const Report& b, const std::string& name_a,
                             const std::string& name_b) {
  std::string md = str("| name | ", name_a, " (%) | ", name_b, " (%) | delta |\n|---|---:|---:|---:|\n");
  auto row = [&](const std::string& k) {
    const bool ha = a["scores"].contains(k), hb = b["scores"].contains(k);
    const double va = ha ? a["scores"][k].get<double>() : 0, vb = hb ? b["scores"][k].get<double>() : 0;
    std::string d = "-";
    if (ha && hb) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%+.2f", 100.0 * (vb - va));
      d = buf;
    }
    md += str("| ", k, " | ", ha ? pct(va) : "-", " | ", hb ? pct(vb) : "-", " | ", d, " |\n");
  };
  for (const auto& [k, v] : a["scores"].items()) row(k);
  for (const auto& [k, v] : b["scores"].items())
    if (!a["scores"].contains(k)) row(k);
  return md;
}

}  // namespace unime::eval
