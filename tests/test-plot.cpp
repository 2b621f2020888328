// src/report/plot: every writer produces a file that decodes (PNG through io::decode_image, SVG
// checked for its structure), pictures differ when the data differ, bad paths and bad inputs
// are one-line unime::Error, and empty inputs still give a valid picture.
#include "report/plot.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <thread>

#include "core/error.h"
#include "io/fs.h"
#include "io/image.h"
#include "test-util.h"

using namespace unime;
using unime::test::TempDir;

namespace {

io::Image load_png(const std::string& path) {
  const std::string b = io::read_file(path);
  EXPECT_EQ(b.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << path;
  return io::decode_image(reinterpret_cast<const uint8_t*>(b.data()), b.size(), path);
}

// SVG text as PLplot writes it: every character as "&#xNN;"
std::string svg_text(const std::string& s) {
  std::string o;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.compare(i, 3, "&#x") == 0) {
      const size_t e = s.find(';', i);
      const unsigned long cp = std::stoul(s.substr(i + 3, e - i - 3), nullptr, 16);
      if (cp < 128) {
        o += static_cast<char>(cp);
        i = e;
        continue;
      }
    }
    o += s[i];
  }
  return o;
}

// fraction of pixels that differ between two same-size pictures
double diff_fraction(const io::Image& a, const io::Image& b) {
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  if (a.rgb.size() != b.rgb.size()) return 1;
  size_t d = 0;
  for (size_t i = 0; i < a.rgb.size(); i += 3)
    d += a.rgb[i] != b.rgb[i] || a.rgb[i + 1] != b.rgb[i + 1] || a.rgb[i + 2] != b.rgb[i + 2];
  return static_cast<double>(d) / (a.rgb.size() / 3);
}

// count of pixels close to an RGB colour
size_t count_colour(const io::Image& im, uint32_t rgb, int tol = 12) {
  size_t n = 0;
  const int r = (rgb >> 16) & 255, g = (rgb >> 8) & 255, b = rgb & 255;
  for (size_t i = 0; i < im.rgb.size(); i += 3)
    n += std::abs(im.rgb[i] - r) <= tol && std::abs(im.rgb[i + 1] - g) <= tol && std::abs(im.rgb[i + 2] - b) <= tol;
  return n;
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(needle), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << "one line: " << m;
  }
}

plot::LineChart line_chart(double slope) {
  plot::LineChart c{"loss", "step", "loss", {}, false};
  plot::Series a{"train", {}, {}}, b{"eval", {}, {}};
  for (int i = 0; i < 50; ++i) {
    a.x.push_back(i);
    a.y.push_back(3.0 - slope * i + 0.1 * std::sin(i));
    b.x.push_back(i);
    b.y.push_back(2.5 - 0.5 * slope * i);
  }
  c.series = {a, b};
  return c;
}

}  // namespace

TEST(Plot, LineChartPngDecodesAndFollowsTheData) {
  TempDir t;
  plot::write_line_chart(line_chart(0.02), t / "a.png");
  plot::write_line_chart(line_chart(0.05), t / "b.png");
  const auto a = load_png(t / "a.png"), b = load_png(t / "b.png");
  EXPECT_EQ(a.width, 900);
  EXPECT_EQ(a.height, 540);
  // both series' colours are drawn (tab10 blue and orange)
  EXPECT_GT(count_colour(a, plot::palette()[0]), 200u);
  EXPECT_GT(count_colour(a, plot::palette()[1]), 200u);
  const double d = diff_fraction(a, b);
  EXPECT_GT(d, 0.002) << "different data must give a different picture";
  // same data -> same picture (rendering is deterministic)
  plot::write_line_chart(line_chart(0.02), t / "a2.png");
  EXPECT_EQ(diff_fraction(a, load_png(t / "a2.png")), 0.0);
  // no temp files left next to the outputs
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(t.path())) n += e.path().extension() == ".png";
  EXPECT_EQ(n, 3);
  for (auto& e : std::filesystem::directory_iterator(t.path()))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
}

TEST(Plot, LineChartSvgAndLogAxis) {
  TempDir t;
  auto c = line_chart(0.02);
  c.log_y = true;
  c.series[0].y[3] = -1;                                    // skipped on a log axis
  c.series[1].y[7] = std::numeric_limits<double>::quiet_NaN();  // skipped everywhere
  c.title = "a # and <tag> & \"quotes\"";
  plot::write_line_chart(c, t / "c.SVG");
  const std::string s = io::read_file(t / "c.SVG");
  EXPECT_EQ(s.rfind("<?xml", 0), 0u);
  EXPECT_NE(s.find("<svg"), std::string::npos);
  EXPECT_NE(s.find("</svg>"), std::string::npos);
  EXPECT_NE(s.find("viewBox=\"0 0 900 540\""), std::string::npos);
  EXPECT_NE(s.find("polyline"), std::string::npos);
  plot::write_line_chart(c, t / "c.png");
  load_png(t / "c.png");
}

TEST(Plot, EmptyInputsGiveValidPictures) {
  TempDir t;
  plot::write_line_chart({}, t / "l.png");
  plot::write_line_chart({"t", "x", "y", {{"empty", {}, {}}}, true}, t / "l2.png");
  plot::write_line_chart({"one point", "x", "y", {{"p", {1}, {2}}}, false}, t / "l3.png");
  plot::write_histogram({}, t / "h.png");
  plot::write_histogram({"t", "x", {{"none", {}}}, 10, -1, 1}, t / "h2.svg");
  plot::write_bar_chart({}, t / "b.png");
  plot::write_panel({}, t / "p.png");
  plot::write_panel({"t", {{}, {plot::Cell{}}}, 64}, t / "p2.svg");
  for (auto n : {"l.png", "l2.png", "l3.png", "h.png", "b.png", "p.png"}) {
    auto im = load_png(t / n);
    EXPECT_GT(im.width, 0) << n;
  }
  // a single point is drawn (its series colour appears)
  EXPECT_GT(count_colour(load_png(t / "l3.png"), plot::palette()[0]), 5u);
}

TEST(Plot, BadPathsAndInputsAreOneLineErrors) {
  TempDir t;
  const auto c = line_chart(0.02);
  expect_error([&] { plot::write_line_chart(c, t / "x.jpg"); }, "unknown extension '.jpg'");
  expect_error([&] { plot::write_line_chart(c, t / "noext"); }, "expected .png or .svg");
  expect_error([&] { plot::write_line_chart(c, t / "missing/x.png"); }, "does not exist");
  std::filesystem::create_directory(t / "d.png");
  expect_error([&] { plot::write_line_chart(c, t / "d.png"); }, "it is a folder");
  auto bad = c;
  bad.series[0].y.pop_back();
  expect_error([&] { plot::write_line_chart(bad, t / "x.png"); }, "50 x values and 49 y values");
  expect_error([&] { plot::write_histogram({"t", "x", {}, 0, -1, 1}, t / "x.png"); }, "bins");
  expect_error([&] { plot::write_histogram({"t", "x", {}, 10, 1, 1}, t / "x.png"); }, "lo < hi");
  plot::Panel p{"t", {{plot::Cell{{1, 2, 3}, 2, 2, "c", ""}}}, 64};
  expect_error([&] { plot::write_panel(p, t / "x.png"); }, "do not hold a 2x2 RGB image");
  p.rows[0][0] = plot::Cell{std::vector<uint8_t>(12, 0), 2, 2, "c", "blue"};
  expect_error([&] { plot::write_panel(p, t / "x.png"); }, "unknown frame colour 'blue'");
  // an unwritable folder (skipped as root, who may write anywhere)
  if (geteuid() != 0) {
    std::filesystem::create_directory(t / "ro");
    std::filesystem::permissions(t / "ro", std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    EXPECT_THROW(plot::write_line_chart(c, t / "ro/x.png"), Error);
  }
  EXPECT_FALSE(std::filesystem::exists(t / "x.png"));
}

TEST(Plot, HistogramBarsFollowTheData) {
  TempDir t;
  plot::HistChart h{"similarities", "cosine", {{"positives", {}}, {"negatives", {}}}, 40, -1, 1};
  for (int i = 0; i < 2000; ++i) {
    h.hists[0].values.push_back(0.6 + 0.2 * std::sin(i * 0.37));
    h.hists[1].values.push_back(0.1 * std::cos(i * 0.11) - 0.2);
  }
  h.hists[1].values.push_back(5);  // clamped into the last bin
  plot::write_histogram(h, t / "h1.png");
  for (auto& v : h.hists[0].values) v -= 0.5;
  plot::write_histogram(h, t / "h2.png");
  plot::write_histogram(h, t / "h2.svg");
  const auto a = load_png(t / "h1.png"), b = load_png(t / "h2.png");
  EXPECT_GT(diff_fraction(a, b), 0.005);
  EXPECT_NE(svg_text(io::read_file(t / "h2.svg")).find("negatives (n=2001)"), std::string::npos);

  plot::BarChart bc{"recall@1", "score", {"base", "trained"}, {{"MSCOCO", {0.3, 0.5}}, {"Flickr", {0.2, 0.7}}}};
  plot::write_bar_chart(bc, t / "b1.png");
  bc.groups[1].values[1] = 0.05;
  plot::write_bar_chart(bc, t / "b2.png");
  bc.groups[0].values[0] = -0.4;  // negative bars go below a zero line
  bc.groups.push_back({"a rather long benchmark name that cannot fit horizontally", {0.1}});
  plot::write_bar_chart(bc, t / "b3.svg");
  const auto c = load_png(t / "b1.png"), d = load_png(t / "b2.png");
  EXPECT_GT(count_colour(c, plot::palette()[1]), 1000u);
  EXPECT_LT(count_colour(d, plot::palette()[1]), count_colour(c, plot::palette()[1]));
}

TEST(Plot, PanelShowsImagesFramesAndWrappedCaptions) {
  TempDir t;
  auto solid = [](int w, int h, uint8_t r, uint8_t g, uint8_t b) {
    plot::Cell c;
    c.width = w;
    c.height = h;
    c.rgb.resize(static_cast<size_t>(w) * h * 3);
    for (size_t i = 0; i < c.rgb.size(); i += 3) {
      c.rgb[i] = r;
      c.rgb[i + 1] = g;
      c.rgb[i + 2] = b;
    }
    return c;
  };
  plot::Cell q = solid(64, 32, 0, 0, 200);  // wide image: aspect kept
  q.caption = "query: a blue rectangle with a long caption that has to wrap over several lines";
  plot::Cell hit = solid(40, 40, 250, 200, 0);
  hit.caption = "rank 1 (correct)";
  hit.frame = "green";
  plot::Cell miss = solid(40, 40, 120, 0, 120);
  miss.caption = "rank 2";
  miss.frame = "red";
  plot::Cell text;
  text.caption = "text only cell";
  text.frame = "grey";
  plot::Panel p{"retrieval examples", {{q, hit, miss}, {text}}, 96};
  plot::write_panel(p, t / "p.png");
  const auto im = load_png(t / "p.png");
  EXPECT_EQ(im.width, 8 + 3 * (96 + 8));
  // the images: blue 96x48 after scaling, yellow 96x96 (enlarged 2.4x), purple
  EXPECT_NEAR(static_cast<double>(count_colour(im, 0x0000c8, 2)), 96 * 48, 96 * 3);
  EXPECT_NEAR(static_cast<double>(count_colour(im, 0xfac800, 2)), 96 * 96, 96 * 3);
  EXPECT_GT(count_colour(im, 0x2ca02c, 30), 300u);  // green frame
  EXPECT_GT(count_colour(im, 0xd62728, 30), 300u);  // red frame
  // captions draw dark text under the images
  EXPECT_GT(count_colour(im, 0x1e1e1e, 60), 100u);
  // another image gives another picture
  p.rows[0][1] = solid(40, 40, 0, 250, 250);
  p.rows[0][1].frame = "green";
  plot::write_panel(p, t / "p2.png");
  EXPECT_GT(diff_fraction(im, load_png(t / "p2.png")), 0.05);
  // SVG embeds the images as PNG data
  plot::write_panel(p, t / "p.svg");
  const std::string s = io::read_file(t / "p.svg");
  size_t n = 0;
  for (size_t pos = 0; (pos = s.find("data:image/png;base64,", pos)) != std::string::npos; ++pos) ++n;
  EXPECT_EQ(n, 3u);
  EXPECT_NE(s.find("</svg>"), std::string::npos);
}

TEST(Plot, ThreadsAreSerialised) {
  TempDir t;
  std::vector<std::thread> th;
  for (int i = 0; i < 4; ++i)
    th.emplace_back([&, i] { plot::write_line_chart(line_chart(0.01 * (i + 1)), t / ("t" + std::to_string(i) + ".png")); });
  for (auto& x : th) x.join();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(load_png(t / ("t" + std::to_string(i) + ".png")).width, 900);
}

TEST(Plot, MissingDriverIsAClearError) {
  // PLPLOT_DRV_DIR is read when PLplot first scans its drivers, so this runs in a child process
  TempDir t;
  if (std::getenv("UNIME_PLOT_CHILD")) {
    try {
      plot::write_line_chart(line_chart(0.02), std::getenv("UNIME_PLOT_CHILD"));
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      std::exit(3);
    }
    std::exit(0);
  }
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  auto r = unime::test::run_cmd("PLPLOT_DRV_DIR=" + t.path().string() + " UNIME_PLOT_CHILD=" + (t / "x.png") + " " +
                                self + " --gtest_filter=Plot.MissingDriverIsAClearError");
  EXPECT_NE(r.output.find("error: plot: PLplot's 'memcairo' driver (needed for PNG output) was not found in " +
                          t.path().string()),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("plplot-driver-cairo"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(t / "x.png"));
}

