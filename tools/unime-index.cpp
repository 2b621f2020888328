// `unime index build --model DIR --input CORPUS.jsonl --output INDEX_DIR [--kind flat|ivf|hnsw]`:
// embeds a corpus into a FAISS index with ids and payloads beside it, and records the model,
// adapters, dtype and template in its manifest.
// `unime index add --index INDEX_DIR --input MORE.jsonl`: appends, all-or-nothing, embedding with
// exactly the manifest's recipe. Format and update protocol: src/index/index.h.
#include <cstdio>

#include "common.h"
#include "index/corpus.h"
#include "index/index.h"
#include "unime/embedder.h"

namespace unime::tools {
void add_model_options(CLI::App* cmd, std::string& model, EmbedderOptions& opt);  // unime-embed.cpp
}  // namespace unime::tools

void register_index(CLI::App& app) {
  auto* cmd = app.add_subcommand("index", "build or extend a FAISS search index of embeddings");
  cmd->require_subcommand(1);

  // ---- build ----
  {
    auto* b = cmd->add_subcommand("build", "embed a corpus JSONL (rows with an 'id') into a new index");
    struct Args {
      std::string model, input, output;
      unime::EmbedderOptions opt;
      unime::index::KindOptions kind;
    };
    auto a = std::make_shared<Args>();
    unime::tools::add_model_options(b, a->model, a->opt);
    b->add_option("--input", a->input, "corpus JSONL: id + text / image / images / instruction per line")->required();
    b->add_option("--output", a->output, "index folder to create (absent or empty)")->required();
    b->add_option("--kind", a->kind.kind, "flat (exact inner product) | ivf | hnsw")
        ->capture_default_str()->check(CLI::IsMember({"flat", "ivf", "hnsw"}));
    b->add_option("--nlist", a->kind.nlist, "ivf: inverted lists (0 = 4 sqrt(N))")->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    b->add_option("--nprobe", a->kind.nprobe, "ivf: lists searched per query")->capture_default_str()
        ->check(CLI::PositiveNumber);
    b->add_option("--hnsw-m", a->kind.hnsw_m, "hnsw: neighbours per node")->capture_default_str()
        ->check(CLI::Range(int64_t{2}, int64_t{512}));
    b->add_option("--ef-construction", a->kind.ef_construction, "hnsw: build-time candidate list")
        ->capture_default_str()->check(CLI::PositiveNumber);
    b->add_option("--ef-search", a->kind.ef_search, "hnsw: query-time candidate list")->capture_default_str()
        ->check(CLI::PositiveNumber);
    b->callback([a]() {
      std::vector<unime::EmbedInput> inputs;
      std::vector<unime::index::Payload> payloads;
      unime::index::read_corpus(a->input, inputs, payloads);
      unime::index::Recipe recipe;
      auto emb = unime::index::load_for_build(a->model, a->opt, recipe);
      auto vec = unime::index::embed_with_progress(*emb, inputs, "index build");
      unime::index::Index::create(a->output, recipe, a->kind, vec, emb->dim(), payloads);
      std::printf("%s: %zu rows, dim %lld, %s index (model %s, dtype %s, template %s)\n", a->output.c_str(),
                  payloads.size(), static_cast<long long>(emb->dim()), a->kind.kind.c_str(), recipe.model.c_str(),
                  recipe.dtype.c_str(), recipe.template_name.c_str());
    });
  }

  // ---- add ----
  {
    auto* ad = cmd->add_subcommand("add", "append corpus rows to an index (all-or-nothing)");
    struct Args {
      std::string index, input;
      unime::EmbedderOptions opt;
    };
    auto a = std::make_shared<Args>();
    ad->add_option("--index", a->index, "index folder")->required();
    ad->add_option("--input", a->input, "corpus JSONL: rows with new ids")->required();
    ad->add_option("--batch-size", a->opt.batch_size, "inputs per forward pass")->capture_default_str();
    ad->add_option("--threads", a->opt.threads, "CPU threads (0 = all cores)")->capture_default_str();
    ad->add_option("--device", a->opt.device, "cpu | cuda | cuda:N")->capture_default_str();
    ad->callback([a]() {
      auto ix = unime::index::Index::open(a->index);
      std::vector<unime::EmbedInput> inputs;
      std::vector<unime::index::Payload> payloads;
      unime::index::read_corpus(a->input, inputs, payloads);
      for (const auto& p : payloads)  // fail before embedding (append checks again under the lock)
        UNIME_CHECK(ix->find_id(p.id) < 0, a->input, ": id ", p.id.dump(), " is already in ", a->index);
      auto emb = unime::index::load_for_index(*ix, a->opt);
      auto vec = unime::index::embed_with_progress(*emb, inputs, "index add");
      const int64_t before = ix->size();
      ix.reset();
      unime::index::Index::append(a->index, vec, payloads);
      std::printf("%s: %lld + %zu rows\n", a->index.c_str(), static_cast<long long>(before), payloads.size());
    });
  }
}
