// Image decoding with stb_image: see image.h. This file holds the one STB_IMAGE_IMPLEMENTATION.
#include "io/image.h"

#include <climits>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "io/fs.h"

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_NO_STDIO
#define STBI_FAILURE_USERMSG
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#include "stb_image.h"
#pragma GCC diagnostic pop

namespace unime::io {

namespace {

enum class Format { Png, Jpeg, Bmp, Gif, Unknown };

Format sniff(const uint8_t* d, size_t n) {
  if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return Format::Png;
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return Format::Jpeg;
  if (n >= 2 && d[0] == 'B' && d[1] == 'M') return Format::Bmp;
  if (n >= 6 && (std::memcmp(d, "GIF87a", 6) == 0 || std::memcmp(d, "GIF89a", 6) == 0))
    return Format::Gif;
  return Format::Unknown;
}

uint32_t le32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t(p[3]) << 24); }

uint32_t be16(const uint8_t* p) { return (uint32_t(p[0]) << 8) | p[1]; }

// The JPEG marker structure, checked before stb sees it. Two reasons:
//  - stb fills missing data with zeros and reports success, where PIL raises "image file is
//    truncated": an end-of-image marker must follow the first start-of-scan (APPn segments are
//    skipped whole, so an EXIF thumbnail's EOI does not count; inside entropy-coded data 0xFF
//    is always stuffed as FF 00 or a restart marker, so FF D9 is the real EOI).
//  - Debian's stb_image 2.27 reads out of bounds on a Huffman table whose code counts exceed
//    256 and on a scan that uses a table never defined (found by fuzz/fuzz-image.cpp); both are
//    corrupt files, rejected here.
// Returns an error text, or "" when the structure is sound.
std::string check_jpeg_structure(const uint8_t* d, size_t n) {
  bool defined[2][4] = {};  // [DC=0 / AC=1][table id]
  bool progressive = false, seen_sos = false;
  size_t pos = 2;
  auto skip_to_marker = [&](size_t p) {
    while (p + 1 < n && !(d[p] == 0xFF && d[p + 1] != 0x00 && d[p + 1] != 0xFF &&
                          !(d[p + 1] >= 0xD0 && d[p + 1] <= 0xD7)))
      ++p;
    return p;
  };
  while (pos + 2 <= n) {
    if (d[pos] != 0xFF) {  // stray bytes: stb, like libjpeg, skips to the next marker
      pos = skip_to_marker(pos);
      continue;
    }
    const uint8_t m = d[pos + 1];
    if (m == 0xFF) {
      ++pos;
      continue;
    }
    if (m == 0xD9) return seen_sos ? "" : "end-of-image marker before any scan";
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
      pos += 2;
      continue;
    }
    if (pos + 4 > n) break;
    const size_t len = be16(d + pos + 2);
    if (len < 2) return str("segment of length ", len, " at offset ", pos);
    if (pos + 2 + len > n) break;
    const uint8_t* seg = d + pos + 4;
    const size_t seglen = len - 2;
    if (m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE) progressive = true;
    if (m == 0xC4) {  // DHT: one or more tables
      size_t q = 0;
      while (q < seglen) {
        if (q + 17 > seglen) return "truncated Huffman table";
        const int tc = seg[q] >> 4, th = seg[q] & 15;
        if (tc > 1 || th > 3) return "bad Huffman table class/id";
        size_t total = 0;
        for (int i = 1; i <= 16; ++i) total += seg[q + i];
        if (total > 256) return str("Huffman table with ", total, " codes (at most 256)");
        defined[tc][th] = true;
        q += 17 + total;
      }
    } else if (m == 0xDA) {  // SOS: every table it uses must exist by now
      if (seglen < 1) return "empty scan header";
      const size_t ns = seg[0];
      if (seglen < 1 + 2 * ns + 3) return "truncated scan header";
      const int ss = seg[1 + 2 * ns], ah = seg[3 + 2 * ns] >> 4;
      for (size_t c = 0; c < ns; ++c) {
        const int td = seg[2 + 2 * c] >> 4, ta = seg[2 + 2 * c] & 15;
        if (td > 3 || ta > 3) return "bad Huffman table id in scan";
        const bool need_dc = !progressive || (ss == 0 && ah == 0);
        const bool need_ac = !progressive || ss > 0;
        if ((need_dc && !defined[0][td]) || (need_ac && !defined[1][ta]))
          return "scan uses an undefined Huffman table";
      }
      seen_sos = true;
      pos = skip_to_marker(pos + 2 + len);
      continue;
    }
    pos += 2 + len;
  }
  return seen_sos ? "truncated JPEG (no end-of-image marker)" : "truncated JPEG (no scan data)";
}

// Uncompressed BMPs (BI_RGB / BI_BITFIELDS with a BITMAPINFOHEADER or later): the pixel rows
// must fit in the file; stb would read zeros past the end.
void check_bmp_size(const uint8_t* d, size_t n, const std::string& name) {
  if (n < 34 || le32(d + 14) < 40) return;
  const uint32_t compression = le32(d + 30);
  if (compression != 0 && compression != 3) return;
  const uint64_t offset = le32(d + 10);
  const int64_t w = static_cast<int32_t>(le32(d + 18));
  int64_t h = static_cast<int32_t>(le32(d + 22));
  const uint64_t bpp = d[28] | (d[29] << 8);
  if (h < 0) h = -h;
  const uint64_t stride = (static_cast<uint64_t>(w) * bpp + 31) / 32 * 4;
  const uint64_t need = offset + stride * static_cast<uint64_t>(h);
  UNIME_CHECK(need <= n, name, ": truncated BMP: pixel data needs ", need, " bytes, file has ", n);
}

uint32_t be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3]; }

// Width and height as the header states them, read before stb sees the file so that the pixel
// limit is reported as such (stb's own "too large" check would hide the numbers). false when
// the header is too short to tell; stb then gives its verdict.
bool header_dims(Format fmt, const uint8_t* d, size_t n, int64_t* w, int64_t* h) {
  switch (fmt) {
    case Format::Png:
      if (n < 24 || std::memcmp(d + 12, "IHDR", 4) != 0) return false;
      *w = be32(d + 16);
      *h = be32(d + 20);
      return true;
    case Format::Gif:
      if (n < 10) return false;
      *w = d[6] | (d[7] << 8);
      *h = d[8] | (d[9] << 8);
      return true;
    case Format::Bmp: {
      if (n < 26) return false;
      const uint32_t hs = le32(d + 14);
      if (hs == 12) {
        *w = d[18] | (d[19] << 8);
        *h = d[20] | (d[21] << 8);
      } else {
        *w = static_cast<int32_t>(le32(d + 18));
        *h = static_cast<int32_t>(le32(d + 22));
        if (*h < 0) *h = -*h;
      }
      return true;
    }
    case Format::Jpeg: {
      size_t pos = 2;
      while (pos + 4 <= n && d[pos] == 0xFF) {
        const uint8_t m = d[pos + 1];
        if (m == 0xFF) {
          ++pos;
          continue;
        }
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
          pos += 2;
          continue;
        }
        const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
        if (sof) {
          if (pos + 9 > n) return false;
          *h = (d[pos + 5] << 8) | d[pos + 6];
          *w = (d[pos + 7] << 8) | d[pos + 8];
          return true;
        }
        if (m == 0xDA || m == 0xD9) return false;
        pos += 2 + ((size_t(d[pos + 2]) << 8) | d[pos + 3]);
      }
      return false;
    }
    case Format::Unknown: break;
  }
  return false;
}

struct StbFree {
  void operator()(void* p) const { stbi_image_free(p); }
};

}  // namespace

Image decode_image(const uint8_t* data, size_t size, const std::string& name, int64_t max_pixels) {
  UNIME_CHECK(size > 0, name, ": empty file, not an image");
  UNIME_CHECK(size <= static_cast<size_t>(INT_MAX), name, ": file of ", size,
              " bytes is too large to decode (limit 2 GiB)");
  const Format fmt = sniff(data, size);
  UNIME_CHECK(fmt != Format::Unknown, name,
              ": not a supported image (expected PNG, JPEG, BMP or GIF signature)");
  const int len = static_cast<int>(size);
  int64_t hw = 0, hh = 0;
  if (header_dims(fmt, data, size, &hw, &hh)) {
    UNIME_CHECK(hw == 0 || hh <= max_pixels / hw, name, ": image header claims ", hw, "x", hh, " = ", static_cast<uint64_t>(hw) * static_cast<uint64_t>(hh),
                " pixels, more than the limit of ", max_pixels);
  }
  // before stbi_info: stb's header parse already builds the Huffman tables
  if (fmt == Format::Jpeg) {
    const std::string why = check_jpeg_structure(data, size);
    UNIME_CHECK(why.empty(), name, why.rfind("truncated", 0) == 0 ? ": " : ": corrupt JPEG: ", why);
  }
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &comp))
    throw Error(str(name, ": corrupt or unsupported image header: ", stbi_failure_reason()));
  UNIME_CHECK(w > 0 && h > 0, name, ": image header claims ", w, "x", h, " pixels");
  UNIME_CHECK(static_cast<int64_t>(w) * h <= max_pixels, name, ": image header claims ", w, "x", h,
              " = ", static_cast<int64_t>(w) * h, " pixels, more than the limit of ", max_pixels);
  if (fmt == Format::Bmp) check_bmp_size(data, size, name);
  if (fmt == Format::Gif) {
    size_t end = size;
    while (end > 0 && data[end - 1] == 0) --end;  // tolerate zero padding after the trailer
    UNIME_CHECK(end > 0 && data[end - 1] == 0x3B, name, ": truncated GIF (no trailer byte)");
  }

  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<size_t>(w) * h * 3);
  int dw = 0, dh = 0, dc = 0;
  if (fmt == Format::Png && comp == 1 && stbi_is_16_bit_from_memory(data, len)) {
    // 16-bit grey opens in PIL as mode "I"; convert("RGB") clips each value to 255
    std::unique_ptr<stbi_us, StbFree> px(stbi_load_16_from_memory(data, len, &dw, &dh, &dc, 1));
    if (!px) throw Error(str(name, ": cannot decode image: ", stbi_failure_reason()));
    UNIME_CHECK(dw == w && dh == h, name, ": decoded size ", dw, "x", dh, " differs from header");
    for (size_t i = 0; i < static_cast<size_t>(w) * h; ++i) {
      const uint8_t v = px.get()[i] > 255 ? 255 : static_cast<uint8_t>(px.get()[i]);
      img.rgb[3 * i] = img.rgb[3 * i + 1] = img.rgb[3 * i + 2] = v;
    }
    return img;
  }
  // stb: grey -> replicated, alpha dropped, palette expanded, 16-bit -> high byte
  std::unique_ptr<stbi_uc, StbFree> px(stbi_load_from_memory(data, len, &dw, &dh, &dc, 3));
  if (!px) throw Error(str(name, ": cannot decode image (corrupt or truncated?): ", stbi_failure_reason()));
  UNIME_CHECK(dw == w && dh == h, name, ": decoded size ", dw, "x", dh, " differs from header ", w, "x", h);
  std::memcpy(img.rgb.data(), px.get(), img.rgb.size());
  return img;
}

Image load_image(const std::string& path, int64_t max_pixels) {
  const std::string bytes = read_file(path);
  return decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path, max_pixels);
}

}  // namespace unime::io
