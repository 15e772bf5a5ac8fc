// The tiny models' tokenizer files: they load with Tokenizer and ChatTemplate like DeepSeek's,
// round-trip any text, keep every id below the model's vocab_size, and are deterministic.
#include "engine/tokenizer/tiny_tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/chat/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/unit/test_paths.h"

namespace r2::tokenizer {
namespace {

using Json = nlohmann::ordered_json;

constexpr int32_t kModelVocab = 1024;

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Writes the tokenizer files for `options` into a fresh directory and returns it.
std::string WriteFiles(const TinyTokenizerOptions& options) {
  const std::string dir = r2::testing::MakeTempDir("tiny-tokenizer");
  absl::Status status = WriteTinyTokenizer(dir, options);
  EXPECT_TRUE(status.ok()) << status;
  return dir;
}

std::unique_ptr<Tokenizer> Load(const std::string& dir) {
  auto tokenizer = Tokenizer::FromFile(dir + "/tokenizer.json");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

// The default tiny tokenizer (V3 template), loaded once.
const Tokenizer& Tiny() {
  static const Tokenizer* const tokenizer = Load(WriteFiles({})).release();
  return *tokenizer;
}

std::vector<int32_t> Encode(const Tokenizer& t, const std::string& text, bool add_special) {
  auto ids = t.Encode(text, add_special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>();
}

void ExpectIdsFit(const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, Tiny().vocab_size());
  }
}

TEST(TinyTokenizer, VocabularyFitsTheModelWithPaddingRows) {
  EXPECT_EQ(Tiny().vocab_size(), kModelVocab - TinyTokenizerOptions().padding_ids);
  EXPECT_EQ(Tiny().bos_id(), 0);
  EXPECT_EQ(Tiny().eos_id(), 1);
  EXPECT_TRUE(Tiny().add_bos());
  EXPECT_FALSE(Tiny().add_eos());
  EXPECT_EQ(Tiny().config().tokenizer_class, "LlamaTokenizerFast");
  EXPECT_EQ(Tiny().config().model_max_length, 1024);
  EXPECT_EQ(Tiny().config().pad_token, "<｜end▁of▁sentence｜>");
}

TEST(TinyTokenizer, SpecialTokensHaveTheirIdsAndFlags) {
  const std::vector<TinySpecialToken>& specials = TinySpecialTokens();
  ASSERT_EQ(specials.size(), 20u);
  for (size_t id = 0; id < specials.size(); ++id) {
    SCOPED_TRACE(specials[id].content);
    EXPECT_EQ(Tiny().TokenToId(specials[id].content), static_cast<int32_t>(id));
    EXPECT_EQ(Tiny().IsSpecial(static_cast<int32_t>(id)), specials[id].special);
    EXPECT_EQ(Encode(Tiny(), specials[id].content, false),
              std::vector<int32_t>{static_cast<int32_t>(id)});
  }
  EXPECT_EQ(std::string(specials[0].content), "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(std::string(specials[1].content), "<｜end▁of▁sentence｜>");
  EXPECT_EQ(std::string(specials[2].content), "<｜▁pad▁｜>");
  EXPECT_EQ(Tiny().TokenToId("<｜User｜>"), 8);
  EXPECT_EQ(Tiny().TokenToId("<｜Assistant｜>"), 9);
  EXPECT_TRUE(Tiny().IsSpecial(10));     // <|EOT|>
  EXPECT_EQ(Tiny().TokenToId("!"), 20);  // the byte tokens follow
}

TEST(TinyTokenizer, RoundTripsAnyText) {
  const std::string texts[] = {
      "Hello, world! The quick brown fox jumps over the lazy dog.",
      "  leading spaces, tabs\tand\r\nnewlines\n\n\n",
      "int main() { return 42; }  // 1234567890",
      "人工智能是计算机科学的一个分支。こんにちは、世界！カタカナ",
      "안녕하세요 Привет мир ¿Qué tal? Grüße 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
      "Emoji 😀🚀👨‍👩‍👧 and ZWJ, flags 🇵🇹, skin tones 👋🏽",
      "Tokens inline: <｜User｜>hi<｜Assistant｜><think>\nhmm</think>ok<｜end▁of▁sentence｜>",
      std::string("\x00\x01\x7f control bytes", 17),
      "",
  };
  for (const std::string& text : texts) {
    SCOPED_TRACE(text);
    std::vector<int32_t> ids = Encode(Tiny(), text, false);
    ExpectIdsFit(ids);
    EXPECT_EQ(Tiny().Decode(ids), text);
    std::vector<int32_t> with_bos = Encode(Tiny(), text, true);
    ASSERT_FALSE(with_bos.empty());
    EXPECT_EQ(with_bos[0], 0);
  }
}

TEST(TinyTokenizer, UnseenTextFallsBackToByteTokens) {
  // A character the corpus never has: its four UTF-8 bytes are four byte tokens.
  std::vector<int32_t> ids = Encode(Tiny(), "𓀀", false);
  ASSERT_EQ(ids.size(), 4u);
  for (int32_t id : ids) {
    EXPECT_GE(id, 20);
    EXPECT_LT(id, 20 + 256);
  }
  // Common words are single tokens.
  EXPECT_EQ(Encode(Tiny(), " the", false).size(), 1u);
  EXPECT_EQ(Encode(Tiny(), " model", false).size(), 1u);
}

// Ids Hugging Face `tokenizers` 0.22.2 gives for the default tokenizer.json (checked by hand with
// Tokenizer.from_file(...).encode(text, add_special_tokens=False)).
TEST(TinyTokenizer, MatchesHuggingFaceIds) {
  const std::pair<std::string, std::vector<int32_t>> cases[] = {
      {"<｜begin▁of▁sentence｜>S<｜User｜>What is 2 + 2?<｜Assistant｜>",
       {0, 70, 8, 74, 621, 351, 240, 37, 571, 240, 37, 50, 9}},
      {"The model reads 12345 tokens: 人工智能 😀\n",
       {324, 434, 491, 102, 240, 498, 38,  39,  40,  685, 45,  240, 646, 138,
        181, 135, 118, 182, 267, 138, 184, 245, 141, 399, 266, 242, 218}},
      {"<think>\nhmm</think>It is 4.<｜end▁of▁sentence｜>",
       {3, 218, 91, 96, 96, 4, 60, 103, 351, 240, 39, 33, 1}},
  };
  for (const auto& [text, ids] : cases) EXPECT_EQ(Encode(Tiny(), text, false), ids) << text;
}

TEST(TinyTokenizer, SameShapeAsDeepSeekV3) {
  const std::string path =
      r2::testing::SharedDir() + "/models/deepseek-v3-tokenizer/tokenizer.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no shared tokenizer at " << path;
  // Unordered json: ordered_json parses DeepSeek's 128,000-entry vocabulary in quadratic time.
  using UnorderedJson = nlohmann::json;
  const UnorderedJson real = UnorderedJson::parse(ReadText(path));
  const UnorderedJson tiny = UnorderedJson::parse(*TinyTokenizerJson({}));
  for (const char* key : {"version", "truncation", "padding", "normalizer", "pre_tokenizer",
                          "post_processor", "decoder"}) {
    EXPECT_EQ(tiny[key], real[key]) << key;
  }
  EXPECT_EQ(tiny["added_tokens"][0], real["added_tokens"][0]);
  for (const auto& [key, value] : real["model"].items()) {
    if (key != "vocab" && key != "merges") {
      EXPECT_EQ(tiny["model"][key], value) << key;
    }
  }
  // Each added token has the real file's flags (all but the id; <think> is renamed in R1).
  for (const UnorderedJson& token : tiny["added_tokens"]) {
    for (const UnorderedJson& other : real["added_tokens"]) {
      if (other["content"] != token["content"]) continue;
      UnorderedJson a = token, b = other;
      a.erase("id");
      b.erase("id");
      EXPECT_EQ(a, b);
    }
  }
}

TEST(TinyTokenizer, TemplatesAreTheGoldenFilesVerbatim) {
  const std::pair<TinyChatTemplate, const char*> files[] = {
      {TinyChatTemplate::kV3, "deepseek-v3.jinja"},
      {TinyChatTemplate::kR1, "deepseek-r1.jinja"},
      {TinyChatTemplate::kV31, "deepseek-v3.1.jinja"}};
  for (const auto& [chat_template, file] : files) {
    EXPECT_EQ(TinyChatTemplateSource(chat_template),
              ReadText(r2::testing::SourceDir() + "/tests/golden/templates/" + file))
        << file;
  }
  EXPECT_EQ(*ParseTinyChatTemplate("v3"), TinyChatTemplate::kV3);
  EXPECT_EQ(*ParseTinyChatTemplate("r1"), TinyChatTemplate::kR1);
  EXPECT_EQ(*ParseTinyChatTemplate("v31"), TinyChatTemplate::kV31);
  EXPECT_FALSE(ParseTinyChatTemplate("v4").ok());
}

// Renders a conversation with the template of the written tokenizer_config.json, and checks the
// prompt tokenizes (special tokens as single ids) below vocab_size and decodes back to itself.
std::vector<int32_t> RenderAndEncode(const std::string& dir, const chat::ChatRenderRequest& req,
                                     std::string* prompt) {
  const Json config = Json::parse(ReadText(dir + "/tokenizer_config.json"));
  auto chat = chat::ChatTemplate::FromTokenizerConfig(config);
  EXPECT_TRUE(chat.ok()) << chat.status();
  if (!chat.ok()) return {};
  auto rendered = chat->Render(req);
  EXPECT_TRUE(rendered.ok()) << rendered.status();
  if (!rendered.ok()) return {};
  *prompt = *rendered;
  std::unique_ptr<Tokenizer> tokenizer = Load(dir);
  std::vector<int32_t> ids = Encode(*tokenizer, *prompt, /*add_special=*/false);
  ExpectIdsFit(ids);
  EXPECT_EQ(tokenizer->Decode(ids), *prompt);
  return ids;
}

chat::ChatRenderRequest Conversation() {
  chat::ChatRenderRequest req;
  req.messages = Json::parse(R"([
      {"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "What is 2 + 2?"},
      {"role": "assistant", "content": "It is 4."},
      {"role": "user", "content": "And in Chinese? 用中文回答。"}])");
  return req;
}

TEST(TinyTokenizer, V3TemplateRendersAndTokenizes) {
  std::string prompt;
  std::vector<int32_t> ids = RenderAndEncode(WriteFiles({}), Conversation(), &prompt);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids.front(), 0);  // BOS from the template text, not added again
  EXPECT_EQ(ids.back(), 9);   // <｜Assistant｜>
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 8), 2);  // <｜User｜>
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 1);  // EOS after the assistant turn
}

TEST(TinyTokenizer, V3ToolCallsTokenizeToToolTokens) {
  chat::ChatRenderRequest req;
  req.messages = Json::parse(R"([
      {"role": "user", "content": "Weather in Lisbon?"},
      {"role": "assistant", "content": null, "tool_calls": [{"type": "function",
       "function": {"name": "get_weather", "arguments": "{\"city\": \"Lisbon\"}"}}]},
      {"role": "tool", "content": "{\"temperature\": 24}"}])");
  std::string prompt;
  std::vector<int32_t> ids = RenderAndEncode(WriteFiles({}), req, &prompt);
  for (int32_t id : {11, 13, 14, 19, 15, 17, 18, 16}) {  // tool call(s) begin/end, sep, outputs
    EXPECT_NE(std::find(ids.begin(), ids.end(), id), ids.end()) << id;
  }
}

TEST(TinyTokenizer, R1TemplateForcesThinking) {
  TinyTokenizerOptions options;
  options.chat_template = TinyChatTemplate::kR1;
  std::string prompt;
  std::vector<int32_t> ids = RenderAndEncode(WriteFiles(options), Conversation(), &prompt);
  EXPECT_TRUE(prompt.ends_with("<｜Assistant｜><think>\n")) << prompt;
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[ids.size() - 3], 9);
  EXPECT_EQ(ids[ids.size() - 2], 3);  // <think>
}

TEST(TinyTokenizer, V31TemplateFollowsTheThinkingFlag) {
  TinyTokenizerOptions options;
  options.chat_template = TinyChatTemplate::kV31;
  const std::string dir = WriteFiles(options);
  for (bool thinking : {false, true}) {
    chat::ChatRenderRequest req = Conversation();
    req.kwargs["thinking"] = thinking;
    std::string prompt;
    std::vector<int32_t> ids = RenderAndEncode(dir, req, &prompt);
    ASSERT_GE(ids.size(), 2u);
    EXPECT_EQ(ids[ids.size() - 2], 9);
    EXPECT_EQ(ids.back(), thinking ? 3 : 4) << prompt;  // <think> or </think>
  }
}

TEST(TinyTokenizer, IsDeterministic) {
  auto a = TinyTokenizerJson({});
  auto b = TinyTokenizerJson({});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  // FNV-1a of the default tokenizer.json: the same bytes on every machine. Update it only when the
  // corpus or the format changes on purpose.
  uint64_t hash = 1469598103934665603ULL;
  for (unsigned char c : *a) hash = (hash ^ c) * 1099511628211ULL;
  EXPECT_EQ(hash, 12951788533752400277ULL) << "tokenizer.json changed";
  EXPECT_EQ(TinyTokenizerConfigJson({}), TinyTokenizerConfigJson({}));
}

TEST(TinyTokenizer, SmallAndLargeModelVocabularies) {
  TinyTokenizerOptions options;
  options.model_vocab_size = 275;  // below 20 special + 256 byte tokens
  EXPECT_FALSE(TinyTokenizerJson(options).ok());
  options.model_vocab_size = 276;  // no room for merges or padding: bytes only
  std::unique_ptr<Tokenizer> bytes_only = Load(WriteFiles(options));
  ASSERT_NE(bytes_only, nullptr);
  EXPECT_EQ(bytes_only->vocab_size(), 276);
  EXPECT_EQ(bytes_only->Decode(Encode(*bytes_only, "héllo 世界", false)), "héllo 世界");
  options.model_vocab_size = 32768;  // the corpus runs out of pairs first
  std::unique_ptr<Tokenizer> large = Load(WriteFiles(options));
  ASSERT_NE(large, nullptr);
  EXPECT_LT(large->vocab_size(), 32768 - 8);
  EXPECT_GT(large->vocab_size(), kModelVocab);
}

TEST(TinyTokenizer, WritesBesideATinyModel) {
  const std::string dir = r2::testing::MakeTempDir("tiny-model-tokenizer");
  model::TinyModelOptions options;
  options.num_hidden_layers = 2;
  options.num_nextn_predict_layers = 0;
  options.max_position_embeddings = 512;
  options.yarn = false;
  ASSERT_TRUE(WriteTinyModelWithTokenizer(options, dir, TinyChatTemplate::kR1).ok());
  for (const char* file :
       {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + file)) << file;
  }
  std::unique_ptr<Tokenizer> tokenizer = Load(dir);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->config().model_max_length, 512);
  EXPECT_EQ(tokenizer->config().chat_template,
            std::string(TinyChatTemplateSource(TinyChatTemplate::kR1)));
  options.vocab_size = 200;
  EXPECT_FALSE(WriteTinyModelWithTokenizer(options, dir).ok());
}

}  // namespace
}  // namespace r2::tokenizer
