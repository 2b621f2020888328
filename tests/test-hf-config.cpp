// config.json parsing: HF class defaults, the architecture registry, clear errors.
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/hf-config.h"

using namespace unime;
using io::parse_model_config;

TEST(HfConfig, LlamaDefaultsAndGqa) {
  auto c = parse_model_config(R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,
      "num_attention_heads":4,"num_hidden_layers":2,"intermediate_size":128,"vocab_size":100})", "c");
  EXPECT_EQ(c.arch, io::Arch::Llama);
  EXPECT_EQ(c.text->num_key_value_heads, 4);  // None -> num_attention_heads
  EXPECT_EQ(c.text->head_dim, 16);
  EXPECT_EQ(c.text->max_position_embeddings, 2048);
  EXPECT_FALSE(c.text->qkv_bias);
  EXPECT_EQ(c.text->sliding_window, 0);
}

TEST(HfConfig, MistralAndQwen2Defaults) {
  auto m = parse_model_config(R"({"architectures":["MistralForCausalLM"]})", "c");
  EXPECT_EQ(m.text->num_key_value_heads, 8);
  EXPECT_EQ(m.text->sliding_window, 4096);
  auto m2 = parse_model_config(R"({"architectures":["MistralForCausalLM"],"sliding_window":null})", "c");
  EXPECT_EQ(m2.text->sliding_window, 0);
  auto q = parse_model_config(R"({"architectures":["Qwen2ForCausalLM"],"num_attention_heads":8})", "c");
  EXPECT_TRUE(q.text->qkv_bias);
  EXPECT_FALSE(q.text->o_bias);
  EXPECT_EQ(q.text->num_key_value_heads, 8);
  EXPECT_EQ(q.text->vocab_size, 151936);
  EXPECT_EQ(q.text->sliding_window, 0);  // use_sliding_window defaults to false
}

TEST(HfConfig, ExplicitHeadDimAndLlama3Rope) {
  auto c = parse_model_config(R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,
      "num_attention_heads":4,"head_dim":8,"rope_scaling":{"rope_type":"llama3","factor":8.0,
      "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}})", "c");
  EXPECT_EQ(c.text->head_dim, 8);
  EXPECT_EQ(c.text->rope_type, io::RopeType::Llama3);
  EXPECT_DOUBLE_EQ(c.text->rope_factor, 8.0);
}

TEST(HfConfig, LlavaDefaultsAndFeatureTokens) {
  auto c = parse_model_config(R"({"architectures":["LlavaForConditionalGeneration"],
      "text_config":{"model_type":"llama","vocab_size":32064}})", "c");
  EXPECT_EQ(c.vision->image_size, 336);  // LlavaConfig's default CLIP ViT-L/14-336
  EXPECT_EQ(c.vision->patch_size, 14);
  EXPECT_EQ(c.llava.image_token_id, 32000);
  EXPECT_EQ(c.llava.vision_feature_layer, std::vector<int64_t>{23});  // -2 of 25 states (embeddings + 24 layers)
  EXPECT_EQ(c.image_feature_tokens(), 576);
  auto full = parse_model_config(R"({"architectures":["LlavaForConditionalGeneration"],
      "vision_feature_select_strategy":"full","image_token_id":5,"vision_feature_layer":[-2,-5],
      "text_config":{"model_type":"mistral","vocab_size":100}})", "c");
  EXPECT_EQ(full.image_feature_tokens(), 577);
  EXPECT_EQ(full.llava.image_token_id, 5);
  EXPECT_EQ(full.llava.vision_feature_layer, (std::vector<int64_t>{23, 20}));
  EXPECT_EQ(full.text->model_type, "mistral");
}

static std::string error_of(const std::string& json) {
  try {
    parse_model_config(json, "m/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(HfConfig, ClearErrors) {
  EXPECT_NE(error_of(R"({"architectures":["GPT2LMHeadModel"]})").find("unsupported architecture 'GPT2LMHeadModel'; supported: LlamaForCausalLM"), std::string::npos);
  EXPECT_NE(error_of("{not json").find("m/config.json: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(R"({"architectures":["LlamaForCausalLM"],"hidden_size":"big"})").find("'hidden_size' must be an integer"), std::string::npos);
  EXPECT_NE(error_of(R"({"architectures":["LlamaForCausalLM"],"num_attention_heads":6,"num_key_value_heads":4})").find("multiple of num_key_value_heads"), std::string::npos);
  EXPECT_NE(error_of(R"({"architectures":["LlamaForCausalLM"],"rope_scaling":{"type":"yarn","factor":2}})").find("rope_scaling type 'yarn' is not supported"), std::string::npos);
  EXPECT_NE(error_of(R"({"architectures":["LlavaForConditionalGeneration"],"vision_feature_layer":30})").find("out of range"), std::string::npos);
  EXPECT_NE(error_of(R"({"architectures":["LlamaForCausalLM"],"num_hidden_layers":0})").find("must be positive"), std::string::npos);
  EXPECT_NE(error_of("[1,2]").find("expected a JSON object"), std::string::npos);
}
