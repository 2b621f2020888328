// Charts and picture grids as PNG or SVG files, drawn with PLplot (Debian libplplot17 + the
// cairo driver package plplot-driver-cairo; https://plplot.sourceforge.net/).
// Torch-free: tools/ and eval/ code may include it.
//
//   unime::plot::LineChart c{"training loss", "step", "loss", {{"loss", steps, losses}}};
//   unime::plot::write_line_chart(c, "out/plots/loss.png");   // or .svg
//
// Every writer:
// - picks the format from the extension of `path` (".png" or ".svg", case-insensitive); any other
//   extension, a missing folder or an unwritable one -> unime::Error naming the path;
// - renders in memory (PNG: PLplot's memcairo device, encoded with stb_image_write; SVG: PLplot's
//   svg device) and writes the file atomically (temp + rename), so a reader never sees half a file;
// - skips NaN / inf values (and y <= 0 on a log axis) and still writes a valid picture when
//   there is no data at all (empty axes with "no data");
// - is safe to call from several threads (PLplot has global state: calls are serialised).
// PLplot loads its drivers at run time from its driver folder (PLPLOT_DRV_DIR overrides it); a
// missing driver is an unime::Error that names the folder and the Debian package to install.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace unime::plot {

// ---- line chart ----
struct Series {
  std::string label;          // legend entry; "" -> not in the legend
  std::vector<double> x, y;   // same length; points are joined in the given order
};
struct LineChart {
  std::string title, xlabel, ylabel;
  std::vector<Series> series;  // one colour each, in palette order
  bool log_y = false;          // log10 y axis (values <= 0 are skipped)
};
/// Writes PNG or SVG chosen by the extension of `path`, atomically (temp + rename).
void write_line_chart(const LineChart& c, const std::string& path);

// ---- histogram ----
struct Hist {
  std::string label;
  std::vector<double> values;
};
/// Overlaid histograms, semi-transparent fills in distinct colours, legend "label (n=N)".
/// The y axis is the fraction of each histogram's values per bin, so histograms of different
/// sizes compare. Values outside [lo, hi] are counted in the first / last bin.
struct HistChart {
  std::string title, xlabel;
  std::vector<Hist> hists;
  int bins = 40;
  double lo = -1, hi = 1;
};
void write_histogram(const HistChart& c, const std::string& path);

// ---- grouped bar chart ----
struct BarGroup {
  std::string label;           // the x label of this group
  std::vector<double> values;  // one per series_labels entry; missing / NaN -> no bar
};
struct BarChart {
  std::string title, ylabel;
  std::vector<std::string> series_labels;  // legend; colours in palette order
  std::vector<BarGroup> groups;
};
void write_bar_chart(const BarChart& c, const std::string& path);

// ---- picture grid ----
/// One cell: an RGB image (uint8, [height, width, 3], may be empty -> text only) scaled to fit
/// cell_px x cell_px (aspect kept, never enlarged beyond 4x), and a caption under it, wrapped to
/// the cell width. `frame` colours a border around the cell: "", "green", "red" or "grey".
struct Cell {
  std::vector<uint8_t> rgb;
  int width = 0, height = 0;
  std::string caption;
  std::string frame; /* "", "green", "red", "grey" */
};
/// One row per example; rows may have different lengths. SVG output embeds the images as PNG.
struct Panel {
  std::string title;
  std::vector<std::vector<Cell>> rows;
  int cell_px = 128;
};
void write_panel(const Panel& p, const std::string& path);

// ---- helpers ----
/// The palette every chart uses (RGB), series i gets colour i % size.
const std::vector<uint32_t>& palette();
/// Throws unime::Error unless PLplot can load the driver the format of `path` needs
/// ("memcairo" for .png, "svg" for .svg). Called by every writer; public so that a command can
/// fail early, before hours of training, with the same message.
void check_backend(const std::string& path);

}  // namespace unime::plot
