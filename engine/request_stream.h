#pragma once
// RequestStream: the RequestHandle the engine hands out. It is the one place where a request's
// output crosses from the engine thread to the front end: the engine thread Deliver()s deltas,
// one front-end thread Next()s them. Deltas that arrive while nobody reads are merged per choice
// (tokens, logprobs and text appended; the terminal fields set), so the engine never blocks and
// the memory held is bounded by the request's own output.
//
// Lifetime: the front end owns the stream (shared_ptr from Engine::Submit); the engine keeps only
// a weak_ptr, so dropping the handle really drops it. Close() or the destructor posts an abort to
// the engine's inbox when the request has not ended yet.
//
// Thread safety: every public method may be called from any thread. The notifier runs on the
// engine thread, outside the stream's lock.
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "absl/types/span.h"
#include "engine/engine.h"

namespace r2::engine {

class EngineInbox;

class RequestStream final : public RequestHandle {
 public:
  RequestStream(uint64_t request_id, std::shared_ptr<EngineInbox> inbox);
  ~RequestStream() override;  // Close()
  RequestStream(const RequestStream&) = delete;
  RequestStream& operator=(const RequestStream&) = delete;

  bool Next(RequestOutput* out, absl::Time deadline) override;
  bool TryNext(RequestOutput* out) override;
  void SetNotifier(std::function<void()> notify) override;
  void Close() override;
  uint64_t request_id() const override { return request_id_; }

  // Engine side. Merges `deltas` (skipping those with nothing to report) into the unread
  // output; with `usage` the request has ended and no more output follows. Then wakes the reader
  // and runs the notifier.
  void Deliver(absl::Span<const ChoiceDelta> deltas, std::optional<Usage> usage);
  // The request was never accepted (Submit failed after the stream was made): Close() does
  // nothing.
  void Detach();

 private:
  // Appends `delta` to the unread delta of the same choice (or adds one). Caller holds mu_.
  void MergeLocked(const ChoiceDelta& delta);
  bool PopLocked(RequestOutput* out);

  const uint64_t request_id_;
  const std::shared_ptr<EngineInbox> inbox_;

  std::mutex mu_;
  std::condition_variable readable_;
  RequestOutput unread_;
  bool has_unread_ = false;
  bool ended_ = false;   // the final event (with usage) was delivered
  bool closed_ = false;  // an abort was posted
  std::function<void()> notify_;
};

}  // namespace r2::engine
