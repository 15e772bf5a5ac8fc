#include "engine/chat/chat_template.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/unit/chat/chat_test_util.h"

namespace r2::chat {
namespace {

using Json = nlohmann::ordered_json;

const char* kBos = "<｜begin▁of▁sentence｜>";

ChatTemplate V3() {
  auto t = ChatTemplate::Create(testing::ReadSourceFile("tests/golden/templates/deepseek-v3.jinja"),
                                {{"bos_token", kBos}, {"eos_token", "<｜end▁of▁sentence｜>"}});
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

TEST(ChatTemplateTest, FromTheSharedTokenizerConfig) {
  std::string path =
      r2::testing::SharedDir() + "/models/deepseek-v3-tokenizer/tokenizer_config.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no shared tokenizer at " << path;
  std::ifstream in(path);
  Json config = Json::parse(in);
  // The committed template is the verbatim chat_template of this file.
  EXPECT_EQ(config["chat_template"].get<std::string>(),
            testing::ReadSourceFile("tests/golden/templates/deepseek-v3.jinja"));
  auto t = ChatTemplate::FromTokenizerConfig(config);  // bos_token is an AddedToken object here
  ASSERT_TRUE(t.ok()) << t.status();
  ChatRenderRequest req;
  req.messages = Json::parse(R"([{"role": "system", "content": "S"},
                                 {"role": "user", "content": "Hi"}])");
  EXPECT_EQ(*t->Render(req), std::string(kBos) + "S<｜User｜>Hi<｜Assistant｜>");
}

TEST(ChatTemplateTest, NamedTemplatesPickToolUseWhenToolsAreGiven) {
  Json config = {{"bos_token", "<s>"},
                 {"chat_template",
                  Json::array({{{"name", "default"}, {"template", "D{{ bos_token }}"}},
                               {{"name", "tool_use"}, {"template", "T{{ tools | length }}"}}})}};
  auto t = ChatTemplate::FromTokenizerConfig(config);
  ASSERT_TRUE(t.ok()) << t.status();
  ChatRenderRequest req;
  EXPECT_EQ(*t->Render(req), "D<s>");
  req.tools = Json::array({{{"type", "function"}}});
  EXPECT_EQ(*t->Render(req), "T1");
}

TEST(ChatTemplateTest, TextPartsRenderLikeAString) {
  ChatTemplate t = V3();
  ChatRenderRequest parts;
  parts.messages = Json::parse(R"([{"role": "user", "content": [{"type": "text", "text": "Hel"},
                                                                {"type": "text", "text": "lo"}]}])");
  ChatRenderRequest plain;
  plain.messages = Json::parse(R"([{"role": "user", "content": "Hello"}])");
  EXPECT_EQ(*t.Render(parts), *t.Render(plain));
}

TEST(ChatTemplateTest, ObjectArgumentsBecomeJsonText) {
  auto normalized = ChatTemplate::NormalizeMessages(Json::parse(R"([{"role": "assistant",
      "content": null, "tool_calls": [{"type": "function",
      "function": {"name": "f", "arguments": {"b": 1, "a": [true, null]}}}]}])"));
  ASSERT_TRUE(normalized.ok()) << normalized.status();
  EXPECT_EQ((*normalized)[0]["tool_calls"][0]["function"]["arguments"],
            R"({"b": 1, "a": [true, null]})");
}

TEST(ChatTemplateTest, BadMessagesAreInvalidArgument) {
  ChatTemplate t = V3();
  for (const char* bad : {R"({"role": "user"})", R"([1])", R"([{"content": "x"}])",
                          R"([{"role": 5, "content": "x"}])",
                          R"([{"role": "user", "content": [{"type": "image_url"}]}])",
                          R"([{"role": "user", "content": [{"type": "text"}]}])",
                          R"([{"role": "assistant", "tool_calls": 3}])"}) {
    ChatRenderRequest req;
    req.messages = Json::parse(bad);
    auto r = t.Render(req);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ChatTemplateTest, TemplateTypeErrorsAreErrorsNotCrashes) {
  ChatTemplate t = V3();
  ChatRenderRequest req;  // V3 concatenates content with '+': null content from a user fails
  req.messages = Json::parse(R"([{"role": "user", "content": null}])");
  EXPECT_FALSE(t.Render(req).ok());
}

TEST(ChatTemplateTest, KwargsReachTheTemplate) {
  auto t = ChatTemplate::Create(
      testing::ReadSourceFile("tests/golden/templates/deepseek-v3.1.jinja"), {{"bos_token", kBos}});
  ASSERT_TRUE(t.ok());
  ChatRenderRequest req;
  req.messages = Json::parse(R"([{"role": "user", "content": "Hi"}])");
  EXPECT_TRUE(absl::EndsWith(*t->Render(req), "<｜Assistant｜></think>"));
  req.kwargs = {{"thinking", true}};
  EXPECT_TRUE(absl::EndsWith(*t->Render(req), "<｜Assistant｜><think>"));
}

TEST(ChatTemplateTest, ConfigErrors) {
  EXPECT_FALSE(ChatTemplate::FromTokenizerConfig(Json::object()).ok());
  EXPECT_FALSE(ChatTemplate::FromTokenizerConfig({{"chat_template", 5}}).ok());
  EXPECT_FALSE(ChatTemplate::FromTokenizerConfig({{"chat_template", "{% if %}"}}).ok());
  EXPECT_FALSE(ChatTemplate::FromTokenizerConfig({{"chat_template", Json::array()}}).ok());
}

}  // namespace
}  // namespace r2::chat
