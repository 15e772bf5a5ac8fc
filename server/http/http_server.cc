#include "server/http/http_server.h"

#include "absl/strings/str_cat.h"
#include "server/http/http_session.h"

namespace r2::server::http {

HttpServer::HttpServer(ServerContext& context, const Router& router)
    : context_(context),
      router_(router),
      io_(context.options().threads),
      acceptor_(net::make_strand(io_)) {}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Listen() {
  const HttpOptions& o = context_.options();
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(o.host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--host: '", o.host, "': ", ec.message()));
  const tcp::endpoint endpoint(address, o.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", o.host, ":", o.port, ": ", ec.message()));
  }
  port_ = acceptor_.local_endpoint().port();
  return absl::OkStatus();
}

void HttpServer::Run() {
  Accept();
  const int n = std::max(1, context_.options().threads);
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { io_.run(); });
}

void HttpServer::Accept() {
  acceptor_.async_accept(net::make_strand(io_), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      if (context_.open_connections().load() >=
          static_cast<int64_t>(context_.options().max_connections)) {
        beast::error_code ignored;
        socket.close(ignored);  // over the connection cap: refuse at once
      } else {
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        std::make_shared<HttpSession>(std::move(socket), context_, router_)->Start();
      }
    }
    Accept();
  });
}

void HttpServer::StopAccepting() {
  net::post(acceptor_.get_executor(), [this] {
    beast::error_code ignored;
    acceptor_.close(ignored);
  });
}

void HttpServer::Stop() {
  io_.stop();
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

}  // namespace r2::server::http
