// Prompt templates: the released models' prompts, character for character, and the MMEB rules.
#include <gtest/gtest.h>

#include "core/error.h"
#include "text/prompt.h"

using namespace unime::text;

TEST(Prompt, LlavaMistralTextAndImage) {
  auto t = load_template("llava-mistral");
  EXPECT_EQ(render_prompt(t, "", "a cat", 0),
            "[INST] a cat\nSummary above sentence in one word: [/INST]");
  EXPECT_EQ(render_prompt(t, "", "", 1), "[INST] <image>\nSummary above image in one word: [/INST]");
}

TEST(Prompt, Phi3vAndLlama3) {
  EXPECT_EQ(render_prompt(load_template("phi3v"), "", "", 1),
            "<|user|>\n<|image_1|>\nSummary above image in one word:<|end|>\n<|assistant|>\n");
  EXPECT_EQ(render_prompt(load_template("phi3v"), "", "hi", 0),
            "<|user|>\nhi\nSummary above sentence in one word:<|end|>\n<|assistant|>\n");
  EXPECT_EQ(render_prompt(load_template("llama3"), "", "", 1),
            "<|start_header_id|>user<|end_header_id|>\n\n<image>\nSummary above image in one word: "
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n");
}

TEST(Prompt, MmebPlaceholderRewrittenPerBackbone) {
  const std::string q = "<|image_1|> Represent the given image with the following question: What is it?";
  EXPECT_EQ(render_prompt(load_template("llava-mistral"), "", q, 1),
            "<image> Represent the given image with the following question: What is it?");
  EXPECT_EQ(render_prompt(load_template("qwen2"), "", q, 1).substr(0, 44),
            "<|vision_start|><|image_pad|><|vision_end|> ");
  int n = 0;
  EXPECT_EQ(rewrite_image_placeholders("<|image_12|><|image_x|>", "<image>", &n), "<image><|image_x|>");
  EXPECT_EQ(n, 1);
}

TEST(Prompt, InstructionInputs) {
  auto t = load_template("plain");
  EXPECT_EQ(render_prompt(t, "Represent the given image for classification", "", 1),
            "<image>\nRepresent the given image for classification");
  EXPECT_EQ(render_prompt(t, "Find an image matching the caption", "a red circle", 0),
            "Find an image matching the caption\na red circle");
}

TEST(Prompt, UnknownTemplateIsAnError) {
  EXPECT_THROW(load_template("no-such-template"), unime::Error);
}
