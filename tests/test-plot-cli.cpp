// `unime plot` and plot::write_training_plots on hand-written metrics.jsonl files: the pictures
// exist and decode, both similarity curves are drawn, stage 1 gets no filter plot, and bad lines
// are one-line errors naming file and line. (The trainer's own plots: tests/test-train-cli.cpp.)
#include <gtest/gtest.h>

#include <filesystem>

#include "io/fs.h"
#include "io/image.h"
#include "report/plot.h"
#include "report/train-plots.h"
#include "test-util.h"

using namespace unime;
using unime::test::TempDir;

namespace {

io::Image load_png(const std::string& path) { return io::load_image(path); }

size_t count_colour(const io::Image& im, uint32_t rgb, int tol = 12) {
  size_t n = 0;
  const int r = (rgb >> 16) & 255, g = (rgb >> 8) & 255, b = rgb & 255;
  for (size_t i = 0; i < im.rgb.size(); i += 3)
    n += std::abs(im.rgb[i] - r) <= tol && std::abs(im.rgb[i + 1] - g) <= tol && std::abs(im.rgb[i + 2] - b) <= tol;
  return n;
}

}  // namespace

// ---- training plots and `unime plot` ----
TEST(TrainingPlots, CommandRedrawsFromMetrics) {
  TempDir t;
  std::string m;
  for (int s = 1; s <= 30; ++s)
    m += "{\"step\":" + std::to_string(s) + ",\"loss\":" + std::to_string(3.0 / s) +
         ",\"lr\":0.001,\"mean_pos_sim\":" + std::to_string(0.2 + 0.02 * s) +
         ",\"mean_neg_sim\":" + std::to_string(0.2 - 0.005 * s) + ",\"fn_removed_per_row\":" +
         std::to_string(s % 4) + "}\n";
  unime::test::write_text(t / "metrics.jsonl", m);
  auto r = unime::test::run_cmd(unime::test::unime_bin() + " plot --metrics " + (t / "metrics.jsonl") +
                                " --output " + (t / "plots/sub"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (auto n : {"loss.png", "similarity.png", "filter.png"}) {
    const auto im = load_png(t / (std::string("plots/sub/") + n));
    EXPECT_EQ(im.width, 900) << n;
    EXPECT_NE(r.output.find(n), std::string::npos) << r.output;
  }
  // the similarity plot carries both curves; the loss plot its moving average (2nd colour)
  EXPECT_GT(count_colour(load_png(t / "plots/sub/similarity.png"), plot::palette()[1]), 200u);
  EXPECT_GT(count_colour(load_png(t / "plots/sub/loss.png"), plot::palette()[1]), 200u);
  r = unime::test::run_cmd(unime::test::unime_bin() + " plot --format svg --metrics " + (t / "metrics.jsonl") +
                           " --output " + (t / "svg"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(io::read_file(t / "svg/similarity.svg").find("</svg>"), std::string::npos);

  // stage 1 metrics: loss + off-diagonal similarity, no filter plot
  unime::test::write_text(t / "s1.jsonl", "{\"step\":1,\"loss\":2.0,\"mean_offdiag_sim\":0.5}\n"
                                          "{\"step\":2,\"loss\":1.5,\"mean_offdiag_sim\":0.4}\n");
  auto w = plot::write_training_plots(t / "s1.jsonl", t / "s1");
  EXPECT_EQ(w.size(), 2u);
  EXPECT_TRUE(std::filesystem::exists(t / "s1/similarity.png"));
  EXPECT_FALSE(std::filesystem::exists(t / "s1/filter.png"));

  // bad input: one line naming file and line
  unime::test::write_text(t / "bad.jsonl", "{\"step\":1,\"loss\":2.0}\n{\"step\":2,\"loss\":\"x\"}\n");
  r = unime::test::run_cmd(unime::test::unime_bin() + " plot --metrics " + (t / "bad.jsonl") + " --output " +
                           (t / "bad"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("bad.jsonl:2: 'loss' must be a number"), std::string::npos) << r.output;
  r = unime::test::run_cmd(unime::test::unime_bin() + " plot --metrics " + (t / "none.jsonl") + " --output " +
                           (t / "bad"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("none.jsonl"), std::string::npos) << r.output;
}
