// .npy: our writer read back by numpy, numpy's files (f2/f4/f8, both byte orders, 0-d/1-d,
// format 2.0) read by us, and malformed files rejected with one error line.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/fs.h"
#include "io/npy.h"

#include "test-util.h"

namespace fs = std::filesystem;
using namespace unime::io;

namespace {

using unime::test::TempDir;

int run_py(const std::string& code, std::string* out) {
  TempDir d;
  std::ofstream(d / "x.py") << code;
  FILE* f = popen((std::string(UNIME_PYTHON) + " " + (d / "x.py") + " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  const int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string error_of(const std::string& path) {
  try {
    read_npy_f32(path);
  } catch (const unime::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Npy, NumpyReadsOurFiles) {
  TempDir d;
  std::vector<float> v(2 * 3 * 5);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.25f - 3.0f;
  write_npy_f32(d / "a.npy", v.data(), {2, 3, 5});
  write_npy_f32(d / "b.npy", v.data(), {7});
  write_npy_f32(d / "c.npy", v.data(), {});
  write_npy_f32(d / "e.npy", v.data(), {0, 4});
  std::string out;
  const std::string py = "import numpy as np\n"
                         "a = np.load('" + (d / "a.npy") + "')\n"
                         "assert a.dtype == np.float32 and a.shape == (2, 3, 5), (a.dtype, a.shape)\n"
                         "assert np.array_equal(a.ravel(), np.arange(30, dtype=np.float32) * 0.25 - 3)\n"
                         "b = np.load('" + (d / "b.npy") + "'); assert b.shape == (7,)\n"
                         "c = np.load('" + (d / "c.npy") + "'); assert c.shape == () and c == -3\n"
                         "e = np.load('" + (d / "e.npy") + "'); assert e.shape == (0, 4)\n"
                         "raw = open('" + (d / "a.npy") + "', 'rb').read()\n"
                         "hl = int.from_bytes(raw[8:10], 'little'); assert (10 + hl) % 64 == 0\n"
                         "print('OK')\n";
  ASSERT_EQ(run_py(py, &out), 0) << out;
  EXPECT_NE(out.find("OK"), std::string::npos);
  // and back
  NpyArray a = read_npy_f32(d / "a.npy");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3, 5}));
  EXPECT_EQ(a.data, v);
  EXPECT_TRUE(read_npy_f32(d / "c.npy").shape.empty());
}

TEST(Npy, WeReadNumpyFiles) {
  TempDir d;
  std::string out;
  const std::string py =
      "import numpy as np\n"
      "x = (np.arange(24).reshape(2, 3, 4) - 11.5) / 4\n"
      "np.save('" + (d / "f4.npy") + "', x.astype('<f4'))\n"
      "np.save('" + (d / "f8.npy") + "', x.astype('<f8'))\n"
      "np.save('" + (d / "f2.npy") + "', x.astype('<f2'))\n"
      "np.save('" + (d / "bf4.npy") + "', x.astype('>f4'))\n"
      "np.save('" + (d / "s.npy") + "', np.float32(2.5))\n"
      "np.save('" + (d / "one.npy") + "', np.array([1.5], dtype=np.float32))\n"
      "np.save('" + (d / "i4.npy") + "', np.arange(3, dtype=np.int32))\n"
      "np.save('" + (d / "fo.npy") + "', np.asfortranarray(x.astype(np.float32)))\n"
      "np.lib.format.write_array(open('" + (d / "v2.npy") + "', 'wb'), x.astype(np.float32), version=(2, 0))\n"
      "print('OK')\n";
  ASSERT_EQ(run_py(py, &out), 0) << out;
  for (const char* f : {"f4.npy", "f8.npy", "f2.npy", "bf4.npy", "v2.npy"}) {
    NpyArray a = read_npy_f32(d / f);
    ASSERT_EQ(a.shape, (std::vector<int64_t>{2, 3, 4})) << f;
    for (int i = 0; i < 24; ++i) ASSERT_EQ(a.data[i], (i - 11.5f) / 4) << f << " " << i;
  }
  NpyArray s = read_npy_f32(d / "s.npy");
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.data, std::vector<float>{2.5f});
  EXPECT_EQ(read_npy_f32(d / "one.npy").shape, std::vector<int64_t>{1});
  EXPECT_NE(error_of(d / "i4.npy").find("unsupported .npy dtype '<i4'"), std::string::npos);
  EXPECT_NE(error_of(d / "fo.npy").find("Fortran-order arrays are not supported"), std::string::npos);
}

TEST(Npy, MalformedFiles) {
  TempDir d;
  std::vector<float> v(12, 1.0f);
  write_npy_f32(d / "a.npy", v.data(), {3, 4});
  const std::string good = read_file(d / "a.npy");
  auto put = [&](const std::string& bytes) { std::ofstream(d / "x.npy", std::ios::binary) << bytes; };

  put(good.substr(0, good.size() - 4));
  EXPECT_NE(error_of(d / "x.npy").find("needs 48 (truncated?)"), std::string::npos) << error_of(d / "x.npy");
  put("hello world, not numpy");
  EXPECT_NE(error_of(d / "x.npy").find("not a .npy file"), std::string::npos);
  put(good.substr(0, 30));
  EXPECT_NE(error_of(d / "x.npy").find("runs past the end of the file"), std::string::npos);
  std::string bad = good;
  bad.replace(bad.find("'shape'"), 7, "'shapx'");
  put(bad);
  EXPECT_NE(error_of(d / "x.npy").find("malformed .npy header (unknown key 'shapx'"), std::string::npos);
  EXPECT_NE(error_of(d / "missing.npy").find("missing.npy: cannot open file"), std::string::npos);
  // every truncation fails cleanly
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_THROW(parse_npy_f32(reinterpret_cast<const uint8_t*>(good.data()), n, "cut"), unime::Error) << n;
  }
}
