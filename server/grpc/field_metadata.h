#pragma once
// The trailing-metadata key under which an INVALID_ARGUMENT names the request field at fault
// (its proto path, e.g. "sampling.temperature"). Shared by the server and the client.
namespace r2::server::grpc_api {

inline constexpr char kFieldMetadataKey[] = "r2serve-field";

}  // namespace r2::server::grpc_api
