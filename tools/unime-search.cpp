// `unime search --index INDEX_DIR (--text T | --image PATH) [--instruction I] [-k 10]`: embeds the
// query with the index's own model, adapters, dtype and template, and prints one JSON line per hit,
// best first: {"id": ..., "score": ..., "text": ..., "image": ...}. The score is the inner product
// of the unit-norm embeddings (= cosine), the same number as `unime embed` vectors give.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common.h"
#include "index/corpus.h"
#include "index/index.h"
#include "io/fs.h"
#include "unime/embedder.h"

void register_search(CLI::App& app) {
  auto* cmd = app.add_subcommand("search", "query an index: one JSON line per hit, best first");
  struct Args {
    std::string index, text, image, instruction;
    int64_t k = 10;
    unime::EmbedderOptions opt;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--index", a->index, "index folder (unime index build)")->required();
  cmd->add_option("--text", a->text, "query text (may hold <|image_1|> with --image)");
  cmd->add_option("--image", a->image, "query image file");
  cmd->add_option("--instruction", a->instruction, "task instruction (MMEB style)");
  cmd->add_option("-k,--top-k", a->k, "hits to print")->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--threads", a->opt.threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--device", a->opt.device, "cpu | cuda | cuda:N")->capture_default_str();
  cmd->callback([a]() {
    UNIME_CHECK(!a->text.empty() || !a->image.empty(), "search: give --text or --image (or both)");
    auto ix = unime::index::Index::open(a->index);
    unime::EmbedInput q;
    q.where = "query";
    q.text = a->text;
    q.instruction = a->instruction;
    if (!a->image.empty()) {
      UNIME_CHECK(unime::io::is_regular_file(a->image), a->image, ": query image not found");
      q.images.push_back(a->image);
    }
    auto emb = unime::index::load_for_index(*ix, a->opt);
    const std::vector<float> v = emb->embed({q});
    for (const auto& h : ix->search_one(v.data(), a->k)) {
      const nlohmann::json o = unime::index::payload_json(ix->payload(h.row));
      nlohmann::ordered_json line;  // keys in the documented order
      line["id"] = o["id"];
      line["score"] = h.score;
      line["text"] = o["text"];
      line["image"] = o["image"];
      std::printf("%s\n", line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    }
  });
}
