// Tokenizer unit tests that need no reference library: a hand-made tokenizer.json with ids
// worked out by hand, the merge loops against each other, UTF-8 policy (strict input, Rust's
// lossy repair on decode), error messages for bad files, batch == single under threads, and the
// `unime tokenize` command-line contract.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <random>
#include <set>
#include <thread>

#include "core/error.h"
#include "text/tokenizer-bpe.h"
#include "text/tokenizer-unicode.h"
#include "text/tokenizer.h"
#include "test-tokenizer-util.h"

using nlohmann::json;
using unime::text::Tokenizer;
namespace fs = std::filesystem;
namespace ut = unime::test;
namespace td = unime::text::detail;

namespace {

// vocab: <unk>=0 a=1 b=2 c=3 ab=4 bc=5 abc=6 <s>=7; merges "b c" (rank 0) before "a b" (rank 1)
const char* kTinyJson = R"({
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [
    {"id": 7, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
     "normalized": false, "special": true},
    {"id": 8, "content": "<s><x>", "single_word": false, "lstrip": false, "rstrip": false,
     "normalized": false, "special": true}],
  "normalizer": null,
  "pre_tokenizer": {"type": "WhitespaceSplit"},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [7], "tokens": ["<s>"]}}},
  "decoder": null,
  "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "fuse_unk": true,
    "byte_fallback": false, "continuing_subword_prefix": null, "end_of_word_suffix": null,
    "vocab": {"<unk>": 0, "a": 1, "b": 2, "c": 3, "ab": 4, "bc": 5, "abc": 6, "<s>": 7},
    "merges": ["b c", ["a", "b"]]}
})";

const char* kTinyConfig = R"({"bos_token": "<s>", "eos_token": {"content": "<s><x>"},
                              "pad_token": null})";

using Ids = std::vector<int32_t>;

}  // namespace

TEST(TokenizerUnit, HandWorkedIds) {
  const auto tok = Tokenizer::from_json(kTinyJson, kTinyConfig, "tiny");
  EXPECT_EQ(tok.encode("abc", false), (Ids{1, 5}));  // rank 0 "b c" wins over "a b"
  EXPECT_EQ(tok.encode("abc"), (Ids{7, 1, 5}));      // TemplateProcessing adds <s>
  EXPECT_EQ(tok.encode("ab c", false), (Ids{4, 3}));
  EXPECT_EQ(tok.encode("xyz a", false), (Ids{0, 1}));         // unknowns fused into one <unk>
  EXPECT_EQ(tok.encode("<s><x>b", false), (Ids{8, 2}));       // longest added token wins
  EXPECT_EQ(tok.encode("b<s>b", false), (Ids{2, 7, 2}));      // added tokens split words
  EXPECT_EQ(tok.encode("", true), (Ids{7}));
  EXPECT_EQ(tok.decode({7, 1, 5}, false), "<s> a bc");  // no decoder: tokens joined by spaces
  EXPECT_EQ(tok.decode({7, 1, 5, 99, -3}, true), "a bc");  // unknown ids are skipped
  EXPECT_EQ(tok.vocab_size(), 9);  // "<s><x>" got the next id after the 8 vocab entries
  EXPECT_EQ(tok.token_to_id("<s><x>"), 8);
  EXPECT_EQ(tok.id_to_token(5), "bc");
  EXPECT_FALSE(tok.id_to_token(42).has_value());
  EXPECT_EQ(tok.bos_id(), 7);
  EXPECT_EQ(tok.eos_id(), 8);
  EXPECT_FALSE(tok.pad_id().has_value());
  EXPECT_TRUE(tok.is_special(7));
  EXPECT_FALSE(tok.is_special(1));
}

// transformers' LlamaTokenizerFast / GemmaTokenizerFast (update_post_processor in __init__) build
// the post-processor from tokenizer_config.json's add_bos_token (default true) and add_eos_token
// (default false), replacing tokenizer.json's; other classes keep tokenizer.json's. Phi-3 and
// Phi-3.5-V's files (tokenizer_class LlamaTokenizer) are this case.
TEST(TokenizerUnit, LlamaClassesFollowAddBosAddEos) {
  auto cfg = [](const std::string& extra) {
    return R"({"bos_token": "<s>", "eos_token": {"content": "<s><x>"}, "tokenizer_class": )" + extra + "}";
  };
  auto ids = [&](const std::string& config) { return Tokenizer::from_json(kTinyJson, config, "tiny").encode("abc"); };
  EXPECT_EQ(ids(cfg(R"("LlamaTokenizer", "add_bos_token": false, "add_eos_token": false)")), (Ids{1, 5}));
  EXPECT_EQ(ids(cfg(R"("LlamaTokenizerFast", "add_bos_token": true, "add_eos_token": true)")), (Ids{7, 1, 5, 8}));
  EXPECT_EQ(ids(cfg(R"("GemmaTokenizer", "add_bos_token": false, "add_eos_token": true)")), (Ids{1, 5, 8}));
  EXPECT_EQ(ids(cfg(R"("CodeLlamaTokenizer")")), (Ids{7, 1, 5}));                       // defaults: bos only
  EXPECT_EQ(ids(cfg(R"("LlamaTokenizer", "add_bos_token": null)")), (Ids{1, 5}));        // None is falsy
  EXPECT_EQ(ids(cfg(R"("PreTrainedTokenizerFast", "add_bos_token": false)")), (Ids{7, 1, 5}));  // tokenizer.json's
  EXPECT_EQ(ids(R"({"add_bos_token": false})"), (Ids{7, 1, 5}));                          // no class: tokenizer.json's
  const auto tok = Tokenizer::from_json(kTinyJson, cfg(R"("LlamaTokenizer", "add_bos_token": false)"), "tiny");
  EXPECT_EQ(tok.encode("abc", /*add_special_tokens=*/false), (Ids{1, 5}));
  EXPECT_EQ(tok.bos_id(), 7);  // still known, only not added
  try {
    Tokenizer::from_json(kTinyJson, R"({"tokenizer_class": "LlamaTokenizer", "add_eos_token": true, "bos_token": "<s>"})", "tiny");
    FAIL() << "add_eos_token without an eos_token must be an error";
  } catch (const unime::Error& e) {
    EXPECT_NE(std::string(e.what()).find("eos_token"), std::string::npos) << e.what();
  }
}

TEST(TokenizerUnit, InvalidUtf8IsAnError) {
  const auto tok = Tokenizer::from_json(kTinyJson, "", "tiny");
  for (const std::string bad : {std::string("\xFF"), std::string("ab\xC0\xAF"),
                                std::string("\xED\xA0\x80"), std::string("\xE4\xB8"),
                                std::string("\xF4\x90\x80\x80"), std::string("a\x80")}) {
    try {
      tok.encode(bad);
      ADD_FAILURE() << "no error for " << json(td::utf8_lossy(bad)).dump();
    } catch (const unime::Error& e) {
      EXPECT_NE(std::string(e.what()).find("not valid UTF-8"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(td::find_invalid_utf8("ok \xE4\xB8\xAD \xF0\x9F\x98\x80"), std::string::npos);
  EXPECT_EQ(td::find_invalid_utf8("ab\xE4\xB8"), 2u);
  EXPECT_EQ(td::find_invalid_utf8(std::string("a\0b", 3)), std::string::npos);
}

TEST(TokenizerUnit, LossyRepairMatchesRust) {
  // Rust String::from_utf8_lossy: one U+FFFD per maximal ill-formed subpart
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(td::utf8_lossy("a\xFF" "b"), "a" + r + "b");
  EXPECT_EQ(td::utf8_lossy("\xE4\xB8"), r);              // truncated 3-byte sequence: one
  EXPECT_EQ(td::utf8_lossy("\xE4\xB8" "a"), r + "a");
  EXPECT_EQ(td::utf8_lossy("\xF0\x80\x80"), r + r + r);  // F0 80 is never valid: three
  EXPECT_EQ(td::utf8_lossy("\xED\xA0\x80"), r + r + r);  // surrogate: three
  EXPECT_EQ(td::utf8_lossy("\xC0\xAF"), r + r);          // overlong: two
  EXPECT_EQ(td::utf8_lossy("\xE4\xB8\xAD"), "\xE4\xB8\xAD");
}

TEST(TokenizerUnit, HeapAndScanMergeLoopsAgree) {
  // random vocab over {a,b,c,d} grown by random merges; both merge loops must give equal ids
  std::mt19937 rng(11);
  td::Vocab vocab;
  std::vector<std::string> toks = {"a", "b", "c", "d"};
  for (size_t i = 0; i < toks.size(); ++i) vocab[toks[i]] = int32_t(i);
  std::vector<std::pair<std::string, std::string>> merges;
  std::set<std::pair<std::string, std::string>> seen;
  while (merges.size() < 300) {
    const auto& l = toks[rng() % toks.size()];
    const auto& r = toks[rng() % toks.size()];
    if (l.size() + r.size() > 8 || !seen.insert({l, r}).second) continue;
    merges.emplace_back(l, r);
    if (!vocab.count(l + r)) {
      vocab[l + r] = int32_t(toks.size());
      toks.push_back(l + r);
    }
  }
  const td::Bpe bpe(vocab, merges, {}, "random");
  for (int k = 0; k < 3000; ++k) {
    std::string w;
    const size_t n = 1 + rng() % (k < 2900 ? 40 : 400);
    for (size_t i = 0; i < n; ++i) w += "abcd"[rng() % 4];
    Ids scan, heap;
    bpe.tokenize_uncached(w, scan, false);
    bpe.tokenize_uncached(w, heap, true);
    ASSERT_EQ(scan, heap) << w;
    std::string joined;
    for (int32_t id : scan) joined += *bpe.id_to_token(id);
    ASSERT_EQ(joined, w);
  }
}

TEST(TokenizerUnit, BadFilesGiveOneLineErrors) {
  auto error_of = [](const std::string& text) -> std::string {
    try {
      Tokenizer::from_json(text, "", "x.json");
    } catch (const unime::Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of("{").find("x.json: invalid JSON"), std::string::npos);
  EXPECT_NE(error_of("[]").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(error_of("{}").find("missing field 'model'"), std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"type": "Unigram", "vocab": []}})")
                .find("unsupported model type 'Unigram'"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})")
                .find("'b' is not in the vocab"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b c"]}})")
                .find("expected \"left right\""),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"vocab": {}, "merges": []},
                         "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(["},
                                           "behavior": "Isolated"}})")
                .find("invalid regex"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"vocab": {}, "merges": []},
                         "normalizer": {"type": "Precompiled"}})")
                .find("unsupported normalizer type 'Precompiled'"),
            std::string::npos);
  try {
    Tokenizer::load("/nonexistent/dir");
    ADD_FAILURE() << "no error";
  } catch (const unime::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir"), std::string::npos);
  }
}

TEST(TokenizerUnit, BatchEqualsSingleAcrossThreads) {
  const auto tok = Tokenizer::from_json(kTinyJson, "", "tiny");
  std::mt19937 rng(5);
  std::vector<std::string> texts;
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    for (int k = 0, n = int(rng() % 30); k < n; ++k) s += " abcx<s>"[rng() % 8];
    texts.push_back(s);
  }
  const auto batch = tok.encode_batch(texts, true);
  ASSERT_EQ(batch.size(), texts.size());
  std::vector<std::thread> pool;
  std::vector<int> ok(4, 1);
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&, t] {
      for (size_t i = size_t(t); i < texts.size(); i += 4)
        if (tok.encode(texts[i], true) != batch[i]) ok[size_t(t)] = 0;
    });
  for (auto& th : pool) th.join();
  EXPECT_EQ(ok, std::vector<int>(4, 1));
  std::vector<std::string> with_bad = texts;
  with_bad[1500] = "\xFF";
  EXPECT_THROW(tok.encode_batch(with_bad), unime::Error);
}

TEST(TokenizerUnit, CommandLineContract) {
  const auto dir = ut::make_temp_dir("tokcli");
  ut::write_file(dir / "tokenizer.json", kTinyJson);
  ut::write_file(dir / "in.jsonl", "{\"text\": \"abc\"}\n\n{\"text\": \"ab c\", \"id\": 3}\n");
  ut::write_file(dir / "bad.jsonl", "{\"text\": \"abc\"}\n{\"txt\": 1}\n");
  auto run = [&](const std::string& args, int& rc) {
    const std::string cmd = std::string(UNIME_BIN) + " tokenize --tokenizer '" + dir.string() +
                            "' " + args + " > '" + (dir / "out").string() + "' 2>&1";
    rc = std::system(cmd.c_str());
    return ut::slurp(dir / "out");
  };
  int rc = 0;
  EXPECT_EQ(run("--text abc", rc), "{\"ids\": [7, 1, 5]}\n");
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(run("--text abc --no-special-tokens", rc), "{\"ids\": [1, 5]}\n");
  EXPECT_EQ(run("--input '" + (dir / "in.jsonl").string() + "'", rc),
            "{\"ids\": [7, 1, 5]}\n{\"ids\": [7, 4, 3]}\n");
  EXPECT_EQ(rc, 0);
  const std::string err = run("--input '" + (dir / "bad.jsonl").string() + "'", rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(err.find("error: "), std::string::npos) << err;
  EXPECT_NE(err.find("bad.jsonl:2: missing string field \"text\""), std::string::npos) << err;
  fs::remove_all(dir);
}
