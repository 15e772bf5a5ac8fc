// Every small template in tests/golden/fixtures/chat/jinja_cases.json renders exactly as Jinja2
// in transformers' chat-template environment rendered it (or fails where Jinja2 failed).

#include <string>

#include "engine/chat/jinja.h"
#include "gtest/gtest.h"
#include "tests/unit/chat/chat_test_util.h"

namespace r2::chat::jinja {
namespace {

TEST(JinjaGoldenTest, MatchesJinja2ForEveryCase) {
  auto fixture = testing::ReadJsonFixture("tests/golden/fixtures/chat/jinja_cases.json");
  ASSERT_TRUE(fixture.contains("cases"));
  int checked = 0;
  for (const auto& c : fixture["cases"]) {
    std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    absl::StatusOr<std::string> out = [&]() -> absl::StatusOr<std::string> {
      auto t = Template::Parse(c["template"].get<std::string>());
      if (!t.ok()) return t.status();
      return t->Render(c["context"]);
    }();
    if (c.contains("error")) {
      EXPECT_FALSE(out.ok()) << "expected an error like: " << c["error"] << "\ngot: " << *out;
    } else {
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, c["expected"].get<std::string>());
    }
    ++checked;
  }
  EXPECT_GE(checked, 60);
}

}  // namespace
}  // namespace r2::chat::jinja
