// Embedding prompt templates; see prompt.h. The "in one word" prompts are those of the released
// UniME / E5-V models (METHOD.md table), spacing exactly as written there.
#include "text/prompt.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace unime::text {

namespace {

const char* kSent = "\nSummary above sentence in one word:";
const char* kImg = "\nSummary above image in one word:";

std::vector<PromptTemplate> builtins() {
  std::vector<PromptTemplate> v;
  v.push_back({"llava-mistral",
               std::string("[INST] {text}") + kSent + " [/INST]",
               std::string("[INST] {image}") + kImg + " [/INST]",
               std::string("[INST] {image}\n{text}") + kImg + " [/INST]",
               "{content}", "<image>"});
  v.push_back({"phi3v",
               std::string("<|user|>\n{text}") + kSent + "<|end|>\n<|assistant|>\n",
               std::string("<|user|>\n{image}") + kImg + "<|end|>\n<|assistant|>\n",
               std::string("<|user|>\n{image}\n{text}") + kImg + "<|end|>\n<|assistant|>\n",
               "{content}", "<|image_{n}|>"});
  const std::string l3a = "<|start_header_id|>user<|end_header_id|>\n\n";
  const std::string l3b = " <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n";
  v.push_back({"llama3", l3a + "{text}" + kSent + l3b, l3a + "{image}" + kImg + l3b,
               l3a + "{image}\n{text}" + kImg + l3b, "{content}", "<image>"});
  const std::string qa = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n";
  const std::string qb = "<|im_end|>\n<|im_start|>assistant\n";
  v.push_back({"qwen2", qa + "{text}" + kSent + qb, qa + "{image}" + kImg + qb,
               qa + "{image}\n{text}" + kImg + qb, qa + "{content}" + qb,
               "<|vision_start|><|image_pad|><|vision_end|>"});
  v.push_back({"plain", std::string("{text}") + kSent, std::string("{image}") + kImg,
               std::string("{image}\n{text}") + kImg, "{content}", "<image>"});
  return v;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

}  // namespace

std::vector<std::string> builtin_template_names() {
  std::vector<std::string> n;
  for (auto& t : builtins()) n.push_back(t.name);
  return n;
}

PromptTemplate load_template(const std::string& name_or_file) {
  for (auto& t : builtins())
    if (t.name == name_or_file) return t;
  std::ifstream in(name_or_file, std::ios::binary);
  if (!in.good()) {
    std::string names;
    for (auto& n : builtin_template_names()) names += (names.empty() ? "" : ", ") + n;
    throw Error(str("--template: '", name_or_file, "' is neither a built-in template (", names,
                    ") nor a readable JSON file"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw Error(str(name_or_file, ": not valid JSON: ", e.what()));
  }
  UNIME_CHECK(j.is_object(), name_or_file, ": a template file must be a JSON object");
  PromptTemplate t = builtins().back();  // plain
  t.name = name_or_file;
  for (auto [key, field] : {std::pair{"text", &t.text}, {"image", &t.image},
                            {"image_text", &t.image_text}, {"task", &t.task},
                            {"image_placeholder", &t.image_placeholder}}) {
    if (!j.contains(key)) continue;
    UNIME_CHECK(j[key].is_string(), name_or_file, ": '", key, "' must be a string");
    *field = j[key].get<std::string>();
  }
  return t;
}

// "{n}" in a placeholder -> the running image number
static std::string numbered(const std::string& placeholder, int* next_index) {
  const size_t at = placeholder.find("{n}");
  if (at == std::string::npos) return placeholder;
  std::string out = placeholder;
  out.replace(at, 3, std::to_string((*next_index)++));
  return out;
}

std::string rewrite_image_placeholders(const std::string& s, const std::string& placeholder,
                                       int* count, int* next_index) {
  int local = 1;
  if (!next_index) next_index = &local;
  std::string out;
  int n = 0;
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, 8, "<|image_") == 0) {
      size_t j = i + 8;
      while (j < s.size() && j < i + 10 && s[j] >= '0' && s[j] <= '9') ++j;
      if (j > i + 8 && s.compare(j, 2, "|>") == 0) {
        out += numbered(placeholder, next_index);
        ++n;
        i = j + 2;
        continue;
      }
    }
    out += s[i++];
  }
  if (count) *count = n;
  return out;
}

std::vector<std::string> split_image_tags(const std::string& s, std::vector<int64_t>* tags) {
  // re.split(r"<\|image_\d+\|>", text) and re.findall of the same pattern
  std::vector<std::string> chunks(1);
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, 8, "<|image_") == 0) {
      size_t j = i + 8;
      while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
      if (j > i + 8 && j - (i + 8) <= 9 && s.compare(j, 2, "|>") == 0) {
        if (tags) tags->push_back(std::stoll(s.substr(i + 8, j - i - 8)));
        chunks.emplace_back();
        i = j + 2;
        continue;
      }
    }
    chunks.back() += s[i++];
  }
  return chunks;
}

std::string render_prompt(const PromptTemplate& t, const std::string& instruction,
                          const std::string& text, int n_images) {
  int n_ins = 0, n_txt = 0, next = 1;
  std::string ins = rewrite_image_placeholders(instruction, t.image_placeholder, &n_ins, &next);
  std::string txt = rewrite_image_placeholders(text, t.image_placeholder, &n_txt, &next);
  const bool explicit_placeholders = n_ins + n_txt > 0;
  std::string images;
  if (!explicit_placeholders)
    for (int i = 0; i < n_images; ++i) images += (i ? "\n" : "") + numbered(t.image_placeholder, &next);
  if (!ins.empty()) {
    std::string content = images.empty() ? ins : images + "\n" + ins;
    if (!txt.empty()) content += "\n" + txt;
    return replace_all(t.task, "{content}", content);
  }
  if (explicit_placeholders) return txt;  // MMEB-style text carrying its own image slot: verbatim
  if (n_images == 0) return replace_all(t.text, "{text}", txt);
  if (txt.empty()) return replace_all(t.image, "{image}", images);
  return replace_all(replace_all(t.image_text, "{image}", images), "{text}", txt);
}

}  // namespace unime::text
