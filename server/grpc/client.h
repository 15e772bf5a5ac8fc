#pragma once
// A thin C++ client of r2serve.v1.Inference for tests and the benchmark: blocking calls over one
// channel, an optional API key sent as `authorization: Bearer KEY`, per-call deadlines, and
// streaming calls that hand each message to a callback (return false from it to cancel the call).
//
//   auto client = InferenceClient::Connect("127.0.0.1:50051", "my-key");
//   v1::GenerateRequest request;
//   request.mutable_token_ids()->add_ids(5);
//   absl::StatusOr<GenerateResult> result = client->GenerateAll(request);
//
// Errors come back as absl::Status with the gRPC code (INVALID_ARGUMENT, UNAVAILABLE, ...) and
// message; for INVALID_ARGUMENT the server's field path is in CallResult::field.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "r2serve/v1/inference.grpc.pb.h"

namespace grpc {
class Channel;
}

namespace r2::server::grpc_api {

namespace v1 = ::r2serve::v1;

struct CallOptions {
  std::optional<absl::Duration> timeout;  // deadline = now + timeout
  std::string api_key;                    // overrides the client's key when not empty
};

// The outcome of a call: its status and the field an INVALID_ARGUMENT names ("" otherwise).
struct CallResult {
  absl::Status status;
  std::string field;
};

// Everything a Generate or Chat stream returned, accumulated per choice.
struct StreamResult {
  struct Choice {
    std::vector<int32_t> token_ids;
    std::string text;                      // Generate: text; Chat: content
    std::string reasoning;                 // Chat only
    std::vector<v1::ToolCall> tool_calls;  // Chat: argument pieces merged per call index
    std::vector<v1::Logprob> logprobs;
    v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
    std::string stop_reason;
  };
  std::string id;
  std::map<int32_t, Choice> choices;
  std::optional<v1::Usage> usage;
  int messages = 0;
};

class InferenceClient {
 public:
  // `target`: "host:port". No network traffic until the first call.
  static std::unique_ptr<InferenceClient> Connect(const std::string& target,
                                                  std::string api_key = "");

  // Streams: `on_message` sees every message; returning false cancels the call.
  CallResult Generate(const v1::GenerateRequest& request,
                      const std::function<bool(const v1::GenerateResponse&)>& on_message,
                      const CallOptions& options = {});
  CallResult Chat(const v1::ChatRequest& request,
                  const std::function<bool(const v1::ChatResponse&)>& on_message,
                  const CallOptions& options = {});
  // The whole stream, accumulated; an error status when the call failed.
  absl::StatusOr<StreamResult> GenerateAll(const v1::GenerateRequest& request,
                                           const CallOptions& options = {});
  absl::StatusOr<StreamResult> ChatAll(const v1::ChatRequest& request,
                                       const CallOptions& options = {});

  CallResult Tokenize(const v1::TokenizeRequest& request, v1::TokenizeResponse* response,
                      const CallOptions& options = {});
  CallResult Detokenize(const v1::DetokenizeRequest& request, v1::DetokenizeResponse* response,
                        const CallOptions& options = {});
  CallResult ListModels(v1::ListModelsResponse* response, const CallOptions& options = {});
  CallResult GetServerInfo(v1::GetServerInfoResponse* response, const CallOptions& options = {});

  // grpc.health.v1.Health/Check for `service` ("" = the server): SERVING -> true,
  // NOT_SERVING -> false, or the call's error.
  absl::StatusOr<bool> CheckHealth(const std::string& service = "",
                                   const CallOptions& options = {});

 private:
  InferenceClient(std::shared_ptr<::grpc::Channel> channel, std::string api_key);

  std::shared_ptr<::grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  std::string api_key_;
};

}  // namespace r2::server::grpc_api
