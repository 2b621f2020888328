// Bad input gets one clear line naming the file and the problem, and exit code 1: never a crash.
// Drives the real `unime` binary on a tiny random checkpoint that the test writes.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "test-util.h"

namespace fs = std::filesystem;
using unime::test::run_cmd;
using unime::test::TempDir;
using unime::test::write_text;

namespace {

class CliErrors : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    auto r = run_cmd(unime::test::unime_bin() + " random-model --preset tiny-llava --output " +
                     (*dir_ / "model"));
    ASSERT_EQ(r.status, 0) << r.output;
    write_text(*dir_ / "ok.jsonl", "{\"input_ids\": [1, 2, 3]}\n");
  }
  static void TearDownTestSuite() { delete dir_; }

  // copy of the good model folder to mutate
  std::string copy_model(const std::string& name) {
    const std::string d = *dir_ / name;
    fs::remove_all(d);
    fs::copy(*dir_ / "model", d, fs::copy_options::recursive);
    return d;
  }
  // runs `unime embed` and checks: exit 1, one "error:" line, containing every `needles`
  void expect_error(const std::string& model, const std::string& input,
                    std::initializer_list<std::string> needles, const std::string& extra = "") {
    auto r = run_cmd(unime::test::unime_bin() + " embed --model " + model + " --input " + input +
                     " --output " + (*dir_ / "out.npy") + " --dtype f32 " + extra);
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_EQ(r.output.rfind("error: ", 0), 0u) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    for (const auto& n : needles) EXPECT_NE(r.output.find(n), std::string::npos) << "missing '" << n << "' in: " << r.output;
  }
  static TempDir* dir_;
};
TempDir* CliErrors::dir_ = nullptr;

std::string read_bytes(const std::string& p) { return unime::test::read_text(p); }

TEST_F(CliErrors, GoodInputWorks) {
  auto r = run_cmd(unime::test::unime_bin() + " embed --model " + (*dir_ / "model") + " --input " +
                   (*dir_ / "ok.jsonl") + " --output " + (*dir_ / "ok.npy"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(*dir_ / "ok.npy"));
}

TEST_F(CliErrors, TruncatedSafetensors) {
  auto m = copy_model("trunc");
  const std::string f = m + "/model.safetensors";
  auto bytes = read_bytes(f);
  write_text(f, bytes.substr(0, bytes.size() / 2));
  expect_error(m, *dir_ / "ok.jsonl", {"model.safetensors"});
}

TEST_F(CliErrors, HeaderLengthBeyondFile) {
  auto m = copy_model("hdr");
  const std::string f = m + "/model.safetensors";
  auto bytes = read_bytes(f);
  uint64_t n = bytes.size() * 4;
  std::memcpy(bytes.data(), &n, 8);
  write_text(f, bytes);
  expect_error(m, *dir_ / "ok.jsonl", {"model.safetensors", "header"});
}

TEST_F(CliErrors, CorruptHeaderJson) {
  auto m = copy_model("json");
  const std::string f = m + "/model.safetensors";
  auto bytes = read_bytes(f);
  bytes[9] = '#';
  write_text(f, bytes);
  expect_error(m, *dir_ / "ok.jsonl", {"model.safetensors"});
}

TEST_F(CliErrors, ConfigWeightsMismatchNamesTensor) {
  auto m = copy_model("mismatch");
  auto cfg = unime::test::read_text(m + "/config.json");
  auto pos = cfg.find("\"intermediate_size\": 128");
  ASSERT_NE(pos, std::string::npos) << cfg;
  cfg.replace(pos, 24, "\"intermediate_size\": 96");
  write_text(m + "/config.json", cfg);
  expect_error(m, *dir_ / "ok.jsonl", {"mlp.gate_proj.weight", "expected [96, 64]", "got [128, 64]"});
}

TEST_F(CliErrors, UnknownArchitecture) {
  auto m = copy_model("arch");
  write_text(m + "/config.json", "{\"architectures\": [\"BertModel\"]}");
  expect_error(m, *dir_ / "ok.jsonl", {"config.json", "BertModel", "LlavaForConditionalGeneration"});
}

TEST_F(CliErrors, MissingConfig) {
  auto m = copy_model("noconfig");
  fs::remove(m + "/config.json");
  expect_error(m, *dir_ / "ok.jsonl", {"config.json"});
}

TEST_F(CliErrors, JsonlNotJsonAndNotUtf8) {
  write_text(*dir_ / "bad.jsonl", "{\"input_ids\": [1]}\n{not json\n");
  expect_error(*dir_ / "model", *dir_ / "bad.jsonl", {"bad.jsonl:2", "not valid JSON"});
  write_text(*dir_ / "utf.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"\xff\xfe\"}\n");
  expect_error(*dir_ / "model", *dir_ / "utf.jsonl", {"utf.jsonl:2", "UTF-8"});
}

TEST_F(CliErrors, TooLongInputNeedsTruncate) {
  std::string ids = "1";
  for (int i = 0; i < 300; ++i) ids += ", 2";
  write_text(*dir_ / "long.jsonl", "{\"input_ids\": [" + ids + "]}\n");
  expect_error(*dir_ / "model", *dir_ / "long.jsonl", {"long.jsonl:1", "301 tokens", "--truncate"});
  auto r = run_cmd(unime::test::unime_bin() + " embed --model " + (*dir_ / "model") + " --input " +
                   (*dir_ / "long.jsonl") + " --output " + (*dir_ / "long.npy") + " --truncate");
  EXPECT_EQ(r.status, 0) << r.output;
}

TEST_F(CliErrors, TokenIdOutsideVocabulary) {
  write_text(*dir_ / "vocab.jsonl", "{\"input_ids\": [1, 99999]}\n");
  expect_error(*dir_ / "model", *dir_ / "vocab.jsonl", {"vocab.jsonl:1", "99999"});
}

// ---- images ----
uint32_t crc32(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char ch : s) {
    c ^= ch;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}
std::string be32(uint32_t v) {
  return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}
std::string chunk(const std::string& type, const std::string& data) {
  return be32(static_cast<uint32_t>(data.size())) + type + data + be32(crc32(type + data));
}

TEST_F(CliErrors, BadImages) {
  write_text(*dir_ / "notimg.png", "this is not an image");
  const std::string sig = "\x89PNG\r\n\x1a\n";
  std::string ihdr = be32(100000) + be32(100000) + std::string("\x08\x02\x00\x00\x00", 5);
  write_text(*dir_ / "huge.png", sig + chunk("IHDR", ihdr) + chunk("IDAT", std::string("\x78\x9c\x03\x00\x00\x00\x00\x01", 8)) + chunk("IEND", ""));
  std::string small = be32(16) + be32(16) + std::string("\x08\x02\x00\x00\x00", 5);
  write_text(*dir_ / "trunc.png", sig + chunk("IHDR", small) + "\x00\x00\x01\x00IDAT\x78\x9c");
  for (auto [name, needle] : {std::pair<std::string, std::string>{"notimg.png", "notimg.png"},
                              {"huge.png", "huge.png"}, {"trunc.png", "trunc.png"}}) {
    write_text(*dir_ / "img.jsonl", "{\"input_ids\": [1, 511, 2], \"image\": \"" + name + "\"}\n");
    expect_error(*dir_ / "model", *dir_ / "img.jsonl", {needle});
  }
  write_text(*dir_ / "img.jsonl", "{\"input_ids\": [1, 511, 2], \"image\": \"missing.png\"}\n");
  expect_error(*dir_ / "model", *dir_ / "img.jsonl", {"missing.png"});
}

TEST_F(CliErrors, InspectAndPreprocessWork) {
  auto r = run_cmd(unime::test::unime_bin() + " inspect --model " + (*dir_ / "model"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("LlavaForConditionalGeneration"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("template: plain"), std::string::npos) << r.output;
}

}  // namespace
