#pragma once
// The tokenizer of the tiny test models (`r2serve make-tiny-model`): a byte-level BPE trained by
// engine/tokenizer/bpe_trainer.h on a built-in corpus, written as tokenizer.json and
// tokenizer_config.json in DeepSeek-V3's exact Hugging Face shape (same normalizer, pre-tokenizer
// Sequence, post-processor and decoder; added tokens with DeepSeek's flags; a DeepSeek chat
// template), so that loading and serving a tiny model takes the same code paths as the real one.
//
// Ids (all below the model's vocab_size):
//   0, 1, 2        <｜begin▁of▁sentence｜> (BOS), <｜end▁of▁sentence｜> (EOS), <｜▁pad▁｜>, as
//   DeepSeek 3 ..           the added tokens the chat templates and parsers use
//   (TinySpecialTokens(): <think>,
//                  </think>, fim, <｜User｜>, <｜Assistant｜>, <|EOT|>, the tool-call tokens), each
//                  in the model vocabulary and in added_tokens with the real file's flags
//   then           the 256 byte tokens, so every string encodes
//   then           the merged tokens, up to vocab_size - padding_ids (fewer if the corpus runs out)
// The ids above the tokenizer's are like DeepSeek's embedding padding rows: the model has them,
// the tokenizer never produces them.
//
// Deterministic: the same options write the same bytes on every machine.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/tiny_model.h"
#include "engine/tokenizer/bpe_trainer.h"

namespace r2::tokenizer {

// Which DeepSeek chat template tokenizer_config.json carries.
enum class TinyChatTemplate {
  kV3,   // DeepSeek-V3 / V3-0324
  kR1,   // DeepSeek-R1 (2025 update): generation prompt ends in "<think>\n"
  kV31,  // DeepSeek-V3.1: the `thinking` variable
};
// "v3", "r1", "v31" (also "v3.1").
absl::StatusOr<TinyChatTemplate> ParseTinyChatTemplate(std::string_view name);
// The template's Jinja source, verbatim from DeepSeek's tokenizer_config.json.
std::string_view TinyChatTemplateSource(TinyChatTemplate chat_template);

struct TinySpecialToken {
  const char* content;
  bool special;     // added_tokens "special" (skipped by decode(skip_special_tokens))
  bool normalized;  // added_tokens "normalized"
};
// The tokens at ids 0..size-1, in id order.
const std::vector<TinySpecialToken>& TinySpecialTokens();

struct TinyTokenizerOptions {
  int64_t model_vocab_size = 1024;
  // Ids at the top of the model's vocabulary the tokenizer leaves unused (padding rows).
  int32_t padding_ids = 8;
  int64_t model_max_length = 1024;
  TinyChatTemplate chat_template = TinyChatTemplate::kV3;
};

// The built-in training corpus (a list of documents).
std::vector<std::string> TinyTokenizerCorpus();
// DeepSeek-V3's tokenizer.json "pre_tokenizer" (three Splits, then ByteLevel), in its key order.
nlohmann::ordered_json DeepSeekV3PreTokenizerJson();

// The trained vocabulary for the options (the special tokens first).
absl::StatusOr<BpeVocabulary> TrainTinyVocabulary(const TinyTokenizerOptions& options);
// tokenizer.json and tokenizer_config.json text.
absl::StatusOr<std::string> TinyTokenizerJson(const TinyTokenizerOptions& options);
std::string TinyTokenizerConfigJson(const TinyTokenizerOptions& options);
// Writes both files into `dir` (which must exist).
absl::Status WriteTinyTokenizer(const std::string& dir, const TinyTokenizerOptions& options);

// A TinyModelOptions::write_tokenizer hook writing the tokenizer for that model (its vocab_size
// and max_position_embeddings) with the given template.
std::function<absl::Status(const std::string&, const model::TinyModelOptions&)> TinyTokenizerHook(
    TinyChatTemplate chat_template = TinyChatTemplate::kV3);

// A tiny model with its tokenizer, for engine and server tests.
inline absl::Status WriteTinyModelWithTokenizer(
    model::TinyModelOptions options, const std::string& dir,
    TinyChatTemplate chat_template = TinyChatTemplate::kV3) {
  options.write_tokenizer = TinyTokenizerHook(chat_template);
  return model::WriteTinyModel(options, dir);
}

}  // namespace r2::tokenizer
