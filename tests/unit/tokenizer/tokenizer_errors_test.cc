// tokenizer.json kinds we do not support, and malformed files, give errors (never a tokenizer
// that would tokenize differently from Hugging Face, never a crash).
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tokenizer_config.h"
#include "tests/unit/test_paths.h"
#include "tests/unit/tokenizer/tokenizer_fixtures.h"

namespace r2::tokenizer::testing {
namespace {

using nlohmann::json;

json Base() {
  static const json* base =
      new json(json::parse(ReadFileOrEmpty(FixtureDir() + "gpt2_style.json")));
  return *base;
}

// Expects FromJson to fail with a message containing `needle`.
void ExpectError(const json& spec, const std::string& needle) {
  auto tokenizer = Tokenizer::FromJson(spec.dump(), "test.json");
  ASSERT_FALSE(tokenizer.ok()) << "accepted: " << needle;
  EXPECT_NE(std::string(tokenizer.status().message()).find(needle), std::string::npos)
      << tokenizer.status();
  EXPECT_NE(std::string(tokenizer.status().message()).find("test.json"), std::string::npos);
}

TEST(TokenizerErrors, BaseFixtureLoads) {
  ASSERT_TRUE(Tokenizer::FromJson(Base().dump(), "base").ok());
  json spec = Base();
  spec["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array()}};
  EXPECT_TRUE(Tokenizer::FromJson(spec.dump(), "empty normalizer sequence").ok());
}

TEST(TokenizerErrors, UnsupportedModels) {
  for (const char* type : {"WordPiece", "Unigram", "WordLevel"}) {
    json spec = Base();
    spec["model"]["type"] = type;
    ExpectError(spec, std::string("unsupported model type \"") + type);
  }
  json spec = Base();
  spec["model"]["byte_fallback"] = true;
  ExpectError(spec, "byte_fallback");
  spec = Base();
  spec["model"]["dropout"] = 0.1;
  ExpectError(spec, "dropout");
  spec = Base();
  spec["model"]["continuing_subword_prefix"] = "##";
  ExpectError(spec, "continuing_subword_prefix");
  spec = Base();
  spec["model"].erase("merges");
  spec["model"].erase("type");
  ExpectError(spec, "not BPE");
}

TEST(TokenizerErrors, UnsupportedNormalizers) {
  json spec = Base();
  spec["normalizer"] = {{"type", "NFC"}};
  ExpectError(spec, "unsupported normalizer NFC");
  spec["normalizer"] = {{"type", "Sequence"},
                        {"normalizers", json::array({{{"type", "Lowercase"}}})}};
  ExpectError(spec, "unsupported normalizer Lowercase");
}

TEST(TokenizerErrors, UnsupportedPreTokenizers) {
  json spec = Base();
  spec["pre_tokenizer"] = {{"type", "Whitespace"}};
  ExpectError(spec, "unsupported pre_tokenizer Whitespace");
  spec["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}};
  ExpectError(spec, "unsupported pre_tokenizer Metaspace");
  spec["pre_tokenizer"] = nullptr;
  ExpectError(spec, "ByteLevel");
  const json byte_level = Base()["pre_tokenizer"];
  const json split = {{"type", "Split"},
                      {"pattern", {{"Regex", "\\d+"}}},
                      {"behavior", "Isolated"},
                      {"invert", false}};
  spec["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {byte_level, split}}};
  ExpectError(spec, "ByteLevel must be the last step");
  spec["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split}}};
  ExpectError(spec, "no ByteLevel");
}

TEST(TokenizerErrors, UnsupportedOrBadRegexes) {
  const json byte_level = Base()["pre_tokenizer"];
  auto with_split = [&](const json& pattern, const json& behavior) {
    json spec = Base();
    const json split = {
        {"type", "Split"}, {"pattern", pattern}, {"behavior", behavior}, {"invert", false}};
    spec["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split, byte_level}}};
    return spec;
  };
  ExpectError(with_split({{"Regex", "\\bword\\b"}}, "Isolated"), "unsupported regex construct");
  ExpectError(with_split({{"Regex", "\\h+"}}, "Isolated"), "unsupported regex construct");
  ExpectError(with_split({{"Regex", "\\p{Han}+"}}, "Isolated"), "only general categories");
  ExpectError(with_split({{"Regex", "[a-z&&[^aeiou]]"}}, "Isolated"), "unsupported regex");
  ExpectError(with_split({{"Regex", "(ab"}}, "Isolated"), "bad regex");
  ExpectError(with_split({{"Regex", "[ab"}}, "Isolated"), "unterminated");
  ExpectError(with_split({{"Regex", "a"}}, "Sideways"), "unknown behavior");
  ExpectError(with_split({{"Glob", "a"}}, "Isolated"), "bad pattern");
}

TEST(TokenizerErrors, UnsupportedDecodersAndPostProcessors) {
  json spec = Base();
  spec["decoder"] = {{"type", "WordPiece"}};
  ExpectError(spec, "unsupported decoder WordPiece");
  spec["decoder"] = nullptr;
  ExpectError(spec, "unsupported decoder");
  spec = Base();
  spec["post_processor"] = {{"type", "BertProcessing"}};
  ExpectError(spec, "unsupported post_processor BertProcessing");
}

TEST(TokenizerErrors, InconsistentVocabularies) {
  json spec = Base();
  spec["model"]["merges"].push_back(json::array({"Ġ", "notatoken"}));
  ExpectError(spec, "not in the vocabulary");
  spec = Base();
  spec["model"]["merges"] = json::array({"a b c"});
  ExpectError(spec, "bad merge");
  spec = Base();
  spec["model"]["merges"] = json::array({42});
  ExpectError(spec, "bad merge");
  spec = Base();
  spec["model"]["vocab"]["zzz"] = -1;
  ExpectError(spec, "bad id");
  spec = Base();
  spec["model"]["vocab"]["zzz"] = 5;
  ExpectError(spec, "used twice");
  spec = Base();
  spec["model"]["vocab"]["zzz"] = 1u << 30;
  ExpectError(spec, "bad id");
  spec = Base();
  spec["added_tokens"][0]["id"] = 77;
  ExpectError(spec, "would be loaded as");
  spec = Base();
  spec["added_tokens"][0].erase("content");
  ExpectError(spec, "content");
  spec = Base();
  spec["added_tokens"].push_back(spec["added_tokens"][0]);
  ExpectError(spec, "appears twice");
  spec = Base();
  spec["added_tokens"][0]["special"] = "yes";
  ExpectError(spec, "must be a bool");
}

TEST(TokenizerErrors, MalformedJson) {
  for (const char* text :
       {"", "{", "[]", "null", "42", "{\"model\": 5}", "{\"model\": {}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": [], \"merges\": []}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": {}}}", "\xff\xfe{}"}) {
    EXPECT_FALSE(Tokenizer::FromJson(text, "bad.json").ok()) << text;
  }
}

TEST(TokenizerErrors, TruncatedFilesNeverLoadOrCrash) {
  const std::string text = Base().dump();
  for (size_t cut = 0; cut < text.size(); cut += 997) {
    EXPECT_FALSE(Tokenizer::FromJson(text.substr(0, cut), "cut.json").ok()) << cut;
  }
}

TEST(TokenizerErrors, WrongTypesEverywhere) {
  // Replace each top-level and model field in turn by a value of the wrong type.
  const json junk[] = {json(7), json("x"), json::array({1, 2}), json::object({{"a", 1}})};
  for (const std::string key :
       {"added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "model"}) {
    for (const json& value : junk) {
      json spec = Base();
      spec[key] = value;
      // Must not crash; most are errors (a few, e.g. normalizer 7, are reported as unsupported).
      auto tokenizer = Tokenizer::FromJson(spec.dump(), "junk.json");
      EXPECT_FALSE(tokenizer.ok()) << key << " = " << value.dump();
    }
  }
  for (const std::string key : {"vocab", "merges", "unk_token", "ignore_merges", "fuse_unk"}) {
    for (const json& value : junk) {
      json spec = Base();
      spec["model"][key] = value;
      auto tokenizer = Tokenizer::FromJson(spec.dump(), "junk.json");
      (void)tokenizer;  // the point is not crashing; e.g. an unknown unk_token string is an error
    }
  }
}

TEST(TokenizerErrors, Files) {
  auto missing = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);

  const std::string dir = r2::testing::MakeTempDir("tokenizer");
  {
    std::ofstream(dir + "/tokenizer.json") << Base().dump();
    std::ofstream(dir + "/tokenizer_config.json") << "{\"add_bos_token\": \"yes\"}";
  }
  auto bad_config = Tokenizer::FromFile(dir + "/tokenizer.json");
  ASSERT_FALSE(bad_config.ok());
  EXPECT_NE(std::string(bad_config.status().message()).find("add_bos_token"), std::string::npos);
  std::ofstream(dir + "/tokenizer_config.json")
      << R"({"add_bos_token": true, "bos_token": {"content": "<|endoftext|>"},
            "eos_token": "<|pad|>", "chat_template": [{"name": "default", "template": "T"}],
            "model_max_length": 1e30})";
  auto good = Tokenizer::FromFile(dir + "/tokenizer.json");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE((*good)->add_bos());
  EXPECT_EQ((*good)->bos_id(), 0);
  EXPECT_EQ((*good)->eos_id(), 1);
  EXPECT_EQ((*good)->config().chat_template, "T");
  EXPECT_FALSE((*good)->config().model_max_length.has_value());
  EXPECT_EQ((*(*good)->Encode("hi", true))[0], 0);
}

TEST(TokenizerConfig, ParsesDeepSeekFields) {
  auto config = ParseTokenizerConfig(
      R"({"add_bos_token": true, "add_eos_token": false, "bos_token": null,
          "eos_token": {"__type": "AddedToken", "content": "</s>"}, "model_max_length": 131072,
          "tokenizer_class": "LlamaTokenizerFast", "chat_template": "{{ x }}"})",
      "cfg");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->add_bos_token, true);
  EXPECT_EQ(config->add_eos_token, false);
  EXPECT_FALSE(config->bos_token.has_value());
  EXPECT_EQ(config->eos_token, "</s>");
  EXPECT_EQ(config->model_max_length, 131072);
  EXPECT_EQ(config->chat_template, "{{ x }}");
  EXPECT_FALSE(ParseTokenizerConfig("{", "cfg").ok());
  EXPECT_FALSE(ParseTokenizerConfig("[]", "cfg").ok());
  EXPECT_FALSE(ParseTokenizerConfig(R"({"eos_token": 5})", "cfg").ok());
  EXPECT_FALSE(ParseTokenizerConfig(R"({"chat_template": 5})", "cfg").ok());
}

}  // namespace
}  // namespace r2::tokenizer::testing
