#pragma once
// Streaming detokenization: feed token ids one at a time, get back the text they complete.
//
// Never returns part of a UTF-8 character: bytes of an incomplete character are held until the
// character completes (or turns out invalid). The concatenation of everything Add() returned plus
// Flush() equals Tokenizer::Decode(all ids, skip_special_tokens) byte for byte, including the
// U+FFFD replacements of invalid UTF-8. O(1) per token (at most 3 bytes are held back).
#include <cstdint>
#include <string>

#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace r2::tokenizer {

class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = false);

  // Adds one token; returns the newly completed text (often empty for a partial character).
  std::string Add(int32_t id);
  // Appends the newly completed text to *out instead.
  void Add(int32_t id, std::string* out);
  // Ends the stream: an incomplete character still held becomes U+FFFD. The detokenizer is then
  // ready for a new stream.
  std::string Flush();
  // Bytes held back (0..3), waiting for the rest of a character.
  size_t pending_bytes() const { return decoder_.pending_bytes(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  Utf8LossyDecoder decoder_;
};

}  // namespace r2::tokenizer
