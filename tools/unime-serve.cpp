// `unime serve --model DIR [--lora DIR] [--dtype f32|bf16] [--host 127.0.0.1] [--port 8080]`: an
// OpenAI-compatible embeddings server (POST /v1/embeddings, GET /health, /v1/models, /metrics).
// `--index DIR` adds POST /v1/search (the model, adapters, dtype and template come from the index,
// so queries are embedded as its corpus was); `--ui` adds the search page at GET /.
// SIGTERM / SIGINT: stop accepting, answer every request already received, exit 0.
// Design and request format: docs/README-dev-serve.md.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "common.h"
#include "index/corpus.h"
#include "index/index.h"
#include "serve/batcher.h"
#include "serve/metrics.h"
#include "serve/server.h"
#include "unime/embedder.h"

namespace {

// POST /v1/search over an on-disk index (src/index), behind the server's FAISS-free interface
class IndexBackend final : public unime::serve::SearchBackend {
 public:
  explicit IndexBackend(const unime::index::Index& ix) : ix_(ix) {}
  int64_t dim() const override { return ix_.dim(); }
  int64_t size() const override { return ix_.size(); }
  std::vector<Hit> search(const float* q, int64_t k) const override {
    std::vector<Hit> out;
    for (const auto& h : ix_.search_one(q, k)) {
      const auto& p = ix_.payload(h.row);
      out.push_back(Hit{p.id.dump(), h.score, p.text, p.image, h.row});
    }
    return out;
  }
  std::string image_path(int64_t row) const override {
    return row >= 0 && row < ix_.size() ? ix_.payload(row).image : std::string();
  }

 private:
  const unime::index::Index& ix_;
};

volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

}  // namespace

void register_serve(CLI::App& app) {
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible embeddings server (POST /v1/embeddings)");
  struct Args {
    std::string model, index;
    bool ui = false;
    unime::EmbedderOptions opt;
    unime::serve::ServerOptions srv;
    unime::serve::BatcherOptions batch;
    int workers = 0;
    CLI::Option* dtype_opt = nullptr;
    CLI::Option* template_opt = nullptr;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Hugging Face model folder (with --index: default and must be the index's)");
  cmd->add_option("--index", a->index, "index folder (unime index build): enables POST /v1/search");
  cmd->add_flag("--ui", a->ui, "serve a search page at / (needs --index)");
  cmd->add_option("--lora", a->opt.lora, "PEFT LoRA adapter folder (repeatable: merged in order)");
  a->dtype_opt = cmd->add_option("--dtype", a->opt.dtype, "f32 | bf16 | f16 | auto (bf16 where the CPU has it)")
                     ->capture_default_str();
  cmd->add_option("--threads", a->opt.threads, "CPU threads for inference (0 = all cores)")->capture_default_str();
  a->template_opt = cmd->add_option("--template", a->opt.prompt_template,
                                    "prompt template: llava-mistral, phi3v, llama3, qwen2, plain, or a JSON file");
  cmd->add_option("--device", a->opt.device, "cpu | cuda | cuda:N")->capture_default_str();
  cmd->add_flag("--truncate", a->opt.truncate, "cut inputs longer than max_position_embeddings");
  cmd->add_option("--host", a->srv.host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", a->srv.port, "port (0 = any free port, printed at start)")->capture_default_str();
  cmd->add_option("--served-model-name", a->srv.model_name, "model id in answers (default: the folder's name)");
  cmd->add_option("--workers", a->workers,
                  "inference threads, each with its own copy of the model (0 = auto: one per core for "
                  "models under 256 MiB on the CPU, else 1)")
      ->capture_default_str()->check(CLI::Range(0, 64));
  cmd->add_option("--max-batch", a->batch.max_batch, "inputs per forward pass")->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->add_option("--max-wait-ms", a->batch.max_wait_ms, "how long a batch may wait for more jobs (0: a free worker takes what is queued at once)")->capture_default_str()->check(CLI::Range(0, 10000));
  cmd->add_option("--max-queue", a->batch.max_queue_inputs, "queued inputs before answering 503")
      ->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--max-inputs", a->srv.max_inputs, "inputs per request")->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--max-input-tokens", a->batch.max_input_tokens, "tokens per input (0 = the model's limit)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-body-bytes", a->srv.max_body_bytes, "request body limit (413 above)")
      ->capture_default_str()->check(CLI::Range(int64_t{1024}, int64_t{1} << 34));
  cmd->add_option("--max-image-pixels", a->srv.max_image_pixels, "pixels per image")->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 31));
  cmd->add_option("--allowed-local-media-path", a->srv.allowed_local_media_root,
                  "allow file:// image URLs under this folder (off by default)")->check(CLI::ExistingDirectory);
  cmd->add_option("--http-threads", a->srv.http_threads, "connections served at once")->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->callback([a]() {
    namespace fs = std::filesystem;
    auto& o = a->opt;
    UNIME_CHECK(!a->ui || !a->index.empty(), "serve: --ui needs --index DIR (the page searches an index)");
    std::unique_ptr<unime::index::Index> ix;
    if (!a->index.empty()) {
      ix = unime::index::Index::open(a->index);
      unime::index::check_same_model(*ix, a->model, o.lora);
      const auto& r = ix->recipe();
      // queries must be embedded exactly as the indexed rows were: an explicit --dtype or
      // --template that differs from the index's recipe is an error, not silently replaced
      UNIME_CHECK(a->dtype_opt->count() == 0 || o.dtype == r.dtype, "serve: --dtype ", o.dtype,
                  " differs from the index's ", r.dtype, " (", a->index, "); leave it out with --index");
      UNIME_CHECK(a->template_opt->count() == 0 || o.prompt_template == r.template_name, "serve: --template ",
                  o.prompt_template, " differs from the index's ", r.template_name, " (", a->index,
                  "); leave it out with --index");
      a->model = r.model;
      o.lora = r.lora;
      o.dtype = r.dtype;
      o.prompt_template = r.template_name;
      o.truncate = r.truncate;
      std::fprintf(stderr, "index: %s, %lld rows, %s (model %s)\n", a->index.c_str(),
                   static_cast<long long>(ix->size()), r.dtype.c_str(), r.model.c_str());
    }
    UNIME_CHECK(!a->model.empty(), "serve: give --model DIR (or --index DIR)");
    a->srv.ui = a->ui;
    o.batch_size = a->batch.max_batch;  // one forward pass per dynamic batch
    o.max_image_pixels = a->srv.max_image_pixels;
    if (a->workers == 0) a->workers = unime::serve::auto_workers(a->model, o.device, o.threads);
    o.threads = unime::threads_per_worker(o.threads, a->workers);
    if (a->srv.model_name == "unime") {
      const fs::path p = fs::path(a->model).lexically_normal();
      const std::string name = (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
      if (!name.empty()) a->srv.model_name = name;
    }
    std::vector<std::unique_ptr<unime::Embedder>> embedders;
    for (int i = 0; i < a->workers; ++i) embedders.push_back(unime::Embedder::load(a->model, o));
    std::fprintf(stderr, "model: %s; %d worker%s x %d thread%s\n", embedders[0]->describe().c_str(), a->workers,
                 a->workers == 1 ? "" : "s", o.threads, o.threads == 1 ? "" : "s");
    unime::serve::Metrics metrics;
    unime::serve::Batcher batcher(std::move(embedders), a->batch, metrics);
    UNIME_CHECK(!ix || batcher.dim() == ix->dim(), a->index, ": the model gives dim ", batcher.dim(),
                " but the index holds dim ", ix->dim());
    std::unique_ptr<IndexBackend> backend;
    if (ix) backend = std::make_unique<IndexBackend>(*ix);
    unime::serve::Server server(a->srv, batcher, metrics, backend.get());
    const int port = server.bind();

    g_stop_signal = 0;
    std::signal(SIGTERM, on_stop_signal);
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGPIPE, SIG_IGN);
    std::atomic<bool> done{false};
    std::thread watcher([&] {  // the signal handler only sets a flag; stop() runs here
      while (!done && !g_stop_signal) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (g_stop_signal) {
        std::fprintf(stderr, "signal %d: draining in-flight requests\n", static_cast<int>(g_stop_signal));
        server.stop();
      }
    });
    std::printf("listening on http://%s:%d (model '%s')\n", a->srv.host.c_str(), port, a->srv.model_name.c_str());
    std::fflush(stdout);
    server.listen();  // returns after stop() once every accepted connection is answered
    done = true;
    watcher.join();
    batcher.stop();
    std::fprintf(stderr, "stopped\n");
  });
}
