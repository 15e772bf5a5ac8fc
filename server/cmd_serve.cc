// r2serve serve: the OpenAI-compatible HTTP server.
//
//   r2serve serve --model DIR [--port 8000] [--api-key KEY] ...   (`r2serve serve --help`)
//
// Startup: listen first (/health answers 503 while the model loads), load the model with a
// progress line on a terminal, then serve. SIGTERM/SIGINT: stop accepting, /health 503, let
// in-flight requests finish for up to --shutdown-timeout seconds, end the rest with
// finish_reason "abort", exit 0. An engine fault turns /health 503 and exits with status 1.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "engine/engine.h"
#include "kernels/kv_cache_format.h"
#include "server/command.h"
#include "server/command_flags.h"
#include "server/grpc/grpc_server.h"
#include "server/http/http_server.h"
#include "server/http/router.h"
#include "server/http/serve_options.h"
#include "server/http/server_context.h"
#include "server/openai_prompt.h"

ABSL_DECLARE_FLAG(std::string, model);   // defined in cmd_generate.cc (absl flags are global)
ABSL_DECLARE_FLAG(std::string, device);  // likewise
ABSL_DECLARE_FLAG(std::string, kv_cache_dtype);  // likewise
ABSL_FLAG(std::string, served_model_name, "",
          "Model id clients send as \"model\" and /v1/models lists. Default: the --model "
          "directory's last path component.");
ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on (0.0.0.0 for all interfaces).");
ABSL_FLAG(int32_t, port, 8000, "TCP port to listen on (0 picks a free one).");
ABSL_FLAG(std::string, api_key, "",
          "API key clients must send as 'Authorization: Bearer KEY'. Repeatable; also a "
          "comma-separated list or @FILE (one key a line). Default: no authentication.");
ABSL_FLAG(int32_t, max_model_len, 0,
          "Prompt + output tokens per request. 0: the model's max_position_embeddings.");
ABSL_FLAG(int32_t, max_num_seqs, 256, "Sequences running at once.");
ABSL_FLAG(int32_t, max_num_batched_tokens, 2048, "Tokens per engine step (chunked prefill).");
ABSL_FLAG(std::string, kv_cache_memory, "",
          "KV cache budget in bytes; K, M, G suffixes. Default: 1G on --device cpu, on a GPU "
          "--gpu-memory-utilization of the memory free after loading the weights.");
ABSL_FLAG(double, gpu_memory_utilization, 0.9,
          "On a GPU without --kv-cache-memory: the fraction of free device memory (after the "
          "weights) the KV cache takes.");
ABSL_FLAG(int32_t, max_queued_requests, 4096,
          "Waiting requests beyond this are refused with 429 and Retry-After.");
ABSL_FLAG(double, shutdown_timeout, 30,
          "Seconds in-flight requests may run after SIGTERM/SIGINT before they are aborted.");
ABSL_FLAG(std::string, allowed_origins, "",
          "CORS: comma-separated origins allowed to call the API from a browser, or '*'. "
          "Default: none (CORS off).");
ABSL_FLAG(int32_t, threads, 2, "HTTP I/O threads (every connection shares them).");
ABSL_FLAG(std::string, max_body_bytes, "4M", "Largest request body (413 above); K/M suffixes.");
ABSL_FLAG(double, keep_alive_timeout, 30, "Seconds an idle keep-alive connection stays open.");
ABSL_FLAG(double, write_timeout, 30,
          "Seconds one response write may wait for a client that stopped reading; then the "
          "connection is dropped and its request aborted (a slow reader).");
ABSL_FLAG(bool, enable_prefix_caching, true, "Reuse KV blocks of shared prompt prefixes.");
ABSL_FLAG(bool, sample_on_device, true,
          "On a GPU, sample where the logits are (only token ids and requested logprobs are "
          "copied back). --sample-on-device=false copies the logits to the host and samples there, "
          "with the same tokens. No effect on --device cpu.");
ABSL_FLAG(bool, reasoning, true,
          "Split <think>...</think> into reasoning_content/reasoning when the chat template "
          "uses <think> (DeepSeek-R1 style).");
ABSL_FLAG(int32_t, grpc_port, 0,
          "TCP port of the gRPC API (r2serve.v1.Inference, health, reflection) on --host. "
          "0: no gRPC server.");
ABSL_FLAG(std::string, grpc_max_message_bytes, "4M",
          "Largest gRPC request or response message; K/M suffixes.");
ABSL_FLAG(int32_t, grpc_max_concurrent_streams, 1024,
          "Generate and Chat calls open at once over gRPC; more get RESOURCE_EXHAUSTED.");
ABSL_FLAG(double, watchdog_timeout_s, -1,
          "Seconds one engine step may run before the engine is declared stuck: /health and gRPC "
          "health turn 503/NOT_SERVING, every in-flight request ends with an error and the "
          "process exits with status 1. 0: no watchdog. -1: 30 on a GPU (--device cuda), 300 on "
          "the CPU backend (one 2,048-token prefill step of a large model can take minutes "
          "there).");
ABSL_FLAG(std::string, inject_fault, "",
          "Testing only: faults in the engine step, comma-separated KIND@STEP[:DELAY] (steps "
          "count from 1): throw@N (step N throws: an engine fault), hang@N (step N never "
          "returns: the watchdog's case), slow@N:DELAY (every step from N on is DELAY slower, "
          "e.g. slow@1:200ms or slow@5:1.5s). Default: none. docs/reliability.md.");
ABSL_FLAG(int64_t, inject_fault_at_step, -1,
          "Testing only: the same as --inject-fault=throw@N (N=0 counts as 1). -1: off.");
ABSL_FLAG(int64_t, inject_step_delay_ms, 0,
          "Testing only: the same as --inject-fault=slow@1:Nms (a slow device), so tests can hold "
          "requests in flight. 0: off.");

namespace r2::server {
namespace {

using http::HttpOptions;

constexpr const char* kServeFlags[] = {"model",
                                       "device",
                                       "gpu_memory_utilization",
                                       "served_model_name",
                                       "host",
                                       "port",
                                       "api_key",
                                       "max_model_len",
                                       "max_num_seqs",
                                       "max_num_batched_tokens",
                                       "kv_cache_memory",
                                       "kv_cache_dtype",
                                       "max_queued_requests",
                                       "shutdown_timeout",
                                       "allowed_origins",
                                       "threads",
                                       "max_body_bytes",
                                       "keep_alive_timeout",
                                       "write_timeout",
                                       "enable_prefix_caching",
                                       "sample_on_device",
                                       "reasoning",
                                       "grpc_port",
                                       "grpc_max_message_bytes",
                                       "grpc_max_concurrent_streams",
                                       "watchdog_timeout_s",
                                       "inject_fault",
                                       "inject_fault_at_step",
                                       "inject_step_delay_ms"};

void PrintHelp() {
  std::printf(
      "usage: r2serve serve --model DIR [flags]\n\n"
      "OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models,\n"
      "/health, /metrics, /tokenize, /detokenize. Flags accept dashes or underscores.\n\n");
  for (const char* name : kServeFlags) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;
    std::string dashed = name;
    for (char& c : dashed) c = c == '_' ? '-' : c;
    std::printf("  --%s (default: %s)\n      %s\n", dashed.c_str(),
                flag->DefaultValue().empty() ? "none" : flag->DefaultValue().c_str(),
                flag->Help().c_str());
  }
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "r2serve serve: %s\n", message.c_str());
  return 1;
}

std::string DefaultModelName(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const size_t slash = dir.rfind('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

std::chrono::milliseconds Millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

absl::StatusOr<HttpOptions> HttpOptionsFromFlags() {
  HttpOptions o;
  o.host = absl::GetFlag(FLAGS_host);
  const int32_t port = absl::GetFlag(FLAGS_port);
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--port must be in [0, 65535], got ", port));
  }
  o.port = static_cast<uint16_t>(port);
  o.threads = absl::GetFlag(FLAGS_threads);
  if (o.threads < 1 || o.threads > 256) {
    return absl::InvalidArgumentError("--threads must be in [1, 256]");
  }
  absl::StatusOr<int64_t> body =
      http::ParseByteSize(absl::GetFlag(FLAGS_max_body_bytes), "max-body-bytes");
  if (!body.ok()) return body.status();
  if (*body < 1024) return absl::InvalidArgumentError("--max-body-bytes must be >= 1K");
  o.max_body_bytes = static_cast<size_t>(*body);
  const double keep_alive = absl::GetFlag(FLAGS_keep_alive_timeout);
  if (!(keep_alive > 0)) return absl::InvalidArgumentError("--keep-alive-timeout must be > 0");
  o.idle_timeout = Millis(keep_alive);
  const double write = absl::GetFlag(FLAGS_write_timeout);
  if (!(write > 0) || write > 86400) {
    return absl::InvalidArgumentError("--write-timeout must be in (0, 86400] seconds");
  }
  o.write_timeout = Millis(write);
  return o;
}

// --inject-fault: test-only faults in the engine step (run by EngineConfig::before_forward).
struct InjectedFault {
  enum class Kind { kThrow, kHang, kSlow };
  Kind kind = Kind::kThrow;
  int64_t step = 1;                             // 1-based engine step
  absl::Duration delay = absl::ZeroDuration();  // kSlow
  std::string text;                             // as given, for messages
};

absl::Status BadFault(absl::string_view fault, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "--inject-fault: bad fault '", fault, "': ", why,
      " (expected KIND@STEP[:DELAY], KIND one of throw, hang, slow; e.g. throw@10, hang@10, "
      "slow@5:200ms)"));
}

absl::StatusOr<InjectedFault> ParseFault(absl::string_view text) {
  InjectedFault fault;
  fault.text = std::string(text);
  const size_t at = text.find('@');
  if (at == absl::string_view::npos) return BadFault(text, "no '@STEP'");
  const absl::string_view kind = text.substr(0, at);
  absl::string_view rest = text.substr(at + 1);
  absl::string_view delay;
  if (const size_t colon = rest.find(':'); colon != absl::string_view::npos) {
    delay = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
    if (delay.empty()) return BadFault(text, "empty DELAY after ':'");
  }
  if (kind == "throw") {
    fault.kind = InjectedFault::Kind::kThrow;
  } else if (kind == "hang") {
    fault.kind = InjectedFault::Kind::kHang;
  } else if (kind == "slow") {
    fault.kind = InjectedFault::Kind::kSlow;
  } else {
    return BadFault(text, absl::StrCat("unknown KIND '", kind, "'"));
  }
  if (!absl::SimpleAtoi(rest, &fault.step) || fault.step < 1) {
    return BadFault(text, absl::StrCat("STEP '", rest, "' is not an integer >= 1"));
  }
  if (fault.kind != InjectedFault::Kind::kSlow) {
    if (!delay.empty()) return BadFault(text, "only slow takes a DELAY");
    return fault;
  }
  if (delay.empty()) return BadFault(text, "slow needs a DELAY, e.g. slow@5:200ms");
  // "200ms", "1.5s": a number with a unit of ms or s.
  double amount = 0;
  absl::string_view number = delay;
  double unit_seconds = 0;
  if (absl::ConsumeSuffix(&number, "ms")) {
    unit_seconds = 1e-3;
  } else if (absl::ConsumeSuffix(&number, "s")) {
    unit_seconds = 1;
  } else {
    return BadFault(text, absl::StrCat("DELAY '", delay, "' needs a unit, ms or s"));
  }
  if (!absl::SimpleAtod(number, &amount) || !(amount >= 0) || amount * unit_seconds > 3600) {
    return BadFault(text, absl::StrCat("DELAY '", delay, "' is not a duration in [0, 3600s]"));
  }
  fault.delay = absl::Seconds(amount * unit_seconds);
  return fault;
}

// Every fault of --inject-fault and its two older spellings.
absl::StatusOr<std::vector<InjectedFault>> FaultsFromFlags() {
  std::vector<InjectedFault> faults;
  const std::string spec = absl::GetFlag(FLAGS_inject_fault);
  if (!spec.empty()) {
    for (absl::string_view part : absl::StrSplit(spec, ',')) {
      absl::StatusOr<InjectedFault> fault = ParseFault(absl::StripAsciiWhitespace(part));
      if (!fault.ok()) return fault.status();
      faults.push_back(*std::move(fault));
    }
  }
  const int64_t fault_step = absl::GetFlag(FLAGS_inject_fault_at_step);
  if (fault_step < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--inject-fault-at-step must be >= 0 (-1: off), got ", fault_step));
  }
  if (fault_step >= 0) {
    faults.push_back({.kind = InjectedFault::Kind::kThrow,
                      .step = std::max<int64_t>(fault_step, 1),
                      .text = absl::StrCat("--inject-fault-at-step ", fault_step)});
  }
  const int64_t delay_ms = absl::GetFlag(FLAGS_inject_step_delay_ms);
  if (delay_ms < 0 || delay_ms > 3600000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--inject-step-delay-ms must be in [0, 3600000], got ", delay_ms));
  }
  if (delay_ms > 0) {
    faults.push_back({.kind = InjectedFault::Kind::kSlow,
                      .step = 1,
                      .delay = absl::Milliseconds(delay_ms),
                      .text = absl::StrCat("--inject-step-delay-ms ", delay_ms)});
  }
  return faults;
}

// Runs on the engine thread before each forward pass. Slow faults delay first, then a throw or a
// hang whose step has come fires (a throw fires again on any later step, like a broken device).
std::function<absl::Status(uint64_t)> MakeFaultHook(std::vector<InjectedFault> faults) {
  return [faults = std::move(faults)](uint64_t step) -> absl::Status {
    const int64_t now = static_cast<int64_t>(step);
    for (const InjectedFault& f : faults) {
      if (f.kind == InjectedFault::Kind::kSlow && now >= f.step) absl::SleepFor(f.delay);
    }
    for (const InjectedFault& f : faults) {
      if (f.kind == InjectedFault::Kind::kThrow && now >= f.step) {
        throw std::runtime_error(absl::StrCat("injected fault (", f.text, ") at step ", now));
      }
      if (f.kind == InjectedFault::Kind::kHang && now >= f.step) {
        std::fprintf(stderr, "r2serve serve: injected hang (%s): engine step %lld blocks\n",
                     f.text.c_str(), static_cast<long long>(now));
        // Never notified and never freed: the step is stuck for good, as on a wedged device.
        (new absl::Notification)->WaitForNotification();
      }
    }
    return absl::OkStatus();
  };
}

absl::StatusOr<engine::EngineConfig> EngineConfigFromFlags() {
  engine::EngineConfig c;
  c.model_dir = absl::GetFlag(FLAGS_model);
  c.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  c.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  c.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  c.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  c.enable_prefix_caching = absl::GetFlag(FLAGS_enable_prefix_caching);
  c.sample_on_device = absl::GetFlag(FLAGS_sample_on_device);
  c.device = absl::GetFlag(FLAGS_device);
  c.gpu_memory_utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
  c.kv_cache_dtype = absl::GetFlag(FLAGS_kv_cache_dtype);
  if (absl::Status s = ParseKvCacheDType(c.kv_cache_dtype).status(); !s.ok()) return s;
  c.kv_cache_memory_bytes = 0;  // automatic unless given
  if (!absl::GetFlag(FLAGS_kv_cache_memory).empty()) {
    absl::StatusOr<int64_t> kv =
        http::ParseByteSize(absl::GetFlag(FLAGS_kv_cache_memory), "kv-cache-memory");
    if (!kv.ok()) return kv.status();
    if (*kv <= 0) return absl::InvalidArgumentError("--kv-cache-memory must be > 0");
    c.kv_cache_memory_bytes = *kv;
  }
  if (c.max_num_seqs < 1 || c.max_num_batched_tokens < 1 || c.max_model_len < 0 ||
      c.max_queued_requests < 0) {
    return absl::InvalidArgumentError(
        "--max-num-seqs and --max-num-batched-tokens must be >= 1, --max-model-len and "
        "--max-queued-requests >= 0");
  }
  double watchdog = absl::GetFlag(FLAGS_watchdog_timeout_s);
  if (watchdog == -1) watchdog = absl::StartsWith(c.device, "cuda") ? 30 : 300;
  if (!(watchdog >= 0) || watchdog > 1e6) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--watchdog-timeout-s must be in [0, 1e6] seconds (0: off, -1: automatic), got ",
        absl::GetFlag(FLAGS_watchdog_timeout_s)));
  }
  c.watchdog_timeout = absl::Seconds(watchdog);
  absl::StatusOr<std::vector<InjectedFault>> faults = FaultsFromFlags();
  if (!faults.ok()) return faults.status();
  if (!faults->empty()) c.before_forward = MakeFaultHook(*std::move(faults));
  return c;
}

// Blocks SIGINT/SIGTERM in every thread (the threads started later inherit the mask); the main
// thread collects them with sigtimedwait.
sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// Waits up to `ms` for a stop signal; returns it or 0.
int WaitSignal(const sigset_t& set, int ms) {
  timespec timeout{ms / 1000, (ms % 1000) * 1000000L};
  const int sig = sigtimedwait(&set, nullptr, &timeout);
  return sig > 0 ? sig : 0;
}

// Loads the engine on a thread while the main thread shows progress and watches for signals.
absl::StatusOr<std::unique_ptr<engine::Engine>> LoadEngine(const engine::EngineConfig& config,
                                                           const sigset_t& signals) {
  std::atomic<bool> done{false};
  absl::StatusOr<std::unique_ptr<engine::Engine>> result;
  std::thread loader([&] {
    result = engine::Engine::Create(config);
    done.store(true);
  });
  const bool tty = isatty(STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  std::fprintf(stderr, "r2serve serve: loading %s%s", config.model_dir.c_str(), tty ? "" : "\n");
  while (!done.load()) {
    if (int sig = WaitSignal(signals, 200)) {
      std::fprintf(stderr, "\nr2serve serve: signal %d while loading; exiting\n", sig);
      std::_Exit(sig == SIGTERM ? 0 : 130);
    }
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (tty)
      std::fprintf(stderr, "\rr2serve serve: loading %s ... %.1fs", config.model_dir.c_str(), s);
  }
  loader.join();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "%sr2serve serve: %s in %.1fs\n", tty ? "\n" : "",
               result.ok() ? "model loaded" : "loading failed", s);
  return result;
}

// The gRPC server when --grpc-port is set (null when not), listening.
absl::StatusOr<std::unique_ptr<grpc_api::GrpcServer>> StartGrpc(http::ServerContext& context) {
  const int32_t port = absl::GetFlag(FLAGS_grpc_port);
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--grpc-port must be in [0, 65535], got ", port));
  }
  if (port == 0) return nullptr;
  grpc_api::GrpcOptions o;
  o.host = absl::GetFlag(FLAGS_host);
  o.port = port;
  absl::StatusOr<int64_t> bytes =
      http::ParseByteSize(absl::GetFlag(FLAGS_grpc_max_message_bytes), "grpc-max-message-bytes");
  if (!bytes.ok()) return bytes.status();
  o.max_message_bytes = *bytes;
  o.max_concurrent_streams = absl::GetFlag(FLAGS_grpc_max_concurrent_streams);
  auto server = std::make_unique<grpc_api::GrpcServer>(context, o);
  if (absl::Status s = server->Start(); !s.ok()) return s;
  return server;
}

// Stops accepting, lets in-flight requests finish (or aborts them), then stops the server.
void Drain(http::ServerContext& context, http::HttpServer& server, engine::Engine& engine,
           grpc_api::GrpcServer* grpc) {
  context.StartDraining();
  if (grpc != nullptr) grpc->RefreshHealth();  // NOT_SERVING; new calls get UNAVAILABLE
  server.StopAccepting();
  const double timeout = std::max(0.0, absl::GetFlag(FLAGS_shutdown_timeout));
  std::fprintf(stderr, "r2serve serve: draining (up to %.0fs)\n", timeout);
  // Returns at once on a stalled engine (the watchdog has ended every request).
  engine.Shutdown(absl::Seconds(timeout));
  // Every request has its terminal event now; give the connections a moment to write it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (context.active_generations().load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  server.Stop();
  if (grpc != nullptr) grpc->Shutdown(absl::Seconds(1));
}

int RunServe(int argc, char** argv) {
  if (WantsHelp(argc, argv)) {
    PrintHelp();
    return 0;
  }
  const std::vector<std::string> key_values = http::RepeatedFlagValues(argc, argv, "api_key");
  const std::vector<std::string> rest = ParseCommandFlags(argc, argv);
  if (!rest.empty()) return Fail(absl::StrCat("unexpected argument '", rest[0], "'"));
  if (absl::GetFlag(FLAGS_model).empty()) {
    return Fail(
        "--model DIR is required (a checkpoint directory; scripts/serve makes a tiny "
        "one: r2serve make-tiny-model --preset tiny --out models/tiny)");
  }
  absl::StatusOr<HttpOptions> http_options = HttpOptionsFromFlags();
  if (!http_options.ok()) return Fail(std::string(http_options.status().message()));
  absl::StatusOr<engine::EngineConfig> engine_config = EngineConfigFromFlags();
  if (!engine_config.ok()) return Fail(std::string(engine_config.status().message()));
  absl::StatusOr<http::ApiKeys> keys = http::ApiKeys::FromFlagValues(key_values);
  if (!keys.ok()) return Fail(std::string(keys.status().message()));
  std::string name = absl::GetFlag(FLAGS_served_model_name);
  if (name.empty()) name = DefaultModelName(engine_config->model_dir);

  const sigset_t signals = BlockStopSignals();
  http::CorsPolicy cors(absl::GetFlag(FLAGS_allowed_origins));
  if (cors.AllowOrigin("http://example.invalid") == "*" && !keys->enabled()) {
    std::fprintf(stderr,
                 "r2serve serve: warning: CORS allows every origin and no --api-key is "
                 "set: any web page can use this server\n");
  }
  http::ServerContext context(*http_options, *keys, cors, name);
  http::Router router;
  http::AddInfoRoutes(&router);
  http::AddGenerationRoutes(&router);
  http::HttpServer server(context, router);
  if (absl::Status s = server.Listen(); !s.ok()) return Fail(std::string(s.message()));
  server.Run();
  std::fprintf(stderr, "r2serve serve: listening on http://%s:%u (/health is 503 until loaded)\n",
               http_options->host.c_str(), server.port());
  absl::StatusOr<std::unique_ptr<grpc_api::GrpcServer>> grpc = StartGrpc(context);
  if (!grpc.ok()) return Fail(std::string(grpc.status().message()));
  if (*grpc) {
    std::fprintf(stderr,
                 "r2serve serve: gRPC listening on %s:%d (health NOT_SERVING until loaded)\n",
                 http_options->host.c_str(), (*grpc)->port());
  }

  absl::StatusOr<std::unique_ptr<engine::Engine>> engine = LoadEngine(*engine_config, signals);
  if (!engine.ok()) {
    Fail(std::string(engine.status().message()));
    // An unavailable --device (no GPU, a build without CUDA) is a usage error.
    return engine.status().code() == absl::StatusCode::kUnavailable ? 2 : 1;
  }
  ServedModelOptions model_options{name, engine_config->model_dir, absl::GetFlag(FLAGS_reasoning)};
  absl::StatusOr<std::unique_ptr<ServedModel>> model =
      ServedModel::Create(model_options, (*engine)->tokenizer(),
                          static_cast<int32_t>((*engine)->model_config().vocab_size),
                          (*engine)->config().max_model_len);
  if (!model.ok()) return Fail(std::string(model.status().message()));
  context.SetReady(engine->get(), model->get());
  if (*grpc) (*grpc)->RefreshHealth();
  std::fprintf(stderr, "r2serve serve: serving '%s' on http://%s:%u (max_model_len %d%s%s)\n",
               name.c_str(), http_options->host.c_str(), server.port(), (*model)->max_model_len(),
               (*engine)->tokenizer() ? "" : ", no tokenizer",
               (*model)->chat_template() ? "" : ", no chat template");

  int exit_code = 0;
  for (;;) {
    if (*grpc) (*grpc)->RefreshHealth();
    if (int sig = WaitSignal(signals, 200)) {
      std::fprintf(stderr, "r2serve serve: signal %d, shutting down\n", sig);
      break;
    }
    if (!(*engine)->healthy()) {
      std::fprintf(stderr, "r2serve serve: engine fault%s; /health is 503; exiting\n",
                   (*engine)->stalled() ? " (watchdog: an engine step is stuck)" : "");
      exit_code = 1;
      break;
    }
  }
  if (*grpc) (*grpc)->RefreshHealth();
  Drain(context, server, **engine, grpc->get());
  if ((*engine)->stalled()) {
    // Destroying it would wait for the stuck step: leave it to the process exit.
    std::fprintf(stderr, "r2serve serve: stopped with the engine stuck\n");
    (void)engine->release();
    return 1;
  }
  std::fprintf(stderr, "r2serve serve: stopped\n");
  return exit_code;
}

}  // namespace

R2_REGISTER_COMMAND("serve", "OpenAI-compatible HTTP server (--help for flags)", RunServe);

}  // namespace r2::server
