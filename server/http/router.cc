#include "server/http/router.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "server/http/absl_sv.h"

namespace r2::server::http {
namespace {

bool IsJsonContentType(std::string_view value) {
  std::string_view media = value.substr(0, value.find(';'));
  return absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(Sv(media)), "application/json");
}

}  // namespace

const Route* Router::Find(std::string_view path) const {
  for (const Route& route : routes_) {
    if (route.path == path) return &route;
  }
  return nullptr;
}

void Router::Preflight(const std::shared_ptr<HttpSession>& session, const Route* route) const {
  HttpResponse response(bhttp::status::no_content, 11);
  const std::string allow =
      route == nullptr ? "OPTIONS" : std::string(bhttp::to_string(route->method)) + ", OPTIONS";
  response.set(bhttp::field::allow, allow);
  const CorsPolicy& cors = session->context().cors();
  const HttpRequest& req = session->request();
  if (!cors.AllowOrigin(std::string_view(req[bhttp::field::origin])).empty()) {
    response.set(bhttp::field::access_control_allow_methods, CorsPolicy::kAllowMethods);
    response.set(bhttp::field::access_control_allow_headers, CorsPolicy::kAllowHeaders);
    response.set(bhttp::field::access_control_max_age, "600");
  }
  session->Reply(std::move(response));
}

void Router::Dispatch(const std::shared_ptr<HttpSession>& session) const {
  const HttpRequest& req = session->request();
  std::string_view target(req.target());
  const std::string_view path = target.substr(0, target.find('?'));
  const Route* route = Find(path);
  if (route != nullptr) session->set_route_label(route->path);
  if (req.method() == bhttp::verb::options) return Preflight(session, route);
  const ApiKeys& keys = session->context().keys();
  if ((route == nullptr || !route->is_public) &&
      !keys.Allows(std::string_view(req[bhttp::field::authorization]),
                   std::string_view(req["x-api-key"]))) {
    return session->ReplyError(MakeApiError(401, "invalid_request_error", "invalid_api_key",
                                            "missing or invalid API key (send Authorization: "
                                            "Bearer <key>)"));
  }
  if (route == nullptr) {
    return session->ReplyError(
        MakeApiError(404, "invalid_request_error", "not_found", "no such route"));
  }
  if (req.method() != route->method) {
    const std::string allowed(bhttp::to_string(route->method));
    HttpResponse response(bhttp::status::method_not_allowed, 11);
    response.set(bhttp::field::allow, allowed + ", OPTIONS");
    response.set(bhttp::field::content_type, "application/json");
    response.body() = DumpJson(ApiErrorJson(MakeApiError(
        405, "invalid_request_error", "method_not_allowed", "method not allowed; use " + allowed)));
    return session->Reply(std::move(response));
  }
  if (route->json_body && !IsJsonContentType(std::string_view(req[bhttp::field::content_type]))) {
    return session->ReplyError(MakeApiError(415, "invalid_request_error", "unsupported_media_type",
                                            "Content-Type must be application/json"));
  }
  route->handler(session);
}

}  // namespace r2::server::http
