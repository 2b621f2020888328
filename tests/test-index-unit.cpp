// src/index without a model: Index::create / open / append / search on random unit vectors
// (flat = brute-force dot products; ivf / hnsw find the exact nearest neighbour of an indexed
// vector), the manifest's recipe round trip, id rules, leftovers of killed writers, bad files,
// and the /v1/search body parser.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "index/index.h"
#include "serve/request.h"
#include "test-util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace unime;

namespace {

std::vector<float> random_unit(int64_t n, int64_t d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g;
  std::vector<float> v(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t k = 0; k < d; ++k) s += std::pow(v[i * d + k] = g(rng), 2);
    for (int64_t k = 0; k < d; ++k) v[i * d + k] /= static_cast<float>(std::sqrt(s));
  }
  return v;
}

std::vector<index::Payload> payloads(int64_t n, int64_t first = 0) {
  std::vector<index::Payload> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    p[i].id = (first + i) % 2 ? json(first + i) : json("doc-" + std::to_string(first + i));
    p[i].text = "text " + std::to_string(first + i);
    if (i % 3 == 0) p[i].image = p[i].images.emplace_back("/data/img" + std::to_string(first + i) + ".png");
  }
  return p;
}

index::Recipe recipe() {
  index::Recipe r;
  r.model = "/models/tiny";
  r.lora = {"/adapters/a", "/adapters/b"};
  r.dtype = "bf16";
  r.template_name = "qwen2";
  return r;
}

// brute-force top-k by dot product
std::vector<int64_t> brute(const std::vector<float>& base, int64_t n, int64_t d, const float* q, int64_t k) {
  std::vector<std::pair<float, int64_t>> s;
  for (int64_t i = 0; i < n; ++i) {
    float dot = 0;
    for (int64_t t = 0; t < d; ++t) dot += base[i * d + t] * q[t];
    s.push_back({dot, i});
  }
  std::sort(s.begin(), s.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::vector<int64_t> out;
  for (int64_t i = 0; i < k; ++i) out.push_back(s[i].second);
  return out;
}

}  // namespace

TEST(IndexUnit, FlatSearchEqualsBruteForceAndRoundTrips) {
  test::TempDir t;
  const int64_t N = 200, D = 24;
  auto v = random_unit(N, D, 1);
  index::Index::create(t / "ix", recipe(), index::KindOptions{}, v, D, payloads(N));
  auto ix = index::Index::open(t / "ix");
  EXPECT_EQ(ix->size(), N);
  EXPECT_EQ(ix->dim(), D);
  EXPECT_EQ(ix->recipe().model, "/models/tiny");
  EXPECT_EQ(ix->recipe().lora, (std::vector<std::string>{"/adapters/a", "/adapters/b"}));
  EXPECT_EQ(ix->recipe().dtype, "bf16");
  EXPECT_EQ(ix->recipe().template_name, "qwen2");
  EXPECT_EQ(ix->manifest()["version"], index::kFormatVersion);
  EXPECT_EQ(ix->payload(3).image, "/data/img3.png");
  EXPECT_EQ(ix->payload(1).id, json(1));
  EXPECT_EQ(ix->payload(2).id, json("doc-2"));
  EXPECT_EQ(ix->find_id(json(7)), 7);
  EXPECT_EQ(ix->find_id(json("doc-4")), 4);
  EXPECT_EQ(ix->find_id(json("nope")), -1);
  auto q = random_unit(5, D, 2);
  auto hits = ix->search(q.data(), 5, 10);
  for (int64_t i = 0; i < 5; ++i) {
    auto want = brute(v, N, D, q.data() + i * D, 10);
    ASSERT_EQ(hits[i].size(), 10u);
    for (int64_t j = 0; j < 10; ++j) {
      EXPECT_EQ(hits[i][j].row, want[j]);
      float dot = 0;
      for (int64_t t2 = 0; t2 < D; ++t2) dot += v[want[j] * D + t2] * q[i * D + t2];
      EXPECT_NEAR(hits[i][j].score, dot, 1e-5);
    }
  }
  // k larger than the index: every row once
  EXPECT_EQ(ix->search(q.data(), 1, 1000)[0].size(), static_cast<size_t>(N));
}

TEST(IndexUnit, IvfAndHnswFindIndexedVectors) {
  for (const char* kind : {"ivf", "hnsw"}) {
    test::TempDir t;
    const int64_t N = 400, D = 16;
    auto v = random_unit(N, D, 3);
    index::KindOptions k;
    k.kind = kind;
    k.nprobe = 4;
    index::Index::create(t / "ix", recipe(), k, v, D, payloads(N));
    auto ix = index::Index::open(t / "ix");
    EXPECT_EQ(ix->kind().kind, kind);
    if (k.kind == "ivf") EXPECT_EQ(ix->manifest()["kind_options"]["nlist"], 80);  // 4 sqrt(400)
    int found = 0;
    for (int64_t i = 0; i < N; i += 7) {
      auto h = ix->search(v.data() + i * D, 1, 1)[0];
      found += !h.empty() && h[0].row == i;
    }
    EXPECT_GE(found, 55) << kind;  // 58 probes; approximate indexes may miss a few
    // append works on trained ivf / built hnsw too
    auto more = random_unit(10, D, 4);
    index::Index::append(t / "ix", more, payloads(10, N));
    ix = index::Index::open(t / "ix");
    EXPECT_EQ(ix->size(), N + 10);
  }
}

TEST(IndexUnit, AppendMakesANewGenerationAndCleansTheOld) {
  test::TempDir t;
  const int64_t D = 8;
  auto v = random_unit(20, D, 5);
  index::Index::create(t / "ix", recipe(), {}, v, D, payloads(20));
  // leftovers a killed writer could leave: a finished next generation never committed, temp files
  test::write_text(t / "ix/vectors-2.faiss", "half");
  test::write_text(t / "ix/payloads-2.jsonl.tmp.123.0", "x");
  test::write_text(t / "ix/manifest.json.tmp.99.1", "{");
  auto more = random_unit(5, D, 6);
  index::Index::append(t / "ix", more, payloads(5, 20));
  auto ix = index::Index::open(t / "ix");
  EXPECT_EQ(ix->size(), 25);
  EXPECT_EQ(ix->manifest()["generation"], 2);
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(t / "ix")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{".lock", "manifest.json", "payloads-2.jsonl", "vectors-2.faiss"}));
  // the appended rows are searchable under their ids
  auto h = ix->search(more.data() + 2 * D, 1, 1)[0];
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(ix->payload(h[0].row).id, payloads(5, 20)[2].id);
  // ids already there, or twice in the new rows -> error, index unchanged
  EXPECT_THROW(index::Index::append(t / "ix", random_unit(1, D, 7), payloads(1, 3)), Error);
  auto dup = payloads(2, 30);
  dup[1].id = dup[0].id;
  EXPECT_THROW(index::Index::append(t / "ix", random_unit(2, D, 8), dup), Error);
  EXPECT_EQ(index::Index::open(t / "ix")->size(), 25);
}

TEST(IndexUnit, BadInputsAreErrorsNamingTheFile) {
  test::TempDir t;
  const int64_t D = 8;
  auto expect_error = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error, expected one with '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto dup = payloads(3);
  dup[2].id = "doc-0";
  expect_error([&] { index::Index::create(t / "a", recipe(), {}, random_unit(3, D, 1), D, dup); }, "duplicate id");
  expect_error([&] { index::Index::open(t / "nothere"); }, "nothere");
  fs::create_directories(t / "empty");
  expect_error([&] { index::Index::open(t / "empty"); }, "no manifest.json");
  index::Index::create(t / "ix", recipe(), {}, random_unit(4, D, 1), D, payloads(4));
  expect_error([&] { index::Index::create(t / "ix", recipe(), {}, random_unit(4, D, 1), D, payloads(4)); },
               "not empty");
  index::KindOptions bad;
  bad.kind = "ivf";
  bad.nlist = 50;
  expect_error([&] { index::Index::create(t / "b", recipe(), bad, random_unit(4, D, 1), D, payloads(4)); }, "--nlist");
  // a manifest from a future version, a truncated FAISS file, a payload count mismatch
  const std::string m = test::read_text(t / "ix/manifest.json");
  json j = json::parse(m);
  j["version"] = 99;
  test::write_text(t / "ix/manifest.json", j.dump());
  expect_error([&] { index::Index::open(t / "ix"); }, "version 99");
  test::write_text(t / "ix/manifest.json", m);
  const std::string vec = test::read_text(t / "ix/vectors-1.faiss");
  test::write_text(t / "ix/vectors-1.faiss", vec.substr(0, vec.size() / 2));
  expect_error([&] { index::Index::open(t / "ix"); }, "vectors-1.faiss");
  test::write_text(t / "ix/vectors-1.faiss", vec);
  test::write_text(t / "ix/payloads-1.jsonl", test::read_text(t / "ix/payloads-1.jsonl") + "{\"id\": \"extra\"}\n");
  expect_error([&] { index::Index::open(t / "ix"); }, "count 4");
  // ids: strings or integers only
  expect_error([] { index::check_id(json(1.5), "c.jsonl:3"); }, "c.jsonl:3: 'id' must be a string or an integer");
  expect_error([] { index::check_id(json(nullptr), "c.jsonl:4"); }, "c.jsonl:4");
  EXPECT_EQ(index::id_key(json(7)), index::id_key(json("7")));  // 7 and "7" collide on purpose
}

TEST(IndexUnit, SearchRequestParser) {
  serve::ServerOptions opt;
  auto r = serve::parse_search_request(R"({"query": "a red circle", "k": 3})", opt);
  EXPECT_EQ(r.query.text, "a red circle");
  EXPECT_EQ(r.k, 3);
  r = serve::parse_search_request(R"({"query": {"content": [{"type": "text", "text": "x"}], "instruction": "Find"}})", opt);
  EXPECT_EQ(r.query.text, "x");
  EXPECT_EQ(r.query.instruction, "Find");
  EXPECT_EQ(r.k, 10);
  auto status = [&](const std::string& body) {
    try {
      serve::parse_search_request(body, opt);
      return 200;
    } catch (const serve::HttpError& e) {
      EXPECT_FALSE(e.message.empty());
      return e.status;
    }
  };
  EXPECT_EQ(status("{"), 400);
  EXPECT_EQ(status("[]"), 400);
  EXPECT_EQ(status(R"({"k": 3})"), 400);
  EXPECT_EQ(status(R"({"query": ""})"), 400);
  EXPECT_EQ(status(R"({"query": 5})"), 400);
  EXPECT_EQ(status(R"({"query": "x", "k": 0})"), 400);
  EXPECT_EQ(status(R"({"query": "x", "k": 1001})"), 400);
  EXPECT_EQ(status(R"({"query": "x", "k": "3"})"), 400);
  EXPECT_EQ(status(R"({"query": "x", "top_k": 3})"), 400);
  EXPECT_EQ(status(R"({"query": {"content": []}})"), 400);
  EXPECT_EQ(status(R"({"query": {"content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}})"), 400);
  EXPECT_EQ(status(R"({"query": {"content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}})"), 400);
}
