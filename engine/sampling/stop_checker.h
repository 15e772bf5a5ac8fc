#pragma once
// Stop conditions for one sequence, checked after every generated token, in vLLM's order:
//
//   0. while fewer than min_tokens tokens have been generated (counting this one), no stop
//      condition but max_tokens applies, and stop strings are not searched (their text streams)
//   1. EOS (one of the model's EOS ids, unless ignore_eos)  -> "stop", no stop_reason
//   2. a stop_token_ids entry                               -> "stop", stop_reason = the id
//      In 1 and 2 the token's own text is not part of the output.
//   3. a stop string completed by this token's text        -> "stop", stop_reason = the string
//      The output ends where the stop string starts (or ends, with include_stop_str_in_output);
//      text after it is dropped.
//   4. max_tokens tokens generated                          -> "length"
//
// Stop strings are searched in the detokenized text across token boundaries ("ST" + "OP"). The
// match is the one that completes first in the text; when several complete at the same byte, the
// longest (so ["STOP", "STOPPING"] on "STOPPING" matches "STOP"). Text that could be the start of
// a stop string is held back (it must not be streamed yet) until it is ruled out, and so is an
// incomplete UTF-8 sequence at the end of the text, so every streamed piece ends on a code point
// boundary. Matching is byte-wise with one Knuth-Morris-Pratt automaton per stop string: linear in
// the text times the number of stop strings, whatever the strings.
//
// Not thread-safe; one checker per sequence, fed in order.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/types/span.h"
#include "engine/sampling/sampling_params.h"

namespace r2::sampling {

enum class FinishReason { kNone, kStop, kLength };

// "stop", "length", or "" for kNone: OpenAI's finish_reason.
std::string_view FinishReasonName(FinishReason reason);

// Incremental search for literal stop strings in streamed text.
class StopStringMatcher {
 public:
  struct Result {
    std::string emit;               // text that may be streamed now
    std::optional<size_t> matched;  // index into the stop strings when one matched
  };

  // `stops` must be non-empty strings (SamplingParams::Validate guarantees it).
  StopStringMatcher(std::vector<std::string> stops, bool include_stop_in_output);

  // Appends the next piece of text. After a match the matcher is done and ignores further text.
  Result Feed(std::string_view text);
  // Appends text that must not be searched (under min_tokens): everything held is released and
  // no partial match carries over.
  std::string FeedUnsearched(std::string_view text);
  // Releases the held-back text, for a sequence that ended for another reason.
  std::string Flush();

  size_t held_back_bytes() const { return held_.size(); }
  const std::vector<std::string>& stops() const { return stops_; }

 private:
  std::vector<std::string> stops_;
  bool include_stop_;
  bool done_ = false;
  std::vector<std::vector<uint32_t>> failure_;  // KMP failure function per stop string
  std::vector<uint32_t> state_;  // per stop string: longest prefix that ends the text so far
  std::string held_;             // text not yet emitted
};

struct StopResult {
  FinishReason finish = FinishReason::kNone;
  std::optional<int32_t> stop_token;       // the stop_token_ids entry that matched
  std::optional<std::string> stop_string;  // the stop string that matched
  std::string text;                        // text that may be streamed now

  bool finished() const { return finish != FinishReason::kNone; }
};

class StopChecker {
 public:
  // `params` must be valid; `eos_token_ids` are the model's.
  StopChecker(const SamplingParams& params, absl::Span<const int32_t> eos_token_ids);

  // After each generated token: the token and the text the incremental detokenizer produced for
  // it (may be empty). Returns whether the sequence finished, why, and the text to stream now;
  // at a finish every held-back byte that belongs to the output is included. Call no more after
  // a finish.
  StopResult Append(int32_t token, std::string_view text);

  // Held-back text, for a sequence that ends for a reason outside this checker (abort).
  std::string Flush() { return matcher_.Flush(); }

  size_t held_back_bytes() const { return matcher_.held_back_bytes(); }
  int64_t num_output_tokens() const { return num_output_tokens_; }

 private:
  bool IsEos(int32_t token) const;
  bool IsStopToken(int32_t token) const;

  int32_t min_tokens_;
  std::optional<int32_t> max_tokens_;
  bool ignore_eos_;
  std::vector<int32_t> eos_token_ids_;
  std::vector<int32_t> stop_token_ids_;
  StopStringMatcher matcher_;
  int64_t num_output_tokens_ = 0;
};

}  // namespace r2::sampling
