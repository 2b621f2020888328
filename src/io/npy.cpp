// .npy reader/writer: see npy.h. The header dict is parsed by a small tokenizer for the
// Python literals numpy writes (strings, True/False, tuples of ints); nothing is evaluated.
#include "io/npy.h"

#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/fs.h"

namespace unime::io {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr size_t kAlign = 64;  // numpy.lib.format.ARRAY_ALIGN

std::string shape_tuple(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) s += ",";
  return s + ")";
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

// Tokenizer over the header dict: {'key': value, ...}
struct HeaderParser {
  const std::string& s;
  const std::string& name;
  size_t i = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(str(name, ": malformed .npy header (", what, " at offset ", i, "): ", s));
  }
  void ws() {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  std::string string_lit() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) fail("expected a string");
    const char q = s[i++];
    const size_t start = i;
    while (i < s.size() && s[i] != q) ++i;
    if (i >= s.size()) fail("unterminated string");
    return s.substr(start, i++ - start);
  }
  bool bool_lit() {
    ws();
    if (s.compare(i, 4, "True") == 0) {
      i += 4;
      return true;
    }
    if (s.compare(i, 5, "False") == 0) {
      i += 5;
      return false;
    }
    fail("expected True or False");
  }
  int64_t int_lit() {
    ws();
    const size_t start = i;
    int64_t v = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s[i] - '0', &v))
        fail("dimension too large");
      ++i;
    }
    if (i == start) fail("expected a non-negative integer");
    if (i < s.size() && s[i] == 'L') ++i;  // Python 2 longs
    return v;
  }
  std::vector<int64_t> tuple_lit() {
    if (!eat('(')) fail("expected a tuple");
    std::vector<int64_t> out;
    if (eat(')')) return out;
    while (true) {
      out.push_back(int_lit());
      if (eat(')')) return out;
      if (!eat(',')) fail("expected ',' or ')'");
      if (eat(')')) return out;
    }
  }
};

}  // namespace

std::string encode_npy_f32(const float* data, const std::vector<int64_t>& shape) {
  size_t numel = 1;
  for (int64_t d : shape) {
    UNIME_CHECK(d >= 0, "npy: negative dimension in shape ", shape_tuple(shape));
    UNIME_CHECK(!__builtin_mul_overflow(numel, static_cast<size_t>(d), &numel),
                "npy: shape ", shape_tuple(shape), " overflows");
  }
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_tuple(shape) + ", }";
  // version 1.0 has a u16 header length; fall back to 2.0 (u32) for huge shapes
  const bool v2 = kMagicLen + 2 + 2 + dict.size() + 1 > 65535;
  const size_t prefix = kMagicLen + 2 + (v2 ? 4 : 2);
  const size_t total = (prefix + dict.size() + 1 + kAlign - 1) / kAlign * kAlign;
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict += '\n';
  std::string out(kMagic, kMagicLen);
  out += static_cast<char>(v2 ? 2 : 1);
  out += '\0';
  const uint32_t hlen = static_cast<uint32_t>(dict.size());
  for (size_t b = 0; b < (v2 ? 4u : 2u); ++b) out += static_cast<char>((hlen >> (8 * b)) & 0xff);
  out += dict;
  const size_t at = out.size();
  out.resize(at + numel * sizeof(float));
  if (numel) std::memcpy(out.data() + at, data, numel * sizeof(float));  // host is little-endian
  return out;
}

void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  write_file_atomic(path, encode_npy_f32(data, shape));
}

NpyArray parse_npy_f32(const uint8_t* data, size_t size, const std::string& name) {
  UNIME_CHECK(size >= kMagicLen + 4 && std::memcmp(data, kMagic, kMagicLen) == 0, name,
              ": not a .npy file (no \\x93NUMPY magic)");
  const uint8_t major = data[6];
  UNIME_CHECK(major >= 1 && major <= 3, name, ": unsupported .npy format version ", int(major), ".",
              int(data[7]), " (expected 1.x, 2.x or 3.x)");
  size_t pos = 8, hlen = 0;
  if (major == 1) {
    hlen = data[8] | (size_t(data[9]) << 8);
    pos = 10;
  } else {
    UNIME_CHECK(size >= 12, name, ": truncated .npy header");
    hlen = data[8] | (size_t(data[9]) << 8) | (size_t(data[10]) << 16) | (size_t(data[11]) << 24);
    pos = 12;
  }
  UNIME_CHECK(hlen <= size - pos, name, ": .npy header length ", hlen, " runs past the end of the file (",
              size, " bytes)");
  const std::string header(reinterpret_cast<const char*>(data + pos), hlen);
  pos += hlen;

  HeaderParser p{header, name};
  std::string descr;
  bool fortran = false, have_descr = false, have_order = false, have_shape = false;
  NpyArray arr;
  if (!p.eat('{')) p.fail("expected '{'");
  while (!p.eat('}')) {
    const std::string key = p.string_lit();
    if (!p.eat(':')) p.fail("expected ':'");
    if (key == "descr") {
      descr = p.string_lit();
      have_descr = true;
    } else if (key == "fortran_order") {
      fortran = p.bool_lit();
      have_order = true;
    } else if (key == "shape") {
      arr.shape = p.tuple_lit();
      have_shape = true;
    } else {
      p.fail("unknown key '" + key + "'");
    }
    if (!p.eat(',')) {
      if (!p.eat('}')) p.fail("expected ',' or '}'");
      break;
    }
  }
  UNIME_CHECK(have_descr && have_order && have_shape, name,
              ": .npy header lacks one of 'descr', 'fortran_order', 'shape': ", header);
  UNIME_CHECK(!fortran, name, ": Fortran-order arrays are not supported (save with C order)");

  size_t itemsize = 0;
  bool big = false;
  if (descr.size() == 3 && (descr[0] == '<' || descr[0] == '>' || descr[0] == '=') && descr[1] == 'f')
    itemsize = descr[2] == '2' ? 2 : descr[2] == '4' ? 4 : descr[2] == '8' ? 8 : 0;
  UNIME_CHECK(itemsize != 0, name, ": unsupported .npy dtype '", descr,
              "' (expected float16/32/64: '<f2', '<f4', '<f8')");
  big = descr[0] == '>';

  size_t numel = 1;
  for (int64_t d : arr.shape)
    UNIME_CHECK(!__builtin_mul_overflow(numel, static_cast<size_t>(d), &numel), name,
                ": shape ", shape_tuple(arr.shape), " overflows");
  size_t nbytes = 0;
  UNIME_CHECK(!__builtin_mul_overflow(numel, itemsize, &nbytes), name, ": shape ",
              shape_tuple(arr.shape), " overflows");
  UNIME_CHECK(size - pos == nbytes, name, ": .npy data is ", size - pos, " bytes but shape ",
              shape_tuple(arr.shape), " of '", descr, "' needs ", nbytes,
              size - pos < nbytes ? " (truncated?)" : "");

  arr.data.resize(numel);
  const uint8_t* src = data + pos;
  for (size_t k = 0; k < numel; ++k) {
    uint8_t b[8];
    for (size_t j = 0; j < itemsize; ++j) b[j] = src[k * itemsize + (big ? itemsize - 1 - j : j)];
    if (itemsize == 2) {
      arr.data[k] = half_to_float(static_cast<uint16_t>(b[0] | (b[1] << 8)));
    } else if (itemsize == 4) {
      float f;
      std::memcpy(&f, b, 4);
      arr.data[k] = f;
    } else {
      double d;
      std::memcpy(&d, b, 8);
      arr.data[k] = static_cast<float>(d);
    }
  }
  return arr;
}

NpyArray read_npy_f32(const std::string& path) {
  const std::string bytes = read_file(path);
  return parse_npy_f32(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
}

}  // namespace unime::io
