// libFuzzer target for the HTTP request path: arbitrary bytes are the raw byte stream one client
// sends on one connection (so pipelined requests too). They go through the server's own code,
// unchanged: HttpSession (Beast's request parser with the server's header and body limits,
// keep-alive, the disconnect watch, SSE writing), the Router (CORS preflight, API-key auth,
// 404/405/415) and every product route (/health, /v1/models, /metrics, /version, /tokenize,
// /detokenize, /v1/completions, /v1/chat/completions with their JSON validation).
//
// No network: the session's socket is one end of a socketpair(AF_UNIX) handed to Asio; this
// file plays the client on the other end. The client writes the input, lets the server run until
// it has nothing left to do (every request that arrived is answered, streams included), then
// half-closes and reads to EOF.
//
// The engine is a fake with the real engine's Submit checks (engine::ValidateRequest) and its
// real RequestStream: an accepted request gets, one event per posted "step", an echo of (up to
// 16 of) its prompt's last tokens per choice, detokenized incrementally, with logprobs when
// asked, then finish_reason length or stop and usage. So the response encoders see prompt-
// controlled output (reasoning and tool-call markup included). Served model: the tiny tokenizer
// with DeepSeek-V3's chat template (fuzz_model.h). Server options: the defaults of
// `r2serve serve` (16 KiB headers, 4 MiB bodies), one API key ("fuzz-key") and one CORS origin
// ("https://app.example").
//
// Checked for every input, besides sanitizer findings: the answer is a sequence of complete
// HTTP/1.1 responses, none with a 5xx status; a JSON response's body is valid JSON; an SSE body
// is "data: <JSON>" events ending with exactly one "data: [DONE]".
#include <signal.h>
#include <sys/socket.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/clock.h"
#include "engine/engine_inbox.h"
#include "engine/request_stream.h"
#include "engine/threaded_engine.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "fuzz_model.h"
#include "server/http/http_session.h"
#include "server/http/router.h"
#include "server/http/server_context.h"

namespace {

namespace engine = r2::engine;
namespace http = r2::server::http;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

constexpr size_t kMaxEchoTokens = 16;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "http_request_fuzz: %s\n", what);
    std::abort();
  }
}

// One accepted request: its output, delivered one token per choice per step on the io_context.
struct FakeRun {
  std::weak_ptr<engine::RequestStream> stream;
  engine::Request request;
  std::vector<int32_t> output;
  std::vector<r2::tokenizer::IncrementalDetokenizer> detokenizers;  // one per choice
  size_t step = 0;
};

class FakeEngine final : public engine::Engine {
 public:
  FakeEngine(net::io_context& io, const r2::tokenizer::Tokenizer& tokenizer)
      : io_(io), tokenizer_(tokenizer), inbox_(std::make_shared<engine::EngineInbox>(4096)) {
    limits_.vocab_size = r2::fuzz::kFuzzVocabSize;
    limits_.max_model_len = r2::fuzz::kFuzzMaxModelLen;
    limits_.max_num_seqs = 256;
    limits_.num_blocks = 64;
    limits_.block_size = 64;
    limits_.has_tokenizer = true;
    config_.max_model_len = limits_.max_model_len;
  }

  absl::StatusOr<std::shared_ptr<engine::RequestHandle>> Submit(engine::Request request) override {
    if (absl::Status s = engine::ValidateRequest(limits_, request); !s.ok()) return s;
    auto stream = std::make_shared<engine::RequestStream>(++next_id_, inbox_);
    auto run = std::make_shared<FakeRun>();
    run->stream = stream;
    const size_t count = std::min<size_t>(
        {static_cast<size_t>(*request.params.max_tokens), kMaxEchoTokens, request.prompt.size()});
    run->output.assign(request.prompt.end() - static_cast<ptrdiff_t>(count), request.prompt.end());
    for (int32_t c = 0; c < request.params.n; ++c) {
      run->detokenizers.emplace_back(tokenizer_, request.params.skip_special_tokens);
    }
    run->request = std::move(request);
    net::post(io_, [this, run] { Step(run); });
    return stream;
  }

  // Aborts posted by handles closed early; the real engine thread takes them each step.
  void DrainInbox() {
    engine::InboxBatch batch;
    inbox_->Take(/*wait=*/false, &batch);
  }

  void Shutdown(absl::Duration) override {}
  bool healthy() const override { return true; }
  engine::EngineStats stats() const override { return inbox_->stats(); }
  const r2::model::ModelConfig& model_config() const override { return model_config_; }
  const engine::EngineConfig& config() const override { return config_; }
  const r2::tokenizer::Tokenizer* tokenizer() const override { return &tokenizer_; }
  absl::Status CheckIntegrity() override { return absl::OkStatus(); }

 private:
  void Step(const std::shared_ptr<FakeRun>& run) {
    std::shared_ptr<engine::RequestStream> stream = run->stream.lock();
    if (!stream) return;  // the front end dropped the handle
    const engine::Request& request = run->request;
    const bool last = run->step + 1 >= run->output.size();
    std::vector<engine::ChoiceDelta> deltas;
    for (int32_t c = 0; c < request.params.n; ++c) {
      engine::ChoiceDelta delta;
      delta.index = c;
      if (!run->output.empty()) {
        const int32_t token = run->output[run->step];
        delta.token_ids.push_back(token);
        delta.text = run->detokenizers[c].Add(token);
        if (request.params.logprobs) {
          r2::sampling::Logprobs lp;
          lp.logprob = -0.5f * static_cast<float>(c + 1);
          lp.rank = 1 + c;
          lp.num_top = request.params.top_logprobs;
          for (int32_t k = 0; k < lp.num_top; ++k) {
            lp.top[k] = {(token + k) % limits_.vocab_size, -static_cast<float>(k)};
          }
          delta.logprobs.push_back(lp);
        }
      }
      if (last) {
        delta.text += run->detokenizers[c].Flush();
        const bool length = static_cast<int32_t>(run->output.size()) >= *request.params.max_tokens;
        delta.finish_reason = length ? engine::FinishReason::kLength : engine::FinishReason::kStop;
      }
      deltas.push_back(std::move(delta));
    }
    std::optional<engine::Usage> usage;
    if (last) {
      usage.emplace();
      usage->prompt_tokens = static_cast<int32_t>(request.prompt.size());
      usage->completion_tokens = static_cast<int32_t>(run->output.size()) * request.params.n;
      usage->scheduled_at = usage->first_token_at = usage->last_token_at = absl::Now();
    }
    stream->Deliver(deltas, usage);
    if (last) return;
    ++run->step;
    net::post(io_, [this, run] { Step(run); });
  }

  net::io_context& io_;
  const r2::tokenizer::Tokenizer& tokenizer_;
  std::shared_ptr<engine::EngineInbox> inbox_;
  engine::RequestLimits limits_;
  engine::EngineConfig config_;
  r2::model::ModelConfig model_config_;
  uint64_t next_id_ = 0;
};

struct Server {
  Server()
      : model(r2::fuzz::MakeFuzzModel(r2::tokenizer::TinyChatTemplate::kV3)),
        engine(io, *model.tokenizer),
        context(http::HttpOptions(), http::ApiKeys({"fuzz-key"}),
                http::CorsPolicy("https://app.example"), r2::fuzz::kFuzzModelName) {
    http::AddInfoRoutes(&router);
    http::AddGenerationRoutes(&router);
    context.SetReady(&engine, model.served.get());
  }

  net::io_context io;
  r2::fuzz::FuzzModel model;
  FakeEngine engine;
  http::ServerContext context;
  http::Router router;
};

Server& TheServer() {
  static auto* server = new Server();
  return *server;
}

// Runs everything ready, and everything that becomes ready, until nothing is left.
void RunUntilQuiet(net::io_context& io) {
  io.restart();
  while (io.poll() > 0) {
  }
}

void CheckSse(std::string_view body) {
  constexpr std::string_view kDone = "data: [DONE]\n\n";
  Check(body.size() >= kDone.size() && body.substr(body.size() - kDone.size()) == kDone,
        "event stream does not end with data: [DONE]");
  body.remove_suffix(kDone.size());
  while (!body.empty()) {
    Check(body.substr(0, 6) == "data: ", "event stream line is not data:");
    const size_t end = body.find("\n\n");
    Check(end != std::string_view::npos, "event without its blank line");
    const std::string_view data = body.substr(6, end - 6);
    Check(data != "[DONE]", "data: [DONE] before the end of the stream");
    Check(nlohmann::json::accept(data), "event data is not JSON");
    body.remove_prefix(end + 2);
  }
}

void CheckResponses(std::string_view bytes) {
  while (!bytes.empty()) {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.eager(true);
    parser.body_limit(boost::none);
    parser.header_limit(1 << 20);
    beast::error_code ec;
    while (!parser.is_done()) {
      const size_t used = parser.put(net::buffer(bytes.data(), bytes.size()), ec);
      bytes.remove_prefix(used);
      if (ec == bhttp::error::need_more && !bytes.empty()) {
        ec = {};
        continue;
      }
      if (ec == bhttp::error::need_more) parser.put_eof(ec);
      if (ec) {
        std::fprintf(stderr, "response parse error: %s\n", ec.message().c_str());
        Check(false, "the server's answer is not a sequence of complete HTTP responses");
      }
    }
    const auto& response = parser.get();
    if (response.result_int() >= 500) {
      std::fprintf(stderr, "%d %s\n", response.result_int(), response.body().c_str());
      Check(false, "5xx answer to a client's bytes");
    }
    const std::string_view type(response[bhttp::field::content_type]);
    if (type.rfind("application/json", 0) == 0) {
      Check(nlohmann::json::accept(response.body()), "JSON response body is not JSON");
    } else if (type.rfind("text/event-stream", 0) == 0) {
      CheckSse(response.body());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  signal(SIGPIPE, SIG_IGN);  // a peer that closed shows as a write error, never a signal
  TheServer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Server& server = TheServer();
  int fds[2];
  Check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0, "socketpair failed");
  {
    http::tcp::socket server_end(net::make_strand(server.io));
    server_end.assign(http::tcp::v4(), fds[0]);
    std::make_shared<http::HttpSession>(std::move(server_end), server.context, server.router)
        ->Start();
  }
  net::local::stream_protocol::socket client(server.io);
  client.assign(net::local::stream_protocol(), fds[1]);

  std::string answer;
  std::vector<char> chunk(64 * 1024);
  bool eof = false;
  std::function<void()> read_more = [&] {
    client.async_read_some(net::buffer(chunk), [&](beast::error_code ec, size_t n) {
      answer.append(chunk.data(), n);
      if (ec) {
        eof = true;
        return;
      }
      read_more();
    });
  };
  read_more();
  bool written = false;
  net::async_write(client, net::buffer(data, size),
                   [&](beast::error_code, size_t) { written = true; });
  // Everything the input asks for is answered before the client half-closes: a client that
  // goes away aborts its generation (the disconnect watch), which is not what is fuzzed here.
  RunUntilQuiet(server.io);
  Check(written, "the server stopped reading before the input was consumed");
  beast::error_code ignored;
  client.shutdown(net::socket_base::shutdown_send, ignored);
  server.io.restart();
  server.io.run();
  Check(eof, "the server never closed the connection");
  client.close(ignored);
  server.engine.DrainInbox();
  Check(server.context.active_generations().load() == 0, "a generation outlived its connection");
  Check(server.context.open_connections().load() == 0, "a session outlived its connection");
  CheckResponses(answer);
  return 0;
}
