// Image decoding against Pillow (Image.open(...).convert("RGB")) on files written by Pillow's
// own encoders, plus the bad-input cases from the issue: missing file, not an image, truncated
// image, a header claiming 100000x100000 pixels, and random corruption (error, never a crash).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "io/fs.h"
#include "io/image.h"

#include "test-util.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace unime::io;

namespace {

using unime::test::TempDir;

// Runs tests/gen/pil_ref.py on a job list.
void pil_ref(const TempDir& d, const json& jobs) {
  std::ofstream(d / "jobs.json") << jobs.dump();
  const std::string cmd = std::string(UNIME_PYTHON) + " " + UNIME_TEST_DIR + "/gen/pil_ref.py " +
                          (d / "jobs.json") + " 2>&1";
  FILE* f = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ASSERT_EQ(pclose(f), 0) << out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const unime::Error& e) {
    return e.what();
  }
  return "(no error)";
}

void put(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), bytes.size());
}

uint32_t crc32(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char ch : s) {
    c ^= ch;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string png_chunk(const std::string& type, const std::string& data) {
  return be32(static_cast<uint32_t>(data.size())) + type + data + be32(crc32(type + data));
}

// A PNG whose IHDR claims w x h RGB pixels, with a tiny (wrong-sized) IDAT.
std::string png_claiming(uint32_t w, uint32_t h) {
  const std::string ihdr = be32(w) + be32(h) + std::string("\x08\x02\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) +
         png_chunk("IDAT", std::string("\x78\x9c\x03\x00\x00\x00\x00\x01", 8)) + png_chunk("IEND", "");
}

struct Decoded {
  std::string file;
  bool exact;
};

}  // namespace

// Decode every Pillow-written test image and compare with Pillow's convert("RGB").
TEST(Image, MatchesPillowDecode) {
  TempDir d;
  pil_ref(d, json::array({{{"op", "make_images"}, {"dir", d.path().string()}, {"seed", 7}}}));
  const json listing = json::parse(read_file(d / "images.json"));
  json jobs = json::array();
  for (const auto& e : listing) jobs.push_back({{"op", "decode"}, {"src", e["file"]}, {"out", e["file"].get<std::string>() + ".raw"}});
  pil_ref(d, jobs);
  int checked = 0;
  for (const auto& e : listing) {
    const std::string file = e["file"];
    const json hw = json::parse(read_file(file + ".raw.json"));
    const std::string ref = read_file(file + ".raw");
    const Image img = load_image(file);
    ASSERT_EQ(img.height, hw[0].get<int>()) << file;
    ASSERT_EQ(img.width, hw[1].get<int>()) << file;
    ASSERT_EQ(img.rgb.size(), ref.size()) << file;
    int maxdiff = 0;
    size_t ndiff = 0;
    double sum = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const int dlt = std::abs(int(img.rgb[i]) - int(static_cast<uint8_t>(ref[i])));
      maxdiff = std::max(maxdiff, dlt);
      ndiff += dlt != 0;
      sum += dlt;
    }
    std::printf("decode %-22s %4dx%-4d maxdiff=%d differing=%.2f%% meandiff=%.3f\n",
                fs::path(file).filename().c_str(), img.width, img.height, maxdiff,
                100.0 * ndiff / ref.size(), sum / ref.size());
    if (e["exact"].get<bool>() || fs::path(file).extension() == ".gif") {
      EXPECT_EQ(maxdiff, 0) << file << " must decode exactly like Pillow";
    } else {
      // stb's JPEG IDCT / upsampling vs libjpeg's: measured max 3 levels, mean 0.1 on these images
      EXPECT_LE(maxdiff, 6) << file;
      EXPECT_LE(sum / ref.size(), 0.5) << file;
    }
    ++checked;
  }
  EXPECT_GE(checked, 15);
}

TEST(Image, BadInputErrors) {
  TempDir d;
  pil_ref(d, json::array({{{"op", "make_images"}, {"dir", d.path().string()}, {"seed", 3}}}));
  auto err = [&](const std::string& path) { return error_of([&] { load_image(path); }); };
  auto expect = [&](const std::string& path, const std::string& want) {
    const std::string e = err(path);
    EXPECT_NE(e.find(want), std::string::npos) << "got: " << e << "\nwant: " << want;
    EXPECT_EQ(e.rfind(path, 0), 0u) << "must start with the file name: " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos);
  };

  expect(d / "missing.png", "cannot open file");
  put(d / "text.png", "this is not an image at all\n");
  expect(d / "text.png", "not a supported image");
  put(d / "empty.jpg", "");
  expect(d / "empty.jpg", "empty file");
  expect(d.path().string(), "not a regular file");

  const std::string png = read_file(d / "rgb.png");
  for (size_t cut : {size_t(20), size_t(40), png.size() / 2, png.size() - 13, png.size() - 12}) {
    put(d / "cut.png", png.substr(0, cut));
    const std::string e = err(d / "cut.png");
    EXPECT_NE(e, "(no error)") << "PNG cut at " << cut;
  }
  const std::string jpg = read_file(d / "smooth.jpg");
  for (size_t cut : {jpg.size() / 2, jpg.size() - 2}) {
    put(d / "cut.jpg", jpg.substr(0, cut));
    expect(d / "cut.jpg", "truncated JPEG");
  }
  // corrupt Huffman data that crashed Debian's stb_image 2.27 under fuzz/fuzz-image.cpp
  std::string bad_dht = jpg;
  const size_t dht = bad_dht.find("\xFF\xC4");
  ASSERT_NE(dht, std::string::npos);
  for (int i = 0; i < 16; ++i) bad_dht[dht + 5 + i] = '\x40';  // 16 x 64 = 1024 codes
  put(d / "dht.jpg", bad_dht);
  expect(d / "dht.jpg", "corrupt JPEG: Huffman table with 1024 codes (at most 256)");
  std::string bad_sos = jpg;
  const size_t sos = bad_sos.find("\xFF\xDA");
  ASSERT_NE(sos, std::string::npos);
  bad_sos[sos + 6] = '\x33';  // first component: DC table 3, AC table 3 (never defined)
  put(d / "sos.jpg", bad_sos);
  expect(d / "sos.jpg", "corrupt JPEG: scan uses an undefined Huffman table");
  const std::string bmp = read_file(d / "rgb.bmp");
  put(d / "cut.bmp", bmp.substr(0, bmp.size() - 100));
  expect(d / "cut.bmp", "truncated BMP");
  const std::string gif = read_file(d / "p.gif");
  put(d / "cut.gif", gif.substr(0, gif.size() - 20));
  expect(d / "cut.gif", "truncated GIF");

  // headers claiming 100000 x 100000 pixels: refused before any pixel allocation
  put(d / "huge.png", png_claiming(100000, 100000));
  expect(d / "huge.png", "image header claims 100000x100000 = 10000000000 pixels, more than the limit");
  std::string huge_bmp = bmp;
  for (int off : {18, 22}) {
    const uint32_t v = 100000;
    std::memcpy(&huge_bmp[off], &v, 4);
  }
  put(d / "huge.bmp", huge_bmp);
  expect(d / "huge.bmp", "image header claims 100000x100000");
  std::string huge_jpg = jpg;
  const size_t sof = huge_jpg.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  huge_jpg[sof + 5] = huge_jpg[sof + 6] = huge_jpg[sof + 7] = huge_jpg[sof + 8] = '\xFF';
  put(d / "huge.jpg", huge_jpg);
  expect(d / "huge.jpg", "image header claims 65535x65535");
  std::string huge_gif = gif;
  huge_gif[6] = huge_gif[7] = huge_gif[8] = huge_gif[9] = '\xFF';
  put(d / "huge.gif", huge_gif);
  expect(d / "huge.gif", "image header claims 65535x65535");
  // the caller's limit is honoured
  EXPECT_NE(error_of([&] { load_image(d / "rgb.png", 100); }).find("more than the limit of 100"), std::string::npos);
  EXPECT_NO_THROW(load_image(d / "rgb.png", 53 * 37));
}

// Random byte flips and truncations of real files: each either decodes to the header's size
// or raises unime::Error (never a crash; run under ASan by `make fuzz` builds too).
TEST(Image, RandomCorruptionNeverCrashes) {
  TempDir d;
  pil_ref(d, json::array({{{"op", "make_images"}, {"dir", d.path().string()}, {"seed", 5}}}));
  std::mt19937 rng(1234);
  int ok = 0, errors = 0;
  for (const char* f : {"rgb.png", "p.png", "smooth.jpg", "progressive.jpg", "rgb.bmp", "p.gif", "la.png"}) {
    const std::string orig = read_file(d / f);
    for (int it = 0; it < 150; ++it) {
      std::string s = orig;
      const int flips = 1 + rng() % 8;
      for (int k = 0; k < flips; ++k) s[rng() % s.size()] = static_cast<char>(rng());
      if (rng() % 4 == 0) s.resize(rng() % s.size());
      try {
        const Image img = decode_image(reinterpret_cast<const uint8_t*>(s.data()), s.size(), f, 1 << 20);
        ASSERT_EQ(img.rgb.size(), static_cast<size_t>(img.width) * img.height * 3);
        ++ok;
      } catch (const unime::Error&) {
        ++errors;
      }
    }
  }
  std::printf("corruption: %d decoded, %d rejected\n", ok, errors);
  EXPECT_GT(errors, 0);
}
