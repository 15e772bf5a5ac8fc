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
//
// With stream_arguments (streamed chat, as OpenAI and vLLM stream tool calls), a call is
// announced as soon as its header is complete and valid (V3: "function", the separator, the name
// and its newline, and the opening fence line when there is one; V3.1: the name and the
// separator): the first ToolCall of a call carries index, id and name (never a partial name) and
// the arguments written so far; each later one carries the same index, empty id and name, and the
// next piece of the arguments. The pieces concatenated equal the arguments Parse() gives (the text
// between header and <｜tool▁call▁end｜>, trimmed, the V3 closing fence removed); text that may
// still turn out to be that trim, the fence or a tag is held back. Once announced, a call stands:
// its arguments are not checked for JSON (as OpenAI and vLLM, a client may get invalid JSON), a
// stray tag inside them ends the call and the rest becomes content, and a stream that ends inside
// them leaves the call with the arguments so far. Before its header is complete a call is held,
// and a malformed header makes the block content as above.

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
                          std::function<std::string(int)> id_suffix = nullptr,
                          bool stream_arguments = false);

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
  // stream_arguments: the header of the call at the start of buffer_ (before `end`, the call's
  // end tag or npos). Returns 1 with *name and *args_at (where the arguments start) when complete
  // and valid, 0 when more text is needed, -1 when malformed.
  int ParseHeader(std::string_view body, bool complete, std::string* name, size_t* args_at,
                  bool* fenced) const;
  bool StreamCall(bool final, ToolCallDelta* out);
  void StreamArguments(size_t end, ToolCallDelta* out);
  void EndStreamedCall();

  ToolCallFormat format_;
  std::function<std::string(int)> id_suffix_;
  State state_ = State::kContent;
  std::string buffer_;   // text not yet consumed
  std::string pending_;  // raw text of the block since the last completed call
  int next_index_ = 0;
  // stream_arguments state of the call being streamed.
  bool stream_arguments_ = false;
  bool announced_ = false;     // its first ToolCall was emitted
  bool args_started_ = false;  // its leading whitespace was skipped
  bool fenced_ = false;        // V3 arguments opened with a code fence
};

}  // namespace r2::chat
