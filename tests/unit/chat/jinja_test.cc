// Jinja interpreter behaviour not covered by the Jinja2 goldens: error reporting, resource limits,
// and hostile templates.

#include "engine/chat/jinja.h"

#include <string>

#include "absl/strings/match.h"
#include "engine/chat/jinja_value.h"
#include "gtest/gtest.h"

namespace r2::chat::jinja {
namespace {

absl::StatusOr<std::string> Render(
    const std::string& source,
    const nlohmann::ordered_json& context = nlohmann::ordered_json::object(),
    const RenderLimits& limits = {}) {
  absl::StatusOr<Template> t = Template::Parse(source);
  if (!t.ok()) return t.status();
  return t->Render(context, limits);
}

TEST(JinjaTest, SyntaxErrorsNameTheLine) {
  auto r = Render("line one\n{% if x %}\nok\n{% endfor %}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "line 4")) << r.status();

  r = Render("a\nb\n{{ 1 + }}");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "line 3")) << r.status();

  r = Render("{{ 'unterminated }}");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "line 1")) << r.status();
}

TEST(JinjaTest, RuntimeErrorsNameTheLineAndCause) {
  auto r = Render("\n\n{{ 1 | no_such_filter }}");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "line 3"));
  EXPECT_TRUE(absl::StrContains(r.status().message(), "no_such_filter"));

  r = Render("{{ x is frobnicated }}");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "frobnicated"));

  r = Render("{{ 'a' + 1 }}");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "unsupported operand"));
}

TEST(JinjaTest, RaiseExceptionPassesTheMessage) {
  auto r = Render("{% if messages | length == 0 %}{{ raise_exception('No messages!') }}{% endif %}",
                  {{"messages", nlohmann::ordered_json::array()}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "No messages!"));
}

TEST(JinjaTest, UndefinedSemantics) {
  EXPECT_EQ(*Render("[{{ a }}][{{ a.b.c }}][{{ a['x'] }}]"), "[][][]");
  EXPECT_EQ(*Render("{{ a is defined }} {{ a is none }} {{ not a }}"), "False False True");
  EXPECT_EQ(*Render("{% for x in a %}x{% else %}none{% endfor %}"), "none");
  EXPECT_EQ(*Render("{{ a | default('d') }} {{ a | length }}"), "d 0");
}

TEST(JinjaTest, OutputIsCapped) {
  RenderLimits limits;
  limits.max_output_bytes = 1000;
  auto r = Render("{% for i in range(100) %}{{ 'x' * 50 }}{% endfor %}", {}, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);

  r = Render("{{ 'x' * 100000000000 }}", {}, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(JinjaTest, RunawayLoopsStop) {
  RenderLimits limits;
  limits.max_steps = 100000;
  auto r =
      Render("{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}",
             {}, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(JinjaTest, DoublingStringsStop) {
  auto r = Render(
      "{% set ns = namespace(s='ab') %}{% for i in range(100) %}"
      "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(JinjaTest, RecursionIsBounded) {
  auto r = Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(JinjaTest, DeepNestingIsASyntaxErrorNotACrash) {
  std::string deep(5000, '(');
  auto r = Render("{{ " + deep + "1 }}");
  ASSERT_FALSE(r.ok());
  std::string nots;
  for (int i = 0; i < 5000; ++i) nots += "not ";
  EXPECT_FALSE(Render("{{ " + nots + "1 }}").ok());
  std::string ifs;
  for (int i = 0; i < 3000; ++i) ifs += "{% if true %}";
  EXPECT_FALSE(Render(ifs).ok());
}

TEST(JinjaTest, DeepValuesAreRefused) {
  EXPECT_FALSE(Render("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}"
                      "{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}")
                   .ok());
  nlohmann::ordered_json deep = 1;
  for (int i = 0; i < 1000; ++i) deep = nlohmann::ordered_json::array({deep});
  EXPECT_FALSE(Render("{{ x }}", {{"x", deep}}).ok());
}

TEST(JinjaTest, NamespaceCannotContainItself) {
  auto r = Render("{% set ns = namespace(a=1) %}{% set ns.self = ns %}{{ ns }}");
  EXPECT_FALSE(r.ok());
}

TEST(JinjaTest, TemplatesCannotMutateValues) {
  EXPECT_FALSE(Render("{% set l = [1] %}{{ l.append(2) }}").ok());
}

TEST(JinjaTest, LoopControlsAndScopes) {
  EXPECT_EQ(*Render("{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}"
                    "{% endfor %}"),
            "012");
  EXPECT_EQ(*Render("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }},{% endfor %}"), "3,7,");
  EXPECT_FALSE(Render("{% for a, b in [[1, 2, 3]] %}{% endfor %}").ok());
}

TEST(JinjaTest, PythonFloatFormatting) {
  EXPECT_EQ(FormatPythonFloat(1.0), "1.0");
  EXPECT_EQ(FormatPythonFloat(0.1), "0.1");
  EXPECT_EQ(FormatPythonFloat(-2.5), "-2.5");
  EXPECT_EQ(FormatPythonFloat(1e16), "1e+16");
  EXPECT_EQ(FormatPythonFloat(123456789012345.6), "123456789012345.6");
  EXPECT_EQ(FormatPythonFloat(1e-5), "1e-05");
  EXPECT_EQ(FormatPythonFloat(0.0001), "0.0001");
  EXPECT_EQ(FormatPythonFloat(1.5e300), "1.5e+300");
  EXPECT_EQ(FormatPythonFloat(0.0), "0.0");
}

TEST(JinjaTest, ToJsonMatchesPythonJsonDumps) {
  auto v = Value::FromJson(
      nlohmann::ordered_json::parse(R"({"z": [1, 2.0, "é\u0007"], "a": {}, "b": [], "c": null})"));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*ToPythonJson(*v, -1, false),
            "{\"z\": [1, 2.0, \"é\\u0007\"], \"a\": {}, \"b\": [], \"c\": null}");
  EXPECT_EQ(
      *ToPythonJson(*v, 1, true),
      "{\n \"a\": {},\n \"b\": [],\n \"c\": null,\n \"z\": [\n  1,\n  2.0,\n  \"é\\u0007\"\n ]\n}");
  EXPECT_EQ(*Render("{{ x | tojson(ensure_ascii=true) }}", {{"x", "é😀"}}),
            "\"\\u00e9\\ud83d\\ude00\"");
}

TEST(JinjaTest, InvalidUtf8PassesThrough) {
  std::string bad = "a\xff\xfe b";
  EXPECT_EQ(*Render("{{ x }}|{{ x | length }}", {{"x", "plain"}}), "plain|5");
  EXPECT_EQ(*Render(bad), bad);
}

}  // namespace
}  // namespace r2::chat::jinja
