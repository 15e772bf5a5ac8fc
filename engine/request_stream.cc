#include "engine/request_stream.h"

#include <utility>

#include "engine/engine_inbox.h"

namespace r2::engine {

RequestStream::RequestStream(uint64_t request_id, std::shared_ptr<EngineInbox> inbox)
    : request_id_(request_id), inbox_(std::move(inbox)) {}

RequestStream::~RequestStream() { Close(); }

bool RequestStream::PopLocked(RequestOutput* out) {
  if (!has_unread_) {
    *out = RequestOutput();
    return false;
  }
  *out = std::move(unread_);
  unread_ = RequestOutput();
  has_unread_ = false;
  return true;
}

bool RequestStream::Next(RequestOutput* out, absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  auto ready = [this] { return has_unread_ || ended_; };
  if (deadline == absl::InfiniteFuture()) {
    readable_.wait(lock, ready);
  } else {
    readable_.wait_until(lock, absl::ToChronoTime(deadline), ready);
  }
  return PopLocked(out);
}

bool RequestStream::TryNext(RequestOutput* out) {
  std::lock_guard<std::mutex> lock(mu_);
  return PopLocked(out);
}

void RequestStream::SetNotifier(std::function<void()> notify) {
  std::lock_guard<std::mutex> lock(mu_);
  notify_ = std::move(notify);
}

void RequestStream::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_ || closed_) return;
    closed_ = true;
  }
  inbox_->PostAbort(request_id_);
}

void RequestStream::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  ended_ = true;
}

void RequestStream::MergeLocked(const ChoiceDelta& delta) {
  if (delta.token_ids.empty() && delta.text.empty() && delta.finish_reason == FinishReason::kNone) {
    return;  // nothing new for this choice
  }
  has_unread_ = true;
  ChoiceDelta* into = nullptr;
  for (ChoiceDelta& unread : unread_.choices) {
    if (unread.index == delta.index) into = &unread;
  }
  if (into == nullptr) {
    unread_.choices.push_back(delta);
    return;
  }
  into->token_ids.insert(into->token_ids.end(), delta.token_ids.begin(), delta.token_ids.end());
  into->logprobs.insert(into->logprobs.end(), delta.logprobs.begin(), delta.logprobs.end());
  into->text += delta.text;
  if (delta.finish_reason != FinishReason::kNone) {
    into->finish_reason = delta.finish_reason;
    into->stop_reason = delta.stop_reason;
    into->error = delta.error;
  }
}

void RequestStream::Deliver(absl::Span<const ChoiceDelta> deltas, std::optional<Usage> usage) {
  std::function<void()> notify;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_) return;
    for (const ChoiceDelta& delta : deltas) MergeLocked(delta);
    if (usage.has_value()) {
      unread_.usage = usage;
      ended_ = true;
    }
    has_unread_ = has_unread_ || usage.has_value();
    notify = notify_;
  }
  readable_.notify_all();
  if (notify) notify();
}

}  // namespace r2::engine
