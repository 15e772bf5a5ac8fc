#pragma once
// A Hugging Face tokenizer.json with a byte-level BPE model (DeepSeek-V3, GPT-2, Llama-3 style),
// encoding and decoding exactly as the `tokenizers` library does (spec section 7.1).
//
// Supported: normalizer null or an empty Sequence; pre-tokenizers Split (Regex or String pattern,
// every behaviour, invert), ByteLevel, Digits and Sequences of them, ending in ByteLevel; model BPE
// with merges as "a b" strings or [a, b] pairs, ignore_merges, byte_fallback false; post-processors
// ByteLevel, TemplateProcessing and Sequences of them; decoder ByteLevel. Anything else (WordPiece,
// Unigram, other normalizers or pre-tokenizers, byte_fallback, dropout) is refused by FromJson with
// an error naming the field, so a file is never tokenized differently from Hugging Face.
//
// Input text is bytes. Valid UTF-8 is encoded as Hugging Face encodes the same Python str. Invalid
// UTF-8 (which cannot reach Hugging Face, whose encode takes a str) is first replaced as Python's
// bytes.decode("utf-8", errors="replace") does: each maximal invalid subsequence becomes U+FFFD.
//
// Thread safety: a Tokenizer is immutable after loading; Encode and Decode may run concurrently
// from any number of threads (each thread keeps its own regex scratch and BPE word cache).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/tokenizer/tokenizer_config.h"

namespace r2::tokenizer {

class AddedVocabulary;
class BpeModel;
class PreTokenizer;

class Tokenizer {
 public:
  // Loads tokenizer.json and, when present beside it, tokenizer_config.json.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // Parses tokenizer.json text; `source` names it in errors. `config` is the parsed
  // tokenizer_config.json, if any.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      std::string_view json, std::string_view source,
      std::optional<TokenizerConfig> config = std::nullopt);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`. add_special_tokens adds what the post-processor adds (BOS for DeepSeek;
  // see add_bos()). parse_special false treats text that spells a *special* added token as plain
  // text (Hugging Face's encode_special_tokens=True); non-special added tokens such as
  // "<｜User｜>" are still matched, as in Hugging Face. Fails only when the regex engine runs out
  // of resources on pathological input.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens,
                                              bool parse_special = true) const;

  // Text of `ids`: the tokens' bytes concatenated, invalid UTF-8 replaced by U+FFFD (maximal
  // subparts, as Rust's String::from_utf8_lossy). Unknown ids are skipped, as Hugging Face does.
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens = false) const;

  // The raw bytes one token decodes to (empty for an unknown id). Used by the incremental
  // detokenizer; concatenating these and replacing invalid UTF-8 gives Decode().
  std::string_view TokenBytes(int32_t id) const;
  bool IsSpecial(int32_t id) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token's string as in tokenizer.json ("Ġhello"); empty for an unknown id.
  std::string IdToToken(int32_t id) const;
  // One more than the largest id (128815 for DeepSeek-V3: 128000 BPE + 815 added).
  int32_t vocab_size() const { return vocab_size_; }

  // Whether Encode(text, add_special_tokens=true) starts with bos_id(). From tokenizer_config.json
  // add_bos_token when present (transformers rebuilds the post-processor from it), else from the
  // post-processor in tokenizer.json.
  bool add_bos() const { return bos_id_ && !add_prefix_.empty() && add_prefix_[0] == *bos_id_; }
  bool add_eos() const { return eos_id_ && !add_suffix_.empty() && add_suffix_.back() == *eos_id_; }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  // tokenizer_config.json as loaded (defaults when absent).
  const TokenizerConfig& config() const { return config_; }

  // The pre-tokenizer's pieces of `text` (no added-token matching), as the raw bytes of each
  // piece: the same split as Hugging Face's pre_tokenizer.pre_tokenize_str. For tests.
  absl::StatusOr<std::vector<std::string>> PreTokenize(std::string_view text) const;

 private:
  Tokenizer();
  absl::Status EncodeSegment(std::string_view text, std::vector<int32_t>* ids) const;

  absl::Status LoadJson(std::string_view json, std::string_view source);
  absl::Status BuildDecodeTable();
  void ResolveSpecialIds();

  std::unique_ptr<AddedVocabulary> added_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::vector<int32_t> prefix_ids_;  // what the post-processor puts before the text
  std::vector<int32_t> suffix_ids_;  // and after it
  std::vector<int32_t> add_prefix_;  // what Encode(add_special_tokens) adds, after the config
  std::vector<int32_t> add_suffix_;
  std::string decode_bytes_;            // every token's decoded bytes, back to back
  std::vector<uint32_t> decode_start_;  // token id -> offset in decode_bytes_ (vocab_size + 1)
  std::vector<bool> special_;           // token id -> special added token
  TokenizerConfig config_;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  int32_t vocab_size_ = 0;
};

}  // namespace r2::tokenizer
