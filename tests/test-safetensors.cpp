// safetensors reader/writer: round trips, interop with an independent Python reader/writer
// (written here with struct + json + numpy; Debian has no python safetensors), sharded
// checkpoints, and every header violation from the issue (each must be one unime::Error line).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"
#include "io/safetensors.h"

#include "test-util.h"

namespace fs = std::filesystem;
using namespace unime::io;

namespace {

using unime::test::TempDir;

int run(const std::string& cmd, std::string* out = nullptr) {
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  const int st = pclose(f);
  if (out) *out = s;
  else if (st != 0) std::fprintf(stderr, "%s", s.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), bytes.size());
}

// A raw file: 8-byte length + header + data, no validation (for corrupt inputs).
std::string raw_file(const std::string& header, const std::string& data, uint64_t len_override = ~0ull) {
  const uint64_t n = len_override == ~0ull ? header.size() : len_override;
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s + header + data;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const unime::Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string open_error(const std::string& path) {
  return error_of([&] { SafetensorsFile::open(path); });
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);  // values below are exact in bf16
}

// Half-precision bits for values exactly representable in fp16 (small integers / halves).
uint16_t f32_to_f16(float f) {
  if (f == 0) return 0;
  uint16_t sign = f < 0 ? 0x8000 : 0;
  f = std::fabs(f);
  int e;
  const float m = std::frexp(f, &e);  // f = m * 2^e, m in [0.5, 1)
  const uint16_t exp = static_cast<uint16_t>(e - 1 + 15);
  const uint16_t mant = static_cast<uint16_t>((m * 2 - 1) * 1024);
  return sign | (exp << 10) | mant;
}

// Python: the test's independent reader + writer. Values follow v(name, i) = (i % 17) - 8 + k/2
// where k = len(name); the C++ side uses the same formula.
const char* kPy = R"PY(
import json, struct, sys
import numpy as np

DT = {"F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
      "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("<i1", 1),
      "U8": ("<u1", 1), "BOOL": ("<u1", 1)}

def expected(name, n, dt):
    i = np.arange(n)
    if dt in ("U8",): return (i * 7 + len(name)) % 256
    if dt == "BOOL": return (i % 3 == 0).astype(np.int64)
    v = (i % 17) - 8 + len(name) / 2.0
    if dt.startswith("I"): v = np.floor(v)
    return v

def read(path):
    buf = open(path, "rb").read()
    n, = struct.unpack("<Q", buf[:8])
    assert (8 + n) % 8 == 0, "data region not 8-byte aligned"
    text = buf[8:8 + n].decode()
    keys = [k for k in json.loads(text)]
    assert keys == sorted(keys), f"header keys not sorted: {keys}"
    hdr = json.loads(text)
    meta = hdr.pop("__metadata__", {})
    data = buf[8 + n:]
    end = 0
    for name, e in hdr.items():
        b, t = e["data_offsets"]
        np_dt, size = DT[e["dtype"]]
        assert b % size == 0, f"{name} not aligned to its element size"
        a = np.frombuffer(data[b:t], dtype=np_dt)
        cnt = int(np.prod(e["shape"])) if e["shape"] else 1
        assert a.size == cnt, (name, a.size, cnt)
        if e["dtype"] == "BF16": a = (a.astype(np.uint32) << 16).view(np.float32)
        exp = expected(name, cnt, e["dtype"])
        assert np.array_equal(a.astype(np.float64), exp.astype(np.float64)), (name, a[:5], exp[:5])
        end = max(end, t)
    assert end == len(data)
    print("OK", len(hdr), "tensors", json.dumps(meta, sort_keys=True))

def write(path):
    # like safetensors' Python writer: __metadata__ first, insertion order, header space-padded
    spec = [("zeta.weight", "F32", [3, 5]), ("alpha", "F16", [4]), ("mid.bias", "BF16", [2, 2]),
            ("ids", "I64", [6]), ("mask", "BOOL", [5]), ("scalar", "F64", []), ("empty", "F32", [0, 3])]
    hdr, blobs, off = {"__metadata__": {"format": "pt", "note": "py"}}, [], 0
    for name, dt, shape in spec:
        cnt = int(np.prod(shape)) if shape else 1
        v = expected(name, cnt, dt)
        if dt == "BF16": raw = (v.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        else: raw = v.astype(DT[dt][0]).tobytes()
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw); off += len(raw)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

getattr(sys.modules[__name__], sys.argv[1])(sys.argv[2])
)PY";

// Same formula as expected() in kPy.
double expected(const std::string& name, int64_t i, DType dt) {
  if (dt == DType::U8) return static_cast<double>((i * 7 + static_cast<int64_t>(name.size())) % 256);
  if (dt == DType::BOOL) return i % 3 == 0 ? 1 : 0;
  double v = static_cast<double>(i % 17) - 8 + name.size() / 2.0;
  if (dt == DType::I64 || dt == DType::I32 || dt == DType::I16 || dt == DType::I8) v = std::floor(v);
  return v;
}

double value_at(const TensorInfo& t, int64_t i) {
  const uint8_t* p = t.data + i * dtype_size(t.dtype);
  switch (t.dtype) {
    case DType::F64: { double v; std::memcpy(&v, p, 8); return v; }
    case DType::F32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::BF16: { uint32_t u = (p[0] | (p[1] << 8)) << 16; float v; std::memcpy(&v, &u, 4); return v; }
    case DType::F16: {
      const uint16_t h = p[0] | (p[1] << 8);
      const int e = (h >> 10) & 31, m = h & 1023;
      const double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(m + 1024, e - 25);
      return (h & 0x8000) ? -v : v;
    }
    case DType::I64: { int64_t v; std::memcpy(&v, p, 8); return static_cast<double>(v); }
    case DType::I32: { int32_t v; std::memcpy(&v, p, 4); return v; }
    case DType::I16: { int16_t v; std::memcpy(&v, p, 2); return v; }
    case DType::I8: return static_cast<int8_t>(p[0]);
    case DType::U8: return p[0];
    case DType::BOOL: return p[0];
  }
  return NAN;
}

// Owned buffers for a tensor of `dt` filled with expected().
struct Owned {
  std::string name;
  DType dt;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

Owned make(const std::string& name, DType dt, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  Owned o{name, dt, shape, std::vector<uint8_t>(n * dtype_size(dt))};
  for (int64_t i = 0; i < n; ++i) {
    const double v = expected(name, i, dt);
    uint8_t* p = o.bytes.data() + i * dtype_size(dt);
    switch (dt) {
      case DType::F64: std::memcpy(p, &v, 8); break;
      case DType::F32: { float f = static_cast<float>(v); std::memcpy(p, &f, 4); break; }
      case DType::BF16: { uint16_t b = f32_to_bf16(static_cast<float>(v)); std::memcpy(p, &b, 2); break; }
      case DType::F16: { uint16_t b = f32_to_f16(static_cast<float>(v)); std::memcpy(p, &b, 2); break; }
      case DType::I64: { int64_t x = static_cast<int64_t>(v); std::memcpy(p, &x, 8); break; }
      case DType::I32: { int32_t x = static_cast<int32_t>(v); std::memcpy(p, &x, 4); break; }
      case DType::I16: { int16_t x = static_cast<int16_t>(v); std::memcpy(p, &x, 2); break; }
      case DType::I8: p[0] = static_cast<uint8_t>(static_cast<int8_t>(v)); break;
      case DType::U8: case DType::BOOL: p[0] = static_cast<uint8_t>(v); break;
    }
  }
  return o;
}

std::vector<Owned> sample_tensors() {
  return {make("zeta.weight", DType::F32, {3, 5}), make("alpha", DType::F16, {4}),
          make("mid.bias", DType::BF16, {2, 2}),   make("ids", DType::I64, {6}),
          make("i32", DType::I32, {3}),            make("i16", DType::I16, {3}),
          make("i8", DType::I8, {5}),              make("bytes", DType::U8, {2, 3}),
          make("mask", DType::BOOL, {5}),          make("scalar", DType::F64, {}),
          make("empty", DType::F32, {0, 3})};
}

void write_owned(const std::string& path, const std::vector<Owned>& ts,
                 const std::map<std::string, std::string>& meta = {}) {
  std::vector<TensorToWrite> w;
  for (const auto& t : ts) w.push_back({t.name, t.dt, t.shape, t.bytes.data()});
  write_safetensors(path, w, meta);
}

void check_values(const TensorInfo& t) {
  const int64_t n = t.numel();
  ASSERT_EQ(static_cast<size_t>(n) * dtype_size(t.dtype), t.nbytes) << t.name;
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(value_at(t, i), expected(t.name, i, t.dtype)) << t.name << "[" << i << "]";
}

}  // namespace

TEST(Safetensors, RoundTripAllDtypes) {
  TempDir d;
  const auto ts = sample_tensors();
  write_owned(d / "a.safetensors", ts, {{"format", "pt"}, {"k", "v"}});
  auto f = SafetensorsFile::open(d / "a.safetensors");
  ASSERT_EQ(f->tensors().size(), ts.size());
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("k"), "v");
  EXPECT_EQ((8 + f->header_size()) % 8, 0u) << "data region must start 8-byte aligned";
  for (const auto& o : ts) {
    const TensorInfo& t = f->tensors().at(o.name);
    EXPECT_EQ(t.dtype, o.dt);
    EXPECT_EQ(t.shape, o.shape);
    EXPECT_EQ(t.file, d / "a.safetensors");
    check_values(t);
  }
  // every tensor aligned to its element size relative to the (8-aligned) data region
  const uint8_t* region = nullptr;
  for (const auto& [k, t] : f->tensors()) region = region ? std::min(region, t.data) : t.data;
  for (const auto& [k, t] : f->tensors())
    EXPECT_EQ(static_cast<size_t>(t.data - region) % dtype_size(t.dtype), 0u) << k;
  // no temp files left behind by the atomic writer
  EXPECT_EQ(std::distance(fs::directory_iterator(d.path()), fs::directory_iterator()), 1);
}

TEST(Safetensors, PythonReadsOurFile) {
  TempDir d;
  write_bytes(d / "st.py", kPy);
  write_owned(d / "a.safetensors", sample_tensors(), {{"format", "pt"}});
  std::string out;
  ASSERT_EQ(run(std::string(UNIME_PYTHON) + " " + (d / "st.py") + " read " + (d / "a.safetensors"), &out), 0) << out;
  EXPECT_NE(out.find("OK 11 tensors {\"format\": \"pt\"}"), std::string::npos) << out;
}

TEST(Safetensors, WeReadPythonFile) {
  TempDir d;
  write_bytes(d / "st.py", kPy);
  std::string out;
  ASSERT_EQ(run(std::string(UNIME_PYTHON) + " " + (d / "st.py") + " write " + (d / "p.safetensors"), &out), 0) << out;
  auto ck = Checkpoint::open(d / "p.safetensors");
  EXPECT_EQ(ck.names().size(), 7u);
  EXPECT_EQ(ck.metadata().at("note"), "py");
  for (const auto& n : ck.names()) check_values(ck.get(n));
  EXPECT_EQ(ck.get("zeta.weight", {3, 5}).dtype, DType::F32);
  EXPECT_TRUE(ck.get("scalar").shape.empty());
  EXPECT_EQ(ck.get("empty").nbytes, 0u);
}

TEST(Safetensors, ShardedCheckpoint) {
  TempDir d;
  auto ts = sample_tensors();
  std::vector<Owned> a(ts.begin(), ts.begin() + 5), b(ts.begin() + 5, ts.end());
  write_owned(d / "model-00001-of-00002.safetensors", a);
  write_owned(d / "model-00002-of-00002.safetensors", b);
  nlohmann::json idx = {{"metadata", {{"total_size", 123}}}, {"weight_map", nlohmann::json::object()}};
  for (const auto& t : a) idx["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : b) idx["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  write_bytes(d / "model.safetensors.index.json", idx.dump());

  auto ck = Checkpoint::open(d.path().string());
  EXPECT_EQ(ck.names().size(), ts.size());
  EXPECT_EQ(ck.metadata().at("total_size"), "123");
  for (const auto& t : ts) {
    ASSERT_TRUE(ck.has(t.name));
    check_values(ck.get(t.name));
  }
  EXPECT_NE(ck.get("mask").file.find("00002"), std::string::npos);

  // a tensor the index maps to the wrong shard
  idx["weight_map"]["alpha"] = "model-00002-of-00002.safetensors";
  write_bytes(d / "model.safetensors.index.json", idx.dump());
  std::string e = error_of([&] { Checkpoint::open(d.path().string()); });
  EXPECT_NE(e.find("tensor 'alpha' is mapped to shard 'model-00002-of-00002.safetensors' but that "
                   "shard does not contain it"), std::string::npos) << e;
  // a missing shard
  idx["weight_map"]["alpha"] = "model-00003-of-00002.safetensors";
  write_bytes(d / "model.safetensors.index.json", idx.dump());
  e = error_of([&] { Checkpoint::open(d.path().string()); });
  EXPECT_NE(e.find("shard 'model-00003-of-00002.safetensors' (for tensor 'alpha') is missing"), std::string::npos) << e;
  // path traversal
  idx["weight_map"]["alpha"] = "../x.safetensors";
  write_bytes(d / "model.safetensors.index.json", idx.dump());
  e = error_of([&] { Checkpoint::open(d.path().string()); });
  EXPECT_NE(e.find("must be a file name relative"), std::string::npos) << e;
  // no weight_map
  write_bytes(d / "model.safetensors.index.json", "{\"metadata\": {}}");
  e = error_of([&] { Checkpoint::open(d.path().string()); });
  EXPECT_NE(e.find("no \"weight_map\""), std::string::npos) << e;
}

TEST(Safetensors, MissingAndMisShapedTensorErrors) {
  TempDir d;
  write_owned(d / "model.safetensors", {make("model.layers.0.self_attn.q_proj.weight", DType::F32, {4, 4}),
                                        make("model.layers.0.self_attn.k_proj.weight", DType::F32, {2, 4}),
                                        make("model.layers.1.self_attn.q_proj.weight", DType::F32, {4, 4}),
                                        make("lm_head.weight", DType::F32, {3, 4})});
  auto ck = Checkpoint::open(d.path().string());  // folder with model.safetensors
  std::string e = error_of([&] { ck.get("model.layers.0.self_attn.v_proj.weight"); });
  EXPECT_NE(e.find("tensor 'model.layers.0.self_attn.v_proj.weight' not found"), std::string::npos) << e;
  EXPECT_NE(e.find("nearest: model.layers.0.self_attn.k_proj.weight, model.layers.0.self_attn.q_proj.weight, "
                   "model.layers.1.self_attn.q_proj.weight"), std::string::npos) << e;
  e = error_of([&] { ck.get("lm_head.weight", {4, 4}); });
  EXPECT_NE(e.find("tensor 'lm_head.weight' has wrong shape; expected [4, 4], got [3, 4]"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  EXPECT_NO_THROW(ck.get("lm_head.weight", {3, 4}));
}

TEST(Safetensors, OpenErrors) {
  TempDir d;
  EXPECT_NE(open_error(d / "nope.safetensors").find("nope.safetensors: cannot open file"), std::string::npos);
  EXPECT_NE(error_of([&] { Checkpoint::open(d / "nope"); }).find("no such checkpoint"), std::string::npos);
  EXPECT_NE(error_of([&] { Checkpoint::open(d.path().string()); }).find("no model.safetensors"), std::string::npos);
  EXPECT_NE(open_error(d.path().string()).find("not a regular file"), std::string::npos);
}

// Every header violation named in the issue: one line, naming the file (and tensor).
TEST(Safetensors, CorruptHeaders) {
  TempDir d;
  const std::string p = d / "bad.safetensors";
  auto expect_error = [&](const std::string& bytes, const std::string& want) {
    write_bytes(p, bytes);
    const std::string e = open_error(p);
    EXPECT_NE(e.find(want), std::string::npos) << "got: " << e << "\nwant: " << want;
    EXPECT_EQ(e.rfind(p, 0), 0u) << "error must start with the file name: " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  };
  const std::string data24(24, '\0');
  auto entry = [](const std::string& name, const std::string& dt, const std::string& shape, const std::string& off) {
    return "\"" + name + "\":{\"dtype\":\"" + dt + "\",\"shape\":" + shape + ",\"data_offsets\":" + off + "}";
  };
  expect_error("", "0 bytes, shorter than the 8-byte header length");
  expect_error("abc", "shorter than the 8-byte header length");
  expect_error(raw_file("{}", "", 1000), "header length 1000 runs past the end of the file");
  expect_error(raw_file("{}", "", 200'000'000), "exceeds the limit of 100000000 bytes");
  expect_error(raw_file("[1,2]", ""), "header must be a JSON object starting with '{'");
  expect_error(raw_file("{\"a\": ", ""), "header is not valid JSON");
  expect_error(raw_file("{" + entry("w", "F33", "[2,3]", "[0,24]") + "}", data24),
               "tensor 'w': unsupported dtype 'F33'");
  expect_error(raw_file("{" + entry("w", "F8_E4M3", "[24]", "[0,24]") + "}", data24),
               "tensor 'w': unsupported dtype 'F8_E4M3'");
  expect_error(raw_file("{" + entry("w", "F32", "[2,-3]", "[0,24]") + "}", data24),
               "tensor 'w': shape entries must be non-negative integers");
  expect_error(raw_file("{" + entry("w", "F32", "[2,3.5]", "[0,24]") + "}", data24),
               "tensor 'w': shape entries must be non-negative integers");
  expect_error(raw_file("{" + entry("w", "F32", "[2,3]", "[0,48]") + "}", data24),
               "tensor 'w': data_offsets [0, 48] lie outside the data region (24 bytes");
  expect_error(raw_file("{" + entry("w", "F32", "[2,3]", "[0,20]") + "}", data24),
               "tensor 'w': data_offsets [0, 20] hold 20 bytes but shape [2, 3] x F32 needs 24");
  expect_error(raw_file("{" + entry("w", "F32", "[2,3]", "[10,4]") + "}", data24),
               "tensor 'w': data_offsets [10, 4] end before they begin");
  expect_error(raw_file("{" + entry("w", "F32", "[4294967296,4294967296]", "[0,24]") + "}", data24),
               "tensor 'w': shape [4294967296, 4294967296] x F32 overflows the byte count");
  expect_error(raw_file("{" + entry("w", "F32", "[2,3]", "[0,18446744073709551615]") + "}", data24),
               "lie outside the data region");
  expect_error(raw_file("{" + entry("a", "F32", "[4]", "[0,16]") + "," + entry("b", "F32", "[4]", "[8,24]") + "}", data24),
               "tensor 'b' data_offsets [8, 24] overlap tensor 'a' [0, 16]");
  expect_error(raw_file("{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "F32", "[2]", "[16,24]") + "}", data24),
               "tensor 'b' starts at data offset 16 but the previous tensor ends at 8");
  expect_error(raw_file("{" + entry("a", "F32", "[4]", "[0,16]") + "}", data24),
               "data region is 24 bytes but the tensors cover 16 (8 trailing bytes");
  expect_error(raw_file("{" + entry("a", "F32", "[6]", "[0,24]") + "," + entry("a", "F32", "[6]", "[0,24]") + "}", data24),
               "header lists 'a' twice");
  expect_error(raw_file("{\"__metadata__\":{\"k\":1}," + entry("a", "F32", "[6]", "[0,24]") + "}", data24),
               "__metadata__ value for 'k' must be a string");
  expect_error(raw_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[6]}}", data24), "tensor 'a': header entry has no \"data_offsets\"");
  expect_error(raw_file("{\"a\":{\"shape\":[6],\"data_offsets\":[0,24]}}", data24), "tensor 'a': header entry has no \"dtype\"");
  expect_error(raw_file("{\"a\":[1]}", data24), "tensor 'a': header entry must be an object");
  expect_error(raw_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0]}}", data24),
               "\"data_offsets\" must be [begin, end]");
  expect_error(raw_file(std::string("{\"\xff\":1}"), ""), "header is not valid JSON");
  // a valid header padded with spaces is fine
  write_bytes(p, raw_file("{" + entry("a", "F32", "[6]", "[0,24]") + "}     ", data24));
  EXPECT_NO_THROW(SafetensorsFile::open(p));
}

// Truncating a valid file anywhere must give an Error, never a crash or a silent success.
TEST(Safetensors, EveryTruncationFails) {
  TempDir d;
  write_owned(d / "a.safetensors", {make("w", DType::F32, {3, 4}), make("b", DType::BF16, {5})});
  const std::string full = read_file(d / "a.safetensors");
  for (size_t n = 0; n < full.size(); ++n) {
    const auto* p = reinterpret_cast<const uint8_t*>(full.data());
    EXPECT_THROW(parse_safetensors_header(p, n, "cut"), unime::Error) << "cut at " << n;
  }
  EXPECT_NO_THROW(parse_safetensors_header(reinterpret_cast<const uint8_t*>(full.data()), full.size(), "ok"));
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir d;
  float x[4] = {1, 2, 3, 4};
  EXPECT_THROW(write_safetensors(d / "a", {{"a", DType::F32, {4}, x}, {"a", DType::F32, {4}, x}}), unime::Error);
  EXPECT_THROW(write_safetensors(d / "a", {{"a", DType::F32, {-1}, x}}), unime::Error);
  EXPECT_THROW(write_safetensors(d / "a", {{"__metadata__", DType::F32, {4}, x}}), unime::Error);
  EXPECT_THROW(write_safetensors(d / "a", {{"a", DType::F32, {4}, nullptr}}), unime::Error);
  EXPECT_FALSE(fs::exists(d / "a"));
  EXPECT_THROW(write_safetensors(d / "no/such/dir/a", {{"a", DType::F32, {4}, x}}), unime::Error);
}

TEST(Safetensors, DtypeNames) {
  for (DType dt : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16,
                   DType::I8, DType::U8, DType::BOOL}) {
    DType back;
    ASSERT_TRUE(parse_dtype(dtype_name(dt), &back));
    EXPECT_EQ(back, dt);
  }
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::F64), 8u);
  DType x;
  EXPECT_FALSE(parse_dtype("f32", &x));
  EXPECT_EQ(shape_str({}), "[]");
  EXPECT_EQ(shape_str({2, 3}), "[2, 3]");
}

// The streamed writer (random 7B checkpoints) writes the same bytes as the in-memory one, asking
// for each tensor once, in file order; the reader's mapping is copy-on-write and its pages can be
// dropped from the resident set without changing what a tensor reads.
TEST(Safetensors, StreamedWriterAndMappedPages) {
  TempDir d;
  std::vector<float> big(40000), small(3, 2.5f);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i) * 0.5f;
  std::vector<uint16_t> half(5, 7);
  const std::vector<TensorToWrite> t = {{"z.small", DType::F32, {3}, small.data()},
                                        {"a.big", DType::F32, {200, 200}, big.data()},
                                        {"m.half", DType::BF16, {5}, half.data()}};
  write_safetensors(d / "plain.safetensors", t, {{"format", "pt"}});
  std::vector<size_t> asked;
  write_safetensors_streamed(d / "streamed.safetensors", t, {{"format", "pt"}}, [&](size_t i) {
    asked.push_back(i);
    return t[i].data;
  });
  EXPECT_EQ(unime::test::read_text(d / "plain.safetensors"), unime::test::read_text(d / "streamed.safetensors"));
  EXPECT_EQ(asked, (std::vector<size_t>{1, 0, 2}));  // f32 by name, then bf16: the file's order

  auto ck = Checkpoint::open(d / "streamed.safetensors");
  const TensorInfo& b = ck.get("a.big");
  ASSERT_TRUE(b.owner);  // keeps the mapping alive for tensors that view it
  float first = 0, last = 0;
  std::memcpy(&last, b.data + b.nbytes - 4, 4);
  EXPECT_EQ(last, big.back());
  EXPECT_GT(release_mapped_pages(b.data, b.nbytes), 0u);  // 160 kB hold whole pages
  std::memcpy(&first, b.data, 4);
  std::memcpy(&last, b.data + b.nbytes - 4, 4);  // read back from the file after the release
  EXPECT_EQ(first, 0.0f);
  EXPECT_EQ(last, big.back());
  EXPECT_EQ(release_mapped_pages(big.data(), 4 * big.size()), 0u);  // not a mapping of ours
  // copy-on-write: a write through the mapping stays in this process
  auto* w = const_cast<uint8_t*>(b.data);
  const float one = 1.0f;
  std::memcpy(w, &one, 4);
  std::memcpy(&first, b.data, 4);
  EXPECT_EQ(first, 1.0f);
  EXPECT_EQ(unime::test::read_text(d / "plain.safetensors"), unime::test::read_text(d / "streamed.safetensors"));
}
