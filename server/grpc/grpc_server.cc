#include "server/grpc/grpc_server.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/grpc/inference_service.h"
#include "server/grpc/task_pool.h"

namespace r2::server::grpc_api {

GrpcServer::GrpcServer(http::ServerContext& context, GrpcOptions options)
    : context_(context), options_(std::move(options)) {}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

absl::Status GrpcServer::Start() {
  if (server_) return absl::FailedPreconditionError("the gRPC server is already started");
  if (options_.max_message_bytes < 1024 || options_.max_message_bytes > INT32_MAX) {
    return absl::InvalidArgumentError("--grpc-max-message-bytes must be in [1K, 2G)");
  }
  if (options_.max_concurrent_streams < 1 || options_.max_concurrent_streams > INT32_MAX) {
    return absl::InvalidArgumentError("--grpc-max-concurrent-streams must be >= 1");
  }
  pool_ = std::make_unique<TaskPool>(options_.pump_threads);
  hub_ = std::make_shared<StreamHub>(pool_.get());
  service_ = std::make_unique<InferenceService>(context_, hub_, options_.max_concurrent_streams);
  ::grpc::EnableDefaultHealthCheckService(true);
  ::grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  ::grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(
      options_.host.find(':') != std::string::npos ? "[" + options_.host + "]" : options_.host, ":",
      options_.port);
  builder.AddListeningPort(address, ::grpc::InsecureServerCredentials(), &port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
  // HTTP/2's per-connection stream cap sits above the server-wide generation limit, so a call
  // over the limit is refused at once with RESOURCE_EXHAUSTED instead of waiting in the client's
  // transport, and health checks and unary calls still get through on a busy connection.
  builder.AddChannelArgument(
      GRPC_ARG_MAX_CONCURRENT_STREAMS,
      static_cast<int>(std::min<int64_t>(options_.max_concurrent_streams + 64, INT32_MAX)));
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(
        absl::StrCat("gRPC: cannot listen on ", address, " (in use, or a bad --host)"));
  }
  RefreshHealth();
  return absl::OkStatus();
}

void GrpcServer::RefreshHealth() {
  if (!server_) return;
  const int serving = context_.ready() ? 1 : 0;
  if (serving == serving_) return;
  serving_ = serving;
  ::grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus("", serving == 1);
  health->SetServingStatus(v1::Inference::service_full_name(), serving == 1);
}

void GrpcServer::Shutdown(absl::Duration grace) {
  if (!server_) return;
  if (::grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->Shutdown();  // every service NOT_SERVING from now on
  }
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  server_.reset();
  hub_->Detach();  // a notifier still running on the engine thread posts nothing from now on
  pool_.reset();   // runs queued pumps (their calls are done) and joins
  service_.reset();
}

int64_t GrpcServer::active_streams() const { return service_ ? service_->active_streams() : 0; }

}  // namespace r2::server::grpc_api
