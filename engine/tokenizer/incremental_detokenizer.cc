#include "engine/tokenizer/incremental_detokenizer.h"

namespace r2::tokenizer {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDetokenizer::Add(int32_t id) {
  std::string out;
  Add(id, &out);
  return out;
}

void IncrementalDetokenizer::Add(int32_t id, std::string* out) {
  if (skip_special_tokens_ && tokenizer_.IsSpecial(id)) return;
  decoder_.Feed(tokenizer_.TokenBytes(id), out);
}

std::string IncrementalDetokenizer::Flush() {
  std::string out;
  decoder_.Flush(&out);
  return out;
}

}  // namespace r2::tokenizer
