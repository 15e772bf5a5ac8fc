#include "server/http/http_session.h"

#include <boost/asio/write.hpp>

#include "server/http/absl_sv.h"
#include "server/http/router.h"

namespace r2::server::http {
namespace {

constexpr size_t kMaxPipelinedBytes = 64 * 1024;  // kept from the socket while generating

bool IsDisconnect(const beast::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == net::error::eof ||
         ec == net::error::operation_aborted || ec == net::error::connection_reset ||
         ec == net::error::bad_descriptor || ec == net::error::broken_pipe ||
         ec == bhttp::error::partial_message;
}

}  // namespace

HttpSession::HttpSession(tcp::socket socket, ServerContext& context, const Router& router)
    : socket_(std::move(socket)),
      timer_(socket_.get_executor()),
      context_(context),
      router_(router) {
  context_.open_connections().fetch_add(1);
}

HttpSession::~HttpSession() { context_.open_connections().fetch_sub(1); }

void HttpSession::Start() {
  net::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->DoRead(); });
}

void HttpSession::Arm(std::chrono::milliseconds timeout) {
  const uint64_t generation = ++timer_generation_;
  timer_.expires_after(timeout);
  timer_.async_wait([self = shared_from_this(), generation](beast::error_code ec) {
    if (ec || generation != self->timer_generation_) return;
    self->ClientGone();  // deadline passed: drop the connection (and abort its generation)
  });
}

void HttpSession::Disarm() {
  ++timer_generation_;
  timer_.cancel();
}

void HttpSession::DoRead() {
  if (closed_) return;
  if (context_.draining() && requests_ > 0) return Close();
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(context_.options().max_header_bytes));
  parser_->body_limit(context_.options().max_body_bytes);
  route_label_ = "unmatched";
  Arm(requests_ == 0 ? context_.options().header_timeout : context_.options().idle_timeout);
  bhttp::async_read_header(
      socket_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
}

void HttpSession::OnHeader(beast::error_code ec) {
  if (ec) return OnReadError(ec);
  Arm(context_.options().body_timeout);
  bhttp::async_read(
      socket_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRequest(ec); });
}

void HttpSession::OnRequest(beast::error_code ec) {
  if (ec) return OnReadError(ec);
  Disarm();
  ++requests_;
  request_ = parser_->release();
  parser_.reset();
  keep_alive_ = request_.keep_alive();
  router_.Dispatch(shared_from_this());
}

void HttpSession::OnReadError(beast::error_code ec) {
  Disarm();
  if (ec == bhttp::error::header_limit) {
    return ReplyAndClose(431, "invalid_request_error", "request_header_fields_too_large",
                         "request headers exceed the server's limit");
  }
  if (ec == bhttp::error::body_limit) {
    return ReplyAndClose(413, "invalid_request_error", "request_too_large",
                         "request body exceeds the server's limit of " +
                             std::to_string(context_.options().max_body_bytes) + " bytes");
  }
  if (IsDisconnect(ec) || closed_) return Close();
  ReplyAndClose(400, "invalid_request_error", "bad_request",
                "malformed HTTP request: " + ec.message());
}

void HttpSession::ReplyAndClose(int status, std::string_view type, std::string_view code,
                                std::string_view message) {
  keep_alive_ = false;
  request_ = HttpRequest();
  ReplyError(MakeApiError(status, Sv(type), Sv(code), Sv(message)));
}

void HttpSession::AddCommonHeaders(bhttp::fields& fields) {
  fields.set(bhttp::field::server, "r2serve");
  const std::string origin =
      context_.cors().AllowOrigin(std::string_view(request_[bhttp::field::origin]));
  if (!origin.empty()) {
    fields.set(bhttp::field::access_control_allow_origin, origin);
    fields.set(bhttp::field::vary, "Origin");
  }
}

void HttpSession::CountRequest(int status) {
  // Beast accepts any token as a method; the ones it does not know share one label, or a client
  // could add a metrics series (memory, /metrics output) per method string it makes up.
  const bool unknown =
      request_.method() == bhttp::verb::unknown && !request_.method_string().empty();
  context_.metrics().CountHttpRequest(unknown ? "OTHER" : std::string(request_.method_string()),
                                      route_label_, status);
}

void HttpSession::Reply(HttpResponse response) {
  if (closed_) return;
  const bool close = !keep_alive_ || context_.draining();
  response.version(11);
  response.keep_alive(!close);
  AddCommonHeaders(response.base());
  response.prepare_payload();
  CountRequest(response.result_int());
  auto shared = std::make_shared<HttpResponse>(std::move(response));
  Arm(context_.options().write_timeout);
  bhttp::async_write(socket_, *shared,
                     [self = shared_from_this(), shared, close](beast::error_code ec, size_t) {
                       self->OnReplyWritten(ec, close);
                     });
}

void HttpSession::ReplyJson(int status, const nlohmann::ordered_json& body) {
  HttpResponse response(static_cast<bhttp::status>(status), 11);
  response.set(bhttp::field::content_type, "application/json");
  response.body() = DumpJson(body);
  Reply(std::move(response));
}

void HttpSession::ReplyError(const ApiError& error) {
  HttpResponse response(static_cast<bhttp::status>(error.http_status), 11);
  response.set(bhttp::field::content_type, "application/json");
  if (error.http_status == 429) response.set(bhttp::field::retry_after, "1");
  if (error.http_status == 503) response.set(bhttp::field::retry_after, "5");
  response.body() = DumpJson(ApiErrorJson(error));
  Reply(std::move(response));
}

void HttpSession::ReplyText(int status, std::string body, std::string_view content_type) {
  HttpResponse response(static_cast<bhttp::status>(status), 11);
  response.set(bhttp::field::content_type, content_type);
  response.body() = std::move(body);
  Reply(std::move(response));
}

void HttpSession::OnReplyWritten(beast::error_code ec, bool close) {
  Disarm();
  if (ec || close) return Close();
  FinishExchange();
}

void HttpSession::StartEventStream() {
  streaming_ = true;
  end_pending_ = false;
  auto response = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::ok, 11);
  response->set(bhttp::field::content_type, "text/event-stream");
  response->set(bhttp::field::cache_control, "no-cache");
  response->set("X-Accel-Buffering", "no");
  response->keep_alive(keep_alive_ && !context_.draining());
  response->chunked(true);
  AddCommonHeaders(response->base());
  CountRequest(200);
  auto serializer = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(*response);
  writing_ = true;
  Arm(context_.options().write_timeout);
  bhttp::async_write_header(socket_, *serializer,
                            [self = shared_from_this(), response, serializer](
                                beast::error_code ec, size_t) { self->OnStreamWritten(ec); });
}

void HttpSession::Send(std::string bytes) {
  out_queue_ += bytes;
  if (!writing_) WriteQueued();
}

void HttpSession::EndEventStream() {
  end_pending_ = true;
  if (!writing_) WriteQueued();
}

void HttpSession::WriteQueued() {
  if (closed_) return;
  if (!out_queue_.empty()) {
    auto data = std::make_shared<std::string>(std::move(out_queue_));
    out_queue_.clear();
    writing_ = true;
    Arm(context_.options().write_timeout);
    net::async_write(socket_, bhttp::make_chunk(net::buffer(*data)),
                     [self = shared_from_this(), data](beast::error_code ec, size_t) {
                       self->OnStreamWritten(ec);
                     });
    return;
  }
  if (end_pending_) {
    end_pending_ = false;
    writing_ = true;
    Arm(context_.options().write_timeout);
    net::async_write(socket_, bhttp::make_chunk_last(),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->Disarm();
                       self->writing_ = false;
                       self->streaming_ = false;
                       if (ec || !self->keep_alive_ || self->context_.draining()) {
                         return self->Close();
                       }
                       self->FinishExchange();
                     });
    return;
  }
  writing_ = false;
  if (on_writable_) {
    std::function<void()> writable = on_writable_;  // may clear the hooks
    writable();
  }
}

void HttpSession::OnStreamWritten(beast::error_code ec) {
  Disarm();
  if (ec) {
    writing_ = false;
    return ClientGone();
  }
  WriteQueued();
}

void HttpSession::SetHooks(std::function<void()> on_gone, std::function<void()> on_writable) {
  on_gone_ = std::move(on_gone);
  on_writable_ = std::move(on_writable);
  if (!watching_) StartWatch();
}

void HttpSession::ClearHooks() {
  on_gone_ = nullptr;
  on_writable_ = nullptr;
}

void HttpSession::StartWatch() {
  if (closed_ || buffer_.size() >= kMaxPipelinedBytes) return;
  watching_ = true;
  socket_.async_read_some(
      buffer_.prepare(4096),
      [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnWatch(ec, n); });
}

void HttpSession::OnWatch(beast::error_code ec, size_t bytes) {
  watching_ = false;
  if (!ec) {
    buffer_.commit(bytes);  // a pipelined request: kept for DoRead
    if (resume_after_watch_) {
      resume_after_watch_ = false;
      return DoRead();
    }
    if (on_gone_) StartWatch();
    return;
  }
  if (ec == net::error::operation_aborted && resume_after_watch_) {
    resume_after_watch_ = false;
    return DoRead();
  }
  ClientGone();
}

void HttpSession::FinishExchange() {
  ClearHooks();
  if (watching_) {
    resume_after_watch_ = true;  // OnWatch resumes reading once the cancel lands
    beast::error_code ignored;
    socket_.cancel(ignored);
    return;
  }
  DoRead();
}

void HttpSession::ClientGone() {
  std::function<void()> gone = std::move(on_gone_);
  ClearHooks();
  Close();
  if (gone) gone();
}

void HttpSession::Close() {
  if (closed_) return;
  closed_ = true;
  Disarm();
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

}  // namespace r2::server::http
