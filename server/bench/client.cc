// The request driver of r2serve bench: one Asio thread, C++20 coroutines on Boost.Beast. Each
// worker keeps one HTTP/1.1 connection alive across its requests, sends streaming completions and
// timestamps every SSE event as its bytes arrive. Concurrency is a set of workers taking requests
// in order; each waits for its request's arrival time, so a capped run is an arrival process behind
// a FIFO semaphore.
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/bench/bench.h"

namespace r2::server::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::use_awaitable;
using Clock = std::chrono::steady_clock;

struct Target {
  std::string host, port, prefix;
};

absl::StatusOr<Target> ParseBaseUrl(const std::string& url) {
  std::string rest = url.substr(std::string("http://").size());
  Target t;
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    t.prefix = rest.substr(slash);
    rest = rest.substr(0, slash);
  }
  const size_t colon = rest.rfind(':');
  if (colon != std::string::npos && rest.find(']', colon) == std::string::npos) {
    t.host = rest.substr(0, colon);
    t.port = rest.substr(colon + 1);
    int port;
    if (!absl::SimpleAtoi(t.port, &port) || port <= 0 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("--base-url ", url, ": bad port"));
    }
  } else {
    t.host = rest;
    t.port = "80";
  }
  if (t.host.size() >= 2 && t.host.front() == '[' && t.host.back() == ']') {
    t.host = t.host.substr(1, t.host.size() - 2);
  }
  if (t.host.empty())
    return absl::InvalidArgumentError(absl::StrCat("--base-url ", url, ": no host"));
  return t;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The message of an error body: error.message of the OpenAI shape, else the text itself.
std::string ErrorMessage(int status, const std::string& body) {
  std::string message = body.substr(0, 500);
  nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("error")) {
    const nlohmann::json& e = j["error"];
    if (e.is_object() && e.contains("message") && e["message"].is_string()) {
      message = e["message"].get<std::string>();
    } else if (e.is_string()) {
      message = e.get<std::string>();
    }
  } else if (!j.is_discarded() && j.is_object() && j.contains("message") &&
             j["message"].is_string()) {
    message = j["message"].get<std::string>();
  }
  return absl::StrCat("HTTP ", status, ": ", message);
}

class Runner {
 public:
  Runner(const BenchOptions& o, Target target, asio::ip::tcp::resolver::results_type endpoints)
      : o_(o), target_(std::move(target)), endpoints_(std::move(endpoints)) {}

  // Sends one request on `conn` (a worker's kept-alive connection; opened when absent), never
  // throws. The connection is kept for the next request when the response ended cleanly and the
  // server allows keep-alive. A reused connection that fails before any response byte (the
  // server closed it while idle) is replaced by a fresh one once.
  awaitable<RequestResult> Send(const Prompt& p, Clock::time_point bench_start,
                                std::optional<beast::tcp_stream>& conn) {
    RequestResult r;
    r.prompt_len = p.input_len;
    const Clock::time_point st = Clock::now();
    r.start_time = Seconds(st - bench_start);
    auto fail = [&](std::string message) {
      conn.reset();
      r.success = false;
      r.error = std::move(message);
      r.latency = Seconds(Clock::now() - st);
      return r;
    };
    http::request<http::string_body> req{http::verb::post, target_.prefix + o_.endpoint, 11};
    req.set(http::field::host, target_.host + ":" + target_.port);
    req.set(http::field::content_type, "application/json");
    req.set(http::field::accept, "text/event-stream");
    if (!o_.api_key.empty()) req.set(http::field::authorization, "Bearer " + o_.api_key);
    req.body() = RequestBody(o_, p).dump();
    req.prepare_payload();

    beast::flat_buffer buffer;
    std::optional<http::response_parser<http::buffer_body>> parser_storage;
    beast::error_code ec;
    for (int attempt = 0;; ++attempt) {
      parser_storage.reset();
      const bool reused = conn.has_value();
      if (!reused) {
        conn.emplace(co_await asio::this_coro::executor);
        conn->expires_after(std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(o_.timeout_s)));
        co_await conn->async_connect(endpoints_, asio::redirect_error(use_awaitable, ec));
        if (ec) co_return fail(absl::StrCat("connect: ", ec.message()));
      }
      conn->expires_after(
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.timeout_s)));
      co_await http::async_write(*conn, req, asio::redirect_error(use_awaitable, ec));
      if (!ec) {
        buffer.clear();
        parser_storage.emplace();
        parser_storage->body_limit(boost::none);
        co_await http::async_read_header(*conn, buffer, *parser_storage,
                                         asio::redirect_error(use_awaitable, ec));
      }
      if (!ec) break;
      const bool got_some = parser_storage && parser_storage->got_some();
      if (reused && attempt == 0 && buffer.size() == 0 && !got_some) {
        conn.reset();
        continue;
      }
      co_return fail(
          absl::StrCat(parser_storage ? "reading the response header: " : "write: ", ec.message()));
    }
    beast::tcp_stream& stream = *conn;
    http::response_parser<http::buffer_body>& parser = *parser_storage;
    const int status = static_cast<int>(parser.get().result_int());

    SseParser sse;
    std::vector<std::string> events;
    std::string error_body;
    bool done = false, first = true;
    std::optional<std::string> stream_error;
    std::optional<int64_t> usage_prompt, usage_completion;
    int64_t token_events = 0;
    Clock::time_point last = st;
    char chunk[16384];
    while (!parser.is_done()) {
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof(chunk);
      co_await http::async_read_some(stream, buffer, parser,
                                     asio::redirect_error(use_awaitable, ec));
      if (ec == http::error::need_buffer) ec = {};
      if (ec && done) {  // only the end of the message was missing: the answer is complete
        conn.reset();
        break;
      }
      if (ec) {
        co_return fail(status == 200 ? absl::StrCat("stream broken: ", ec.message())
                                     : ErrorMessage(status, error_body));
      }
      const size_t got = sizeof(chunk) - parser.get().body().size;
      const Clock::time_point now = Clock::now();
      if (status != 200) {
        if (error_body.size() < 65536) error_body.append(chunk, got);
        continue;
      }
      if (done) continue;
      events.clear();
      sse.Feed(std::string_view(chunk, got), &events);
      for (const std::string& data : events) {
        if (done) break;  // the rest of the message is read only to reuse the connection
        absl::StatusOr<StreamEvent> e = ParseStreamEvent(data);
        if (!e.ok()) co_return fail(std::string(e.status().message()));
        if (e->error) {
          stream_error = *e->error;
          continue;  // the [DONE] after it, if any, ends the stream
        }
        if (e->done) {
          done = true;
          r.latency = Seconds(now - st);
          // The rest of the message (the last chunk) is read only to reuse the connection; a
          // server that keeps the message open after [DONE] loses it after a second.
          stream.expires_after(std::chrono::seconds(1));
          break;
        }
        if (e->prompt_tokens) usage_prompt = e->prompt_tokens;
        if (e->completion_tokens) usage_completion = e->completion_tokens;
        if (e->has_choice) {  // vllm bench serve times every chunk with a choice
          if (first) {
            r.ttft = Seconds(now - st);
            first = false;
          } else {
            r.itl.push_back(Seconds(now - last));
          }
          last = now;
          ++token_events;
          r.generated_text += e->text;
        }
      }
    }
    if (status != 200) co_return fail(ErrorMessage(status, error_body));
    if (stream_error) co_return fail(absl::StrCat("error event: ", *stream_error));
    if (!done) co_return fail("stream ended without data: [DONE]");
    if (!parser.is_done() || !parser.get().keep_alive()) conn.reset();
    r.success = true;
    r.output_len = usage_completion.value_or(token_events);
    if (usage_prompt) r.prompt_len = *usage_prompt;
    co_return r;
  }

  // Runs prompts[i] at start + offsets[i] with at most `concurrency` in flight (0 = no cap).
  std::vector<RequestResult> RunPhase(asio::io_context& io, const std::vector<Prompt>& prompts,
                                      const std::vector<double>& offsets, int concurrency,
                                      const char* label, double* duration) {
    std::vector<RequestResult> results(prompts.size());
    const int n = static_cast<int>(prompts.size());
    const int workers = concurrency > 0 ? std::min(concurrency, n) : n;
    size_t next = 0;
    int finished = 0, failed = 0;
    const Clock::time_point start = Clock::now();
    const bool progress = o_.progress && isatty(STDERR_FILENO);
    Clock::time_point last_print{};
    auto print = [&](bool final_line) {
      const Clock::time_point now = Clock::now();
      if (!final_line && now - last_print < std::chrono::milliseconds(100)) return;
      last_print = now;
      const double elapsed = Seconds(now - start);
      std::fprintf(stderr, "\r%s: %d/%d done, %d failed, %.1f s, %.2f req/s   %s", label, finished,
                   n, failed, elapsed, elapsed > 0 ? finished / elapsed : 0.0,
                   final_line ? "\n" : "");
      std::fflush(stderr);
    };
    for (int w = 0; w < workers; ++w) {
      asio::co_spawn(
          io,
          [&]() -> awaitable<void> {
            asio::steady_timer timer(co_await asio::this_coro::executor);
            std::optional<beast::tcp_stream> conn;  // kept alive between this worker's requests
            while (next < prompts.size()) {
              const size_t i = next++;
              timer.expires_at(start + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(offsets[i])));
              beast::error_code ec;
              co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
              results[i] = co_await Send(prompts[i], start, conn);
              ++finished;
              if (!results[i].success) ++failed;
              if (progress) print(false);
            }
          },
          asio::detached);
    }
    io.restart();
    io.run();
    *duration = Seconds(Clock::now() - start);
    if (progress) print(true);
    return results;
  }

 private:
  const BenchOptions& o_;
  Target target_;
  asio::ip::tcp::resolver::results_type endpoints_;
};

absl::StatusOr<asio::ip::tcp::resolver::results_type> Resolve(asio::io_context& io,
                                                              const Target& t) {
  asio::ip::tcp::resolver resolver(io);
  beast::error_code ec;
  auto endpoints = resolver.resolve(t.host, t.port, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", t.host, ":", t.port, ": ", ec.message()));
  }
  return endpoints;
}

}  // namespace

absl::StatusOr<RunOutput> RunBenchmark(const BenchOptions& o, const std::vector<Prompt>& prompts) {
  absl::StatusOr<Target> target = ParseBaseUrl(o.base_url);
  if (!target.ok()) return target.status();
  asio::io_context io;
  auto endpoints = Resolve(io, *target);
  if (!endpoints.ok()) return endpoints.status();
  Runner runner(o, *target, *endpoints);
  RunOutput out;
  const std::vector<double> offsets =
      ArrivalOffsets(static_cast<int>(prompts.size()), o.request_rate, o.burstiness, o.seed);
  out.results = runner.RunPhase(io, prompts, offsets, o.max_concurrency, "bench", &out.duration);
  return out;
}

absl::StatusOr<std::string> DiscoverModel(const BenchOptions& o) {
  absl::StatusOr<Target> target = ParseBaseUrl(o.base_url);
  if (!target.ok()) return target.status();
  asio::io_context io;
  auto endpoints = Resolve(io, *target);
  if (!endpoints.ok()) return endpoints.status();
  beast::tcp_stream stream(io);
  stream.expires_after(std::chrono::seconds(30));
  beast::error_code ec;
  stream.connect(*endpoints, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("connect to ", o.base_url, ": ", ec.message()));
  http::request<http::empty_body> req{http::verb::get, target->prefix + "/v1/models", 11};
  req.set(http::field::host, target->host + ":" + target->port);
  if (!o.api_key.empty()) req.set(http::field::authorization, "Bearer " + o.api_key);
  http::write(stream, req, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  if (!ec) http::read(stream, buffer, res, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("GET /v1/models: ", ec.message()));
  if (res.result_int() != 200) {
    return absl::UnavailableError(
        absl::StrCat("GET /v1/models: ", ErrorMessage(res.result_int(), res.body())));
  }
  nlohmann::json j = nlohmann::json::parse(res.body(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("data") || !j["data"].is_array() ||
      j["data"].empty() || !j["data"][0].is_object() || !j["data"][0].contains("id") ||
      !j["data"][0]["id"].is_string()) {
    return absl::UnavailableError("GET /v1/models: no model id in the answer; pass --model");
  }
  return j["data"][0]["id"].get<std::string>();
}

}  // namespace r2::server::bench
