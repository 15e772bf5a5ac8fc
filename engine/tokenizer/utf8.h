#pragma once
// UTF-8 helpers shared by encoding and decoding: validation, lossy conversion with the Unicode
// "maximal subpart" replacement (as Rust's String::from_utf8_lossy and Python's
// errors="replace"), a streaming form of it, and the White_Space property.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace r2::tokenizer {

// Outcome of reading one character at the start of a byte range.
struct Utf8Char {
  enum Kind : uint8_t { kValid, kInvalid, kIncomplete };
  Kind kind;
  uint8_t length;       // kValid: the character's length; kInvalid: the maximal invalid subpart
                        // (1..3 bytes) to replace by one U+FFFD; kIncomplete: bytes present (1..3),
                        // a valid prefix cut off by the end of the range
  char32_t code_point;  // kValid only
};

// Reads the character at the start of `bytes` (which must not be empty).
Utf8Char ReadUtf8Char(std::string_view bytes);

// True when `bytes` is entirely valid UTF-8.
bool IsValidUtf8(std::string_view bytes);

// Appends `bytes` to *out with every maximal invalid subpart (including an incomplete character
// at the end) replaced by U+FFFD.
void AppendUtf8Lossy(std::string_view bytes, std::string* out);

// Length in bytes of the UTF-8 character whose first byte is `lead` (1 for a non-lead byte).
inline size_t Utf8Length(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// Appends the UTF-8 encoding of `cp`.
void AppendUtf8(char32_t cp, std::string* out);

// The Unicode White_Space property (Rust's char::is_whitespace, regex \s).
bool IsWhiteSpace(char32_t cp);

// Streaming AppendUtf8Lossy: Feed() may end inside a character; its bytes wait for the next
// Feed(). Feed(a); Feed(b); Flush() gives the same text as AppendUtf8Lossy(a + b).
class Utf8LossyDecoder {
 public:
  void Feed(std::string_view bytes, std::string* out);
  void Flush(std::string* out);
  size_t pending_bytes() const { return pending_len_; }

 private:
  char pending_[4] = {};
  size_t pending_len_ = 0;
};

}  // namespace r2::tokenizer
