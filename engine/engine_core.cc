#include "engine/engine_core.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace r2::engine {
namespace {

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

FinishReason EngineReason(scheduler::FinishReason reason) {
  switch (reason) {
    case scheduler::FinishReason::kStop:
      return FinishReason::kStop;
    case scheduler::FinishReason::kLength:
      return FinishReason::kLength;
    case scheduler::FinishReason::kAbort:
      return FinishReason::kAbort;
    case scheduler::FinishReason::kNone:
      break;
  }
  return FinishReason::kError;  // Postprocess never finishes without a reason
}

}  // namespace

absl::StatusOr<std::unique_ptr<EngineCore>> EngineCore::Create(
    EngineCoreOptions options, std::unique_ptr<ModelRunner> runner) {
  absl::StatusOr<cache::BlockPool> pool =
      cache::BlockPool::Create(options.num_blocks, options.block_size);
  if (!pool.ok()) return pool.status();
  absl::StatusOr<std::unique_ptr<scheduler::Scheduler>> scheduler =
      scheduler::Scheduler::Create(options.scheduler, *std::move(pool));
  if (!scheduler.ok()) return scheduler.status();
  absl::StatusOr<sampling::Sampler> sampler = sampling::Sampler::Create(sampling::SamplerOptions{
      .vocab_size = options.output.vocab_size,
      .eos_token_ids = options.output.eos_token_ids,
      .seed = options.seed,
      .num_threads = options.sampler_threads,
  });
  if (!sampler.ok()) return sampler.status();
  return std::unique_ptr<EngineCore>(new EngineCore(std::move(options), *std::move(scheduler),
                                                    *std::move(sampler), std::move(runner)));
}

EngineCore::EngineCore(EngineCoreOptions options, std::unique_ptr<scheduler::Scheduler> scheduler,
                       sampling::Sampler sampler, std::unique_ptr<ModelRunner> runner)
    : options_(std::move(options)),
      scheduler_(std::move(scheduler)),
      sampler_(std::move(sampler)),
      device_sampler_(sampling::SamplerOptions{.vocab_size = options_.output.vocab_size,
                                               .eos_token_ids = options_.output.eos_token_ids,
                                               .seed = options_.seed}),
      runner_(std::move(runner)) {
  stats_.kv_blocks_total = scheduler_->pool().num_blocks();
  UpdateStats();
}

void EngineCore::Add(PendingRequest pending) {
  if (pending.stream.expired()) {  // the client went away while the request was queued
    ++stats_.requests_finished_abort;
    return;
  }
  absl::StatusOr<std::unique_ptr<ActiveRequest>> active =
      ActiveRequest::Create(pending, options_.output);
  if (!active.ok()) {
    EndUnstartedRequest(pending, FinishReason::kError, active.status().ToString());
    ++stats_.requests_finished_error;
    return;
  }
  const Request& request = pending.request;
  absl::StatusOr<int64_t> first_seq = scheduler_->AddRequest(scheduler::SchedulerRequest{
      .request_id = pending.request_id,
      .prompt = request.prompt,
      .max_tokens = *request.params.max_tokens,
      .n = request.params.n,
      .priority = request.priority,
      .cache_salt = request.cache_salt,
  });
  if (!first_seq.ok()) {
    EndUnstartedRequest(pending, FinishReason::kError, first_seq.status().ToString());
    ++stats_.requests_finished_error;
    return;
  }
  for (int32_t c = 0; c < request.params.n; ++c) {
    sequence_owner_[*first_seq + c] = {pending.request_id, c};
  }
  requests_[pending.request_id] = *std::move(active);
}

void EngineCore::Abort(uint64_t request_id) {
  if (requests_.contains(request_id)) scheduler_->Abort(request_id).IgnoreError();
}

void EngineCore::AbortAll() {
  for (const auto& [id, request] : requests_) scheduler_->Abort(id).IgnoreError();
}

ActiveRequest* EngineCore::Find(uint64_t request_id) {
  auto it = requests_.find(request_id);
  return it == requests_.end() ? nullptr : it->second.get();
}

absl::Status EngineCore::Step() {
  const absl::Time start = absl::Now();
  touched_.clear();
  if (absl::Status s = scheduler_->Schedule(&plan_); !s.ok()) return s;
  EndAbortedSequences();
  for (const scheduler::ScheduledChunk& chunk : plan_.chunks) {
    if (chunk.is_decode) continue;  // a decoding request was scheduled before
    // Prompt tokens count when the prefill starts: a request aborted while queued has none.
    ActiveRequest* request = Find(chunk.request_id);
    if (request != nullptr && request->MarkScheduled(start)) {
      stats_.prompt_tokens_total += request->num_prompt_tokens();
    }
  }
  if (on_scheduled_) on_scheduled_(scheduler_->num_waiting());
  timings_.schedule = SecondsSince(start);
  sampled_.clear();
  timings_.forward = timings_.sample = 0;
  if (!plan_.chunks.empty()) {
    if (absl::Status s = RunModelAndSample(); !s.ok()) return s;
  }
  const absl::Time post_start = absl::Now();
  if (absl::Status s = scheduler_->Postprocess(sampled_, &finished_); !s.ok()) return s;
  EndFinishedSequences();
  DeliverTouched();
  UpdateStats();
  stats_.last_step_tokens = plan_.num_batched_tokens;
  absl::Status integrity = absl::OkStatus();
  if (scheduler_->idle()) {
    integrity = scheduler_->CheckIntegrity();
    if (integrity.ok() && !requests_.empty()) {
      integrity = absl::InternalError(
          absl::StrCat("the scheduler is idle but ", requests_.size(), " requests have not ended"));
    }
    ++stats_.integrity_checks;
    if (!integrity.ok()) ++stats_.integrity_failures;
  }
  timings_.postprocess = SecondsSince(post_start);
  timings_.total = SecondsSince(start);
  stats_.last_step_seconds = timings_.total;
  return integrity;
}

absl::Status EngineCore::RunModelAndSample() {
  const absl::Time forward_start = absl::Now();
  if (options_.before_forward) {
    if (absl::Status s = options_.before_forward(plan_.step); !s.ok()) return s;
  }
  if (absl::Status s = runner_->Run(plan_, &logits_); !s.ok()) return s;
  const absl::Time sample_start = absl::Now();
  timings_.forward = absl::ToDoubleSeconds(sample_start - forward_start);
  absl::Status sampled = SampleChunks();
  timings_.sample = SecondsSince(sample_start);
  return sampled;
}

absl::Status EngineCore::SampleChunks() {
  // Gather every row with its state first, so the sampler can take the rows in parallel; then
  // feed the tokens to the detokenizers and stop checkers in chunk order.
  batch_rows_.clear();
  batch_row_ids_.clear();
  batch_states_.clear();
  batch_chunks_.clear();
  batch_requests_.clear();
  size_t row = 0;
  for (const scheduler::ScheduledChunk& chunk : plan_.chunks) {
    if (!chunk.needs_logits) continue;
    ActiveRequest* request = Find(chunk.request_id);
    if (request == nullptr || row >= logits_.rows.size()) {
      return absl::InternalError(absl::StrCat("no request or logits row for sequence ",
                                              chunk.seq_id, " of request ", chunk.request_id));
    }
    if (!request->cached_tokens_known()) {
      if (const scheduler::Sequence* seq = scheduler_->FindSequence(chunk.seq_id)) {
        request->SetCachedTokens(std::max(seq->num_cached_tokens, 0));
      }
    }
    if (logits_.device != nullptr) {
      batch_row_ids_.push_back(logits_.rows[row++]);
    } else {
      batch_rows_.push_back(logits_.row(row++));
    }
    batch_states_.push_back(&request->sampling_state(chunk.choice_index));
    batch_chunks_.push_back(&chunk);
    batch_requests_.push_back(request);
  }
  batch_results_.resize(batch_states_.size());
  const absl::Status sampled =
      logits_.device != nullptr
          ? device_sampler_.SampleRows(*logits_.backend, logits_.device, logits_.device_rows,
                                       batch_row_ids_, batch_states_,
                                       absl::MakeSpan(batch_results_))
          : sampler_.SampleRows(batch_rows_, batch_states_, absl::MakeSpan(batch_results_));
  if (!sampled.ok()) return sampled;
  const absl::Time sampled_at = absl::Now();
  for (size_t i = 0; i < batch_chunks_.size(); ++i) {
    const scheduler::ScheduledChunk& chunk = *batch_chunks_[i];
    const sampling::SampleResult& result = batch_results_[i];
    batch_requests_[i]->MarkTokenSampled(sampled_at);
    const bool stop = batch_requests_[i]->AddToken(chunk.choice_index, result);
    sampled_.push_back({.seq_id = chunk.seq_id, .token = result.token, .stop = stop});
    touched_.push_back(batch_requests_[i]);
  }
  stats_.generation_tokens_total += sampled_.size();
  return absl::OkStatus();
}

void EngineCore::EndChoice(uint64_t request_id, int32_t choice, FinishReason reason) {
  ActiveRequest* request = Find(request_id);
  if (request == nullptr) return;
  request->End(choice, reason);
  touched_.push_back(request);
}

void EngineCore::EndAbortedSequences() {
  for (int64_t seq_id : plan_.aborted) {
    auto it = sequence_owner_.find(seq_id);
    if (it == sequence_owner_.end()) continue;
    EndChoice(it->second.first, it->second.second, FinishReason::kAbort);
    sequence_owner_.erase(it);
  }
}

void EngineCore::EndFinishedSequences() {
  for (const scheduler::FinishedSequence& finished : finished_) {
    if (ActiveRequest* request = Find(finished.request_id)) {
      request->SetCachedTokens(finished.num_cached_tokens);
    }
    EndChoice(finished.request_id, finished.choice_index, EngineReason(finished.reason));
    sequence_owner_.erase(finished.seq_id);
  }
}

void EngineCore::DeliverTouched() {
  // A request may be listed more than once; none is erased before every delivery is done.
  finished_requests_.clear();
  for (ActiveRequest* request : touched_) {
    request->Deliver();
    if (request->finished()) finished_requests_.push_back(request->request_id());
  }
  touched_.clear();
  for (uint64_t id : finished_requests_) {
    auto it = requests_.find(id);
    if (it == requests_.end()) continue;  // listed twice
    Retire(*it->second);
    requests_.erase(it);
  }
}

void EngineCore::Retire(const ActiveRequest& request) {
  switch (request.outcome()) {
    case FinishReason::kStop:
      ++stats_.requests_finished_stop;
      break;
    case FinishReason::kLength:
      ++stats_.requests_finished_length;
      break;
    case FinishReason::kAbort:
      ++stats_.requests_finished_abort;
      break;
    case FinishReason::kError:
    case FinishReason::kNone:
      ++stats_.requests_finished_error;
      break;
  }
}

void EngineCore::FailUnstarted(const PendingRequest& pending, const std::string& message) {
  EndUnstartedRequest(pending, FinishReason::kError, message);
  ++stats_.requests_finished_error;
}

void EngineCore::FailAll(const std::string& message) {
  for (auto& [id, request] : requests_) {
    request->EndAll(FinishReason::kError, message);
    request->Deliver();
    Retire(*request);
  }
  requests_.clear();
  sequence_owner_.clear();
  touched_.clear();
}

void EngineCore::UpdateStats() {
  const cache::BlockPool& pool = scheduler_->pool();
  const scheduler::SchedulerCounters& counters = scheduler_->counters();
  stats_.num_running = scheduler_->num_running();
  stats_.num_waiting = scheduler_->num_waiting();
  stats_.kv_blocks_used = pool.num_in_use();
  stats_.kv_blocks_cached = pool.num_cached();
  stats_.prefix_cache_queries = counters.prefix_cache_queries;
  stats_.prefix_cache_hits = counters.prefix_cache_hits;
  stats_.preemptions = counters.preemptions;
  stats_.steps = counters.steps;
}

}  // namespace r2::engine
