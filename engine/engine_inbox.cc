#include "engine/engine_inbox.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"

namespace r2::engine {

absl::Status EngineInbox::Push(PendingRequest request) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kFaulted) {
      return absl::UnavailableError("the engine has failed and accepts no requests");
    }
    if (draining_) return absl::UnavailableError("the engine is shutting down");
    const int64_t queued = static_cast<int64_t>(requests_.size()) + num_waiting_;
    if (queued >= max_queued_) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%d requests are waiting (max_queued_requests %d); retry later", queued, max_queued_));
    }
    requests_.push_back(std::move(request));
    ++accepted_;
  }
  posted_.notify_one();
  return absl::OkStatus();
}

void EngineInbox::PostAbort(uint64_t request_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    aborts_.push_back(request_id);
  }
  posted_.notify_one();
}

bool EngineInbox::PostTask(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return false;
    tasks_.push_back(std::move(task));
  }
  posted_.notify_one();
  return true;
}

void EngineInbox::BeginDrain(absl::Time deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kServing) state_ = State::kDraining;
    drain_deadline_ = draining_ ? std::min(drain_deadline_, deadline) : deadline;
    draining_ = true;
  }
  posted_.notify_one();
}

void EngineInbox::Take(bool wait, InboxBatch* batch) {
  batch->Clear();
  std::unique_lock<std::mutex> lock(mu_);
  if (wait) {
    posted_.wait(lock, [this] {
      return !requests_.empty() || !aborts_.empty() || !tasks_.empty() || draining_;
    });
  }
  batch->requests.swap(requests_);
  // Taken requests still count against max_queued_requests until the engine thread publishes
  // the scheduler's count once the step has scheduled (SetNumWaiting): otherwise a burst
  // arriving meanwhile would find them counted nowhere and more than the limit would be admitted.
  num_waiting_ += static_cast<int32_t>(batch->requests.size());
  batch->aborts.swap(aborts_);
  batch->tasks.swap(tasks_);
  batch->draining = draining_;
  batch->drain_deadline = drain_deadline_;
}

void EngineInbox::MarkFaulted() {
  std::lock_guard<std::mutex> lock(mu_);
  state_ = State::kFaulted;
}

void EngineInbox::SetNumWaiting(int32_t num_waiting) {
  std::lock_guard<std::mutex> lock(mu_);
  num_waiting_ = num_waiting;
}

void EngineInbox::PublishStats(const EngineStats& stats) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_ = stats;
}

std::vector<std::function<void()>> EngineInbox::MarkStopped() {
  std::lock_guard<std::mutex> lock(mu_);
  stopped_ = true;
  aborts_.clear();
  return std::exchange(tasks_, {});
}

bool EngineInbox::healthy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_ != State::kFaulted;
}

EngineStats EngineInbox::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats stats = stats_;
  stats.requests_accepted = accepted_;
  return stats;
}

}  // namespace r2::engine
