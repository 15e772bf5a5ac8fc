// The HTTP server end to end over loopback, against the fake engine.
#include "server/http/http_server.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <functional>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/http/router.h"
#include "tests/unit/http/fake_engine.h"

namespace r2::server::http {
namespace {

using Json = nlohmann::ordered_json;
using ::testing::HasSubstr;

struct Reply {
  int status = 0;
  std::string body;
  bhttp::fields headers;
};

// Waits for `done` with a deadline (no fixed sleeps).
template <typename F>
bool Eventually(F done, std::chrono::milliseconds limit = std::chrono::milliseconds(3000)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return done();
}

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(std::vector<std::string> keys = {}, std::string origins = "",
                   std::function<void(HttpOptions&)> tweak = nullptr) {
    HttpOptions options;
    options.port = 0;
    options.max_body_bytes = 64 * 1024;
    options.header_timeout = std::chrono::milliseconds(500);
    if (tweak) tweak(options);
    context_ = std::make_unique<ServerContext>(options, ApiKeys(keys), CorsPolicy(origins), "tiny");
    AddInfoRoutes(&router_);
    AddGenerationRoutes(&router_);
    server_ = std::make_unique<HttpServer>(*context_, router_);
    ASSERT_TRUE(server_->Listen().ok());
    server_->Run();
    auto model = ServedModel::Create({"tiny", "/nonexistent", true}, nullptr, 1024, 1024);
    ASSERT_TRUE(model.ok());
    model_ = *std::move(model);
    context_->SetReady(&engine_, model_.get());
  }

  void TearDown() override {
    if (server_) server_->Stop();
  }

  tcp::socket Connect() {
    tcp::socket socket(io_);
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server_->port()));
    return socket;
  }

  Reply Send(bhttp::verb method, const std::string& target, const std::string& body = "",
             std::vector<std::pair<std::string, std::string>> headers = {}) {
    tcp::socket socket = Connect();
    HttpRequest req(method, target, 11);
    req.set(bhttp::field::host, "localhost");
    if (!body.empty()) req.set(bhttp::field::content_type, "application/json");
    for (auto& [k, v] : headers) req.set(k, v);
    req.body() = body;
    req.prepare_payload();
    bhttp::write(socket, req);
    return Read(socket);
  }

  static Reply Read(tcp::socket& socket) {
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    beast::error_code ec;
    bhttp::read(socket, buffer, parser, ec);
    Reply r;
    if (ec) return r;
    r.status = parser.get().result_int();
    r.body = parser.get().body();
    r.headers = parser.get().base();
    return r;
  }

  Reply Post(const std::string& target, const std::string& body) {
    return Send(bhttp::verb::post, target, body);
  }

  net::io_context io_;
  std::unique_ptr<ServedModel> model_;
  std::unique_ptr<ServerContext> context_;
  Router router_;
  std::unique_ptr<HttpServer> server_;
  // Destroyed first: its thread drops the streams' notifiers, which hold executors of the
  // server's io_context, so it must be joined while that io_context exists (as `serve` does).
  testing::FakeEngine engine_;
};

TEST_F(HttpServerTest, HealthModelsAndMetrics) {
  StartServer();
  EXPECT_EQ(Send(bhttp::verb::get, "/health").status, 200);
  Reply models = Send(bhttp::verb::get, "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(Json::parse(models.body)["data"][0]["id"], "tiny");
  Reply metrics = Send(bhttp::verb::get, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.body, HasSubstr("vllm:num_requests_running{model_name=\"tiny\"}"));
  EXPECT_THAT(metrics.body, HasSubstr("vllm:time_to_first_token_seconds_bucket"));
  context_->StartDraining();
  EXPECT_EQ(Send(bhttp::verb::get, "/health").status, 503);
}

TEST_F(HttpServerTest, CompletionNonStream) {
  StartServer();
  Reply r = Post("/v1/completions", R"({"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 3})");
  ASSERT_EQ(r.status, 200) << r.body;
  Json body = Json::parse(r.body);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], "t0 t1 t2 ");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(body["usage"]["completion_tokens"], 3);
}

TEST_F(HttpServerTest, CompletionStreamEndsWithOneDone) {
  StartServer();
  Reply r = Post("/v1/completions",
                 R"({"prompt": [1], "max_tokens": 4, "n": 2, "stream": true,
                     "stream_options": {"include_usage": true}})");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers[bhttp::field::content_type], "text/event-stream");
  std::vector<std::string> events;
  size_t pos = 0;
  while ((pos = r.body.find("data: ", pos)) != std::string::npos) {
    const size_t end = r.body.find("\n\n", pos);
    ASSERT_NE(end, std::string::npos);
    events.push_back(r.body.substr(pos + 6, end - pos - 6));
    pos = end + 2;
  }
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(std::count(events.begin(), events.end(), "[DONE]"), 1);
  int finishes = 0;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    Json e = Json::parse(events[i]);
    if (e["choices"].empty()) {
      EXPECT_EQ(i + 2, events.size());  // the usage chunk comes last
      EXPECT_EQ(e["usage"]["completion_tokens"], 8);
    } else if (!e["choices"][0]["finish_reason"].is_null()) {
      ++finishes;
    }
  }
  EXPECT_EQ(finishes, 2);
}

TEST_F(HttpServerTest, ErrorsHaveStatusAndShape) {
  StartServer();
  auto code = [](const Reply& r) { return Json::parse(r.body)["error"]["code"]; };
  Reply not_found = Send(bhttp::verb::get, "/v2/nothing");
  EXPECT_EQ(not_found.status, 404);
  EXPECT_EQ(code(not_found), "not_found");
  EXPECT_EQ(Send(bhttp::verb::get, "//v1/models").status, 404);
  EXPECT_EQ(Send(bhttp::verb::get, "/v1/completions").status, 405);
  Reply media = Send(bhttp::verb::post, "/v1/completions", "prompt=x",
                     {{"Content-Type", "application/x-www-form-urlencoded"}});
  EXPECT_EQ(media.status, 415);
  Reply bad_json = Post("/v1/completions", "{not json");
  EXPECT_EQ(bad_json.status, 400);
  EXPECT_EQ(code(bad_json), "invalid_json");
  Reply model = Post("/v1/completions", R"({"model": "../../etc/passwd", "prompt": [1]})");
  EXPECT_EQ(model.status, 404);
  EXPECT_EQ(code(model), "model_not_found");
  Reply chat = Post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}]})");
  EXPECT_EQ(chat.status, 400);
  EXPECT_EQ(code(chat), "chat_template_unavailable");
  Reply text = Post("/v1/completions", R"({"prompt": "no tokenizer"})");
  EXPECT_EQ(text.status, 400);
  EXPECT_EQ(code(text), "tokenizer_unavailable");
  Reply too_long = Post("/v1/completions", R"({"prompt": [1, 2], "max_tokens": 1023})");
  EXPECT_EQ(too_long.status, 400);
  EXPECT_EQ(code(too_long), "context_length_exceeded");
  Reply oov = Post("/v1/completions", R"({"prompt": [5000]})");
  EXPECT_EQ(oov.status, 400);
  EXPECT_EQ(Send(bhttp::verb::get, "/health").status, 200);
}

TEST_F(HttpServerTest, BodyAndHeaderLimits) {
  StartServer();
  Reply big = Post("/v1/completions", std::string(100 * 1024, ' '));
  EXPECT_EQ(big.status, 413);
  Reply headers = Send(bhttp::verb::get, "/health", "", {{"X-Big", std::string(20000, 'a')}});
  EXPECT_EQ(headers.status, 431);
}

TEST_F(HttpServerTest, SlowHeaderIsDropped) {
  StartServer();
  tcp::socket socket = Connect();
  net::write(socket, net::buffer(std::string("GET /health HTTP/1.1\r\n")));
  Reply r = Read(socket);  // the header deadline (500 ms here) closes the connection
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(Send(bhttp::verb::get, "/health").status, 200);
}

TEST_F(HttpServerTest, QueueFullIs429WithRetryAfter) {
  StartServer();
  engine_.set_reject(absl::ResourceExhaustedError("queue full"));
  Reply r = Post("/v1/completions", R"({"prompt": [1]})");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.headers[bhttp::field::retry_after], "1");
  engine_.set_reject(absl::UnavailableError("draining"));
  EXPECT_EQ(Post("/v1/completions", R"({"prompt": [1]})").status, 503);
}

TEST_F(HttpServerTest, ApiKeys) {
  StartServer({"secret", "other"});
  EXPECT_EQ(Send(bhttp::verb::get, "/health").status, 200);
  Reply missing = Send(bhttp::verb::get, "/v1/models");
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(Json::parse(missing.body)["error"]["code"], "invalid_api_key");
  EXPECT_EQ(Send(bhttp::verb::get, "/v1/models", "", {{"Authorization", "Bearer nope"}}).status,
            401);
  EXPECT_EQ(Send(bhttp::verb::get, "/nothing", "", {}).status, 401);
  EXPECT_EQ(Send(bhttp::verb::get, "/v1/models", "", {{"Authorization", "Bearer other"}}).status,
            200);
  EXPECT_EQ(Send(bhttp::verb::get, "/metrics", "", {{"Authorization", "Bearer secret"}}).status,
            200);
}

TEST_F(HttpServerTest, CorsPreflight) {
  StartServer({}, "http://app.example");
  Reply r = Send(bhttp::verb::options, "/v1/chat/completions", "",
                 {{"Origin", "http://app.example"}, {"Access-Control-Request-Method", "POST"}});
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.headers[bhttp::field::access_control_allow_origin], "http://app.example");
  EXPECT_THAT(std::string(r.headers[bhttp::field::access_control_allow_methods]),
              HasSubstr("POST"));
  EXPECT_THAT(std::string(r.headers[bhttp::field::access_control_allow_headers]),
              HasSubstr("Authorization"));
  Reply other = Send(bhttp::verb::options, "/v1/models", "", {{"Origin", "http://evil"}});
  EXPECT_TRUE(other.headers[bhttp::field::access_control_allow_origin].empty());
}

TEST_F(HttpServerTest, UnknownMethodsShareOneMetricsLabel) {
  StartServer();
  for (const char* method : {"FROB1", "FROB2"}) {
    tcp::socket socket = Connect();
    net::write(socket, net::buffer(std::string(method) + " /health HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(Read(socket).status, 405) << method;
  }
  const Reply metrics = Send(bhttp::verb::get, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.body, HasSubstr("method=\"OTHER\",route=\"/health\",status=\"405\"} 2"));
  EXPECT_THAT(metrics.body, ::testing::Not(HasSubstr("FROB")));
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequests) {
  StartServer();
  tcp::socket socket = Connect();
  for (int i = 0; i < 3; ++i) {
    HttpRequest req(bhttp::verb::post, "/v1/completions", 11);
    req.set(bhttp::field::host, "x");
    req.set(bhttp::field::content_type, "application/json");
    req.body() = R"({"prompt": [1], "max_tokens": 2})";
    req.prepare_payload();
    bhttp::write(socket, req);
    EXPECT_EQ(Read(socket).status, 200) << i;
  }
}

TEST_F(HttpServerTest, StreamingClientDisconnectAbortsRequest) {
  StartServer();
  tcp::socket socket = Connect();
  HttpRequest req(bhttp::verb::post, "/v1/completions", 11);
  req.set(bhttp::field::host, "x");
  req.set(bhttp::field::content_type, "application/json");
  req.body() = R"({"prompt": [1], "max_tokens": 1000, "stream": true})";
  req.prepare_payload();
  bhttp::write(socket, req);
  std::string got(256, '\0');
  size_t n = 0;
  while (n < 200) n += socket.read_some(net::buffer(got.data() + n, got.size() - n));
  socket.close();
  EXPECT_TRUE(Eventually([&] { return engine_.aborted() == 1 && engine_.live_requests() == 0; }));
  EXPECT_TRUE(Eventually([&] { return context_->active_generations().load() == 0; }));
}

TEST_F(HttpServerTest, NonStreamingClientDisconnectAbortsRequest) {
  StartServer();
  tcp::socket socket = Connect();
  HttpRequest req(bhttp::verb::post, "/v1/completions", 11);
  req.set(bhttp::field::host, "x");
  req.set(bhttp::field::content_type, "application/json");
  req.body() = R"({"prompt": [1], "max_tokens": 1000})";
  req.prepare_payload();
  bhttp::write(socket, req);
  ASSERT_TRUE(Eventually([&] { return engine_.submitted() == 1; }));
  socket.close();
  EXPECT_TRUE(Eventually([&] { return engine_.aborted() == 1 && engine_.live_requests() == 0; }));
}

// A client that sends a streaming request and then never reads: the server's buffering for it is
// the socket buffers plus one pending write (the engine merges further output in the request's
// handle); when that write makes no progress for write_timeout the request is aborted and the
// connection closed. Meanwhile the server keeps serving others.
TEST_F(HttpServerTest, ClientThatNeverReadsIsAbortedAfterTheWriteTimeout) {
  StartServer({}, "", [](HttpOptions& o) { o.write_timeout = std::chrono::milliseconds(300); });
  tcp::socket socket(io_);
  socket.open(tcp::v4());
  socket.set_option(net::socket_base::receive_buffer_size(4096));  // fill the window quickly
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server_->port()));
  HttpRequest req(bhttp::verb::post, "/v1/completions", 11);
  req.set(bhttp::field::host, "x");
  req.set(bhttp::field::content_type, "application/json");
  // 128 choices x 1000 tokens (about 19 MB of events): far more than the socket buffers hold.
  req.body() = R"({"prompt": [1], "max_tokens": 1000, "n": 128, "stream": true})";
  req.prepare_payload();
  bhttp::write(socket, req);
  ASSERT_TRUE(Eventually([&] { return engine_.submitted() == 1; }));
  // The server stays responsive while that connection is stuck.
  EXPECT_EQ(Send(bhttp::verb::get, "/health").status, 200);
  ASSERT_TRUE(Eventually([&] { return engine_.aborted() == 1 && engine_.live_requests() == 0; },
                         std::chrono::milliseconds(30000)))
      << "the request of a client that never reads was not aborted";
  EXPECT_TRUE(Eventually([&] { return context_->active_generations().load() == 0; }));
  EXPECT_TRUE(Eventually([&] { return context_->open_connections().load() == 0; }));
  // The server closed the connection: reading what it had sent ends in EOF or a reset.
  std::vector<char> sink(1 << 16);
  beast::error_code ec;
  size_t total = 0;
  while (!ec && total < (size_t{1} << 30)) total += socket.read_some(net::buffer(sink), ec);
  EXPECT_TRUE(ec == net::error::eof || ec == net::error::connection_reset) << ec.message();
  EXPECT_GT(total, 0u);
}

// Past max_connections the server accepts and at once closes the new connection (nothing is
// read or written on it); once a connection goes, a new one is served again.
TEST_F(HttpServerTest, ConnectionsPastTheCapAreClosedAtOnce) {
  StartServer({}, "", [](HttpOptions& o) { o.max_connections = 3; });
  std::vector<tcp::socket> held;
  for (int i = 0; i < 3; ++i) held.push_back(Connect());
  ASSERT_TRUE(Eventually([&] { return context_->open_connections().load() == 3; }));
  tcp::socket extra = Connect();  // the kernel completes the handshake; the server closes it
  char byte = 0;
  beast::error_code ec;
  extra.read_some(net::buffer(&byte, 1), ec);
  EXPECT_TRUE(ec == net::error::eof || ec == net::error::connection_reset) << ec.message();
  EXPECT_EQ(context_->open_connections().load(), 3);
  // The held connections still work.
  HttpRequest req(bhttp::verb::get, "/health", 11);
  req.set(bhttp::field::host, "x");
  bhttp::write(held[0], req);
  EXPECT_EQ(Read(held[0]).status, 200);
  // One goes away: a new connection is served.
  held.pop_back();
  ASSERT_TRUE(Eventually([&] { return context_->open_connections().load() == 2; }));
  EXPECT_EQ(Send(bhttp::verb::get, "/health").status, 200);
}

}  // namespace
}  // namespace r2::server::http
