// BPE training (src/text/bpe-train.h): the tokenizer.json it writes loads here and in the Rust
// tokenizers library (tests/node/hf-reference.js) with the same ids, merges follow the corpus'
// frequencies, output is deterministic, bad input gets a clear error.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test-tokenizer-util.h"
#include "text/bpe-train.h"
#include "text/tokenizer.h"

namespace ut = unime::test;
using unime::text::BpeTrainOptions;
using unime::text::Tokenizer;
using unime::text::train_bpe;

namespace {

std::vector<std::string> corpus() {
  std::vector<std::string> v;
  const char* colours[] = {"red", "green", "blue", "yellow"};
  const char* shapes[] = {"circle", "square", "triangle"};
  for (int i = 0; i < 60; ++i)
    v.push_back(std::string("A ") + colours[i % 4] + " " + shapes[i % 3] + " is left of a " +
                colours[(i + 1) % 4] + " " + shapes[(i + 2) % 3] + ".");
  v.push_back("What colour is the circle?\nyellow");
  return v;
}

}  // namespace

TEST(BpeTrain, LoadsAndRoundTrips) {
  BpeTrainOptions opt;
  opt.vocab_size = 400;
  auto t = train_bpe(corpus(), opt);
  EXPECT_LE(t.vocab_size, 400);
  EXPECT_GT(t.merges, 20);
  EXPECT_EQ(t.vocab_size, 5 + 256 + t.merges);  // no merge produced a duplicate string here
  auto tok = Tokenizer::from_json(t.tokenizer_json, t.tokenizer_config_json);
  EXPECT_EQ(tok.token_to_id("<image>"), 4);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.pad_id(), 3);
  // frequent words became single tokens (with their leading space)
  auto ids = tok.encode(" triangle", false);
  EXPECT_EQ(ids.size(), 1u);
  ids = tok.encode("A red circle is left of a blue square.");
  EXPECT_EQ(ids.front(), 1);  // bos from the post-processor
  EXPECT_LE(ids.size(), 12u);
  // text never seen still encodes through the byte alphabet and decodes back exactly
  for (std::string s : {"A red circle.", "zebra Ünïcödé ✓ 123", "<image>\nWhat colour?"}) {
    auto x = tok.encode(s, false);
    EXPECT_EQ(tok.decode(x), s);
  }
  EXPECT_EQ(tok.encode("<image>", false), std::vector<int32_t>{4});
}

TEST(BpeTrain, Deterministic) {
  BpeTrainOptions opt;
  opt.vocab_size = 420;
  EXPECT_EQ(train_bpe(corpus(), opt).tokenizer_json, train_bpe(corpus(), opt).tokenizer_json);
  // whole frequent words (with their leading space, GPT-2's "Ġ") are in the vocabulary
  auto j = nlohmann::json::parse(train_bpe(corpus(), opt).tokenizer_json);
  for (const char* w : {"\xC4\xA0" "circle", "\xC4\xA0" "triangle", "\xC4\xA0" "left"})
    EXPECT_TRUE(j["model"]["vocab"].contains(w)) << w;
  EXPECT_EQ(j["model"]["vocab"]["<image>"], 4);
}

TEST(BpeTrain, MinFrequencyStops) {
  BpeTrainOptions opt;
  opt.vocab_size = 100000;
  opt.min_frequency = 1000000;
  auto t = train_bpe(corpus(), opt);
  EXPECT_EQ(t.merges, 0);
  EXPECT_EQ(t.vocab_size, 5 + 256);
}

TEST(BpeTrain, BadInput) {
  BpeTrainOptions opt;
  try {
    train_bpe({"ok", std::string("bad \xff byte")}, opt);
    FAIL() << "no error";
  } catch (const unime::Error& e) {
    EXPECT_NE(std::string(e.what()).find("text 1 is not valid UTF-8"), std::string::npos) << e.what();
  }
  opt.vocab_size = 100;
  EXPECT_THROW(train_bpe(corpus(), opt), unime::Error);
  opt.vocab_size = 1000;
  opt.bos = "<bos>";
  EXPECT_THROW(train_bpe(corpus(), opt), unime::Error);
}

TEST(BpeTrain, SameIdsAsHuggingFace) {
  if (!ut::have_node_assets()) GTEST_SKIP();
  BpeTrainOptions opt;
  opt.vocab_size = 420;
  auto t = train_bpe(corpus(), opt);
  const auto dir = ut::make_temp_dir("bpe");
  ut::write_file(dir / "tokenizer.json", t.tokenizer_json);
  ut::write_file(dir / "tokenizer_config.json", t.tokenizer_config_json);
  std::vector<std::string> texts = corpus();
  texts.push_back("<image>\nSummary above image in one word:");
  texts.push_back("  two  spaces, tabs\tand\nnew lines; numbers 12345 and ünïcödé");
  texts.push_back("A purple star right of a black ring.<image><pad></s>");
  auto ref = ut::run_hf(dir / "tokenizer.json", texts);
  auto tok = Tokenizer::load(dir.string());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(tok.encode(texts[i], true), ref.with_special[i]) << texts[i];
    EXPECT_EQ(tok.encode(texts[i], false), ref.without_special[i]) << texts[i];
  }
  std::filesystem::remove_all(dir);
}
