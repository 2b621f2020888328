// `unime tokenize`: ids of texts with a Hugging Face tokenizer.json, one JSON line per input.
//   unime tokenize --tokenizer DIR_OR_FILE (--text T | --input IN.jsonl) [--no-special-tokens]
// Output (a contract other checks rely on): `{"ids": [...]}` per input, in input order; special
// tokens are added by default, as HF encode(text, add_special_tokens=True) does.
// IN.jsonl: one JSON object per line with a string field "text" (blank lines are skipped).
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "common.h"
#include "text/tokenizer.h"

namespace {

struct TokenizeArgs {
  std::string tokenizer, text, input;
  bool no_special = false;
};

std::vector<std::string> read_jsonl_texts(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  UNIME_CHECK(f.good(), path, ": cannot open file");
  std::vector<std::string> texts;
  std::string line;
  for (size_t line_no = 1; std::getline(f, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw unime::Error(unime::str(path, ":", line_no, ": invalid JSON: ", e.what()));
    }
    UNIME_CHECK(j.is_object(), path, ":", line_no, ": expected a JSON object, got ", j.type_name());
    auto it = j.find("text");
    UNIME_CHECK(it != j.end() && it->is_string(), path, ":", line_no,
                ": missing string field \"text\"");
    texts.push_back(it->get<std::string>());
  }
  UNIME_CHECK(!f.bad(), path, ": read error");
  return texts;
}

void print_ids(const std::vector<int32_t>& ids) {
  std::string out = "{\"ids\": [";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(ids[i]);
  }
  out += "]}\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  auto* cmd = app.add_subcommand("tokenize", "token ids of texts (Hugging Face tokenizer.json)");
  cmd->add_option("--tokenizer", args->tokenizer, "directory with tokenizer.json, or the file")
      ->required();
  auto* text = cmd->add_option("--text", args->text, "one text to tokenize");
  auto* input = cmd->add_option("--input", args->input, "JSONL file whose lines have a \"text\"");
  text->excludes(input);
  cmd->add_flag("--no-special-tokens", args->no_special,
                "do not add the post-processor's special tokens (BOS, ...)");
  cmd->callback([args, text, input]() {
    UNIME_CHECK(text->count() + input->count() == 1,
                "tokenize: give exactly one of --text or --input");
    const auto tok = unime::text::Tokenizer::load(args->tokenizer);
    if (text->count()) {
      print_ids(tok.encode(args->text, !args->no_special));
    } else {
      const auto texts = read_jsonl_texts(args->input);
      for (const auto& ids : tok.encode_batch(texts, !args->no_special)) print_ids(ids);
    }
    std::fflush(stdout);
  });
}
