#pragma once
// Splits a model's output into reasoning ("<think>...</think>") and content, incrementally.
//
// DeepSeek-R1 and V3.1 in thinking mode end the prompt with "<think>" (R1: "<think>\n"), so the
// output starts inside the reasoning and closes it with "</think>": construct with
// starts_in_reasoning = true. An explicit "<think>" at the start of the output (after optional
// whitespace) also opens the reasoning. Without either, the whole output is content. After
// "</think>" everything is content, verbatim (tags included). If the output ends while still in
// the reasoning (no "</think>"), everything was reasoning.
//
// Push() returns what can be decided so far and holds back only text that might still be the
// start of a tag; Finish() flushes the rest. The concatenated deltas of any split of a text equal
// Parse() of the whole text.

#include <string>
#include <string_view>

namespace r2::chat {

struct ReasoningOptions {
  bool starts_in_reasoning = false;
  std::string start_tag = "<think>";
  std::string end_tag = "</think>";
};

struct ReasoningDelta {
  std::string reasoning;
  std::string content;

  bool empty() const { return reasoning.empty() && content.empty(); }
  void Append(const ReasoningDelta& other) {
    reasoning += other.reasoning;
    content += other.content;
  }
};

class ReasoningParser {
 public:
  explicit ReasoningParser(ReasoningOptions options);

  ReasoningDelta Push(std::string_view text);
  ReasoningDelta Finish();

  // Whether the reasoning has ended (content is flowing).
  bool in_content() const { return state_ == State::kContent; }

  static ReasoningDelta Parse(std::string_view text, const ReasoningOptions& options);

 private:
  enum class State { kStart, kReasoning, kContent };

  // Consumes what can be decided from buffer_; with `final`, consumes everything.
  void Process(bool final, ReasoningDelta* out);
  bool ProcessStart(bool final, ReasoningDelta* out);
  void ProcessReasoning(bool final, ReasoningDelta* out);

  ReasoningOptions options_;
  State state_ = State::kStart;
  std::string buffer_;
};

// Whether a rendered prompt leaves the model inside the reasoning: its last start tag comes after
// its last end tag (R1's "...<｜Assistant｜><think>\n", V3.1 with thinking on). Use it to set
// ReasoningOptions::starts_in_reasoning for the prompt the chat template produced.
bool PromptOpensReasoning(std::string_view prompt, const ReasoningOptions& options = {});

// Length of the longest suffix of `text` that is a proper prefix of `tag` (text that must be
// held back because the tag may be completed by the next delta).
size_t PartialTagSuffix(std::string_view text, std::string_view tag);

}  // namespace r2::chat
