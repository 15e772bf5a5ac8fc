#pragma once
// r2serve.v1.Inference on gRPC's callback API: Generate and Chat stream (generation_stream.h),
// the rest answer at once. Every call passes the same gates, in this order: API key
// (UNAUTHENTICATED), readiness (UNAVAILABLE while loading, draining or after an engine fault),
// the server-wide stream limit (RESOURCE_EXHAUSTED), then the shared validation and templating
// (INVALID_ARGUMENT naming the field, NOT_FOUND for another model), then Engine::Submit
// (RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE when draining or faulted).
#include <atomic>
#include <cstdint>
#include <memory>

#include "r2serve/v1/inference.grpc.pb.h"
#include "server/grpc/generation_stream.h"
#include "server/grpc/task_pool.h"
#include "server/http/server_context.h"

namespace r2::server::grpc_api {

class InferenceService final : public v1::Inference::CallbackService {
 public:
  // `max_streams`: Generate + Chat calls open at once, server-wide.
  InferenceService(http::ServerContext& context, std::shared_ptr<StreamHub> hub,
                   int64_t max_streams);

  ::grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      ::grpc::CallbackServerContext* call, const v1::GenerateRequest* request) override;
  ::grpc::ServerWriteReactor<v1::ChatResponse>* Chat(::grpc::CallbackServerContext* call,
                                                     const v1::ChatRequest* request) override;
  ::grpc::ServerUnaryReactor* Tokenize(::grpc::CallbackServerContext* call,
                                       const v1::TokenizeRequest* request,
                                       v1::TokenizeResponse* response) override;
  ::grpc::ServerUnaryReactor* Detokenize(::grpc::CallbackServerContext* call,
                                         const v1::DetokenizeRequest* request,
                                         v1::DetokenizeResponse* response) override;
  ::grpc::ServerUnaryReactor* ListModels(::grpc::CallbackServerContext* call,
                                         const v1::ListModelsRequest* request,
                                         v1::ListModelsResponse* response) override;
  ::grpc::ServerUnaryReactor* GetServerInfo(::grpc::CallbackServerContext* call,
                                            const v1::GetServerInfoRequest* request,
                                            v1::GetServerInfoResponse* response) override;

  int64_t active_streams() const { return hub_->active_streams().load(); }

 private:
  // UNAUTHENTICATED unless the call carries a configured key (or none are configured).
  absl::Status Authenticate(const ::grpc::CallbackServerContext& call) const;
  // The gates before generation: auth, readiness.
  absl::Status AdmitStream(const ::grpc::CallbackServerContext& call) const;
  // One of max_streams_ slots, else RESOURCE_EXHAUSTED.
  absl::StatusOr<StreamSlot> ReserveStream();
  ::grpc::ServerUnaryReactor* Reply(::grpc::CallbackServerContext* call, const absl::Status& s);

  http::ServerContext& context_;
  const std::shared_ptr<StreamHub> hub_;
  const int64_t max_streams_;
};

}  // namespace r2::server::grpc_api
