// Chat templates (DeepSeek V3, R1, V3.1 thinking off/on) render every golden conversation
// byte-identically to transformers (fixtures from tests/golden/gen_chat_goldens.py).

#include <map>
#include <string>

#include "engine/chat/chat_template.h"
#include "gtest/gtest.h"
#include "tests/unit/chat/chat_test_util.h"

namespace r2::chat {
namespace {

class ChatGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatGoldenTest, RendersLikeTransformers) {
  auto fixture = testing::ReadJsonFixture("tests/golden/fixtures/chat/" + GetParam() + ".json");
  std::string source = testing::ReadSourceFile(fixture["template_file"].get<std::string>());
  ASSERT_FALSE(source.empty());
  std::map<std::string, std::string> tokens;
  for (const auto& [k, v] : fixture["special_tokens"].items()) tokens[k] = v.get<std::string>();
  auto tmpl = ChatTemplate::Create(source, tokens);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  int cases = 0;
  for (const auto& c : fixture["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    ChatRenderRequest req;
    req.messages = c["messages"];
    req.tools = c["tools"];
    req.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    req.kwargs = c["kwargs"];
    absl::StatusOr<std::string> out = tmpl->Render(req);
    if (c.contains("error")) {
      EXPECT_FALSE(out.ok());
    } else {
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, c["expected"].get<std::string>());
    }
    ++cases;
  }
  EXPECT_GE(cases, 60);
}

INSTANTIATE_TEST_SUITE_P(DeepSeek, ChatGoldenTest,
                         ::testing::Values("deepseek-v3", "deepseek-r1", "deepseek-v3.1-nothink",
                                           "deepseek-v3.1-think"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) {
                             if (ch == '-' || ch == '.') ch = '_';
                           }
                           return n;
                         });

}  // namespace
}  // namespace r2::chat
