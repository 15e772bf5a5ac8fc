#pragma once
// The listening socket and the I/O threads. Each accepted connection gets its own strand and an
// HttpSession; `threads` threads run every connection's handlers. Usage:
//   HttpServer server(context, router);
//   RETURN_IF_ERROR(server.Listen());  // binds host:port from the options
//   server.Run();                      // starts the threads, returns at once
//   ... server.StopAccepting(); ... server.Stop();  // Stop joins the threads
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "server/http/http_types.h"
#include "server/http/router.h"
#include "server/http/server_context.h"

namespace r2::server::http {

class HttpServer {
 public:
  HttpServer(ServerContext& context, const Router& router);
  ~HttpServer();

  absl::Status Listen();
  uint16_t port() const { return port_; }
  void Run();
  void StopAccepting();
  void Stop();
  net::io_context& io_context() { return io_; }

 private:
  void Accept();

  ServerContext& context_;
  const Router& router_;
  net::io_context io_;
  tcp::acceptor acceptor_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
};

}  // namespace r2::server::http
