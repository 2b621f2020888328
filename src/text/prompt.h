// Embedding prompt templates (METHOD.md section 1): the backbone's chat wrapper around an
// "in one word" prompt for plain text / image inputs, and the MMEB task convention for inputs
// that carry an instruction. Built in per family; overridable from a JSON file.
#pragma once

#include <string>
#include <vector>

namespace unime::text {

struct PromptTemplate {
  std::string name;
  std::string text;        ///< text only; "{text}"
  std::string image;       ///< image(s) only; "{image}" = the placeholders, one line each
  std::string image_text;  ///< image(s) + text, no instruction; "{image}", "{text}"
  std::string task;        ///< with an instruction; "{content}" (see render_prompt)
  std::string image_placeholder;  ///< the backbone's image string, e.g. "<image>"; "{n}" in it
                                  ///< becomes the image's 1-based number (Phi-3-V "<|image_{n}|>")
};

/// Built-in names: llava-mistral, phi3v, llama3, qwen2, plain.
std::vector<std::string> builtin_template_names();
/// A built-in template by name, or a JSON file with the same keys (missing keys from "plain").
PromptTemplate load_template(const std::string& name_or_file);

/// Builds the prompt string for one input.
/// - "<|image_N|>" placeholders in text/instruction (MMEB convention) are rewritten to the
///   template's image_placeholder, and then no further placeholders are added;
/// - otherwise n_images placeholders (each followed by "\n") are put first;
/// - with an instruction: task with {content} = [placeholders] instruction ["\n" text];
/// - without: text / image / image_text template.
std::string render_prompt(const PromptTemplate& t, const std::string& instruction,
                          const std::string& text, int n_images);

/// Rewrites "<|image_N|>" (N = 1..99) to `placeholder`; returns the count rewritten via *count.
/// A "{n}" in placeholder is replaced by *next_index (incremented per rewrite), or by 1, 2, ...
std::string rewrite_image_placeholders(const std::string& s, const std::string& placeholder,
                                       int* count, int* next_index = nullptr);

/// Phi-3-V processor (processing_phi3_v.py): splits s at each "<|image_N|>" tag (N >= 1).
/// Returns the k + 1 text chunks around k tags; *tags receives each tag's N in order.
std::vector<std::string> split_image_tags(const std::string& s, std::vector<int64_t>* tags);

}  // namespace unime::text
