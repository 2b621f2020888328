// Demo report; see report.h.
#include "demo/report.h"

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "io/fs.h"

namespace unime::demo {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

const char* kVariants[] = {"stage0", "stage1", "stage2", "ablation-infonce", "ablation-nofilter"};

std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", 100.0 * v);
  return b;
}

struct Table {
  std::vector<std::string> head;
  std::vector<std::vector<std::string>> rows;
};

Table main_table(const json& r) {
  Table t;
  t.head = {"model", "Cls", "VQA", "Ret", "Grd", "IND", "OOD", "Overall", "t2i R@1", "i2t R@1",
            "t2t R@1", "Replace", "Swap", "Add", "NLI acc"};
  for (const char* v : kVariants) {
    if (!r["results"].contains(v)) continue;
    const json& x = r["results"][v];
    std::vector<std::string> row{x.value("label", std::string(v))};
    for (const char* k : {"classification", "vqa", "retrieval", "grounding", "IND", "OOD", "overall"})
      row.push_back(pct(x["mmeb_means"].value(k, 0.0)));
    for (const char* k : {"t2i_R@1", "i2t_R@1", "t2t_R@1"}) row.push_back(pct(x["retrieval"].value(k, 0.0)));
    for (const char* k : {"Replace", "Swap", "Add"}) row.push_back(pct(x["sugarcrepe"].value(k, 0.0)));
    row.push_back(pct(x.value("nli_accuracy", 0.0)));
    t.rows.push_back(row);
  }
  return t;
}

Table dataset_table(const json& r) {
  Table t;
  t.head = {"dataset"};
  for (const char* v : kVariants)
    if (r["results"].contains(v)) t.head.push_back(v);
  if (!r["results"].contains("stage0")) return t;
  for (auto& [ds, val] : r["results"]["stage0"]["mmeb"].items()) {
    std::vector<std::string> row{ds};
    for (const char* v : kVariants)
      if (r["results"].contains(v)) row.push_back(pct(r["results"][v]["mmeb"].value(ds, 0.0)));
    t.rows.push_back(row);
  }
  return t;
}

std::string markdown(const Table& t) {
  std::ostringstream s;
  s << "|";
  for (auto& h : t.head) s << " " << h << " |";
  s << "\n|";
  for (size_t i = 0; i < t.head.size(); ++i) s << (i ? " ---: |" : " --- |");
  s << "\n";
  for (auto& row : t.rows) {
    s << "|";
    for (auto& c : row) s << " " << c << " |";
    s << "\n";
  }
  return s.str();
}

std::string html_escape(const std::string& x) {
  std::string o;
  for (char c : x) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

std::string html(const Table& t) {
  std::ostringstream s;
  s << "<table><tr>";
  for (auto& h : t.head) s << "<th>" << html_escape(h) << "</th>";
  s << "</tr>\n";
  for (auto& row : t.rows) {
    s << "<tr>";
    for (size_t i = 0; i < row.size(); ++i)
      s << (i ? "<td class=n>" : "<td>") << html_escape(row[i]) << "</td>";
    s << "</tr>\n";
  }
  s << "</table>\n";
  return s.str();
}

std::string claims_text(const json& r, bool as_html) {
  std::ostringstream s;
  if (as_html) s << "<ul>\n";
  for (auto& c : r.value("claims", json::array())) {
    const bool ok = c.value("holds", false);
    const std::string line = std::string(ok ? "holds: " : "FAILS: ") + c.value("claim", std::string()) +
                             " " + c["values"].dump();
    if (as_html) s << "<li class=" << (ok ? "ok" : "bad") << ">" << html_escape(line) << "</li>\n";
    else s << "- " << line << "\n";
  }
  if (as_html) s << "</ul>\n";
  return s.str();
}

std::string header_text(const json& r) {
  std::ostringstream s;
  const json& s0 = r.value("stage0", json::object());
  s << "seed " << r.value("seed", 0) << (r.value("quick", false) ? " (--quick)" : "") << "; stage 0: "
    << s0.value("parameters", 0) << " parameters, next-token loss " << s0.value("first_loss", 0.0)
    << " -> " << s0.value("last_loss", 0.0) << "; teacher NLI accuracy "
    << pct(r["teacher"].value("nli_accuracy", 0.0)) << "%, t2t R@1 "
    << pct(r["teacher"].value("t2t_R@1", 0.0)) << "%; total " << static_cast<int64_t>(r["timings"].value("total", 0.0))
    << " s";
  return s.str();
}

}  // namespace

std::string report_markdown(const json& r) {
  std::ostringstream s;
  s << "# UniME demo report\n\n" << header_text(r) << "\n\n";
  s << "## Results (%; MMEB-style P@1 per meta-task, retrieval recall, SugarCrepe-style accuracy)\n\n"
    << markdown(main_table(r)) << "\n## Claims\n\n" << claims_text(r, false)
    << "\n## Per dataset (P@1 %)\n\n" << markdown(dataset_table(r));
  s << "\n## Timings (s)\n\n";
  for (auto& [k, v] : r["timings"].items()) s << "- " << k << ": " << static_cast<int64_t>(v.get<double>()) << "\n";
  return s.str();
}

void write_report(const std::string& dir, const json& r) {
  io::write_file_atomic((fs::path(dir) / "report.json").string(), r.dump(1) + "\n");
  io::write_file_atomic((fs::path(dir) / "report.md").string(), report_markdown(r));
  std::ostringstream h;
  h << "<!doctype html><html><head><meta charset=utf-8><title>UniME demo report</title><style>"
       "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
       "td,th{border:1px solid #ccc;padding:3px 6px}td.n{text-align:right}.ok{color:#060}"
       ".bad{color:#a00;font-weight:bold}</style></head><body>\n<h1>UniME demo report</h1>\n<p>"
    << html_escape(header_text(r)) << "</p>\n<h2>Results (%)</h2>\n" << html(main_table(r))
    << "<h2>Claims</h2>\n" << claims_text(r, true) << "<h2>Per dataset (P@1 %)</h2>\n"
    << html(dataset_table(r)) << "</body></html>\n";
  io::write_file_atomic((fs::path(dir) / "report.html").string(), h.str());
}

}  // namespace unime::demo
