#pragma once
// Engine: many requests share one model. One engine thread runs the step loop
//   Scheduler::Schedule -> ModelRunner forward -> Sampler -> detokenize + stop checks ->
//   Scheduler::Postprocess -> deliver Output events to each request's handle
// and front ends (HTTP, gRPC) never block it: Submit() only validates and enqueues, and results
// are pushed into per-request handles that the front end drains at its own pace.
//
// Usage (a front end thread):
//   auto engine = Engine::Create(config);                 // loads the model, starts the thread
//   absl::StatusOr<std::shared_ptr<RequestHandle>> h = (*engine)->Submit(std::move(request));
//   if (!h.ok()) -> reply with an error (InvalidArgument: bad input; ResourceExhausted: queue
//                   full; Unavailable: loading, draining or after an engine fault)
//   (*h)->SetNotifier([&] { post "drain h" to my own executor; });  // optional, for async loops
//   RequestOutput out;
//   while ((*h)->Next(&out, deadline)) { ... write out.choices ... if (out.finished()) break; }
//   (*h)->Close();  // or drop the handle: an unfinished request is aborted at the next step
//
// Guarantees:
//   - every accepted request ends with exactly one terminal event per choice: finish_reason
//     stop, length, abort, or error; a forward-pass failure ends every in-flight request with an
//     error event and marks the engine unhealthy; nothing ever waits forever on a dead engine;
//   - closing or dropping a handle aborts its request within one engine step;
//   - the same seed and prompt give the same tokens whatever else is in the batch.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/model/config.h"
#include "engine/sampling/logprobs.h"
#include "engine/sampling/sampling_params.h"

namespace r2::tokenizer {
class Tokenizer;
}

namespace r2::engine {

struct EngineConfig {
  std::string model_dir;                  // a checkpoint directory (config.json + safetensors)
  int32_t max_num_seqs = 256;             // sequences running at once
  int32_t max_num_batched_tokens = 2048;  // tokens per step (chunked prefill above this)
  int32_t max_model_len = 0;  // prompt + output; 0 = the model's max_position_embeddings
  // The backend the model runs on: "cpu" (the fastest CPU backend) or "cuda" (device 0); any
  // name MakeBackend knows. Unavailable from Create when it cannot be made here.
  std::string device = "cpu";
  // KV pool budget; sets the block count. 0: 1 GiB on a host-memory backend, on a device
  // gpu_memory_utilization of the device memory free after the weights are loaded.
  int64_t kv_cache_memory_bytes = int64_t{1} << 30;
  double gpu_memory_utilization = 0.9;  // in (0, 1]
  // KV cache format (kernels/kv_cache_format.h): "auto" (float32: the one format every backend
  // reads), "float32", "bf16" or "fp8". The pool holds kv_cache_memory_bytes / (real bytes per
  // token) tokens, so bf16 holds 2x and fp8 ~3.5x the tokens of float32. On CUDA only float32 is
  // served until the bf16/fp8 kernels have passed tests/gpu/device_check.sh; the others are
  // refused before the device is touched.
  std::string kv_cache_dtype = "auto";
  int32_t block_size = 64;             // tokens per KV block
  int32_t max_queued_requests = 4096;  // waiting requests beyond this are refused
  bool enable_prefix_caching = true;
  // On a device backend, sample where the logits are (Backend::SampleRows): only token ids and
  // the requested logprobs cross to the host. False copies every logits row to the host and
  // samples there (the host Sampler), as host backends always do; both give the same tokens.
  bool sample_on_device = true;
  uint64_t seed = 0;  // generator for unseeded requests
  // Watchdog: when one engine step runs longer than this, the engine is declared stuck: it turns
  // unhealthy (Submit -> Unavailable), every live request ends with an error event at once (the
  // stuck step is not waited for) and stalled() turns true. Zero disables it.
  absl::Duration watchdog_timeout = absl::Seconds(30);
  // Test hook, run on the engine thread before each forward pass: a non-OK status is treated as
  // a forward-pass failure (every in-flight request ends with an error, the engine turns
  // unhealthy). Fault-injection tests and `serve --inject-fault` use it; empty in production.
  std::function<absl::Status(uint64_t step)> before_forward;
};

// What a front end submits: token ids (already templated and tokenized) and sampling parameters
// (already validated with SamplingParams::Validate; Submit checks them again).
struct Request {
  std::vector<int32_t> prompt;
  sampling::SamplingParams params;
  int32_t priority = 0;    // lower runs first
  std::string cache_salt;  // prefix-cache isolation; empty = shared
};

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };
// "stop", "length", "abort", "error"; "" for kNone.
const char* FinishReasonName(FinishReason reason);

// New output of one choice since the previous event.
struct ChoiceDelta {
  int32_t index = 0;                         // choice index in [0, n)
  std::vector<int32_t> token_ids;            // tokens generated since the last event
  std::vector<sampling::Logprobs> logprobs;  // one per token, when the request asked
  std::string text;                          // detokenized text safe to stream (stop strings cut)
  FinishReason finish_reason = FinishReason::kNone;  // set on this choice's terminal event
  std::string stop_reason;  // the stop string or stop token id that matched
  std::string error;        // message when finish_reason == kError
};

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;  // over all choices
  int32_t cached_tokens = 0;      // prompt tokens served from the prefix cache
  // Engine clock (absl::Now) for metrics; absl::InfinitePast() where the request never got that
  // far: first scheduled (the end of its queue time), first and last token sampled.
  absl::Time scheduled_at = absl::InfinitePast();
  absl::Time first_token_at = absl::InfinitePast();
  absl::Time last_token_at = absl::InfinitePast();
};

// One event: deltas of one or more choices. `usage` is set on the request's last event.
struct RequestOutput {
  std::vector<ChoiceDelta> choices;
  std::optional<Usage> usage;
  bool finished() const { return usage.has_value(); }  // every choice has ended
};

// The front end's end of one request. Thread-safe: the engine thread pushes, one front-end
// thread pops. Output events are merged while nobody reads, so a slow reader never blocks the
// engine and memory stays bounded by the request's own output.
class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  // Waits until output is available or `deadline` passes. Returns false on timeout or when the
  // request has ended and everything was read; *out holds all output since the last call.
  virtual bool Next(RequestOutput* out, absl::Time deadline) = 0;
  // Non-blocking Next.
  virtual bool TryNext(RequestOutput* out) = 0;
  // Called on the engine thread after new output is queued (must not block; post to your own
  // executor). Replaces any previous notifier; pass nullptr to remove.
  virtual void SetNotifier(std::function<void()> notify) = 0;
  // Aborts the request if it has not finished (terminal events with finish_reason abort follow).
  virtual void Close() = 0;
  virtual uint64_t request_id() const = 0;
};

// Live statistics for /metrics (read from any thread).
struct EngineStats {
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_used = 0;         // referenced by a running sequence
  int32_t kv_blocks_cached = 0;       // free for reuse but holding a cached prefix
  uint64_t prefix_cache_queries = 0;  // tokens
  uint64_t prefix_cache_hits = 0;     // tokens
  uint64_t preemptions = 0;
  uint64_t steps = 0;
  uint64_t prompt_tokens_total = 0;
  uint64_t generation_tokens_total = 0;
  uint64_t requests_finished_stop = 0;
  uint64_t requests_finished_length = 0;
  uint64_t requests_finished_abort = 0;
  uint64_t requests_finished_error = 0;
  // Requests Submit accepted (counted when queued). Once each has ended, accepted ==
  // finished_stop + finished_length + finished_abort + finished_error.
  uint64_t requests_accepted = 0;
  // KV pool self-checks run when the scheduler turns idle, and how many failed (a failure is an
  // engine fault).
  uint64_t integrity_checks = 0;
  uint64_t integrity_failures = 0;
  double last_step_seconds = 0;
  int32_t last_step_tokens = 0;
};

class Engine {
 public:
  // Loads the model and tokenizer (when the model dir has tokenizer.json) and starts the engine
  // thread. Errors name the bad flag or file.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineConfig& config);
  virtual ~Engine() = default;  // stops the thread; unfinished requests end with abort

  // InvalidArgument (naming the field) for a request that can never run: empty prompt, token id
  // outside the vocabulary, prompt + max_tokens over max_model_len (message says both numbers),
  // more KV blocks than the pool has. ResourceExhausted when max_queued_requests are waiting.
  // Unavailable while draining or after an engine fault.
  virtual absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(Request request) = 0;

  // Stops accepting requests; in-flight ones run until they finish or `timeout` passes, then the
  // rest end with finish_reason abort. Returns when the engine thread has stopped, or when the
  // watchdog has declared it stuck (stalled()).
  virtual void Shutdown(absl::Duration timeout) = 0;

  virtual bool healthy() const = 0;  // false after an engine fault
  // True once the watchdog (EngineConfig::watchdog_timeout) found a step that does not finish.
  // The engine thread may never return then: Shutdown returns without it, and destroying the
  // engine would wait for the stuck step, so a process should exit without destroying it.
  virtual bool stalled() const { return false; }
  virtual EngineStats stats() const = 0;
  virtual const model::ModelConfig& model_config() const = 0;
  virtual const EngineConfig& config() const = 0;  // with max_model_len resolved
  // nullptr when the model directory has no tokenizer.json.
  virtual const tokenizer::Tokenizer* tokenizer() const = 0;
  // Checks the KV pool's integrity now (blocks free + cached + in use == total, refcounts).
  // Runs on the engine thread; waits for the current step to end.
  virtual absl::Status CheckIntegrity() = 0;
};

}  // namespace r2::engine
