#pragma once
// One client connection: HTTP/1.1 with keep-alive, on its own strand (every handler below runs
// there, so a session needs no locks).
//
// Limits at the socket layer, before any JSON: header bytes (431), body bytes (413, refused from
// Content-Length before the body is read, or as a chunked body grows), a deadline for the first
// request's header (slowloris), an idle deadline between keep-alive requests, a body deadline and
// a per-write deadline (a client that stops reading an SSE stream is dropped).
//
// Handlers answer with Reply(), or stream with StartEventStream() / Send() / EndEventStream().
// While a generation runs, Watch() keeps a read pending on the socket so that a client that goes
// away is noticed at once, even before its non-streaming answer is ready (pipelined bytes that
// arrive meanwhile are kept for the next request).
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "nlohmann/json.hpp"
#include "server/http/http_types.h"
#include "server/http/server_context.h"
#include "server/openai_error.h"

namespace r2::server::http {

class Router;

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket socket, ServerContext& context, const Router& router);
  ~HttpSession();
  HttpSession(const HttpSession&) = delete;
  HttpSession& operator=(const HttpSession&) = delete;

  void Start();

  // ---- for handlers, on the session's strand --------------------------------------------------
  const HttpRequest& request() const { return request_; }
  ServerContext& context() { return context_; }
  net::any_io_executor executor() { return socket_.get_executor(); }
  // Label for r2serve_http_requests_total (the matched route, never the raw target).
  void set_route_label(std::string label) { route_label_ = std::move(label); }

  // A complete response; then the next request is read (keep-alive) or the connection closes.
  void Reply(HttpResponse response);
  void ReplyJson(int status, const nlohmann::ordered_json& body);
  void ReplyError(const ApiError& error);
  void ReplyText(int status, std::string body, std::string_view content_type = "text/plain");

  // Server-sent events: 200 headers now (chunked transfer encoding), then Send() queues bytes
  // (written as soon as the previous write completes) and EndEventStream() ends the response.
  void StartEventStream();
  void Send(std::string bytes);
  void EndEventStream();
  bool writing() const { return writing_; }

  // While a generation runs: `on_gone` runs once if the client disconnects (or a write fails or
  // times out); `on_writable` runs each time all queued bytes were written. ClearHooks() drops
  // both (they may own the generation).
  void SetHooks(std::function<void()> on_gone, std::function<void()> on_writable);
  void ClearHooks();

 private:
  void DoRead();
  void OnHeader(beast::error_code ec);
  void OnRequest(beast::error_code ec);
  void OnReadError(beast::error_code ec);
  void ReplyAndClose(int status, std::string_view type, std::string_view code,
                     std::string_view message);
  void OnReplyWritten(beast::error_code ec, bool close);
  void WriteQueued();
  void OnStreamWritten(beast::error_code ec);
  void FinishExchange();
  void StartWatch();
  void OnWatch(beast::error_code ec, size_t bytes);
  void ClientGone();
  void Close();
  void Arm(std::chrono::milliseconds timeout);
  void Disarm();
  void AddCommonHeaders(bhttp::fields& fields);
  void CountRequest(int status);

  tcp::socket socket_;
  net::steady_timer timer_;
  uint64_t timer_generation_ = 0;
  ServerContext& context_;
  const Router& router_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  HttpRequest request_;
  std::string route_label_;
  uint64_t requests_ = 0;
  bool keep_alive_ = false;
  bool closed_ = false;

  // Streaming state.
  std::string out_queue_;
  bool writing_ = false;
  bool end_pending_ = false;
  bool streaming_ = false;

  // Disconnect watch while a generation runs.
  bool watching_ = false;
  bool resume_after_watch_ = false;
  std::function<void()> on_gone_;
  std::function<void()> on_writable_;
};

}  // namespace r2::server::http
