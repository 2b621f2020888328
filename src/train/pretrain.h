// Stage 0 of the demo: next-token pretraining of a LLaVA-architecture model from random weights
// on image captions and VQA (the LLaVA recipe at toy scale: every weight trained, loss on the
// answer tokens only), saved as a normal Hugging Face checkpoint that `unime embed` and
// transformers' LlavaForConditionalGeneration load.
// Torch-free header (tools include it).
//
//   unime::train::PretrainOptions o;
//   o.config = cfg_json_text; o.tokenizer_dir = "out/tok"; o.data = {"w/captions.jsonl", "w/vqa.jsonl"};
//   o.output = "out/base"; o.steps = 600;
//   auto r = unime::train::run_pretrain(o);
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace unime::train {

struct PretrainOptions {
  std::string config;                 ///< config.json text of the model to build (LLaVA + Llama)
  std::string tokenizer_dir;          ///< tokenizer.json + tokenizer_config.json (copied to output)
  std::string preprocessor_config;    ///< preprocessor_config.json text (copied to output)
  /// JSONL files of {"image", "text"} (caption: the whole text is the target) or
  /// {"image", "question", "answer"} (the answer is the target); image paths relative to the file.
  std::vector<std::string> data;
  std::string output;                 ///< HF folder written at the end (atomically: OUT.tmp -> OUT)
  /// Optional: an HF folder (an earlier run's output, same architecture) whose weights replace the
  /// random initialisation - a second pretraining phase with other objectives. "" = from scratch.
  std::string init;
  /// Optional vision-tower pretraining first, as real ViTs are pretrained before LLaVA: a
  /// scenes.jsonl (world format: image, tone, texture, objects[{shape, colour, size, row, col}])
  /// labels the training images; the ViT + projector learn, through a temporary linear head,
  /// what is in each grid cell (colour, shape, size) and the background. 0 steps = off.
  std::string vision_labels;
  int64_t vision_steps = 0, vision_batch = 64;
  double vision_lr = 1e-3;
  /// With the warm-up: each cell's pooled feature also predicts which cell it is (a cross-entropy
  /// over the cells, added to the label groups' mean), so the features the decoder receives carry
  /// their position in their content, as a pretrained CLIP's patch features do (a Llama decoder's
  /// RoPE places tokens in attention scores only, never in the values it sums).
  bool vision_position = false;
  /// Optional scene-summary objective during next-token pretraining (needs vision_labels): each
  /// labelled image in a step is also run through one of these embedding prompts (full prompt
  /// strings with the image placeholder, tokenized as `unime embed` does), and a temporary linear
  /// head on the final-norm state of the prompt's last token - the state an embedding is pooled
  /// from - predicts the image's scene labels (every cell's colour, shape and size, the background).
  /// A web-scale MLLM's last token summarises what it sees; a toy one learns it here.
  /// The loss is added with summary_weight (0 = off).
  std::vector<std::string> summary_prompts;
  double summary_weight = 0;
  /// What the summary head predicts: "cells" (each cell's colour, shape, size and the background,
  /// one cross-entropy each) or "pairs" (which colour-shape pairs the scene holds, wherever they
  /// are: multi-label, binary cross-entropy) or "pairs+cells" (both losses added, on one head: the
  /// pairs say which colour goes with which shape, the cells where each object is).
  std::string summary_target = "cells";
  /// With the "pairs" or "pairs+cells" target: text embedding prompts holding "{text}" (e.g. the template's text
  /// prompt). Each labelled image's captions (rows with "text") are then also run through one of
  /// them, one random caption per image and step, and the same head predicts the colour-shape
  /// pairs the caption names (a colour word directly before a shape word), so the image and the
  /// caption embedding tokens learn one shared read-out of which colour goes with which shape
  /// (captions train the pairs part only: they do not place objects in cells).
  std::vector<std::string> summary_text_prompts;
  /// With text prompts: the chance (0..1) that a caption row is replaced by the caption with two of
  /// its objects' colours swapped (caption_colour_swap; its own pair targets), so that the head
  /// meets captions with the same colours and shapes but other pairs. 0 = off.
  double summary_text_swap = 0;
  /// With text prompts: the weight of an image-caption contrastive loss between the embedding
  /// tokens (0 = off; needs summary_text_swap 0): each step, the batch's image rows and their
  /// caption rows (L2-normalised final-norm states) form a symmetric InfoNCE at
  /// summary_contrast_temperature, and every caption's colour swap (caption_colour_swap) joins the
  /// image's candidates as a hard negative - NegCLIP's recipe (Yuksekgonul et al., 2023) against
  /// bag-of-words embeddings. The swap rows also train the pairs head on their own pairs.
  double summary_contrast = 0;
  double summary_contrast_temperature = 0.05;
  /// The contrast's hard negatives: "colour" (caption_colour_swap) or "relation"
  /// (caption_relation_swap: the two objects of a stated relation exchanged, "a left of b" against
  /// "b left of a" - the same pairs, so only where things are tells them apart).
  std::string summary_contrast_negatives = "colour";
  /// With the "pairs" or "pairs+cells" target: the head also predicts which spatial relations hold
  /// between the named objects (summary_relation_targets from an image's scene,
  /// caption_relation_targets from a caption; binary cross-entropy over the known ones), one
  /// read-out of where things are for both sides, as the pairs are one of what goes with what.
  bool summary_relations = false;
  /// With the "pairs" or "pairs+cells" target: the head also predicts each named object's column
  /// and row (summary_position_targets from an image's scene, caption_position_targets from a
  /// caption; cross-entropy against those distributions, unknown ones masked): a read-out that is
  /// linear in where things are, so that "a left of b" can meet an image as a difference of positions.
  /// The value is the part's weight within the summary loss (0 = off; 1 = as the pairs part).
  double summary_positions = 0;
  int64_t steps = 500, batch_size = 32, warmup_steps = 50;
  double lr = 1e-3, weight_decay = 0.01, max_grad_norm = 1.0;
  std::string schedule = "cosine";    ///< as train::schedule_lr
  std::string dtype = "f32";          ///< compute dtype (weights stay f32; bf16 = autocast-style)
  uint64_t seed = 1;
  int threads = 0;
  bool quiet = false;
};

struct PretrainResult {
  double first_loss = 0, last_loss = 0;  ///< mean over the first / last 10 steps
  double seconds = 0;
  double loss_own_image = 0, loss_other_image = 0;  ///< 64 examples, own vs another's image
  double vision_first_loss = 0, vision_last_loss = 0;  ///< the vision warm-up (means of 10 steps)
  double vision_accuracy = 0;  ///< the warm-up head's colour + shape accuracy on occupied cells (held-out images: every 8th, at most 256)
  double vision_colour_accuracy = 0, vision_shape_accuracy = 0;  ///< the same, per label
  double vision_position_accuracy = 0;  ///< held-out cells named right from their pooled feature (vision_position)
  double summary_first_loss = 0, summary_last_loss = 0;  ///< the scene-summary loss (means of 10 steps)
  double summary_text_first_loss = 0, summary_text_last_loss = 0;  ///< its caption rows alone (text prompts)
  double summary_cells_first_loss = 0, summary_cells_last_loss = 0;  ///< its cells part ("pairs+cells")
  double summary_relations_first_loss = 0, summary_relations_last_loss = 0;  ///< its relations part
  double summary_positions_first_loss = 0, summary_positions_last_loss = 0;  ///< its positions part
  double contrast_first_loss = 0, contrast_last_loss = 0;  ///< the image-caption contrastive loss (means of 10 steps)
  /// over the last 10 steps: how often an image's own caption scored highest among the batch's
  /// captions and swaps, and how often above that caption's colour swap
  double contrast_accuracy = 0, contrast_swap_accuracy = 0;
  int64_t parameters = 0, tokens = 0;    ///< trained tokens (targets)
};

/// The "pairs" summary target of one image: from its scene labels laid out as the vision warm-up's
/// ([colour x cells, shape x cells, ...], class 0 = empty, classes 1..colours-1 / 1..shapes-1), a
/// multi-hot vector over (colours-1) x (shapes-1) colour-shape pairs, colour-major: 1 where some
/// cell holds that colour on that shape.
std::vector<float> summary_pair_targets(const std::vector<int64_t>& labels, int64_t cells, int64_t colours,
                                        int64_t shapes);

/// The same multi-hot vector for a caption: the pairs it names as a colour word directly followed
/// by a shape word (words lower-cased, split at anything but letters); colour_names/shape_names
/// are the classes 1.. in order.
std::vector<float> caption_pair_targets(const std::string& caption, const std::vector<std::string>& colour_names,
                                        const std::vector<std::string>& shape_names);

/// The caption with the colour words of two of its colour-shape pairs exchanged (two pairs that
/// differ in colour and shape, picked with rng; "a"/"an" before them follow), or "" when it names
/// no two such pairs.
std::string caption_colour_swap(const std::string& caption, const std::vector<std::string>& colour_names,
                                const std::vector<std::string>& shape_names, std::mt19937_64& rng);

/// The caption with the two objects of one stated relation exchanged - a relation word ("left of",
/// "right of", "above", "over", "below", "under") alone between two consecutive named colour-shape
/// pairs of different kinds, picked with rng; each object's words ([size] colour shape) move as a
/// whole, "a"/"an" before them follow - or "" when it states no such relation.
std::string caption_relation_swap(const std::string& caption, const std::vector<std::string>& colour_names,
                                  const std::vector<std::string>& shape_names, std::mt19937_64& rng);

/// The "relations" part of the summary target (summary_relations): for each ordered pair (a, b) of
/// colour-shape pairs (P of them, indexed as above) and each relation r of left of, right of,
/// above, below (0..3, as the world: a's column / row smaller / larger than b's), at
/// (a * P + b) * 4 + r: 1 = holds, 0 = known not to hold, -1 = unknown. From scene labels (cells
/// row-major on a square grid): every two occupied cells, all four relations known (a pair that
/// occurs twice holds a relation if either instance does).
std::vector<float> summary_relation_targets(const std::vector<int64_t>& labels, int64_t cells, int64_t colours,
                                            int64_t shapes);

/// The same for a caption: each relation it states - a relation word ("left of", "right of",
/// "above", "over", "below", "under") between two consecutive named pairs - holds, and so does its
/// converse (b's opposite relation to a); the opposite relation and the reverse do not; the rest is
/// unknown (-1).
std::vector<float> caption_relation_targets(const std::string& caption, const std::vector<std::string>& colour_names,
                                            const std::vector<std::string>& shape_names);

/// The "positions" part of the summary target (summary_positions): for each colour-shape pair p (P
/// of them, indexed as above) and axis (0 = column, 1 = row), a distribution over the grid's
/// positions at (p * 2 + axis) * grid; -1 throughout = unknown. From scene labels: where the pair's
/// objects are (averaged when it occurs twice); pairs not in the scene unknown.
std::vector<float> summary_position_targets(const std::vector<int64_t>& labels, int64_t cells, int64_t colours,
                                            int64_t shapes);

/// The same for a caption: a pair in exactly one stated relation on an axis gets the chance of each
/// position given that relation, two distinct positions drawn uniformly (on 3 columns "a left of b"
/// puts a at 2/3, 1/3, 0 and b at 0, 1/3, 2/3); everything else unknown.
std::vector<float> caption_position_targets(const std::string& caption, const std::vector<std::string>& colour_names,
                                            const std::vector<std::string>& shape_names, int64_t grid);

/// Writes OUTPUT/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
/// preprocessor_config.json, metrics.jsonl}.
PretrainResult run_pretrain(const PretrainOptions& o);

}  // namespace unime::train
