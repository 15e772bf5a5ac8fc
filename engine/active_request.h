#pragma once
// ActiveRequest: what the engine thread knows about one accepted request while it runs. Per
// choice: its SamplingState (seeded choices draw from (seed, choice index)), its incremental
// detokenizer (when the model has a tokenizer) and StopChecker, and the ChoiceDelta gathered in
// the current step; per request: the handle (a weak reference: a dropped handle is not kept
// alive) and the usage counts.
//
// Per step the engine calls AddToken for each sampled token (which says whether the stop checker
// ended the choice), End for each choice the scheduler ended, then Deliver once, which pushes the
// gathered deltas to the handle, with the usage when every choice has ended.
//
// Engine thread only; not thread-safe.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/engine.h"
#include "engine/engine_inbox.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/sampling_state.h"
#include "engine/sampling/stop_checker.h"
#include "engine/tokenizer/incremental_detokenizer.h"

namespace r2::engine {

class RequestStream;

// What every request of one engine shares.
struct OutputContext {
  int32_t vocab_size = 0;
  std::vector<int32_t> eos_token_ids;
  const tokenizer::Tokenizer* tokenizer = nullptr;  // nullptr: no text
};

class ActiveRequest {
 public:
  // `pending.request` must have passed Submit's checks (params valid, max_tokens resolved).
  static absl::StatusOr<std::unique_ptr<ActiveRequest>> Create(const PendingRequest& pending,
                                                               const OutputContext& context);

  uint64_t request_id() const { return request_id_; }
  int32_t num_choices() const { return static_cast<int32_t>(choices_.size()); }
  int32_t num_prompt_tokens() const { return num_prompt_tokens_; }
  bool finished() const { return num_ended_ == num_choices(); }
  // The request's outcome for the finish counters: the worst of its choices' reasons
  // (error > abort > length > stop).
  FinishReason outcome() const { return outcome_; }
  bool choice_ended(int32_t choice) const { return choices_[choice].ended; }
  // The handle was dropped (its destructor already posted an abort).
  bool stream_gone() const { return stream_.expired(); }
  sampling::SamplingState& sampling_state(int32_t choice) { return choices_[choice].sampling; }

  // Timings for Usage: the first scheduled step (kept from the first call) and the time tokens
  // were sampled (first and last kept). MarkScheduled is true on the first call (the prefill
  // starts).
  bool MarkScheduled(absl::Time now) {
    if (scheduled_at_ != absl::InfinitePast()) return false;
    scheduled_at_ = now;
    return true;
  }
  void MarkTokenSampled(absl::Time now) {
    if (first_token_at_ == absl::InfinitePast()) first_token_at_ = now;
    last_token_at_ = now;
  }

  // Records the prompt tokens of `choice` served from the prefix cache.
  void SetCachedTokens(int32_t cached_tokens);
  bool cached_tokens_known() const { return cached_tokens_ >= 0; }

  // Adds a token sampled for `choice`: to its delta (with logprobs when asked), through the
  // detokenizer and the stop checker. Returns true when a stop condition (EOS, stop token, stop
  // string) ends the choice with this token.
  bool AddToken(int32_t choice, const sampling::SampleResult& result);
  // Ends `choice` (the scheduler's verdict, an abort or an engine error): releases held-back
  // text (not after a stop or an error) and sets the terminal fields. Ignored if it has ended.
  void End(int32_t choice, FinishReason reason, const std::string& error = "");
  // Ends every choice that has not ended.
  void EndAll(FinishReason reason, const std::string& error = "");
  // Pushes the deltas gathered since the last call to the handle (usage too once finished).
  void Deliver();

 private:
  struct Choice {
    sampling::SamplingState sampling;
    sampling::StopChecker stop;
    std::optional<tokenizer::IncrementalDetokenizer> detokenizer;
    std::string stop_reason;  // set when the stop checker ended the choice
    bool stopped_by_checker = false;
    bool ended = false;
    int32_t num_output_tokens = 0;
  };

  ActiveRequest(uint64_t request_id, std::weak_ptr<RequestStream> stream,
                int32_t num_prompt_tokens);

  const uint64_t request_id_;
  const std::weak_ptr<RequestStream> stream_;
  const int32_t num_prompt_tokens_;
  std::vector<Choice> choices_;
  std::vector<ChoiceDelta> deltas_;  // one per choice, emptied by Deliver
  int32_t num_ended_ = 0;
  FinishReason outcome_ = FinishReason::kNone;
  int32_t cached_tokens_ = -1;
  absl::Time scheduled_at_ = absl::InfinitePast();
  absl::Time first_token_at_ = absl::InfinitePast();
  absl::Time last_token_at_ = absl::InfinitePast();
  bool touched_ = false;  // something to deliver
};

// Ends a request that never reached the scheduler: `reason` on every one of its n choices, with
// zero usage.
void EndUnstartedRequest(const PendingRequest& pending, FinishReason reason,
                         const std::string& error);

}  // namespace r2::engine
