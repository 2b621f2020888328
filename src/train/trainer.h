// The UniME training loop (METHOD.md sections 2-3), one readable function per stage step:
//   stage 1 `distill`:  text-only, LLM LoRA, KL between teacher and student in-batch similarity
//                       softmaxes (loss-distill.h) against offline teacher embeddings (.npy);
//   stage 2 `instruct`: MMEB-train pairs, false-negative filter + top-k hard negatives + InfoNCE
//                       (loss-contrastive.h), GradCache on both sides (grad-cache.h).
// Around both: AdamW/SGD, linear or cosine schedule with warm-up, gradient clipping, seeded and
// deterministic (data order from the seed, dropout from (seed, step)), atomic checkpoints with
// optimizer and data position, --resume, metrics.jsonl, a progress bar, NaN/inf stops.
// Torch-free header (tools include it).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>


namespace unime::train {

struct TrainOptions {
  std::string stage;                 ///< "distill" | "instruct"
  std::string model, data, output;   ///< base model folder, data JSONL, output folder
  std::string image_root;            ///< stage 2: image paths resolve here ("" = the data's folder)
  std::string teacher;               ///< stage 1: teacher embeddings .npy [N, Dt]
  std::vector<std::string> lora_in;  ///< adapters folded into the base, in order, before training
  int64_t steps = 0;                 ///< 0 = one pass over the data
  int64_t batch_size = 32;           ///< global batch
  int64_t gc_chunk_size = 0;         ///< GradCache chunk for both sides (0 = off)
  int64_t gc_chunk_size_query = -1, gc_chunk_size_candidate = -1;  ///< -1 = gc_chunk_size
  int64_t hard_negatives = 8;        ///< k (0 = plain in-batch InfoNCE when no filter)
  std::optional<double> fn_margin = 0.1;  ///< beta; nullopt = no false-negative filter
  int64_t interleave_batch_size = 0;  ///< stage 2: runs of this many rows from one source ("dataset"); 0 = off
  bool group_rows = false;           ///< stage 1: an NLI row's sentences (sent0, sent1, hard_neg) share a batch
  double temperature = 0.02;
  std::string kl_direction = "teacher-student";
  double lr = 1e-4;
  std::string optimizer = "adamw";   ///< adamw | sgd
  double weight_decay = 0.0;
  std::string schedule = "linear";   ///< linear | cosine | constant
  int64_t warmup_steps = 0;
  double max_grad_norm = 1.0;        ///< 0 = no clipping
  struct Lora {                      ///< see train/lora.h LoraConfig (defaults: stage 2 recipe)
    int64_t r = 16;
    double alpha = 64, dropout = 0.1;
    std::vector<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                               "up_proj", "down_proj", "qkv_proj", "gate_up_proj"};
    bool qlora = false;
    bool include_vision = false;     ///< also adapt the vision tower and projector
  } lora;
  int64_t save_every = 0;            ///< checkpoint every N steps (0 = only at the end)
  bool resume = false;
  uint64_t seed = 42;
  int threads = 0;
  std::string dtype = "f32";         ///< base weights and activations; adapters stay f32
  std::string prompt_template;
  bool truncate = true;              ///< cut training inputs at the model's context
  bool quiet = false;                ///< no progress bar
};

/// Runs a whole training; writes OUT/adapter_model.safetensors, OUT/adapter_config.json,
/// OUT/metrics.jsonl and OUT/checkpoints/step-N/. Throws unime::Error for bad input.
void run_training(const TrainOptions& opt);

/// Learning rate of optimizer step s (1-based) of total, as HF's schedulers give it: linear warm-up
/// from 0, then linear / cosine decay towards 0 (or constant).
double schedule_lr(const std::string& schedule, double lr, int64_t s, int64_t total, int64_t warmup);

/// Row indices of the global batch of 0-based step `step` (batch B): an endless stream of epochs,
/// each a seeded shuffle (incomplete tail batches dropped). With chunk > 0 (--interleave-batch-size)
/// an epoch is a shuffle of runs of `chunk` rows that share a source (source[i] = row i's source
/// id), so a batch holds B / chunk sources at most. The same for every call with the same
/// arguments (resume, several processes). With chunk == kWholeGroups each source's rows stay
/// together in order (stage 1's NLI rows) and the groups are shuffled.
inline constexpr int64_t kWholeGroups = -1;
std::vector<int64_t> batch_rows(const std::vector<int64_t>& source, int64_t chunk, int64_t B, int64_t step,
                                uint64_t seed);

}  // namespace unime::train
