#pragma once
// SamplingParams: one request's decoding parameters, as the OpenAI API and vLLM define them.
//
// The front end fills this struct from the request body (chat or completions) and calls
// Validate() before the request reaches the engine; a bad value gives InvalidArgument whose
// message starts with the field's OpenAI name (e.g. "top_p must be in (0, 1], got 1.5") and
// whose payload kParamPayloadUrl holds that name, for the error's "param". The engine never sees
// an invalid SamplingParams.
//
// Defaults are the OpenAI/vLLM defaults, so a default-constructed struct samples from the plain
// model distribution (temperature 1, no truncation, no penalties).
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace r2::sampling {

// Limits on request-controlled sizes (OpenAI's own limits where it has them).
inline constexpr int32_t kMaxTopLogprobs = 20;              // top_logprobs, completions logprobs
inline constexpr int32_t kMaxChoices = 128;                 // n (OpenAI's maximum)
inline constexpr int32_t kMaxStopStrings = 16;              // OpenAI allows 4; we allow more
inline constexpr int32_t kMaxStopStringsTotalBytes = 4096;  // sum of the stop strings' lengths
inline constexpr int32_t kMaxStopTokenIds = 256;
inline constexpr int32_t kMaxLogitBiasEntries = 1024;
inline constexpr float kMaxLogitBias = 100.0f;  // |bias| <= 100; -100 bans, +100 forces

// Status payload type URL under which Validate() stores the offending field's name.
inline constexpr char kParamPayloadUrl[] = "type.r2serve/param";

struct SamplingParams {
  // ---- the distribution -------------------------------------------------------------------
  // Softmax temperature in [0, 2]. 0 means greedy: the token with the largest processed logit,
  // ties going to the lowest token id (OpenAI documents 0 as "focused and deterministic").
  float temperature = 1.0f;
  // Nucleus sampling in (0, 1]: keep the most probable tokens whose cumulative probability first
  // reaches top_p. 1 = off.
  float top_p = 1.0f;
  // Keep the top_k most probable tokens. -1 or 0 = off (vLLM accepts both); otherwise >= 1.
  // A value >= the vocabulary size keeps everything.
  int32_t top_k = 0;
  // Min-p in [0, 1]: drop tokens whose probability is below min_p times the most probable
  // token's. 0 = off.
  float min_p = 0.0f;

  // ---- penalties ----------------------------------------------------------------------------
  // Multiplicative, in (0, 2], over every token that occurs in the prompt or the output so far
  // (vLLM/Hugging Face convention): a positive logit is divided by it, a negative one multiplied,
  // so values > 1 discourage repetition. 1 = off.
  float repetition_penalty = 1.0f;
  // Additive, in [-2, 2], over output tokens only (OpenAI convention): the logit of a token that
  // occurs c > 0 times in the output so far is lowered by presence_penalty + c *
  // frequency_penalty. 0 = off.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // Token id -> bias in [-100, 100] added to that token's logit before anything else (OpenAI).
  // Ids must be in [0, vocab_size). -100 effectively bans a token, +100 effectively forces it.
  std::map<int32_t, float> logit_bias;

  // ---- randomness ---------------------------------------------------------------------------
  // With a seed, choice i's tokens are a pure function of (seed, i, the logits): the same seed
  // and prompt give the same output whatever else is in the batch. Any int64 is accepted (the
  // front end rejects values outside int64). Without one, the engine's generator is used.
  std::optional<int64_t> seed;

  // ---- how many, how long -------------------------------------------------------------------
  // Number of choices, in [1, kMaxChoices].
  int32_t n = 1;
  // best_of is not supported: when given it must equal n.
  std::optional<int32_t> best_of;
  // Maximum number of output tokens, >= 1; unset = until the context is full (the engine
  // bounds it by the context; completions' default of 16 is applied by the front end).
  std::optional<int32_t> max_tokens;
  // Minimum number of output tokens before EOS, stop_token_ids or stop strings may end the
  // output (vLLM). 0 <= min_tokens <= max_tokens.
  int32_t min_tokens = 0;
  // Keep generating after the model's EOS token; EOS is then an ordinary token (vLLM).
  bool ignore_eos = false;

  // ---- stopping -----------------------------------------------------------------------------
  // Token ids that end the output when generated (finish_reason "stop", stop_reason = the id);
  // the stop token's text is not part of the output. Each in [0, vocab_size).
  std::vector<int32_t> stop_token_ids;
  // Strings that end the output when they appear in the detokenized text, also across token
  // boundaries. Each non-empty and valid UTF-8; at most kMaxStopStrings, kMaxStopStringsTotalBytes
  // bytes in all (OpenAI allows 4). The matched string is cut from the output unless
  // include_stop_str_in_output (vLLM) is set.
  std::vector<std::string> stop;
  bool include_stop_str_in_output = false;

  // ---- what is returned ---------------------------------------------------------------------
  // Return the sampled token's log-probability and rank, plus the top_logprobs (0..20) most
  // likely alternatives. Chat maps {logprobs, top_logprobs} here directly; completions' integer
  // logprobs=k maps to logprobs = true, top_logprobs = k. top_logprobs > 0 requires logprobs.
  // The values are those of the raw model distribution (see sampler.h).
  bool logprobs = false;
  int32_t top_logprobs = 0;
  // Leave special tokens out of the output text (vLLM default true; used by the detokenizer).
  bool skip_special_tokens = true;

  // Derived quantities.
  bool greedy() const { return temperature == 0.0f; }
  bool top_k_enabled(int32_t vocab_size) const { return top_k > 0 && top_k < vocab_size; }
  bool has_penalties() const {
    return repetition_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f;
  }

  // Checks every field against the ranges above; token ids against vocab_size (> 0).
  absl::Status Validate(int32_t vocab_size) const;
};

// The field named by an error from Validate(), or "" when the status carries none.
std::string InvalidParamName(const absl::Status& status);

}  // namespace r2::sampling
