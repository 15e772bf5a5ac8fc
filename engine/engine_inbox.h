#pragma once
// EngineInbox: the one queue between the front ends and the engine thread, and all the engine's
// cross-thread state: new requests, aborts, tasks to run on the engine thread, the serving state
// (serving / draining / faulted) and the latest statistics snapshot. Every lock the engine takes
// on the request path is this one mutex (plus each RequestStream's own output lock).
//
// Front-end side (any thread): Push (Submit), PostAbort (RequestHandle::Close), PostTask
// (CheckIntegrity), BeginDrain (Shutdown), healthy(), stats().
// Engine side (the engine thread only): Take at the start of each step; it sleeps on the
// condition variable while the engine is idle and nothing is posted, so an idle engine uses no
// CPU. MarkFaulted, SetNumWaiting, PublishStats and MarkStopped report back.
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/engine.h"

namespace r2::engine {

class RequestStream;

// A request accepted by Submit, waiting for the engine thread. params.max_tokens is resolved.
struct PendingRequest {
  uint64_t request_id = 0;
  Request request;
  std::weak_ptr<RequestStream> stream;
};

// What the engine thread takes from the inbox in one go.
struct InboxBatch {
  std::vector<PendingRequest> requests;
  std::vector<uint64_t> aborts;  // request ids; applied after the requests
  std::vector<std::function<void()>> tasks;
  bool draining = false;
  absl::Time drain_deadline = absl::InfiniteFuture();

  void Clear() {
    requests.clear();
    aborts.clear();
    tasks.clear();
  }
};

class EngineInbox {
 public:
  explicit EngineInbox(int32_t max_queued_requests) : max_queued_(max_queued_requests) {}

  // Queues an accepted request. Unavailable while draining or after a fault; ResourceExhausted
  // when max_queued_requests requests are already waiting (in this inbox or the scheduler).
  absl::Status Push(PendingRequest request);
  // Asks the engine to abort a request (no-op once the engine has stopped).
  void PostAbort(uint64_t request_id);
  // Runs `task` on the engine thread before its next step. False, without running it, when the
  // engine thread has stopped (the caller may then run it itself).
  bool PostTask(std::function<void()> task);
  // Stops accepting requests; in-flight ones may run until `deadline`.
  void BeginDrain(absl::Time deadline);

  // Engine thread: moves everything posted into *batch (cleared first). With `wait`, sleeps until
  // something is posted or draining begins.
  void Take(bool wait, InboxBatch* batch);
  void MarkFaulted();
  // Requests waiting in the scheduler, counted against max_queued_requests.
  void SetNumWaiting(int32_t num_waiting);
  void PublishStats(const EngineStats& stats);
  // The engine thread is exiting: later PostTask calls fail. Returns the tasks still queued.
  std::vector<std::function<void()>> MarkStopped();

  bool healthy() const;
  // The last published snapshot, with requests_accepted counted here.
  EngineStats stats() const;

 private:
  enum class State { kServing, kDraining, kFaulted };

  const int32_t max_queued_;
  mutable std::mutex mu_;
  std::condition_variable posted_;
  State state_ = State::kServing;
  bool draining_ = false;  // also set after a fault when Shutdown is called
  bool stopped_ = false;
  absl::Time drain_deadline_ = absl::InfiniteFuture();
  int32_t num_waiting_ = 0;
  uint64_t accepted_ = 0;  // Push calls that queued their request
  std::vector<PendingRequest> requests_;
  std::vector<uint64_t> aborts_;
  std::vector<std::function<void()>> tasks_;
  EngineStats stats_;
};

}  // namespace r2::engine
