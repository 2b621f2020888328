// unime serve, no model: base64 against RFC 4648's test vectors and Python's base64 module,
// and the OpenAI request parser (input forms, types, limits, data URLs) on hand-written bodies.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "serve/base64.h"
#include "serve/server.h"
#include "test-util.h"

using namespace unime;
using namespace unime::serve;
using nlohmann::json;

TEST(ServeBase64, Rfc4648Vectors) {
  const std::vector<std::pair<std::string, std::string>> v = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                              {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
                                                              {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, enc] : v) {
    EXPECT_EQ(base64_encode(plain), enc) << plain;
    auto d = base64_decode(enc);
    ASSERT_TRUE(d) << enc;
    EXPECT_EQ(*d, plain);
  }
  EXPECT_EQ(*base64_decode("Zg"), "f");  // padding may be omitted
  EXPECT_EQ(*base64_decode("Zm8"), "fo");
}

TEST(ServeBase64, RejectsBadInput) {
  for (const char* bad : {"Zm9v!", "Z", "Zm9vY", "Zh==", "Zm=8", "Z===", "Zm9v\n", "Zg=", "====", "Zm 9v"})
    EXPECT_FALSE(base64_decode(bad)) << bad;
}

TEST(ServeBase64, MatchesPythonOnRandomBytes) {
  std::mt19937 rng(7);
  std::string bytes;
  for (int i = 0; i < 1000; ++i) bytes += static_cast<char>(rng() & 0xFF);
  test::TempDir tmp;
  test::write_text(tmp / "in.bin", bytes);
  auto r = test::run_cmd(test::python() + " -c \"import base64,sys; sys.stdout.write(base64.b64encode(open('" +
                         (tmp / "in.bin") + "','rb').read()).decode())\"");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(base64_encode(bytes), r.output);
  for (size_t n = 0; n < 40; ++n) EXPECT_EQ(*base64_decode(base64_encode(bytes.substr(0, n))), bytes.substr(0, n));
}

namespace {
int status_of(const std::string& body, const ServerOptions& opt = {}) {
  try {
    parse_embeddings_request(body, opt);
    return 200;
  } catch (const HttpError& e) {
    return e.status;
  }
}
}  // namespace

TEST(ServeParse, InputForms) {
  ServerOptions opt;
  auto r = parse_embeddings_request(R"({"input": "hi", "model": "x"})", opt);
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_EQ(r.inputs[0].text, "hi");
  EXPECT_FALSE(r.base64);
  r = parse_embeddings_request(R"({"input": ["a", "b"], "encoding_format": "base64"})", opt);
  ASSERT_EQ(r.inputs.size(), 2u);
  EXPECT_EQ(r.inputs[1].text, "b");
  EXPECT_TRUE(r.base64);
  r = parse_embeddings_request(R"({"input": [1, 2, 3]})", opt);  // one input of token ids
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_EQ(*r.inputs[0].input_ids, (std::vector<int64_t>{1, 2, 3}));
  r = parse_embeddings_request(R"({"input": [[1, 2], [3]]})", opt);
  ASSERT_EQ(r.inputs.size(), 2u);
  EXPECT_EQ(*r.inputs[1].input_ids, (std::vector<int64_t>{3}));
  r = parse_embeddings_request(
      R"({"input": [{"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "instruction": "Find"}]})", opt);
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_EQ(r.inputs[0].text, "a\nb");
  EXPECT_EQ(r.inputs[0].instruction, "Find");
  EXPECT_TRUE(r.inputs[0].image_bytes.empty());
}

TEST(ServeParse, Rejects) {
  for (const char* b : {"", "{", "null", R"({"input": null})", R"({"input": {}})", R"({"input": [true]})",
                        R"({"input": [[]]})", R"({"input": [{"content": 3}]})", R"({"input": [{"content": "a", "x": 1}]})",
                        R"({"input": "a", "dimensions": 8})", R"({"input": "a", "encoding_format": 1})"})
    EXPECT_EQ(status_of(b), 400) << b;
  ServerOptions small;
  small.max_inputs = 2;
  EXPECT_EQ(status_of(R"({"input": ["a", "b"]})", small), 200);
  EXPECT_EQ(status_of(R"({"input": ["a", "b", "c"]})", small), 400);
  EXPECT_EQ(status_of(R"({"input": [1, 2, 3]})", small), 200);  // one input, three tokens
  json e = json::parse(error_json(HttpError{400, "bad thing", "input"}));
  EXPECT_EQ(e["error"]["message"], "bad thing");
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["param"], "input");
}

TEST(ServeParse, LocalFilesOnlyUnderTheAllowedRoot) {
  test::TempDir tmp;
  std::filesystem::create_directories(tmp / "media");
  auto r = test::run_cmd(test::python() + " -c \"from PIL import Image; Image.new('RGB', (9, 7), (1, 2, 3)).save('" +
                         (tmp / "media/ok.png") + "'); Image.new('RGB', (9, 7)).save('" + (tmp / "outside.png") + "')\"");
  ASSERT_EQ(r.status, 0) << r.output;
  test::write_text(tmp / "media/not-image.png", "hello");
  auto body = [](const std::string& url) {
    return json{{"input", json::array({{{"content", json::array({{{"type", "image_url"}, {"image_url", {{"url", url}}}}})}}})}}.dump();
  };
  ServerOptions off, on;
  on.allowed_local_media_root = tmp / "media";
  EXPECT_EQ(status_of(body("file://" + (tmp / "media/ok.png")), off), 400);
  auto req = parse_embeddings_request(body("file://" + (tmp / "media/ok.png")), on);
  ASSERT_EQ(req.inputs[0].image_bytes.size(), 1u);
  EXPECT_EQ(req.inputs[0].image_bytes[0], test::read_text(tmp / "media/ok.png"));
  EXPECT_EQ(status_of(body("file://" + (tmp / "media/../outside.png")), on), 400);
  EXPECT_EQ(status_of(body("file://" + (tmp / "outside.png")), on), 400);
  EXPECT_EQ(status_of(body("file://" + (tmp / "media/not-image.png")), on), 400);
  EXPECT_EQ(status_of(body("file://" + (tmp / "media/missing.png")), on), 400);
  on.max_image_pixels = 62;  // 9 x 7 = 63
  EXPECT_EQ(status_of(body("file://" + (tmp / "media/ok.png")), on), 400);
}
