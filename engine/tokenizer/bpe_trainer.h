#pragma once
// A byte-level BPE trainer: learns the vocabulary and merges of a tokenizer.json "model" from a
// corpus, for the tiny test models (engine/tokenizer/tiny_tokenizer.h).
//
// The corpus is split around the special tokens (their text is never learned), pre-tokenized with
// the given tokenizer.json pre-tokenizer (engine/tokenizer/pre_tokenizer.h, so exactly the pieces
// Encode sees), and each piece starts as one symbol per byte. Then the most frequent adjacent pair
// of symbols (counted over every piece, never across pieces) is merged, repeatedly, until the
// vocabulary is full or no pair is frequent enough. Ties go to the pair whose left token string,
// then right token string, is smallest (bytewise, in the byte-level spelling), so the result is the
// same on every machine.
//
// Ids: the special tokens first (0..n-1, in the given order), then the 256 byte tokens in the order
// of their byte-level characters (as DeepSeek's and GPT-2's vocabularies list them: '!' first),
// then one id per merge whose result is a new token.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace r2::tokenizer {

struct BpeTrainerOptions {
  // Total ids wanted: special tokens + 256 byte tokens + merged tokens. Training stops earlier when
  // the corpus runs out of pairs seen at least min_frequency times.
  int32_t vocab_size = 0;
  std::vector<std::string> special_tokens;
  int64_t min_frequency = 2;
  // tokenizer.json's "pre_tokenizer" (must end in ByteLevel, as the loader requires).
  nlohmann::json pre_tokenizer;
};

struct BpeVocabulary {
  // id -> token string: special tokens as given, the others in the byte-level alphabet ("Ġthe").
  std::vector<std::string> tokens;
  // By rank, in the byte-level alphabet: tokens[...] of the left and right parts.
  std::vector<std::pair<std::string, std::string>> merges;
  int32_t num_special = 0;
};

absl::StatusOr<BpeVocabulary> TrainBpe(const std::vector<std::string>& corpus,
                                       const BpeTrainerOptions& options);

}  // namespace r2::tokenizer
