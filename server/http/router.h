#pragma once
// Routes by exact path (the target up to '?'; no decoding, no normalisation, so "//v1/models"
// or "/v1/../metrics" simply match nothing). The order of checks is fixed:
//   OPTIONS (CORS preflight, never authenticated) -> authentication (every route but the public
//   ones, and unknown paths too, so probing without a key learns nothing) -> 404 unknown path ->
//   405 wrong method (with Allow) -> 415 when a JSON route gets another Content-Type -> handler.
// Authentication is decided on the same parsed path the router dispatches on.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/http/http_session.h"

namespace r2::server::http {

using RouteHandler = std::function<void(const std::shared_ptr<HttpSession>&)>;

struct Route {
  std::string path;
  bhttp::verb method = bhttp::verb::get;
  bool is_public = false;  // no API key needed (/health)
  bool json_body = false;  // requires Content-Type: application/json
  RouteHandler handler;
};

class Router {
 public:
  void Add(Route route) { routes_.push_back(std::move(route)); }
  void Dispatch(const std::shared_ptr<HttpSession>& session) const;

 private:
  const Route* Find(std::string_view path) const;
  void Preflight(const std::shared_ptr<HttpSession>& session, const Route* route) const;

  std::vector<Route> routes_;
};

// The product's routes: /health, /v1/models, /metrics, /tokenize, /detokenize, /version,
// /v1/chat/completions, /v1/completions.
void AddInfoRoutes(Router* router);
void AddGenerationRoutes(Router* router);

}  // namespace r2::server::http
