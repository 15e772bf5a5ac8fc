#pragma once
// One server-streaming gRPC call driving one engine request (Generate, Chat), on gRPC's callback
// API: no thread per call, thousands of streams share gRPC's threads and a small TaskPool.
//
// Flow: the engine's notifier (engine thread, must not block) posts one "pump" to the TaskPool
// (at most one outstanding per call). Pump takes everything the handle has (TryNext, merged since
// the last read), encodes it into one response message and starts one write. While that write is
// in flight nothing else is written; the engine keeps merging output into the handle, so a slow
// client costs memory proportional to its own output and never blocks the engine. OnWriteDone
// pumps again. The final output goes out with StartWriteAndFinish.
//
// Cancellation: a client that cancels, disconnects or lets its deadline pass gets OnCancel, which
// closes the handle, so the engine aborts the request within one step and frees its KV blocks.
//
// Locking: mu_ guards the state flags; gRPC operations (StartWrite, Finish) are started outside it,
// because gRPC may run the matching reaction inline.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "grpcpp/grpcpp.h"
#include "server/grpc/proto_convert.h"
#include "server/grpc/task_pool.h"
#include "server/http/server_context.h"

namespace r2::server::grpc_api {

// What the streams share with the service, owned jointly: a stream's last reference can be a
// notifier call in flight on the engine thread after the gRPC server is gone, so a stream touches
// only this (and the ServerContext, which outlives the engine), never the service or the pool.
class StreamHub {
 public:
  explicit StreamHub(TaskPool* pool) : pool_(pool) {}
  // Runs `task` on the pool; dropped once Detach() was called.
  void Post(std::function<void()> task) {
    std::lock_guard<std::mutex> lock(mu_);
    if (pool_ != nullptr) pool_->Post(std::move(task));
  }
  // The pool is about to go away (server shutdown).
  void Detach() {
    std::lock_guard<std::mutex> lock(mu_);
    pool_ = nullptr;
  }
  std::atomic<int64_t>& active_streams() { return active_streams_; }

 private:
  std::mutex mu_;
  TaskPool* pool_;
  std::atomic<int64_t> active_streams_{0};
};

struct StreamEnv {
  http::ServerContext* context = nullptr;
  std::shared_ptr<StreamHub> hub;
};

// One of the server's limited stream slots, held from admission until the stream is destroyed.
class StreamSlot {
 public:
  // A slot when fewer than `max` are taken, else nullopt.
  static std::optional<StreamSlot> Acquire(std::shared_ptr<StreamHub> hub, int64_t max) {
    if (hub->active_streams().fetch_add(1) >= max) {
      hub->active_streams().fetch_sub(1);
      return std::nullopt;
    }
    return StreamSlot(std::move(hub));
  }
  StreamSlot(StreamSlot&& other) noexcept = default;
  StreamSlot& operator=(StreamSlot&&) = delete;
  ~StreamSlot() {
    if (hub_ != nullptr) hub_->active_streams().fetch_sub(1);
  }

 private:
  explicit StreamSlot(std::shared_ptr<StreamHub> hub) : hub_(std::move(hub)) {}
  std::shared_ptr<StreamHub> hub_;
};

// A call that failed before reaching the engine: finishes at once with `status`.
template <typename Response>
class FailedStream final : public ::grpc::ServerWriteReactor<Response> {
 public:
  FailedStream(::grpc::CallbackServerContext* call, const absl::Status& status) {
    std::string field;
    ::grpc::Status grpc_status = ToGrpcStatus(status, &field);
    if (!field.empty()) call->AddTrailingMetadata(kFieldMetadataKey, field);
    this->Finish(grpc_status);
  }
  void OnDone() override { delete this; }
};

template <typename Response>
class GenerationStream : public ::grpc::ServerWriteReactor<Response>,
                         public std::enable_shared_from_this<GenerationStream<Response>> {
 public:
  using Clock = std::chrono::steady_clock;

  GenerationStream(StreamEnv env, StreamSlot slot, std::shared_ptr<engine::RequestHandle> handle)
      : env_(env),
        slot_(std::move(slot)),
        handle_(std::move(handle)),
        start_(Clock::now()),
        last_(start_) {
    env_.context->active_generations().fetch_add(1);
  }
  ~GenerationStream() override { env_.context->active_generations().fetch_sub(1); }

  // Call once, right after construction (the object must be owned by a shared_ptr). Returns the
  // reactor for the service method; it stays alive until OnDone.
  ::grpc::ServerWriteReactor<Response>* Start() {
    self_ = this->shared_from_this();
    std::weak_ptr<GenerationStream> weak = self_;
    handle_->SetNotifier([weak] {
      if (std::shared_ptr<GenerationStream> s = weak.lock()) s->SchedulePump();
    });
    SchedulePump();
    return this;
  }

  void OnWriteDone(bool ok) override {
    bool finish = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if ((!ok || cancelled_) && !finished_) finished_ = finish = true;
    }
    if (finish) {
      CloseHandle();
      this->Finish(::grpc::Status(::grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    Pump();
  }

  void OnCancel() override {
    bool finish = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      if (!writing_ && !finished_) finished_ = finish = true;
    }
    CloseHandle();  // the engine aborts the request within one step
    if (finish) this->Finish(::grpc::Status(::grpc::StatusCode::CANCELLED, "cancelled"));
  }

  void OnDone() override {
    CloseHandle();
    std::shared_ptr<GenerationStream> keep = std::move(self_);  // may destroy this on return
  }

 protected:
  // Fills `message` from `output`; returns whether there is anything to send.
  virtual bool Encode(const engine::RequestOutput& output, Response* message) = 0;
  // The status the call ends with once the final output was encoded.
  virtual absl::Status EndStatus() const = 0;

  http::ServerContext& context() { return *env_.context; }

 private:
  void SchedulePump() {
    if (pump_posted_.exchange(true)) return;
    std::weak_ptr<GenerationStream> weak = this->weak_from_this();
    env_.hub->Post([weak] {
      if (std::shared_ptr<GenerationStream> s = weak.lock()) s->Pump();
    });
  }

  void Pump() {
    pump_posted_.store(false);
    engine::RequestOutput out;
    bool send = false;
    bool last = false;
    absl::Status end;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_ || writing_ || cancelled_ || !handle_) return;
      if (!handle_->TryNext(&out)) return;
      ObserveTimings(out);
      message_.Clear();
      send = Encode(out, &message_);
      last = out.finished();
      if (last) {
        finished_ = true;
        end = EndStatus();
        context().metrics().ObserveEndToEnd(Seconds(Clock::now() - start_));
      } else if (send) {
        writing_ = true;
      }
    }
    if (last) {
      CloseHandle();
      std::string field;
      const ::grpc::Status status = ToGrpcStatus(end, &field);
      if (send) {
        this->StartWriteAndFinish(&message_, ::grpc::WriteOptions(), status);
      } else {
        this->Finish(status);
      }
    } else if (send) {
      this->StartWrite(&message_);
    }
  }

  void CloseHandle() {
    std::shared_ptr<engine::RequestHandle> handle;
    {
      std::lock_guard<std::mutex> lock(mu_);
      handle = std::move(handle_);
    }
    if (handle) {
      handle->SetNotifier(nullptr);
      handle->Close();
    }
  }

  static double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

  void ObserveTimings(const engine::RequestOutput& out) {
    size_t tokens = 0;
    for (const engine::ChoiceDelta& d : out.choices) tokens += d.token_ids.size();
    if (tokens == 0) return;
    const Clock::time_point now = Clock::now();
    http::ServerMetrics& metrics = context().metrics();
    if (!first_token_seen_) {
      first_token_seen_ = true;
      metrics.ObserveTimeToFirstToken(Seconds(now - start_));
    } else {
      const double per_token = Seconds(now - last_) / static_cast<double>(tokens);
      for (size_t k = 0; k < tokens && k < 64; ++k) metrics.ObserveInterTokenLatency(per_token);
    }
    last_ = now;
  }

  const StreamEnv env_;
  const StreamSlot slot_;
  std::shared_ptr<GenerationStream> self_;  // gRPC's reference, dropped in OnDone
  std::atomic<bool> pump_posted_{false};
  std::mutex mu_;
  std::shared_ptr<engine::RequestHandle> handle_;
  Response message_;  // the one write in flight
  bool writing_ = false;
  bool finished_ = false;  // Finish (or StartWriteAndFinish) was started
  bool cancelled_ = false;
  bool first_token_seen_ = false;
  Clock::time_point start_;
  Clock::time_point last_;
};

}  // namespace r2::server::grpc_api
