#pragma once
// The gRPC front end of `r2serve serve`: r2serve.v1.Inference (inference_service.h), the
// standard grpc.health.v1.Health service and server reflection, on one port, in the same process
// and on the same engine as the HTTP server (it shares the HTTP server's ServerContext: engine,
// served model, API keys, metrics, draining).
//
//   GrpcServer grpc(context, options);
//   RETURN_IF_ERROR(grpc.Start());   // binds host:port (0 picks a free port), serves at once
//   ... grpc.RefreshHealth();        // after readiness changes (loaded, draining, fault)
//   grpc.Shutdown(absl::Seconds(5)); // refuses new calls, cancels the rest after the grace
//
// Health: "" and "r2serve.v1.Inference" are SERVING exactly when the context is ready (loaded,
// healthy, not draining), NOT_SERVING otherwise. Health and reflection need no API key (probes
// and tools must reach them); every Inference method does.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/http/server_context.h"

namespace grpc {
class Server;
}

namespace r2::server::grpc_api {

class InferenceService;
class StreamHub;
class TaskPool;

struct GrpcOptions {
  std::string host = "127.0.0.1";
  int port = 0;                                 // 0 picks a free port
  int64_t max_message_bytes = 4 * 1024 * 1024;  // largest request or response message
  int64_t max_concurrent_streams = 1024;        // Generate + Chat calls open at once
  int pump_threads = 2;                         // threads that encode engine output
};

class GrpcServer {
 public:
  GrpcServer(http::ServerContext& context, GrpcOptions options);
  ~GrpcServer();  // Shutdown(0) if still running

  absl::Status Start();
  int port() const { return port_; }
  void RefreshHealth();
  void Shutdown(absl::Duration grace);
  int64_t active_streams() const;

 private:
  http::ServerContext& context_;
  const GrpcOptions options_;
  std::unique_ptr<TaskPool> pool_;
  std::shared_ptr<StreamHub> hub_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<::grpc::Server> server_;
  int port_ = 0;
  int serving_ = -1;  // last health published: -1 none, 0 NOT_SERVING, 1 SERVING
};

}  // namespace r2::server::grpc_api
