#include "engine/active_request.h"

#include <algorithm>
#include <string>
#include <utility>

#include "engine/request_stream.h"

namespace r2::engine {
namespace {

int OutcomeRank(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return 0;
    case FinishReason::kStop:
      return 1;
    case FinishReason::kLength:
      return 2;
    case FinishReason::kAbort:
      return 3;
    case FinishReason::kError:
      return 4;
  }
  return 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ActiveRequest>> ActiveRequest::Create(const PendingRequest& pending,
                                                                     const OutputContext& context) {
  const Request& request = pending.request;
  std::unique_ptr<ActiveRequest> active(new ActiveRequest(
      pending.request_id, pending.stream, static_cast<int32_t>(request.prompt.size())));
  const int32_t n = request.params.n;
  active->choices_.reserve(n);
  active->deltas_.resize(n);
  for (int32_t c = 0; c < n; ++c) {
    absl::StatusOr<sampling::SamplingState> state = sampling::SamplingState::Create(
        request.params, request.prompt, context.vocab_size, static_cast<uint32_t>(c));
    if (!state.ok()) return state.status();
    active->choices_.push_back(Choice{
        .sampling = *std::move(state),
        .stop = sampling::StopChecker(request.params, context.eos_token_ids),
    });
    if (context.tokenizer != nullptr) {
      active->choices_.back().detokenizer.emplace(*context.tokenizer,
                                                  request.params.skip_special_tokens);
    }
    active->deltas_[c].index = c;
  }
  return active;
}

ActiveRequest::ActiveRequest(uint64_t request_id, std::weak_ptr<RequestStream> stream,
                             int32_t num_prompt_tokens)
    : request_id_(request_id), stream_(std::move(stream)), num_prompt_tokens_(num_prompt_tokens) {}

void ActiveRequest::SetCachedTokens(int32_t cached_tokens) {
  cached_tokens_ = std::max(cached_tokens_, cached_tokens);
}

bool ActiveRequest::AddToken(int32_t choice_index, const sampling::SampleResult& result) {
  Choice& choice = choices_[choice_index];
  ChoiceDelta& delta = deltas_[choice_index];
  touched_ = true;
  ++choice.num_output_tokens;
  delta.token_ids.push_back(result.token);
  if (result.has_logprobs) delta.logprobs.push_back(result.logprobs);
  std::string piece;
  if (choice.detokenizer.has_value()) choice.detokenizer->Add(result.token, &piece);
  sampling::StopResult stop = choice.stop.Append(result.token, piece);
  delta.text += stop.text;
  if (stop.finish != sampling::FinishReason::kStop) return false;
  choice.stopped_by_checker = true;
  if (stop.stop_token.has_value()) {
    choice.stop_reason = std::to_string(*stop.stop_token);
  } else if (stop.stop_string.has_value()) {
    choice.stop_reason = *stop.stop_string;
  }
  return true;
}

void ActiveRequest::End(int32_t choice_index, FinishReason reason, const std::string& error) {
  Choice& choice = choices_[choice_index];
  if (choice.ended) return;
  ChoiceDelta& delta = deltas_[choice_index];
  touched_ = true;
  if (reason != FinishReason::kError && !choice.stopped_by_checker) {
    // Length or abort: the text held back for stop strings or an unfinished character is output.
    delta.text += choice.stop.Flush();
    if (choice.detokenizer.has_value()) delta.text += choice.detokenizer->Flush();
  }
  delta.finish_reason = reason;
  if (reason == FinishReason::kStop) delta.stop_reason = choice.stop_reason;
  if (reason == FinishReason::kError) delta.error = error;
  choice.ended = true;
  ++num_ended_;
  if (OutcomeRank(reason) > OutcomeRank(outcome_)) outcome_ = reason;
}

void ActiveRequest::EndAll(FinishReason reason, const std::string& error) {
  for (int32_t c = 0; c < num_choices(); ++c) End(c, reason, error);
}

void ActiveRequest::Deliver() {
  if (!touched_) return;
  touched_ = false;
  std::optional<Usage> usage;
  if (finished()) {
    Usage u{.prompt_tokens = num_prompt_tokens_,
            .cached_tokens = std::max(cached_tokens_, 0),
            .scheduled_at = scheduled_at_,
            .first_token_at = first_token_at_,
            .last_token_at = last_token_at_};
    for (const Choice& choice : choices_) u.completion_tokens += choice.num_output_tokens;
    usage = u;
  }
  if (std::shared_ptr<RequestStream> stream = stream_.lock()) stream->Deliver(deltas_, usage);
  for (ChoiceDelta& delta : deltas_) {
    delta.token_ids.clear();
    delta.logprobs.clear();
    delta.text.clear();
    delta.finish_reason = FinishReason::kNone;
    delta.stop_reason.clear();
    delta.error.clear();
  }
}

void EndUnstartedRequest(const PendingRequest& pending, FinishReason reason,
                         const std::string& error) {
  std::shared_ptr<RequestStream> stream = pending.stream.lock();
  if (stream == nullptr) return;
  std::vector<ChoiceDelta> deltas(pending.request.params.n);
  for (int32_t c = 0; c < pending.request.params.n; ++c) {
    deltas[c].index = c;
    deltas[c].finish_reason = reason;
    if (reason == FinishReason::kError) deltas[c].error = error;
  }
  stream->Deliver(deltas,
                  Usage{.prompt_tokens = static_cast<int32_t>(pending.request.prompt.size())});
}

}  // namespace r2::engine
