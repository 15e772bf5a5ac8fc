#include "server/http/generation.h"

#include <chrono>

#include "absl/time/clock.h"
#include "server/http/sse.h"

namespace r2::server::http {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

class Generation : public std::enable_shared_from_this<Generation> {
 public:
  Generation(std::shared_ptr<HttpSession> session, std::shared_ptr<engine::RequestHandle> handle,
             std::unique_ptr<ResponseEncoder> encoder, bool stream, absl::Time arrival)
      : session_(std::move(session)),
        context_(session_->context()),
        handle_(std::move(handle)),
        encoder_(std::move(encoder)),
        stream_(stream),
        start_(Clock::now()),
        arrival_(arrival),
        last_(start_) {}

  ~Generation() {
    if (handle_) {
      handle_->SetNotifier(nullptr);
      handle_->Close();
    }
  }

  void Start() {
    context_.active_generations().fetch_add(1);
    std::weak_ptr<Generation> weak = weak_from_this();
    net::any_io_executor executor = session_->executor();
    session_->SetHooks([self = shared_from_this()] { self->OnClientGone(); },
                       [self = shared_from_this()] { self->Drain(); });
    handle_->SetNotifier([weak, executor] {
      net::post(executor, [weak] {
        if (std::shared_ptr<Generation> self = weak.lock()) self->Drain();
      });
    });
    if (stream_) {
      session_->StartEventStream();
      std::vector<Json> events;
      encoder_->Begin(&events);
      std::string bytes;
      for (const Json& e : events) AppendSseEvent(e, &bytes);
      session_->Send(std::move(bytes));
    }
    Drain();
  }

 private:
  void Drain() {
    if (done_ || session_->writing()) return;
    std::shared_ptr<Generation> self = shared_from_this();  // Finish drops the session's refs
    std::string bytes;
    engine::RequestOutput out;
    while (handle_->TryNext(&out)) {
      ObserveTimings(out);
      if (stream_) {
        std::vector<Json> events;
        encoder_->Add(out, &events);
        for (const Json& e : events) AppendSseEvent(e, &bytes);
      } else {
        encoder_->Add(out, nullptr);
      }
      if (out.finished()) {
        context_.metrics().ObserveFinished(arrival_, *out.usage);
        return Finish(std::move(bytes));
      }
      out = engine::RequestOutput();
    }
    if (!bytes.empty()) session_->Send(std::move(bytes));
  }

  void ObserveTimings(const engine::RequestOutput& out) {
    size_t tokens = 0;
    for (const engine::ChoiceDelta& d : out.choices) tokens += d.token_ids.size();
    if (tokens == 0) return;
    const Clock::time_point now = Clock::now();
    ServerMetrics& metrics = context_.metrics();
    if (!first_token_seen_) {
      first_token_seen_ = true;
      metrics.ObserveTimeToFirstToken(Seconds(now - start_));
    } else {
      const double per_token = Seconds(now - last_) / static_cast<double>(tokens);
      for (size_t k = 0; k < tokens && k < 64; ++k) metrics.ObserveInterTokenLatency(per_token);
    }
    last_ = now;
  }

  void Finish(std::string bytes) {
    done_ = true;
    context_.metrics().ObserveEndToEnd(Seconds(Clock::now() - start_));
    handle_->SetNotifier(nullptr);
    handle_.reset();
    std::shared_ptr<HttpSession> session = std::move(session_);
    session->ClearHooks();
    if (stream_) {
      if (!encoder_->error().ok()) {
        AppendSseEvent(ApiErrorJson(ApiErrorFromStatus(encoder_->error())), &bytes);
      }
      bytes += kSseDone;
      session->Send(std::move(bytes));
      session->EndEventStream();
    } else {
      absl::StatusOr<Json> body = encoder_->Response();
      if (body.ok()) {
        session->ReplyJson(200, *body);
      } else {
        session->ReplyError(ApiErrorFromStatus(body.status()));
      }
    }
    context_.active_generations().fetch_sub(1);
  }

  void OnClientGone() {
    if (done_) return;
    done_ = true;
    context_.metrics().CountClientGone();
    handle_->SetNotifier(nullptr);
    handle_->Close();  // the engine aborts the request within one step
    handle_.reset();
    session_.reset();
    context_.active_generations().fetch_sub(1);
  }

  std::shared_ptr<HttpSession> session_;
  ServerContext& context_;
  std::shared_ptr<engine::RequestHandle> handle_;
  std::unique_ptr<ResponseEncoder> encoder_;
  const bool stream_;
  bool done_ = false;
  bool first_token_seen_ = false;
  Clock::time_point start_;
  absl::Time arrival_;  // on the engine's clock, for the queue time
  Clock::time_point last_;
};

}  // namespace

void StartGeneration(const std::shared_ptr<HttpSession>& session, engine::Request request,
                     std::unique_ptr<ResponseEncoder> encoder, bool stream) {
  engine::Engine* engine = session->context().engine();
  if (engine == nullptr || session->context().draining()) {
    return session->ReplyError(ApiErrorFromStatus(
        absl::UnavailableError("the server is not ready (loading or shutting down)")));
  }
  const absl::Time arrival = absl::Now();  // before the engine can schedule it
  absl::StatusOr<std::shared_ptr<engine::RequestHandle>> handle =
      engine->Submit(std::move(request));
  if (!handle.ok()) return session->ReplyError(ApiErrorFromStatus(handle.status()));
  auto generation = std::make_shared<Generation>(session, *std::move(handle), std::move(encoder),
                                                 stream, arrival);
  generation->Start();
}

}  // namespace r2::server::http
