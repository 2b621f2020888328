// Demo report; see report.h.
#include "demo/report.h"

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "io/fs.h"
#include "io/image.h"
#include "io/jsonl.h"
#include "report/plot.h"

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

// metrics.jsonl -> (step, loss)
plot::Series loss_series(const fs::path& metrics, const std::string& label) {
  plot::Series s{label, {}, {}};
  if (!fs::exists(metrics)) return s;
  io::read_jsonl(metrics.string(), [&](int64_t, const nlohmann::json& row) {
    if (row.contains("step") && row.contains("loss") && row["loss"].is_number()) {
      s.x.push_back(row["step"].get<double>());
      s.y.push_back(row["loss"].get<double>());
    }
  });
  return s;
}

struct Picture {
  std::string file, caption;
};

std::vector<Picture> draw_pictures(const fs::path& dir, const json& r) {
  std::vector<Picture> pics;
  fs::create_directories(dir / "plots");
  auto label = [&](const char* v) { return r["results"][v].value("label", std::string(v)); };
  // training curves
  {
    plot::LineChart c{"stage 0: next-token loss (captions + VQA)", "step", "cross-entropy",
                      {loss_series(dir / "base" / "metrics.jsonl", "stage 0")}, true};
    plot::write_line_chart(c, (dir / "plots" / "loss-stage0.png").string());
    pics.push_back({"plots/loss-stage0.png", "Stage 0 pretraining loss"});
    plot::LineChart c1{"stage 1: distillation loss (KL teacher || student)", "step", "KL",
                       {loss_series(dir / "stage1" / "metrics.jsonl", "stage 1")}, false};
    plot::write_line_chart(c1, (dir / "plots" / "loss-stage1.png").string());
    pics.push_back({"plots/loss-stage1.png", "Stage 1 distillation loss"});
    plot::LineChart c2{"stage 2: contrastive loss", "step", "cross-entropy",
                       {loss_series(dir / "stage2" / "metrics.jsonl", "UniME (hard negatives, filter)"),
                        loss_series(dir / "ablation-infonce" / "metrics.jsonl", "in-batch InfoNCE"),
                        loss_series(dir / "ablation-nofilter" / "metrics.jsonl", "no false-negative filter")},
                       false};
    plot::write_line_chart(c2, (dir / "plots" / "loss-stage2.png").string());
    pics.push_back({"plots/loss-stage2.png", "Stage 2 loss (the three losses are not on one scale: "
                                             "k = 8 hard negatives vs all in-batch candidates)"});
  }
  // meta-task bars
  {
    plot::BarChart b{"MMEB-style P@1 by meta-task", "P@1 (%)", {}, {}};
    std::vector<const char*> vs;
    for (const char* v : kVariants)
      if (r["results"].contains(v)) vs.push_back(v), b.series_labels.push_back(label(v));
    for (const char* k : {"classification", "vqa", "retrieval", "grounding", "IND", "OOD", "overall"}) {
      plot::BarGroup g{k, {}};
      for (const char* v : vs) g.values.push_back(100.0 * r["results"][v]["mmeb_means"].value(k, 0.0));
      b.groups.push_back(g);
    }
    plot::write_bar_chart(b, (dir / "plots" / "mmeb.png").string());
    pics.push_back({"plots/mmeb.png", "MMEB-style Precision@1 per meta-task, IND and OOD"});
  }
  // similarity histograms before and after each stage
  for (const char* v : {"stage0", "stage1", "stage2"}) {
    if (!r["results"].contains(v)) continue;
    const json& x = r["results"][v];
    plot::HistChart h{str("query-candidate cosine: ", label(v)), "cosine similarity",
                      {{"gold candidate", x["sim_pos"].get<std::vector<double>>()},
                       {"other candidates", x["sim_neg"].get<std::vector<double>>()}},
                      40, -1.0, 1.0};
    const std::string f = str("plots/similarity-", v, ".png");
    plot::write_histogram(h, (dir / f).string());
    pics.push_back({f, str("Similarity of MMEB-style queries to their gold vs other candidates, ", label(v))});
  }
  // retrieval examples: the caption, then the top 3 images (green = the caption's image)
  {
    plot::Panel p{"text -> image retrieval: top 3 (green frame = the caption's image)", {}, 112};
    for (const char* v : {"stage0", "stage2"}) {
      if (!r["results"].contains(v)) continue;
      for (auto& ex : r["results"][v]["examples"]) {
        std::vector<plot::Cell> row;
        row.push_back({{}, 0, 0, str(label(v), ":\n", ex["query"].get<std::string>()), ""});
        for (auto& hit : ex["hits"]) {
          auto img = io::load_image(hit["image"].get<std::string>());
          char sc[32];
          std::snprintf(sc, sizeof sc, "%.3f", hit["score"].get<double>());
          row.push_back({img.rgb, img.width, img.height, sc, hit["correct"].get<bool>() ? "green" : "red"});
        }
        p.rows.push_back(row);
      }
    }
    plot::write_panel(p, (dir / "plots" / "retrieval-examples.png").string());
    pics.push_back({"plots/retrieval-examples.png", "Text-to-image retrieval examples, stage 0 vs stage 2"});
  }
  return pics;
}

}  // namespace

std::string report_markdown(const json& r) {
  std::ostringstream s;
  std::vector<Picture> pics;
  for (auto& p : r.value("pictures", json::array()))
    pics.push_back({p.value("file", std::string()), p.value("caption", std::string())});
  s << "# UniME demo report\n\n" << header_text(r) << "\n\n";
  s << "## Results (%; MMEB-style P@1 per meta-task, retrieval recall, SugarCrepe-style accuracy)\n\n"
    << markdown(main_table(r)) << "\n## Claims\n\n" << claims_text(r, false)
    << "\n## Per dataset (P@1 %)\n\n" << markdown(dataset_table(r));
  if (!pics.empty()) s << "\n## Pictures\n\n";
  for (auto& p : pics) s << "![" << p.caption << "](" << p.file << ")\n\n" << p.caption << "\n\n";
  s << "\n## Timings (s)\n\n";
  for (auto& [k, v] : r["timings"].items()) s << "- " << k << ": " << static_cast<int64_t>(v.get<double>()) << "\n";
  return s.str();
}

void write_report(const std::string& dir, const json& report) {
  json r = report;
  r["pictures"] = json::array();
  for (auto& p : draw_pictures(dir, r)) r["pictures"].push_back({{"file", p.file}, {"caption", p.caption}});
  io::write_file_atomic((fs::path(dir) / "report.json").string(), r.dump(1) + "\n");
  io::write_file_atomic((fs::path(dir) / "report.md").string(), report_markdown(r));
  std::ostringstream h;
  h << "<!doctype html><html><head><meta charset=utf-8><title>UniME demo report</title><style>"
       "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
       "td,th{border:1px solid #ccc;padding:3px 6px}td.n{text-align:right}.ok{color:#060}"
       ".bad{color:#a00;font-weight:bold}</style></head><body>\n<h1>UniME demo report</h1>\n<p>"
    << html_escape(header_text(r)) << "</p>\n<h2>Results (%)</h2>\n" << html(main_table(r))
    << "<h2>Claims</h2>\n" << claims_text(r, true) << "<h2>Per dataset (P@1 %)</h2>\n"
    << html(dataset_table(r));
  if (!r["pictures"].empty()) h << "<h2>Pictures</h2>\n";
  for (auto& p : r["pictures"])
    h << "<figure><img src=\"" << html_escape(p["file"].get<std::string>()) << "\" alt=\""
      << html_escape(p["caption"].get<std::string>()) << "\"><figcaption>"
      << html_escape(p["caption"].get<std::string>()) << "</figcaption></figure>\n";
  h << "</body></html>\n";
  io::write_file_atomic((fs::path(dir) / "report.html").string(), h.str());
}

}  // namespace unime::demo
