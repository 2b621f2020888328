// src/data/world-tasks.h - the MMEB-style tasks of the procedural world, one generator per
// dataset, shared by MMEB-train rows (stage 2) and MMEB-eval rows (see METHOD.md section 4-5).
//
// A generator draws one Item: a query (instruction text, optionally an image), its gold target,
// hard candidates (same objects with a changed attribute / relation / object: provably wrong)
// and, for label-style tasks, the rest of the label space. Every item also carries `accepts`,
// which decides whether any candidate would be a correct answer to it; eval candidate lists
// drop random candidates that it accepts, so index 0 is the only right answer.
//
// Instructions follow VLM2Vec/MMEB's wording for the dataset each task imitates
// (ImageNet-1K, SUN397, OK-VQA, MSCOCO_t2i/i2t, CIRR, NIGHTS, VisDial, MSCOCO grounding,
// RefCOCO); the image placeholder is "<|image_1|>".
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/world-scene.h"

namespace unime::data::world {

/// An image to render: the whole scene, or the crop around one region of it.
struct ImageSpec {
  Scene scene;
  bool is_crop = false;
  Object box;       // crop geometry (an object of the scene, or a dummy in an empty cell)
  int object = -1;  // index of the cropped object in scene.objects, -1 = empty-cell crop
};

/// The crop around object `object` of `s`.
ImageSpec object_crop(const Scene& s, int object);

struct Target {
  std::string text;                  // label / answer / caption, or the image instruction
  std::optional<ImageSpec> image;    // image candidates
  std::string key;                   // canonical answer for label-style tasks
  std::optional<Description> desc;   // caption candidates: the facts the caption states
  std::string path;                  // image path relative to the world root, once emitted
};

struct Item {
  std::string qry_text;
  std::optional<ImageSpec> qry_image;
  std::string qry_path;
  Target pos;
  std::vector<Target> hard;  // hardest first
  std::vector<Target> fill;  // the rest of a small label space (classification, VQA)
  std::function<bool(const Target&)> accepts;
};

struct TaskDef {
  const char* name;
  const char* meta_task;   // classification | vqa | retrieval | grounding
  const char* split;       // IND | OOD
  Split scenes;            // scene distribution of the eval queries
  const char* ood_reason;  // "" (IND), "heldout-combination", "heldout-expression"
  bool train_source;       // also an MMEB-train source (all IND datasets are)
  Item (*make)(const Rules& rules, Rng& rng, Split split);
};

/// All datasets, in output order.
const std::vector<TaskDef>& task_defs();

/// A question about a scene with its answer, wrong answers of the same type (hardest first)
/// and the answer space of the task (for padding the candidate list).
struct QA {
  std::string question, answer;
  std::vector<std::string> hard, pool;
};
/// Each returns false when the scene does not support the drawn question type. Under
/// Split::Train no wrong answer pairs a held-out combination with the question's object;
/// under Split::Ood every question is about objects[0] (the held-out combination).
bool attribute_qa(const Scene& s, Rng& rng, const Rules& rules, Split split, QA& qa);
bool relation_qa(const Scene& s, Rng& rng, const Rules& rules, Split split, QA& qa);
bool position_qa(const Scene& s, Rng& rng, const Rules& rules, Split split, QA& qa);

/// Description edits that make a true description false for `s` (hardest kinds: one changed
/// colour, shape, size or relation, swapped colours, an added object), de-duplicated.
/// With allow_add = false only edits that contradict the description itself remain (for NLI:
/// adding an object is neutral, not a contradiction).
std::vector<Description> false_descriptions(const Description& d, const Scene& s, Rng& rng,
                                            int max_count, bool allow_add = true);
/// Instruction texts of every task (without per-item content), for the tokenizer corpus.
std::vector<std::string> instruction_texts();
/// One random minimal scene edit (recolour, reshape, resize, move, swap colours, swap cells,
/// remove, add); returns false if the drawn edit was impossible.
bool random_edit(Scene& s, Rng& rng);

/// The caption-retrieval (image -> caption) instruction; the demo also evaluates image-text
/// retrieval and SugarCrepe with it on the image side.
inline constexpr const char* kInstrI2T =
    "<|image_1|>\nFind an image caption describing the given everyday image.";
inline constexpr const char* kTgtImage = "<|image_1|>\nRepresent the given image.";
inline constexpr const char* kTgtCrop = "<|image_1|>\nRepresent the given cropped image of the object";

}  // namespace unime::data::world
