// bench-memory: load time, memory and embedding speed of one real-size checkpoint (random weights
// at the real config; real weights cannot be downloaded here):
//   unime random-model --preset bench/configs/qwen2-vl-7b --dtype bf16 --output /tmp/q7
//   bench-memory --model /tmp/q7 --storage bf16        # or --storage nf4
// One model and one storage per run, so that the process's peak RSS (VmHWM) is this model's own.
//   bf16: Model::load maps the safetensors shards and the weights view them (no copy; pages are
//         read on first use and counted as file-backed RSS, RssFile).
//   nf4:  the same load, then every decoder linear layer quantised to NF4 as `unime train --qlora`
//         does (train::quantize_nf4; vision tower and token embedding stay bf16), each dense
//         weight's pages dropped once quantised.
// Workloads (one input each, through embed::Encoder with input_ids, as `unime embed` runs them):
//   text:  512 text tokens
//   image: one --image-size px square image (default 672) through the model's own image
//          processor + 32 text tokens (LLaVA-1.5 336 px always; AnyRes / HD / native resolution
//          for the others)
// Reported per workload: the first embed and the median of the repeats after it (--repeats for
// text, default 2; --image-repeats, default 0: the image runs after text, so its one embed finds
// the decoder's weights resident, and a 7B image embed takes minutes); for image, also the image
// decoding + processor and the vision tower + projector, each timed once on its own. LM tokens/s
// (the decoder's real tokens, image features included) and useful GFLOP/s: 2 x (linear
// parameters) x tokens + attention 4 T^2 d per layer, for the decoder and the vision tower; no
// vocabulary head. Against the bf16 matmul peak measured in the same run (as bench-embed), and
// with the run's CPU time: below 100% of threads x wall, other jobs had part of the cores.
// Memory (/proc/self/status): RSS split into anonymous memory (activations, NF4 storage, copies)
// and file-backed pages (mapped weights), and the peak (VmHWM). --drop-cache first evicts the
// model's own files from the page cache (posix_fadvise DONTNEED), for a cold load.
// Usage: bench-memory --model DIR [--storage bf16|nf4] [--workloads text,image] [--repeats 2]
//                     [--image-repeats 0] [--image-size 672] [--text-tokens 512] [--threads N]
//                     [--drop-cache] [--no-peak] [--profile PREFIX]
// --profile: the torch profiler over each workload's last run, a chrome trace in PREFIX-<workload>.json.
#include <fcntl.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>

#include <torch/csrc/autograd/profiler_legacy.h>

#include "core/error.h"
#include "embed/encoder.h"
#include "models/linear.h"
#include "models/model.h"
#include "train/lora.h"
#include "unime/runtime.h"

namespace fs = std::filesystem;
using clk = std::chrono::steady_clock;
using unime::io::Arch;

template <typename... A>
static std::string str_printf(const char* fmt, A... a) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, a...);
  return buf;
}

static double cpu_secs() {  // this process's user + system CPU time
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static std::string loadavg() {  // the machine's 1-minute load: other jobs share these cores
  std::ifstream f("/proc/loadavg");
  std::string a;
  f >> a;
  return a;
}

static double secs(clk::time_point a) { return std::chrono::duration<double>(clk::now() - a).count(); }

// ---- memory ------------------------------------------------------------------------------------

struct Mem {
  double rss = 0, hwm = 0, anon = 0, file = 0;  // GiB: VmRSS, VmHWM, RssAnon, RssFile
};

static Mem mem() {
  Mem m;
  std::ifstream f("/proc/self/status");
  std::string line;
  auto kb = [&](const char* key, double* out) {
    if (line.rfind(key, 0) == 0) *out = std::atof(line.c_str() + std::strlen(key)) / (1024.0 * 1024.0);
  };
  while (std::getline(f, line)) {
    kb("VmRSS:", &m.rss);
    kb("VmHWM:", &m.hwm);
    kb("RssAnon:", &m.anon);
    kb("RssFile:", &m.file);
  }
  return m;
}

static void print_mem(const char* when, const Mem& m) {
  std::printf("  %-22s RSS %6.2f GiB (anon %6.2f, file %6.2f)   peak %6.2f GiB\n", when, m.rss, m.anon,
              m.file, m.hwm);
}

// ---- the machine's peak (as bench-embed) -------------------------------------------------------

static double matmul_rate(int64_t m, int64_t k, int64_t n) {
  auto a = torch::randn({m, k}).to(torch::kBFloat16), w = torch::randn({n, k}).to(torch::kBFloat16);
  for (int i = 0; i < 3; ++i) torch::nn::functional::linear(a, w);
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    auto t = clk::now();
    auto c = torch::nn::functional::linear(a, w);
    best = std::min(best, secs(t));
  }
  return 2.0 * m * k * n / best / 1e9;
}

// ---- FLOPs -------------------------------------------------------------------------------------

static int64_t linear_params(const std::shared_ptr<torch::nn::Module>& m) {
  int64_t n = 0;
  for (const auto& item : m->named_modules("", /*include_self=*/true))
    if (auto l = std::dynamic_pointer_cast<unime::models::LinearImpl>(item.value()))
      n += l->in_features * l->out_features;
  return n;
}

// decoder: every linear on each real token, attention 4 T^2 (H d) per layer; no vocabulary head
static double decoder_flops(unime::models::Model& m, int64_t T) {
  const auto& c = *m.config().text;
  const double hd = static_cast<double>(c.num_attention_heads) * (c.hidden_size / c.num_attention_heads);
  return 2.0 * linear_params(m.decoder_.ptr()) * T + 4.0 * T * T * hd * c.num_hidden_layers;
}

// vision tower + projector for one input's images: `crops` CLIP crops (or Qwen2-VL patches) and
// `features` decoder tokens they become
static double vision_flops(unime::models::Model& m, int64_t crops, int64_t features) {
  const auto& cfg = m.config();
  if (cfg.arch == Arch::Qwen2VL) {
    const auto& v = *cfg.qwen2vl_vision;
    const double N = static_cast<double>(crops), E = static_cast<double>(v.embed_dim);
    const double per_block = 2 * N * (4 * E * E + 2 * E * E * v.mlp_ratio) + 4 * N * N * E;
    const double merger = 2.0 * (N / 4) * (16 * E * E + 4 * E * v.hidden_size);
    const double patch = 2 * N * (v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size) * E;
    return v.depth * per_block + merger + patch;
  }
  const auto& v = *cfg.vision;
  const double g = static_cast<double>(v.image_size / v.patch_size), L = g * g + 1;
  const double D = static_cast<double>(v.hidden_size), I = static_cast<double>(v.intermediate_size);
  const double layers = static_cast<double>(v.num_hidden_layers - 1);  // features at layer -2
  const double per_crop = layers * (2 * L * (4 * D * D + 2 * D * I) + 4 * L * L * D) +
                          2 * g * g * (3.0 * v.patch_size * v.patch_size) * D;
  std::shared_ptr<torch::nn::Module> proj =
      m.projector_ ? m.projector_.ptr() : std::static_pointer_cast<torch::nn::Module>(m.phi3v_image_.ptr());
  return crops * per_crop + 2.0 * features * linear_params(proj);
}

// ---- inputs ------------------------------------------------------------------------------------

static std::string bmp(int64_t w, int64_t h, std::mt19937& rng) {  // 24-bit BMP, random pixels
  const int64_t row = (w * 3 + 3) / 4 * 4;
  std::string px(static_cast<size_t>(row * h), '\0');
  for (auto& p : px) p = static_cast<char>(rng());
  uint8_t hd[54] = {'B', 'M'};
  auto put32 = [&](int off, uint32_t v) { std::memcpy(hd + off, &v, 4); };
  put32(2, static_cast<uint32_t>(54 + px.size()));
  put32(10, 54);
  put32(14, 40);
  put32(18, static_cast<uint32_t>(w));
  put32(22, static_cast<uint32_t>(h));
  hd[26] = 1;
  hd[28] = 24;
  put32(34, static_cast<uint32_t>(px.size()));
  return std::string(reinterpret_cast<char*>(hd), 54) + px;
}

static void drop_cache(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    int fd = ::open(e.path().c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

int main(int argc, char** argv) {
  unime::early_init(argc, argv);
  std::string model_dir, storage = "bf16", workloads = "text,image";
  int threads = 0, repeats = 2, image_repeats = 0, image_size = 672, text_tokens = 512;
  std::string profile;
  bool drop = false, peak = true;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char* name) { return !std::strcmp(argv[i], name) && i + 1 < argc; };
    if (arg("--model")) model_dir = argv[++i];
    else if (arg("--storage")) storage = argv[++i];
    else if (arg("--workloads")) workloads = argv[++i];
    else if (arg("--repeats")) repeats = std::atoi(argv[++i]);
    else if (arg("--image-repeats")) image_repeats = std::atoi(argv[++i]);
    else if (arg("--image-size")) image_size = std::atoi(argv[++i]);
    else if (arg("--text-tokens")) text_tokens = std::atoi(argv[++i]);
    else if (arg("--profile")) profile = argv[++i];
    else if (arg("--threads")) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--drop-cache")) drop = true;
    else if (!std::strcmp(argv[i], "--no-peak")) peak = false;
    else {
      std::fprintf(stderr, "usage: bench-memory --model DIR [--storage bf16|nf4] [--workloads text,image] "
                           "[--repeats 2] [--image-repeats 0] [--image-size 672] [--text-tokens 512] [--threads N] [--drop-cache] "
                           "[--no-peak] [--profile PREFIX]\n");
      return 2;
    }
  }
  if (model_dir.empty() || (storage != "bf16" && storage != "nf4")) {
    std::fprintf(stderr, "bench-memory: --model DIR is required; --storage is bf16 or nf4\n");
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const int nt = unime::set_threads(threads);
  try {
    torch::NoGradGuard ng;
    const double peak_bf16 =
        peak ? std::max({matmul_rate(2048, 2048, 2048), matmul_rate(4096, 4096, 4096), matmul_rate(2048, 4096, 14336)})
             : 0.0;
    ::malloc_trim(0);  // the peak's matrices: give their memory back before measuring the model's
    int64_t file_bytes = 0;
    for (const auto& e : fs::directory_iterator(model_dir))
      if (e.path().extension() == ".safetensors") file_bytes += static_cast<int64_t>(e.file_size());
    if (drop) drop_cache(model_dir);
    std::printf("bench-memory: %s, %s, %d threads, safetensors %.2f GiB%s; bf16 matmul peak %.0f GFLOP/s; "
                "load average %s\n", model_dir.c_str(), storage.c_str(), nt, file_bytes / 1073741824.0,
                drop ? " (evicted from the page cache)" : "", peak_bf16, loadavg().c_str());
    print_mem("before load", mem());

    auto t0 = clk::now();
    auto model = unime::models::Model::load(model_dir, torch::kBFloat16);
    const double t_load = secs(t0);
    int64_t n_params = 0;
    for (auto& [k, p] : model->named_parameters()) n_params += p.numel();
    std::printf("  %s, %.3fB parameters, loaded in %.2f s\n", unime::io::arch_name(model->config().arch),
                n_params / 1e9, t_load);
    print_mem("after load", mem());
    double t_quant = 0;
    if (storage == "nf4") {
      t0 = clk::now();
      unime::train::freeze(*model);
      unime::train::quantize_nf4(*model, /*include_vision=*/false, /*double_quant=*/false);
      t_quant = secs(t0);
      std::printf("  quantised the decoder's linear layers to NF4 in %.1f s\n", t_quant);
      print_mem("after quantisation", mem());
    }

    unime::embed::Encoder enc(model, model_dir, "", /*truncate=*/false, 8192LL * 8192, torch::kCPU);
    const auto& cfg = model->config();
    const int64_t vocab = cfg.text->vocab_size;
    std::mt19937 rng(1);
    auto text_ids = [&](int64_t n) {
      std::vector<int64_t> ids(static_cast<size_t>(n));
      for (auto& x : ids) x = 1000 + static_cast<int64_t>(rng() % static_cast<uint32_t>(std::min<int64_t>(vocab, 30000) - 1000));
      return ids;
    };
    std::stringstream ws(workloads);
    std::string w;
    while (std::getline(ws, w, ',')) {
      unime::EmbedInput in;
      in.where = w;
      std::string desc;
      if (w == "text") {
        in.input_ids = text_ids(text_tokens);
        desc = std::to_string(text_tokens) + " text tokens";
      } else if (w == "image") {
        const int64_t S = cfg.arch == Arch::Llava ? cfg.vision->image_size : image_size;
        std::vector<int64_t> ids;
        if (cfg.arch == Arch::Qwen2VL) ids = {cfg.qwen2vl.vision_start_token_id, cfg.qwen2vl.image_token_id,
                                              cfg.qwen2vl.vision_end_token_id};
        else if (cfg.arch == Arch::Phi3V) ids = {1, -1};
        else ids = {1, model->image_token_id()};
        auto t = text_ids(32);
        ids.insert(ids.end(), t.begin(), t.end());
        in.input_ids = ids;
        in.image_bytes.push_back(bmp(S, S, rng));
        desc = std::to_string(S) + "x" + std::to_string(S) + " image + 32 text tokens";
      } else {
        throw unime::Error("--workloads: unknown workload '" + w + "' (text, image)");
      }
      const auto ids = enc.token_ids(in);
      const int64_t T = static_cast<int64_t>(ids.size());
      double flops = decoder_flops(*model, T);
      int64_t crops = 0;
      double t_vision = 0, t_pre = 0;
      if (w == "image") {
        const int64_t marker = model->image_token_id();
        const int64_t feats = std::count(ids.begin(), ids.end(), marker);
        t0 = clk::now();
        const auto im = enc.images(in);
        t_pre = secs(t0);
        crops = im.pixels.size(0);
        flops += vision_flops(*model, crops, feats);
        unime::models::TokenBatch tb;
        tb.pixels = im.pixels;
        tb.image_sizes = im.image_sizes;
        tb.image_grid_thw = im.grid_thw;
        t0 = clk::now();
        model->image_features(tb);  // the vision tower + projector alone, for the split below
        t_vision = secs(t0);
      }
      std::vector<double> times, cpu;
      const int reps = w == "image" ? image_repeats : repeats;
      for (int r = 0; r <= reps; ++r) {
        t0 = clk::now();
        const double c0 = cpu_secs();
        // the torch profiler over the last run: a chrome trace (chrome://tracing, or summed per op)
        std::optional<torch::autograd::profiler::RecordProfile> prof;
        if (!profile.empty() && r == reps) prof.emplace(str_printf("%s-%s.json", profile.c_str(), w.c_str()));
        auto e = enc.forward({&in}, {ids});
        prof.reset();
        times.push_back(secs(t0));
        cpu.push_back(cpu_secs() - c0);
        TORCH_CHECK(torch::isfinite(e).all().item<bool>(), "bench-memory: non-finite embedding");
      }
      const double first = times[0];
      std::vector<double> rest(times.begin() + 1, times.end());
      std::sort(rest.begin(), rest.end());
      const double med = rest.empty() ? first : rest[rest.size() / 2];
      const std::string when =
          rest.empty() ? str_printf("once %.2f s", first)
                       : str_printf("first %.2f s, then %.2f s (median of %d)", first, med, static_cast<int>(rest.size()));
      const std::string what = crops ? str_printf(" (%lld %s)", static_cast<long long>(crops),
                                                  cfg.arch == Arch::Qwen2VL ? "ViT patches" : crops == 1 ? "CLIP crop" : "CLIP crops")
                                     : std::string();
      std::printf("  %-5s %s: %lld LM tokens%s; %s: %.1f tokens/s, %.0f GFLOP/s = %.1f%% of the bf16 peak\n",
                  w.c_str(), desc.c_str(), static_cast<long long>(T), what.c_str(), when.c_str(), T / med,
                  flops / med / 1e9, peak_bf16 > 0 ? 100.0 * flops / med / 1e9 / peak_bf16 : 0.0);
      std::printf("        CPU time of the last run %.1f s = %.0f%% of %d threads x wall (below 100%%: other jobs "
                  "had the cores; load average now %s)\n", cpu.back(), 100.0 * cpu.back() / (nt * times.back()), nt,
                  loadavg().c_str());
      if (t_vision > 0)
        std::printf("        of which image decoding + preprocessing %.2f s, the vision tower + projector %.2f s "
                    "(%.0f GFLOP/s; each timed once on its own)\n", t_pre, t_vision,
                    vision_flops(*model, crops, std::count(ids.begin(), ids.end(), model->image_token_id())) / t_vision / 1e9);
      print_mem(("after " + w).c_str(), mem());
    }
    const Mem end = mem();
    std::printf("summary: %s | %.2fB | %s | peak RSS %.2f GiB | load %.1f s%s\n",
                unime::io::arch_name(cfg.arch), n_params / 1e9, storage.c_str(), end.hwm, t_load,
                storage == "nf4" ? (" + NF4 " + std::to_string(static_cast<int>(t_quant + 0.5)) + " s").c_str() : "");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench-memory: %s\n", e.what());
    return 1;
  }
  return 0;
}
