#include "server/grpc/client.h"

#include <future>

#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "server/grpc/field_metadata.h"

namespace r2::server::grpc_api {
namespace {

std::string FieldOf(const ::grpc::ClientContext& context) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(kFieldMetadataKey);
  return it == trailers.end() ? "" : std::string(it->second.data(), it->second.size());
}

CallResult Result(const ::grpc::Status& status, const ::grpc::ClientContext& context) {
  CallResult r;
  r.status =
      absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  if (!status.ok()) r.field = FieldOf(context);
  return r;
}

template <typename Choice>
void MergeToolCalls(const Choice& c, StreamResult::Choice* out) {}

template <>
void MergeToolCalls(const v1::ChatChoice& c, StreamResult::Choice* out) {
  for (const v1::ToolCall& call : c.tool_calls()) {
    v1::ToolCall* into = nullptr;
    for (v1::ToolCall& seen : out->tool_calls) {
      if (seen.index() == call.index()) into = &seen;
    }
    if (into == nullptr) {
      out->tool_calls.push_back(call);
      continue;
    }
    if (!call.id().empty()) into->set_id(call.id());
    if (!call.name().empty()) into->set_name(call.name());
    into->mutable_arguments()->append(call.arguments());
  }
}

const std::string& TextOf(const v1::GenerateChoice& c) { return c.text(); }
const std::string& TextOf(const v1::ChatChoice& c) { return c.content(); }
std::string ReasoningOf(const v1::GenerateChoice&) { return ""; }
const std::string& ReasoningOf(const v1::ChatChoice& c) { return c.reasoning(); }

template <typename Response>
void Accumulate(const Response& message, StreamResult* result) {
  ++result->messages;
  result->id = message.id();
  for (const auto& c : message.choices()) {
    StreamResult::Choice& out = result->choices[c.index()];
    out.token_ids.insert(out.token_ids.end(), c.token_ids().begin(), c.token_ids().end());
    out.text += TextOf(c);
    out.reasoning += ReasoningOf(c);
    MergeToolCalls(c, &out);
    for (const v1::Logprob& lp : c.logprobs()) out.logprobs.push_back(lp);
    if (c.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      out.finish_reason = c.finish_reason();
      out.stop_reason = c.stop_reason();
    }
  }
  if (message.has_usage()) result->usage = message.usage();
}

// grpc.health.v1 messages on the wire (HealthCheckRequest{string service = 1},
// HealthCheckResponse{enum status = 1}), so the client needs no generated health code.
::grpc::ByteBuffer HealthRequestBytes(const std::string& service) {
  std::string bytes;
  if (!service.empty()) {
    bytes.push_back(0x0a);  // field 1, length-delimited
    for (size_t n = service.size();; n >>= 7) {
      if (n < 0x80) {
        bytes.push_back(static_cast<char>(n));
        break;
      }
      bytes.push_back(static_cast<char>((n & 0x7f) | 0x80));
    }
    bytes += service;
  }
  ::grpc::Slice slice(bytes);
  return ::grpc::ByteBuffer(&slice, 1);
}

// The status enum of a HealthCheckResponse (0 when absent).
absl::StatusOr<int> HealthStatusOf(const ::grpc::ByteBuffer& buffer) {
  std::vector<::grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return absl::InternalError("unreadable health response");
  std::string bytes;
  for (const ::grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (bytes.empty()) return 0;
  if (bytes.size() < 2 || bytes[0] != 0x08 || (bytes[1] & 0x80) != 0) {
    return absl::InternalError("unexpected health response");
  }
  return static_cast<int>(bytes[1]);
}

}  // namespace

std::unique_ptr<InferenceClient> InferenceClient::Connect(const std::string& target,
                                                          std::string api_key) {
  ::grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  auto channel = ::grpc::CreateCustomChannel(target, ::grpc::InsecureChannelCredentials(), args);
  return std::unique_ptr<InferenceClient>(new InferenceClient(channel, std::move(api_key)));
}

InferenceClient::InferenceClient(std::shared_ptr<::grpc::Channel> channel, std::string api_key)
    : channel_(std::move(channel)),
      stub_(v1::Inference::NewStub(channel_)),
      api_key_(std::move(api_key)) {}

namespace {
void Prepare(::grpc::ClientContext* context, const CallOptions& options,
             const std::string& default_key) {
  const std::string& key = options.api_key.empty() ? default_key : options.api_key;
  if (!key.empty()) context->AddMetadata("authorization", "Bearer " + key);
  if (options.timeout) context->set_deadline(absl::ToChronoTime(absl::Now() + *options.timeout));
}

template <typename Response, typename Reader>
CallResult ReadStream(::grpc::ClientContext* context, Reader* reader,
                      const std::function<bool(const Response&)>& on_message) {
  Response message;
  while (reader->Read(&message)) {
    if (!on_message(message)) {
      context->TryCancel();
      break;
    }
  }
  return Result(reader->Finish(), *context);
}
}  // namespace

CallResult InferenceClient::Generate(
    const v1::GenerateRequest& request,
    const std::function<bool(const v1::GenerateResponse&)>& on_message,
    const CallOptions& options) {
  ::grpc::ClientContext context;
  Prepare(&context, options, api_key_);
  auto reader = stub_->Generate(&context, request);
  return ReadStream<v1::GenerateResponse>(&context, reader.get(), on_message);
}

CallResult InferenceClient::Chat(const v1::ChatRequest& request,
                                 const std::function<bool(const v1::ChatResponse&)>& on_message,
                                 const CallOptions& options) {
  ::grpc::ClientContext context;
  Prepare(&context, options, api_key_);
  auto reader = stub_->Chat(&context, request);
  return ReadStream<v1::ChatResponse>(&context, reader.get(), on_message);
}

absl::StatusOr<StreamResult> InferenceClient::GenerateAll(const v1::GenerateRequest& request,
                                                          const CallOptions& options) {
  StreamResult result;
  CallResult r = Generate(
      request,
      [&](const v1::GenerateResponse& m) {
        Accumulate(m, &result);
        return true;
      },
      options);
  if (!r.status.ok()) return r.status;
  return result;
}

absl::StatusOr<StreamResult> InferenceClient::ChatAll(const v1::ChatRequest& request,
                                                      const CallOptions& options) {
  StreamResult result;
  CallResult r = Chat(
      request,
      [&](const v1::ChatResponse& m) {
        Accumulate(m, &result);
        return true;
      },
      options);
  if (!r.status.ok()) return r.status;
  return result;
}

CallResult InferenceClient::Tokenize(const v1::TokenizeRequest& request,
                                     v1::TokenizeResponse* response, const CallOptions& options) {
  ::grpc::ClientContext context;
  Prepare(&context, options, api_key_);
  return Result(stub_->Tokenize(&context, request, response), context);
}

CallResult InferenceClient::Detokenize(const v1::DetokenizeRequest& request,
                                       v1::DetokenizeResponse* response,
                                       const CallOptions& options) {
  ::grpc::ClientContext context;
  Prepare(&context, options, api_key_);
  return Result(stub_->Detokenize(&context, request, response), context);
}

CallResult InferenceClient::ListModels(v1::ListModelsResponse* response,
                                       const CallOptions& options) {
  ::grpc::ClientContext context;
  Prepare(&context, options, api_key_);
  return Result(stub_->ListModels(&context, v1::ListModelsRequest(), response), context);
}

CallResult InferenceClient::GetServerInfo(v1::GetServerInfoResponse* response,
                                          const CallOptions& options) {
  ::grpc::ClientContext context;
  Prepare(&context, options, api_key_);
  return Result(stub_->GetServerInfo(&context, v1::GetServerInfoRequest(), response), context);
}

absl::StatusOr<bool> InferenceClient::CheckHealth(const std::string& service,
                                                  const CallOptions& options) {
  ::grpc::ClientContext context;
  Prepare(&context, options, api_key_);
  ::grpc::GenericStub stub(channel_);
  const ::grpc::ByteBuffer request = HealthRequestBytes(service);
  ::grpc::ByteBuffer response;
  std::promise<::grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", ::grpc::StubOptions(), &request,
                 &response, [&done](::grpc::Status s) { done.set_value(std::move(s)); });
  const ::grpc::Status status = done.get_future().get();
  if (!status.ok()) return Result(status, context).status;
  absl::StatusOr<int> serving = HealthStatusOf(response);
  if (!serving.ok()) return serving.status();
  return *serving == 1;
}

}  // namespace r2::server::grpc_api
