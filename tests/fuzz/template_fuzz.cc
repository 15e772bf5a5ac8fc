// libFuzzer target: arbitrary text as a chat template, rendered against a fixed conversation,
// must give a string or a Status: never a crash, a hang, or unbounded output. The same bytes,
// read as model output, go through the reasoning and tool-call parsers, streamed in two pieces
// and whole; both ways must agree.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/chat/chat_template.h"
#include "engine/chat/reasoning_parser.h"
#include "engine/chat/tool_call_parser.h"
#include "nlohmann/json.hpp"

namespace {

const r2::chat::ChatRenderRequest& Conversation() {
  static const auto* request = [] {
    auto* r = new r2::chat::ChatRenderRequest;
    r->messages = nlohmann::ordered_json::parse(R"([
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
      {"role": "assistant", "content": "<think>ok</think>It is 21C."},
      {"role": "user", "content": "Thanks! 日本語 too"}
    ])");
    r->tools = nlohmann::ordered_json::parse(R"([{"type": "function", "function": {
      "name": "get_weather", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}}}}])");
    r->kwargs = {{"thinking", true}};
    return r;
  }();
  return *request;
}

void CheckParsers(std::string_view text) {
  size_t cut = text.empty() ? 0 : static_cast<unsigned char>(text[0]) % (text.size() + 1);
  for (bool started : {false, true}) {
    r2::chat::ReasoningOptions options{started};
    r2::chat::ReasoningParser parser(options);
    r2::chat::ReasoningDelta streamed = parser.Push(text.substr(0, cut));
    streamed.Append(parser.Push(text.substr(cut)));
    streamed.Append(parser.Finish());
    r2::chat::ReasoningDelta whole = r2::chat::ReasoningParser::Parse(text, options);
    if (streamed.reasoning != whole.reasoning || streamed.content != whole.content) {
      __builtin_trap();
    }
  }
  for (auto format :
       {r2::chat::ToolCallFormat::kDeepSeekV3, r2::chat::ToolCallFormat::kDeepSeekV31}) {
    r2::chat::ToolCallParser parser(format);
    r2::chat::ToolCallDelta streamed = parser.Push(text.substr(0, cut));
    streamed.Append(parser.Push(text.substr(cut)));
    streamed.Append(parser.Finish());
    r2::chat::ToolCallDelta whole = r2::chat::ToolCallParser::Parse(text, format);
    if (streamed.content != whole.content || streamed.calls.size() != whole.calls.size()) {
      __builtin_trap();
    }
    for (size_t i = 0; i < whole.calls.size(); ++i) {
      if (streamed.calls[i].arguments != whole.calls[i].arguments) __builtin_trap();
      if (!nlohmann::json::accept(whole.calls[i].arguments)) __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto tmpl = r2::chat::ChatTemplate::Create(
      text, {{"bos_token", "<｜begin▁of▁sentence｜>"}, {"eos_token", "<｜end▁of▁sentence｜>"}});
  if (tmpl.ok()) {
    r2::chat::jinja::RenderLimits limits;
    limits.max_output_bytes = 1 << 16;
    limits.max_steps = 200'000;
    auto out = tmpl->Render(Conversation(), limits);
    if (out.ok() && out->size() > limits.max_output_bytes) __builtin_trap();
  }
  CheckParsers(text);
  return 0;
}
