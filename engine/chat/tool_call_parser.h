#pragma once
// Extracts DeepSeek tool calls from model output text, incrementally, as OpenAI tool_calls.
//
//   V3/R1:
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```
//           <｜tool▁call▁end｜>[\n<｜tool▁call▁begin｜>...]<｜tool▁calls▁end｜>
//   V3.1:   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>
//           [<｜tool▁call▁begin｜>...]<｜tool▁calls▁end｜>
//
// Text outside the block is content; it streams at once, holding back only what might be the
// start of "<｜tool▁calls▁begin｜>". Inside the block each call is held until its
// <｜tool▁call▁end｜> arrives and its arguments parse as a JSON object; then one delta carries
// index, id, name and the arguments (a JSON string, as the model wrote it). A malformed call
// (bad or missing JSON, missing separator, stray text, or a block the stream leaves unfinished)
// and everything after it become plain content, so nothing the model wrote is lost and no
// half-formed call is ever announced. The concatenated deltas of any split of a text equal
// Parse() of the whole text.

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace r2::chat {

enum class ToolCallFormat { kDeepSeekV3, kDeepSeekV31 };

struct ToolCall {
  int index = 0;
  std::string id;  // "call_" + caller-supplied suffix
  std::string name;
  std::string arguments;  // JSON text of an object
};

struct ToolCallDelta {
  std::string content;
  std::vector<ToolCall> calls;  // completed calls, in order

  void Append(ToolCallDelta other);
};

class ToolCallParser {
 public:
  // `id_suffix(index)` gives the unique part of each call's id (e.g. random, or a request-derived
  // counter for determinism). The default uses the call index.
  explicit ToolCallParser(ToolCallFormat format,
                          std::function<std::string(int)> id_suffix = nullptr);

  ToolCallDelta Push(std::string_view text);
  ToolCallDelta Finish();

  // Number of calls emitted so far (finish_reason is "tool_calls" when it is non-zero).
  int call_count() const { return next_index_; }

  static ToolCallDelta Parse(std::string_view text, ToolCallFormat format,
                             std::function<std::string(int)> id_suffix = nullptr);

 private:
  enum class State { kContent, kBetweenCalls, kInCall, kFallback };

  void Process(bool final, ToolCallDelta* out);
  bool ProcessContent(bool final, ToolCallDelta* out);
  bool ProcessBetween(bool final, ToolCallDelta* out);
  bool ProcessCall(bool final, ToolCallDelta* out);
  void Fail(ToolCallDelta* out);
  bool ParseCallBody(std::string_view body, ToolCall* call) const;

  ToolCallFormat format_;
  std::function<std::string(int)> id_suffix_;
  State state_ = State::kContent;
  std::string buffer_;   // text not yet consumed
  std::string pending_;  // raw text of the block since the last completed call
  int next_index_ = 0;
};

}  // namespace r2::chat
