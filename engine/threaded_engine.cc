#include "engine/threaded_engine.h"

#include <algorithm>
#include <exception>
#include <future>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/request_stream.h"

namespace r2::engine {

absl::Status ValidateRequest(const RequestLimits& limits, Request& request) {
  const int64_t prompt_len = static_cast<int64_t>(request.prompt.size());
  if (prompt_len == 0) return absl::InvalidArgumentError("prompt must not be empty");
  sampling::SamplingParams& params = request.params;
  if (absl::Status s = params.Validate(limits.vocab_size); !s.ok()) return s;
  for (int64_t i = 0; i < prompt_len; ++i) {
    const int32_t token = request.prompt[i];
    if (token < 0 || token >= limits.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt token id %d at position %d is outside the vocabulary [0, %d)",
                          token, i, limits.vocab_size));
    }
  }
  if (!params.stop.empty() && !limits.has_tokenizer) {
    return absl::InvalidArgumentError(
        "stop strings need a tokenizer, and the model directory has no tokenizer.json");
  }
  if (params.n > limits.max_num_seqs) {
    return absl::InvalidArgumentError(
        absl::StrFormat("n (%d) exceeds max_num_seqs (%d)", params.n, limits.max_num_seqs));
  }
  if (prompt_len >= limits.max_model_len) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "context length exceeded: prompt (%d tokens) leaves no room for output within "
        "max_model_len (%d)",
        prompt_len, limits.max_model_len));
  }
  const int64_t max_tokens = params.max_tokens.value_or(limits.max_model_len - prompt_len);
  if (prompt_len + max_tokens > limits.max_model_len) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "context length exceeded: prompt (%d tokens) + max_tokens (%d) = %d exceeds "
        "max_model_len (%d)",
        prompt_len, max_tokens, prompt_len + max_tokens, limits.max_model_len));
  }
  // The last sampled token is never computed, so one choice holds prompt + max_tokens - 1.
  const int64_t blocks = (prompt_len + max_tokens - 1 + limits.block_size - 1) / limits.block_size;
  if (blocks > limits.num_blocks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prompt (%d tokens) + max_tokens (%d) needs %d KV blocks of %d tokens, but the KV pool "
        "has %d",
        prompt_len, max_tokens, blocks, limits.block_size, limits.num_blocks));
  }
  params.max_tokens = static_cast<int32_t>(max_tokens);
  return absl::OkStatus();
}

ThreadedEngine::ThreadedEngine(const EngineConfig& config, const model::ModelConfig& model_config,
                               std::unique_ptr<tokenizer::Tokenizer> tokenizer,
                               std::unique_ptr<EngineCore> core, const RequestLimits& limits)
    : config_(config),
      model_config_(model_config),
      limits_(limits),
      tokenizer_(std::move(tokenizer)),
      inbox_(std::make_shared<EngineInbox>(config.max_queued_requests)),
      core_(std::move(core)),
      watchdog_enabled_(config.watchdog_timeout > absl::ZeroDuration()) {
  // The queue admission counts against, published as soon as each step has scheduled.
  core_->set_on_scheduled(
      [inbox = inbox_.get()](int32_t num_waiting) { inbox->SetNumWaiting(num_waiting); });
  Publish();
  thread_ = std::thread([this] { Loop(); });
  if (watchdog_enabled_) watchdog_ = std::thread([this] { WatchdogLoop(); });
}

ThreadedEngine::~ThreadedEngine() {
  Shutdown(absl::ZeroDuration());
  std::lock_guard<std::mutex> lock(join_mu_);
  if (thread_.joinable()) thread_.join();  // a stalled engine: waits for the stuck step
}

absl::StatusOr<std::shared_ptr<RequestHandle>> ThreadedEngine::Submit(Request request) {
  if (absl::Status s = ValidateRequest(limits_, request); !s.ok()) return s;
  const uint64_t id = next_request_id_.fetch_add(1, std::memory_order_relaxed);
  auto stream = std::make_shared<RequestStream>(id, inbox_);
  // Registered before the push: a watchdog verdict either sees this stream or comes before the
  // push, which then fails (the verdict marks the inbox faulted before reading the registry).
  if (watchdog_enabled_) RegisterLive(stream, request);
  absl::Status pushed = inbox_->Push(
      PendingRequest{.request_id = id, .request = std::move(request), .stream = stream});
  if (!pushed.ok()) {
    stream->Detach();
    return pushed;
  }
  return stream;
}

void ThreadedEngine::RegisterLive(const std::shared_ptr<RequestStream>& stream,
                                  const Request& request) {
  std::lock_guard<std::mutex> lock(live_mu_);
  if (live_.size() >= live_prune_at_) {
    std::erase_if(live_, [](const LiveRequest& r) { return r.stream.expired(); });
    live_prune_at_ = std::max<size_t>(64, 2 * live_.size());
  }
  live_.push_back(LiveRequest{.stream = stream,
                              .n = request.params.n,
                              .prompt_tokens = static_cast<int32_t>(request.prompt.size())});
}

void ThreadedEngine::Shutdown(absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(join_mu_);
  inbox_->BeginDrain(absl::Now() + timeout);
  {
    // The engine thread leaves its loop once drained, unless a step is stuck: then the watchdog's
    // verdict (which has already ended every request) ends the wait.
    std::unique_lock<std::mutex> watch(watch_mu_);
    watch_cv_.wait(watch, [this] { return loop_exited_ || stalled_.load(); });
    if (!loop_exited_) {
      watch.unlock();
      if (watchdog_.joinable()) watchdog_.join();  // it has given its verdict and returned
      return;
    }
    watch_stop_ = true;
  }
  watch_cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  if (thread_.joinable()) thread_.join();
}

absl::Status ThreadedEngine::CheckIntegrity() {
  if (stalled()) return absl::UnavailableError("the engine is stuck in a step (watchdog)");
  // The task owns the promise, so the engine thread never touches this frame after set_value.
  auto promise = std::make_shared<std::promise<absl::Status>>();
  std::future<absl::Status> result = promise->get_future();
  EngineCore* core = core_.get();
  if (!inbox_->PostTask([promise, core] { promise->set_value(core->CheckIntegrity()); })) {
    return core_->CheckIntegrity();  // the engine thread has stopped
  }
  return result.get();
}

void ThreadedEngine::Loop() {
  InboxBatch batch;
  for (;;) {
    const bool busy = !faulted_ && !core_->idle();
    inbox_->Take(/*wait=*/!busy, &batch);
    if (!Process(batch)) break;
  }
  for (std::function<void()>& task : inbox_->MarkStopped()) task();
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    loop_exited_ = true;
  }
  watch_cv_.notify_all();
}

bool ThreadedEngine::Process(InboxBatch& batch) {
  for (std::function<void()>& task : batch.tasks) task();
  if (faulted_) {
    for (const PendingRequest& pending : batch.requests) {
      core_->FailUnstarted(pending, fault_message_);
    }
    if (!batch.requests.empty()) Publish();  // their ends, in the stats
    return !batch.draining;
  }
  for (PendingRequest& pending : batch.requests) core_->Add(std::move(pending));
  for (uint64_t id : batch.aborts) core_->Abort(id);
  if (batch.draining) {
    if (core_->idle()) {
      Publish();
      return false;
    }
    if (absl::Now() >= batch.drain_deadline) core_->AbortAll();
  }
  if (core_->idle()) {
    Publish();  // requests may have ended without a step (dropped handles)
    return true;
  }
  absl::Status stepped = WatchedStep();
  if (!stepped.ok()) Fault(stepped);
  Publish();
  return true;
}

// Nothing in the step throws on purpose; an allocation failure (or a bug) that does must still end
// every request with an error instead of terminating the process from the engine thread.
absl::Status ThreadedEngine::StepCatchingExceptions() {
  try {
    return core_->Step();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("exception in the engine step: ", e.what()));
  }
}

absl::Status ThreadedEngine::WatchedStep() {
  if (!watchdog_enabled_) return StepCatchingExceptions();
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    step_started_ = std::chrono::steady_clock::now();
  }
  watch_cv_.notify_all();
  absl::Status stepped = StepCatchingExceptions();
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    step_started_.reset();
  }
  // A step that outlived the watchdog and then returned: its requests have already ended (the
  // verdict marks the inbox faulted first, so this also sees a verdict still being delivered).
  if (stepped.ok() && !inbox_->healthy()) {
    return absl::DeadlineExceededError("a step ran past the watchdog timeout");
  }
  return stepped;
}

void ThreadedEngine::WatchdogLoop() {
  const auto timeout = absl::ToChronoNanoseconds(config_.watchdog_timeout);
  std::unique_lock<std::mutex> lock(watch_mu_);
  for (;;) {
    if (watch_stop_) return;
    if (!step_started_.has_value()) {
      watch_cv_.wait(lock);  // idle or between steps: no deadline
      continue;
    }
    const auto deadline = *step_started_ + timeout;
    if (std::chrono::steady_clock::now() < deadline) {
      watch_cv_.wait_until(lock, deadline);
      continue;  // re-read: the step may have ended or another begun
    }
    break;
  }
  lock.unlock();
  FailStuckEngine(absl::StrCat("engine fault: watchdog: an engine step has run for more than ",
                               absl::FormatDuration(config_.watchdog_timeout),
                               " without finishing; the engine is stuck"));
}

void ThreadedEngine::FailStuckEngine(const std::string& message) {
  inbox_->MarkFaulted();  // first: a Submit that registers after the scan below is refused
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    stalled_.store(true, std::memory_order_release);
  }
  watch_cv_.notify_all();  // Shutdown may be waiting; it joins this thread before returning
  // The accounting the stuck engine thread cannot publish, before any client sees an error: every
  // accepted request that had not ended ends with one (no Push succeeds after MarkFaulted, so
  // the count is final).
  EngineStats stats = inbox_->stats();
  const uint64_t ended = stats.requests_finished_stop + stats.requests_finished_length +
                         stats.requests_finished_abort + stats.requests_finished_error;
  if (stats.requests_accepted > ended)
    stats.requests_finished_error += stats.requests_accepted - ended;
  stats.num_running = 0;
  stats.num_waiting = 0;
  inbox_->PublishStats(stats);
  std::vector<LiveRequest> live;
  {
    std::lock_guard<std::mutex> lock(live_mu_);
    live.swap(live_);
  }
  for (const LiveRequest& request : live) {
    std::shared_ptr<RequestStream> stream = request.stream.lock();
    if (stream == nullptr) continue;  // handle dropped: nobody reads it
    std::vector<ChoiceDelta> deltas(request.n);
    for (int32_t c = 0; c < request.n; ++c) {
      deltas[c].index = c;
      deltas[c].finish_reason = FinishReason::kError;
      deltas[c].error = message;
    }
    // A stream that has already ended ignores this (RequestStream::Deliver).
    stream->Deliver(deltas, Usage{.prompt_tokens = request.prompt_tokens});
  }
}

void ThreadedEngine::Fault(const absl::Status& status) {
  faulted_ = true;
  fault_message_ = absl::StrCat("engine fault: ", status.ToString());
  inbox_->MarkFaulted();
  core_->FailAll(fault_message_);
}

void ThreadedEngine::Publish() {
  inbox_->SetNumWaiting(core_->num_waiting());
  inbox_->PublishStats(core_->stats());
}

}  // namespace r2::engine
