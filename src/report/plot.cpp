// Charts and picture grids with PLplot: see plot.h.
// Pixel conventions: every picture is W x H pixels; PNG renders into an RGBA buffer through
// PLplot's memcairo device (which draws over what the buffer holds, so the panel's images are
// composited first), SVG through the svg device into an in-memory FILE (open_memstream), with
// viewBox "0 0 W H". The panel uses world coordinates = pixels, y pointing down.
#include "report/plot.h"

#include <plplot/plplot.h>
#include <stb_image_write.h>
#include <stdio.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>

#include "core/error.h"
#include "io/fs.h"
#include "vision/resize.h"

// exported by libplplot, declared in the internal plplotP.h only
extern "C" const char* plGetDrvDir(void);

namespace unime::plot {

namespace {

enum class Format { Png, Svg };

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// ".png" / ".svg" from the path, or an error naming the path.
Format format_of(const std::string& path) {
  const auto dot = path.find_last_of('.');
  const auto slash = path.find_last_of('/');
  const std::string ext = (dot == std::string::npos || (slash != std::string::npos && dot < slash))
                              ? std::string()
                              : lower(path.substr(dot));
  if (ext == ".png") return Format::Png;
  if (ext == ".svg") return Format::Svg;
  throw Error(str(path, ": cannot write a plot: unknown extension '", ext, "' (expected .png or .svg)"));
}

const char* device_of(Format f) { return f == Format::Png ? "memcairo" : "svg"; }

// The output's folder must exist before hours of rendering are thrown away at the rename.
void check_output_path(const std::string& path) {
  UNIME_CHECK(!path.empty(), "plot: empty output path");
  UNIME_CHECK(path.back() != '/', path, ": cannot write a plot: the path names a folder");
  const std::string dir = io::parent_dir(path);
  UNIME_CHECK(io::is_directory(dir), path, ": cannot write a plot: folder '", dir, "' does not exist");
  UNIME_CHECK(!io::is_directory(path), path, ": cannot write a plot: it is a folder");
}

// PLplot keeps global state (the current stream, its error handlers): one picture at a time.
std::mutex& plplot_mutex() {
  static std::mutex m;
  return m;
}

// plexit() would print and call exit(): a library must not. The pre-checks (driver present,
// output in memory) leave nothing known to reach it; if something still does, it becomes an
// exception (libplplot is built with unwind tables on Debian) and the Canvas ends the stream.
int on_plexit(const char* msg) { throw Error(str("plot: PLplot failed: ", msg ? msg : "")); }
// plabort() reports a misuse and returns; collected and raised after the picture.
std::string g_abort_msg;
void on_plabort(const char* msg) {
  if (g_abort_msg.empty()) g_abort_msg = msg ? msg : "?";
}

// PLplot lists its drivers in <driver dir>/*.driver_info, one "device:description:..." line
// each, next to the <stem>.so it loads. Read here rather than through plgDevs(), which exit()s
// when the folder holds no drivers at all.
bool device_available(const char* name) {
  const char* d = plGetDrvDir();
  if (!d) return false;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(d, ec)) {
    const auto& p = e.path();
    if (p.extension() != ".driver_info") continue;
    std::ifstream in(p);
    std::string line;
    while (std::getline(in, line))
      if (line.rfind(std::string(name) + ":", 0) == 0) {
        auto so = p;
        so.replace_extension(".so");
        if (std::filesystem::exists(so, ec)) return true;
      }
  }
  return false;
}

void check_device(Format f) {
  const char* dev = device_of(f);
  if (device_available(dev)) return;
  const char* env = std::getenv("PLPLOT_DRV_DIR");
  const char* dir = plGetDrvDir();
  throw Error(str("plot: PLplot's '", dev, "' driver (needed for ", f == Format::Png ? "PNG" : "SVG",
                  " output) was not found in ", dir ? dir : "?", env ? " (set by PLPLOT_DRV_DIR)" : "",
                  "; install the Debian package ", f == Format::Png ? "plplot-driver-cairo" : "libplplot17",
                  " (scripts/install-deps.sh)", env ? " or unset PLPLOT_DRV_DIR" : ""));
}

// PLplot's text escape is '#' ("#u" superscript, ...); "##" is a literal '#'.
std::string esc(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char ch : s) {
    if (ch == '#') o += "##";
    else if (ch == '\n' || ch == '\r' || ch == '\t') o += ' ';
    else o += ch;
  }
  return o;
}

std::string base64(const std::vector<uint8_t>& b) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o;
  o.reserve((b.size() + 2) / 3 * 4);
  for (size_t i = 0; i < b.size(); i += 3) {
    const uint32_t v = (uint32_t{b[i]} << 16) | (i + 1 < b.size() ? uint32_t{b[i + 1]} << 8 : 0) |
                       (i + 2 < b.size() ? uint32_t{b[i + 2]} : 0);
    o += t[(v >> 18) & 63];
    o += t[(v >> 12) & 63];
    o += i + 1 < b.size() ? t[(v >> 6) & 63] : '=';
    o += i + 2 < b.size() ? t[v & 63] : '=';
  }
  return o;
}

std::vector<uint8_t> encode_png_rgb(const uint8_t* rgb, int w, int h) {
  std::vector<uint8_t> out;
  auto append = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<uint8_t>*>(ctx);
    const auto* p = static_cast<const uint8_t*>(data);
    v->insert(v->end(), p, p + size);
  };
  if (!stbi_write_png_to_func(append, &out, w, h, 3, rgb, w * 3))
    throw Error(str("plot: PNG encoding of a ", w, "x", h, " picture failed"));
  return out;
}

// cmap0 slots
constexpr int kBg = 0, kInk = 1, kGrid = 2, kMuted = 3, kFill = 14, kFirstSeries = 4;
constexpr int kSeriesSlots = 10;

// ---- a PLplot stream drawing one W x H picture ----
class Canvas {
 public:
  // `background` (PNG only): RGBA [h, w, 4] under the drawing; empty -> white. memcairo copies
  // the buffer into its surface at plinit, so pixels must be in place before.
  Canvas(Format f, int w, int h, std::vector<uint8_t> background = {})
      : lock_(plplot_mutex()), f_(f), w_(w), h_(h) {
    check_device(f);
    g_abort_msg.clear();
    plsexit(on_plexit);
    plsabort(on_plabort);
    if (f == Format::Png) {
      rgba_ = std::move(background);
      if (rgba_.size() != static_cast<size_t>(w) * h * 4) rgba_.assign(static_cast<size_t>(w) * h * 4, 255);
    }
    PLINT s = 0;
    plmkstrm(&s);
    stream_ = s;
    plsdev(device_of(f));
    if (f == Format::Png) {
      plsmema(w, h, rgba_.data());
    } else {
      mem_file_ = open_memstream(&mem_, &mem_size_);
      if (!mem_file_) throw Error("plot: cannot open a memory stream for SVG output");
      plsfile(mem_file_);
      plspage(0, 0, w, h, 0, 0);
    }
    plscolbg(255, 255, 255);
    plscmap0n(16);
    plscol0(kBg, 255, 255, 255);
    plscol0(kInk, 30, 30, 30);
    plscol0(kGrid, 220, 220, 220);
    plscol0(kMuted, 110, 110, 110);
    for (int i = 0; i < kSeriesSlots; ++i) {
      const uint32_t c = palette()[i % palette().size()];
      plscol0(kFirstSeries + i, (c >> 16) & 255, (c >> 8) & 255, c & 255);
    }
    plinit();
    started_ = true;
    pladv(0);
    plcol0(kInk);
    // device pixels per mm: lets callers size text in pixels
    PLFLT xp = 0, yp = 0;
    PLINT xl = 0, yl = 0, xo = 0, yo = 0;
    plgpage(&xp, &yp, &xl, &yl, &xo, &yo);
    px_per_mm_ = xp > 0 ? xp / 25.4 : 90 / 25.4;
  }
  ~Canvas() {
    if (started_) {
      plsstrm(stream_);
      plend1();  // also fcloses mem_file_
    } else if (mem_file_) {
      std::fclose(mem_file_);
    }
    std::free(mem_);
  }
  Canvas(const Canvas&) = delete;
  Canvas& operator=(const Canvas&) = delete;

  Format format() const { return f_; }
  int width() const { return w_; }
  int height() const { return h_; }
  /// Sets the character height in device pixels.
  void font_px(double px) { plschr(px / px_per_mm_, 1.0); }

  /// Ends the stream; returns the file bytes. `svg_extra` goes before "</svg>".
  std::string finish(const std::string& svg_extra = "") {
    plend1();
    started_ = false;
    mem_file_ = nullptr;  // closed by plend1
    if (!g_abort_msg.empty()) throw Error(str("plot: PLplot: ", g_abort_msg));
    if (f_ == Format::Png) {
      std::vector<uint8_t> rgb(static_cast<size_t>(w_) * h_ * 3);
      for (size_t i = 0, n = static_cast<size_t>(w_) * h_; i < n; ++i)
        std::memcpy(&rgb[i * 3], &rgba_[i * 4], 3);
      auto png = encode_png_rgb(rgb.data(), w_, h_);
      return std::string(png.begin(), png.end());
    }
    std::string svg(mem_ ? mem_ : "", mem_size_);
    if (svg.find("</svg>") == std::string::npos) throw Error("plot: PLplot wrote no SVG");
    if (!svg_extra.empty()) svg.insert(svg.rfind("</svg>"), svg_extra);
    return svg;
  }

 private:
  std::unique_lock<std::mutex> lock_;
  Format f_;
  int w_, h_;
  PLINT stream_ = 0;
  bool started_ = false;
  std::vector<uint8_t> rgba_;
  FILE* mem_file_ = nullptr;
  char* mem_ = nullptr;
  size_t mem_size_ = 0;
  double px_per_mm_ = 90 / 25.4;
};

// ---- shared chart pieces ----
constexpr int kChartW = 900, kChartH = 540;

struct Range {
  double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return !(lo <= hi); }
  // a non-empty, non-degenerate interval, padded by `pad` of its width on each side
  Range padded(double pad) const {
    Range r = *this;
    if (empty()) return Range{0, 1};
    if (r.hi - r.lo < 1e-12 * std::max(1.0, std::fabs(r.hi))) {
      const double d = std::max(0.5, std::fabs(r.hi) * 0.1);
      return Range{r.lo - d, r.hi + d};
    }
    const double d = (r.hi - r.lo) * pad;
    return Range{r.lo - d, r.hi + d};
  }
};

// Title on top, axes box with a grey grid, labels. Leaves the viewport and window set.
void draw_axes(Canvas& cv, const std::string& title, const std::string& xlabel, const std::string& ylabel,
               Range x, Range y, const char* xopt, const char* yopt, double top = 0.86) {
  cv.font_px(14);
  plvpor(0.09, 0.97, 0.13, top);
  plwind(x.lo, x.hi, y.lo, y.hi);
  plcol0(kGrid);
  plwidth(1);
  plbox(std::string("g").append(std::strchr(xopt, 'l') ? "l" : "").c_str(), 0, 0,
        std::string("g").append(std::strchr(yopt, 'l') ? "l" : "").c_str(), 0, 0);
  plcol0(kInk);
  plbox(xopt, 0, 0, yopt, 0, 0);
  plmtex("b", 2.8, 0.5, 0.5, esc(xlabel).c_str());
  plmtex("l", 4.2, 0.5, 0.5, esc(ylabel).c_str());
  cv.font_px(19);
  plmtex("t", 3.6, 0.5, 0.5, esc(title).c_str());
  cv.font_px(14);
}

void no_data(Canvas& cv) {
  cv.font_px(18);
  plcol0(kMuted);
  plmtex("t", -5, 0.5, 0.5, "no data");
  plcol0(kInk);
}

// One row (or more) of legend entries above the plot area. kind: PL_LEGEND_LINE or COLOR_BOX.
void draw_legend(Canvas& cv, const std::vector<std::string>& labels, const std::vector<int>& colours, int kind) {
  std::vector<std::string> text;
  std::vector<int> idx;
  for (size_t i = 0; i < labels.size(); ++i)
    if (!labels[i].empty()) {
      text.push_back(esc(labels[i]));
      idx.push_back(static_cast<int>(i));
    }
  const int n = static_cast<int>(text.size());
  if (n == 0) return;
  const int ncol = std::min(n, 5), nrow = (n + ncol - 1) / ncol;
  std::vector<PLINT> opt(n, kind), col(n), text_col(n, kInk), box_pat(n, 0), line_sty(n, 1);
  std::vector<PLFLT> box_scale(n, 0.8), box_lw(n, 1), line_w(n, 2.5), sym_scale(n, 1);
  std::vector<PLINT> sym_n(n, 1), sym_col(n);
  std::vector<const char*> txt(n), syms(n, "");
  for (int i = 0; i < n; ++i) {
    col[i] = sym_col[i] = colours[idx[i]];
    txt[i] = text[i].c_str();
  }
  cv.font_px(13);
  PLFLT lw = 0, lh = 0;
  pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_ROW_MAJOR, PL_POSITION_TOP | PL_POSITION_OUTSIDE,
           0.0, 0.01, 0.06, kBg, kInk, 1, nrow, ncol, n, opt.data(), 1.0, 1.0, 2.0, 0.0, text_col.data(),
           txt.data(), col.data(), box_pat.data(), box_scale.data(), box_lw.data(), col.data(),
           line_sty.data(), line_w.data(), sym_col.data(), sym_scale.data(), sym_n.data(), syms.data());
  cv.font_px(14);
}

int series_colour(size_t i) { return kFirstSeries + static_cast<int>(i % kSeriesSlots); }

void save(Canvas& cv, const std::string& path, const std::string& svg_extra = "") {
  io::write_file_atomic(path, cv.finish(svg_extra));
}

// Greedy word wrap to at most `max_chars` per line (long words are cut).
std::vector<std::string> wrap(const std::string& text, size_t max_chars, size_t max_lines) {
  std::vector<std::string> lines;
  std::string cur;
  size_t cur_n = 0;  // code points in cur
  auto cps = [](const std::string& w) {
    size_t n = 0;
    for (unsigned char ch : w) n += (ch & 0xC0) != 0x80;
    return n;
  };
  auto flush = [&] {
    if (!cur.empty()) lines.push_back(cur);
    cur.clear();
    cur_n = 0;
  };
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '\n') {
      flush();
      ++i;
      continue;
    }
    if (text[i] == ' ' || text[i] == '\t' || text[i] == '\r') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && text[j] != ' ' && text[j] != '\n' && text[j] != '\t' && text[j] != '\r') ++j;
    std::string w = text.substr(i, j - i);
    i = j;
    while (cps(w) > max_chars) {  // cut a word longer than a line at a code-point boundary
      flush();
      size_t k = 0, n = 0;
      while (k < w.size() && n < max_chars) {
        ++k;
        while (k < w.size() && (static_cast<unsigned char>(w[k]) & 0xC0) == 0x80) ++k;
        ++n;
      }
      lines.push_back(w.substr(0, k));
      w = w.substr(k);
    }
    const size_t wn = cps(w);
    if (cur_n > 0 && cur_n + 1 + wn > max_chars) flush();
    if (cur_n > 0) {
      cur += ' ';
      ++cur_n;
    }
    cur += w;
    cur_n += wn;
  }
  flush();
  if (lines.size() > max_lines) {
    lines.resize(max_lines);
    auto& last = lines.back();
    while (cps(last) + 3 > max_chars && !last.empty()) {
      last.pop_back();
      while (!last.empty() && (static_cast<unsigned char>(last.back()) & 0xC0) == 0x80) last.pop_back();
      if (!last.empty() && (static_cast<unsigned char>(last.back()) & 0xC0) == 0xC0) last.pop_back();
    }
    last += "...";
  }
  return lines;
}

}  // namespace

const std::vector<uint32_t>& palette() {
  // matplotlib's tab10: distinct hues that stay apart for the colour-blind common cases
  static const std::vector<uint32_t> p{0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd,
                                       0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf};
  return p;
}

void check_backend(const std::string& path) {
  const Format f = format_of(path);
  std::lock_guard<std::mutex> lock(plplot_mutex());
  check_device(f);
}

// ---- line chart ----
void write_line_chart(const LineChart& c, const std::string& path) {
  const Format f = format_of(path);
  check_output_path(path);
  for (const auto& s : c.series)
    UNIME_CHECK(s.x.size() == s.y.size(), path, ": series '", s.label, "' has ", s.x.size(), " x values and ",
                s.y.size(), " y values");
  auto ok = [&](double x, double y) { return std::isfinite(x) && std::isfinite(y) && (!c.log_y || y > 0); };
  Range xr, yr;
  for (const auto& s : c.series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (ok(s.x[i], s.y[i])) {
        xr.add(s.x[i]);
        yr.add(c.log_y ? std::log10(s.y[i]) : s.y[i]);
      }
  const bool empty = xr.empty();
  Canvas cv(f, kChartW, kChartH);
  const Range xw = empty ? Range{0, 1} : (xr.hi > xr.lo ? xr : xr.padded(0));
  draw_axes(cv, c.title, c.xlabel, c.ylabel, xw, yr.padded(0.05), "bcnst", c.log_y ? "bcnstvl" : "bcnstv");
  if (empty) no_data(cv);
  plwidth(2);
  std::vector<PLFLT> xs, ys;
  for (size_t si = 0; si < c.series.size(); ++si) {
    const auto& s = c.series[si];
    plcol0(series_colour(si));
    // a run of valid points is one polyline; a skipped value breaks the line
    auto flush = [&] {
      if (xs.size() == 1) plstring(1, xs.data(), ys.data(), "•");
      else if (xs.size() > 1) plline(static_cast<PLINT>(xs.size()), xs.data(), ys.data());
      xs.clear();
      ys.clear();
    };
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!ok(s.x[i], s.y[i])) {
        flush();
        continue;
      }
      xs.push_back(s.x[i]);
      ys.push_back(c.log_y ? std::log10(s.y[i]) : s.y[i]);
    }
    flush();
  }
  plwidth(1);
  std::vector<std::string> labels;
  std::vector<int> cols;
  for (size_t i = 0; i < c.series.size(); ++i) {
    labels.push_back(c.series[i].label);
    cols.push_back(series_colour(i));
  }
  draw_legend(cv, labels, cols, PL_LEGEND_LINE);
  save(cv, path);
}

// ---- histogram ----
void write_histogram(const HistChart& c, const std::string& path) {
  const Format f = format_of(path);
  check_output_path(path);
  UNIME_CHECK(c.bins >= 1 && c.bins <= 10000, path, ": histogram bins must be in [1, 10000], got ", c.bins);
  UNIME_CHECK(std::isfinite(c.lo) && std::isfinite(c.hi) && c.lo < c.hi, path,
              ": histogram range must be finite with lo < hi, got [", c.lo, ", ", c.hi, "]");
  const double bw = (c.hi - c.lo) / c.bins;
  std::vector<std::vector<double>> frac(c.hists.size(), std::vector<double>(c.bins, 0.0));
  std::vector<int64_t> counts(c.hists.size(), 0);
  double ymax = 0;
  for (size_t h = 0; h < c.hists.size(); ++h) {
    for (double v : c.hists[h].values) {
      if (!std::isfinite(v)) continue;
      const int b = std::clamp(static_cast<int>(std::floor((v - c.lo) / bw)), 0, c.bins - 1);
      frac[h][b] += 1;
      ++counts[h];
    }
    for (auto& x : frac[h]) {
      if (counts[h] > 0) x /= static_cast<double>(counts[h]);
      ymax = std::max(ymax, x);
    }
  }
  const bool empty = ymax <= 0;
  Canvas cv(f, kChartW, kChartH);
  draw_axes(cv, c.title, c.xlabel, "fraction of values", Range{c.lo, c.hi}, Range{0, empty ? 1 : ymax * 1.08},
            "bcnst", "bcnstv");
  if (empty) no_data(cv);
  for (size_t h = 0; h < c.hists.size(); ++h) {
    if (counts[h] == 0) continue;
    // the step outline as one polygon closed along y = 0
    std::vector<PLFLT> xs{c.lo}, ys{0};
    for (int b = 0; b < c.bins; ++b) {
      xs.push_back(c.lo + b * bw);
      ys.push_back(frac[h][b]);
      xs.push_back(c.lo + (b + 1) * bw);
      ys.push_back(frac[h][b]);
    }
    xs.push_back(c.hi);
    ys.push_back(0);
    const uint32_t col = palette()[h % palette().size()];
    plscol0a(kFill, (col >> 16) & 255, (col >> 8) & 255, col & 255, 0.35);
    plcol0(kFill);
    plfill(static_cast<PLINT>(xs.size()), xs.data(), ys.data());
    plcol0(series_colour(h));
    plwidth(2);
    plline(static_cast<PLINT>(xs.size()), xs.data(), ys.data());
    plwidth(1);
  }
  std::vector<std::string> labels;
  std::vector<int> cols;
  for (size_t h = 0; h < c.hists.size(); ++h) {
    labels.push_back(str(c.hists[h].label, " (n=", counts[h], ")"));
    cols.push_back(series_colour(h));
  }
  draw_legend(cv, labels, cols, PL_LEGEND_COLOR_BOX);
  save(cv, path);
}

// ---- grouped bar chart ----
void write_bar_chart(const BarChart& c, const std::string& path) {
  const Format f = format_of(path);
  check_output_path(path);
  const size_t G = c.groups.size();
  size_t S = c.series_labels.size();
  for (const auto& g : c.groups) S = std::max(S, g.values.size());
  Range yr;
  yr.add(0);
  size_t n_bars = 0;
  for (const auto& g : c.groups)
    for (double v : g.values)
      if (std::isfinite(v)) {
        yr.add(v);
        ++n_bars;
      }
  const bool empty = n_bars == 0;
  Range y = empty ? Range{0, 1} : yr;
  const double span = y.hi - y.lo > 0 ? y.hi - y.lo : 1;
  if (y.hi > 0 || y.hi == y.lo) y.hi += 0.1 * span;  // room for the value labels
  if (y.lo < 0) y.lo -= 0.1 * span;
  // long group labels are written vertically, which needs a taller bottom margin
  size_t longest = 0;
  for (const auto& g : c.groups) longest = std::max(longest, g.label.size());
  const double per_group_chars = G > 0 ? 110.0 / static_cast<double>(G) : 110.0;
  const bool vertical = static_cast<double>(longest) > per_group_chars;
  Canvas cv(f, kChartW, kChartH);
  cv.font_px(14);
  plvpor(0.09, 0.97, vertical ? 0.3 : 0.13, 0.86);
  plwind(0, std::max<double>(1, static_cast<double>(G)), y.lo, y.hi);
  plcol0(kGrid);
  plbox("", 0, 0, "g", 0, 0);
  plcol0(kInk);
  plbox("bc", 0, 0, "bcnstv", 0, 0);
  plmtex("l", 4.2, 0.5, 0.5, esc(c.ylabel).c_str());
  cv.font_px(19);
  plmtex("t", 3.6, 0.5, 0.5, esc(c.title).c_str());
  cv.font_px(14);
  if (empty) no_data(cv);
  const double slot = 0.8 / static_cast<double>(std::max<size_t>(1, S));
  const bool value_labels = n_bars <= 40;
  for (size_t gi = 0; gi < G; ++gi) {
    const auto& g = c.groups[gi];
    for (size_t si = 0; si < g.values.size(); ++si) {
      const double v = g.values[si];
      if (!std::isfinite(v)) continue;
      const double x0 = gi + 0.1 + si * slot, x1 = x0 + slot * 0.92;
      PLFLT xs[4] = {x0, x1, x1, x0}, ys[4] = {0, 0, v, v};
      plcol0(series_colour(si));
      plfill(4, xs, ys);
      if (value_labels) {
        plcol0(kInk);
        cv.font_px(11);
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.3g", v);
        const double off = 0.02 * (y.hi - y.lo);
        plptex((x0 + x1) / 2, v >= 0 ? v + off : v - 2 * off, 1, 0, 0.5, buf);
        cv.font_px(14);
      }
    }
    plcol0(kInk);
    const double pos = (gi + 0.5) / static_cast<double>(std::max<size_t>(1, G));
    if (vertical) plmtex("bv", 0.8, pos, 1.0, esc(g.label).c_str());
    else plmtex("b", 1.6, pos, 0.5, esc(g.label).c_str());
  }
  if (y.lo < 0) {  // the zero line
    PLFLT xs[2] = {0, static_cast<PLFLT>(std::max<size_t>(1, G))}, ys[2] = {0, 0};
    plline(2, xs, ys);
  }
  std::vector<std::string> labels = c.series_labels;
  labels.resize(S);
  std::vector<int> cols;
  for (size_t i = 0; i < S; ++i) cols.push_back(series_colour(i));
  draw_legend(cv, labels, cols, PL_LEGEND_COLOR_BOX);
  save(cv, path);
}

// ---- picture grid ----
void write_panel(const Panel& p, const std::string& path) {
  const Format f = format_of(path);
  check_output_path(path);
  UNIME_CHECK(p.cell_px >= 16 && p.cell_px <= 2048, path, ": panel cell_px must be in [16, 2048], got ", p.cell_px);
  for (size_t r = 0; r < p.rows.size(); ++r)
    for (size_t k = 0; k < p.rows[r].size(); ++k) {
      const Cell& c = p.rows[r][k];
      if (c.rgb.empty()) continue;
      UNIME_CHECK(c.width > 0 && c.height > 0 &&
                      c.rgb.size() == static_cast<size_t>(c.width) * static_cast<size_t>(c.height) * 3,
                  path, ": panel row ", r, " cell ", k, ": ", c.rgb.size(), " bytes do not hold a ", c.width,
                  "x", c.height, " RGB image");
      UNIME_CHECK(c.frame.empty() || c.frame == "green" || c.frame == "red" || c.frame == "grey", path,
                  ": panel row ", r, " cell ", k, ": unknown frame colour '", c.frame,
                  "' (expected \"\", green, red or grey)");
    }
  const int cp = p.cell_px, pad = std::max(8, cp / 12);
  const double font = std::clamp(cp / 10.0, 10.0, 15.0), line_h = font * 1.35;
  const size_t max_chars = std::max<size_t>(4, static_cast<size_t>(cp / (font * 0.6)));
  const int title_h = p.title.empty() ? 0 : static_cast<int>(font * 2.6);
  size_t cols = 0;
  for (const auto& r : p.rows) cols = std::max(cols, r.size());
  const int W = static_cast<int>(std::max<size_t>(1, cols)) * (cp + pad) + pad;

  // layout: per row, the image band (cp when any cell has an image) and the caption lines
  struct RowLayout {
    int y, img_h, text_lines;
    std::vector<std::vector<std::string>> captions;
  };
  std::vector<RowLayout> rows;
  int y = pad + title_h;
  for (const auto& r : p.rows) {
    RowLayout L{y, 0, 0, {}};
    for (const auto& c : r) {
      if (!c.rgb.empty()) L.img_h = cp;
      L.captions.push_back(wrap(c.caption, max_chars, 12));
      L.text_lines = std::max(L.text_lines, static_cast<int>(L.captions.back().size()));
    }
    const int h = L.img_h + (L.text_lines > 0 ? 4 + static_cast<int>(std::ceil(L.text_lines * line_h)) : 0);
    y += std::max(h, static_cast<int>(line_h)) + pad;
    rows.push_back(std::move(L));
  }
  const int H = std::max(y, pad + title_h + 40);
  UNIME_CHECK(static_cast<int64_t>(W) * H <= 400LL * 1000 * 1000 / 4, path, ": panel of ", W, "x", H,
              " pixels is too large; use fewer rows or a smaller cell_px");

  // images: scaled to fit cp x cp, centred in the cell's image band
  struct Placed {
    int x, y;
    io::Image img;
  };
  std::vector<Placed> placed;
  for (size_t ri = 0; ri < p.rows.size(); ++ri)
    for (size_t k = 0; k < p.rows[ri].size(); ++k) {
      const Cell& c = p.rows[ri][k];
      if (c.rgb.empty()) continue;
      const double s = std::min({static_cast<double>(cp) / c.width, static_cast<double>(cp) / c.height, 4.0});
      const int w = std::max(1, static_cast<int>(std::lround(c.width * s)));
      const int h = std::max(1, static_cast<int>(std::lround(c.height * s)));
      io::Image src{c.width, c.height, c.rgb};
      io::Image img = (w == c.width && h == c.height) ? src : vision::resize_pil(src, w, h, vision::Resample::Bilinear);
      const int x0 = pad + static_cast<int>(k) * (cp + pad) + (cp - w) / 2;
      const int y0 = rows[ri].y + (cp - h) / 2;
      placed.push_back({x0, y0, std::move(img)});
    }

  std::string svg_images;
  std::vector<uint8_t> buf;
  if (f == Format::Png) {
    buf.assign(static_cast<size_t>(W) * H * 4, 255);
    for (const auto& pl : placed)
      for (int yy = 0; yy < pl.img.height; ++yy)
        for (int xx = 0; xx < pl.img.width; ++xx) {
          const size_t o = (static_cast<size_t>(pl.y + yy) * W + pl.x + xx) * 4;
          std::memcpy(&buf[o], &pl.img.rgb[(static_cast<size_t>(yy) * pl.img.width + xx) * 3], 3);
        }
  } else {
    for (const auto& pl : placed)
      svg_images += str("  <image x=\"", pl.x, "\" y=\"", pl.y, "\" width=\"", pl.img.width, "\" height=\"",
                        pl.img.height, "\" preserveAspectRatio=\"none\" xlink:href=\"data:image/png;base64,",
                        base64(encode_png_rgb(pl.img.rgb.data(), pl.img.width, pl.img.height)), "\"/>\n");
  }
  Canvas cv(f, W, H, std::move(buf));
  // world coordinates = pixels, y down
  plvpor(0, 1, 0, 1);
  plwind(0, W, H, 0);
  if (!p.title.empty()) {
    cv.font_px(font * 1.3);
    plcol0(kInk);
    plptex(W / 2.0, pad + title_h / 2.0, 1, 0, 0.5, esc(p.title).c_str());
  }
  if (p.rows.empty()) {
    cv.font_px(font);
    plcol0(kMuted);
    plptex(W / 2.0, pad + title_h + 20, 1, 0, 0.5, "no data");
  }
  // frames: r, g, b per name
  auto frame_rgb = [](const std::string& n) -> uint32_t {
    return n == "green" ? 0x2ca02c : n == "red" ? 0xd62728 : 0x9a9a9a;
  };
  cv.font_px(font);
  for (size_t ri = 0; ri < p.rows.size(); ++ri) {
    const RowLayout& L = rows[ri];
    for (size_t k = 0; k < p.rows[ri].size(); ++k) {
      const Cell& c = p.rows[ri][k];
      const double x0 = pad + static_cast<double>(k) * (cp + pad);
      const auto& lines = L.captions[k];
      const double text_top = L.y + L.img_h + (L.img_h > 0 ? 4 : 0);
      plcol0(kInk);
      for (size_t li = 0; li < lines.size(); ++li)
        plptex(x0 + cp / 2.0, text_top + (li + 0.5) * line_h, 1, 0, 0.5, esc(lines[li]).c_str());
      if (!c.frame.empty()) {
        const uint32_t col = frame_rgb(c.frame);
        plscol0a(kFill, (col >> 16) & 255, (col >> 8) & 255, col & 255, 1.0);
        plcol0(kFill);
        plwidth(3);
        const double cell_h = L.img_h + (L.text_lines > 0 ? 4 + L.text_lines * line_h : 0);
        const double h = std::max(cell_h, line_h);
        PLFLT xs[5] = {x0 - 3, x0 + cp + 3, x0 + cp + 3, x0 - 3, x0 - 3};
        PLFLT ys[5] = {L.y - 3.0, L.y - 3.0, L.y + h + 3, L.y + h + 3, L.y - 3.0};
        plline(5, xs, ys);
        plwidth(1);
      }
    }
  }
  save(cv, path, svg_images);
}

}  // namespace unime::plot
